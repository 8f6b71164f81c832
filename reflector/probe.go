package reflector

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
)

type probeOutcome int

const (
	// probeOK: the cache holds every change the server has in scope.
	probeOK probeOutcome = iota
	// probeStale: the server holds changes in scope that the cache did not
	// receive within the grace (or the canary's window).
	probeStale
	// probeHung: the probe passed its deadline, or a canary's change was
	// missing from the server's replay: the watch path may hang.
	probeHung
	// probeExpired: the cache's resourceVersion is older than the server's
	// watch window (410).
	probeExpired
	// probeFailed: the server refused or failed the probe (429, 5xx,
	// connection errors).
	probeFailed
)

func (o probeOutcome) String() string {
	return [...]string{"ok", "stale", "hung", "expired", "failed"}[o]
}

type probeResult struct {
	started time.Time
	outcome probeOutcome
	// newest is the newest resourceVersion in the server's replay.
	newest string
	err    error
}

func (probeResult) isResult() {}

// runProbe asks the server, with a short watch from the cache's
// resourceVersion, whether it holds changes in scope that the cache lacks.
// The server replays those changes at once and closes the watch after
// probeServerTimeout, so a probe that finds nothing transfers no object.
//
// A healthy main watch delivers a change within milliseconds of the server
// having it: a change still missing from the cache a short grace later
// means the watch is stalled. A probe the server does not close by the
// probe deadline means the watch path may hang. expectRV, for a canary, is
// a version the server is known to hold in scope: no grace is given (the
// canary's window was one); a replay that lacks it canaryReplayTimeout
// after the response headers counts as hung, and one that the server ends
// without it, while the cache lacks it too, as stale.
func (s *shard[T]) runProbe(ctx context.Context, started time.Time, cacheRV, expectRV string) probeResult {
	r := probeResult{started: started}
	if cacheRV == "" || cacheRV == "0" {
		return r
	}
	o := s.c.opts
	r.outcome, r.newest, r.err = s.probeWatch(ctx, cacheRV, expectRV)
	if r.outcome == probeOK && expectRV != "" && !rvAtLeast(r.newest, expectRV) {
		// The server ended the replay (its timeoutSeconds) without the
		// version it had acknowledged: the watch path it serves watches
		// from lags or lost it. Only the cache reaching it satisfies the
		// canary now.
		if current := s.informer.LastSyncResourceVersion(); !rvAtLeast(current, expectRV) {
			r.outcome = probeStale
			r.err = fmt.Errorf("watch stalled: the server's replay from resourceVersion %s ended without resourceVersion %s, which it had acknowledged, and the cache (at %s) has not received it", cacheRV, expectRV, current)
			return r
		}
	}
	if r.outcome != probeOK || r.newest == "" || rvAtLeast(s.informer.LastSyncResourceVersion(), r.newest) {
		return r
	}
	// The server has changes the cache lacks: give the main watch a grace
	// to deliver them (none for a canary: its window was the grace; and no
	// longer than the window of a spawner's write among them, which must
	// not wait for this routine probe's grace on top of its own window).
	if grace := s.graceFor(r.newest, o.probeGrace()); expectRV == "" && grace > 0 {
		t := o.Clock.NewTimer(grace)
		select {
		case <-ctx.Done():
			t.Stop()
			return r
		case <-t.C():
		}
	}
	if current := s.informer.LastSyncResourceVersion(); !rvAtLeast(current, r.newest) {
		r.outcome = probeStale
		r.err = fmt.Errorf("watch stalled: the server holds changes up to resourceVersion %s that the cache (at %s) has not received", r.newest, current)
	}
	return r
}

// graceFor is how long a probe that saw changes up to newest waits for
// the cache: grace, cut short at the earliest due time of a canary the
// change covers.
func (s *shard[T]) graceFor(newest string, grace time.Duration) time.Duration {
	now := s.now()
	end := now.Add(grace)
	s.mu.Lock()
	for _, cn := range s.canaries {
		if rvAtLeast(newest, cn.rv) && cn.due.Before(end) {
			end = cn.due
		}
	}
	s.mu.Unlock()
	return max(end.Sub(now), 0)
}

// probeWatch runs one probe watch from rv and returns the newest
// resourceVersion among the changes the server replayed ("" if none). The
// response headers must arrive within the probe deadline, and the server
// must close the watch within the probe deadline after them; a request
// retried inside client-go (429 with Retry-After) would blur the two, so
// probes are sent without client-side retries.
func (s *shard[T]) probeWatch(ctx context.Context, rv, expectRV string) (probeOutcome, string, error) {
	o := s.c.opts
	deadline := o.probeDeadline()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	end := &streamEnd{}
	ctx = withStreamEnd(ctx, end)
	var late atomic.Bool
	headers := afterFunc(o.Clock, deadline, func() { late.Store(true); cancel() })
	timeout := int64(probeServerTimeout / time.Second)
	w, err := s.probeRequest(ctx, metav1.ListOptions{
		LabelSelector:   s.c.scope.LabelSelector,
		FieldSelector:   s.c.scope.FieldSelector,
		ResourceVersion: rv,
		TimeoutSeconds:  &timeout,
	})
	headers.Stop()
	switch {
	case err != nil && isExpired(err):
		return probeExpired, "", err
	case err != nil && late.Load():
		return probeHung, "", fmt.Errorf("a probe watch got no response within %s", deadline)
	case err != nil:
		return probeFailed, "", err
	case late.Load():
		w.Stop()
		return probeHung, "", fmt.Errorf("a probe watch got no response within %s", deadline)
	}
	defer w.Stop()
	closing := afterFunc(o.Clock, deadline, func() { late.Store(true); cancel() })
	defer closing.Stop()
	var replay <-chan time.Time
	if expectRV != "" {
		t := o.Clock.NewTimer(canaryReplayTimeout)
		defer t.Stop()
		replay = t.C()
	}
	newest := ""
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				if late.Load() {
					return probeHung, "", fmt.Errorf("a probe watch was not closed by the server within %s of its response", deadline)
				}
				if cut, err := end.cut(); cut {
					// Not the server's close: the replay may have been cut
					// short, and proves nothing either way.
					return probeFailed, "", fmt.Errorf("a probe watch was cut before the server closed it: %w", err)
				}
				return probeOK, newest, nil
			}
			switch ev.Type {
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				if isExpired(err) {
					return probeExpired, "", err
				}
				return probeFailed, "", err
			case watch.Added, watch.Modified, watch.Deleted:
				if m, err := meta.Accessor(ev.Object); err == nil {
					newest = maxRV(newest, m.GetResourceVersion())
				}
				if expectRV != "" && rvAtLeast(newest, expectRV) {
					return probeOK, newest, nil // the server has it: the cache decides
				}
			}
		case <-replay:
			return probeHung, "", fmt.Errorf("the server's replay lacked resourceVersion %s, which it had acknowledged, %s after the response headers", expectRV, canaryReplayTimeout)
		case <-ctx.Done():
			if late.Load() {
				return probeHung, "", fmt.Errorf("a probe watch was not closed by the server within %s of its response", deadline)
			}
			return probeFailed, "", ctx.Err()
		}
	}
}

// probeRequest opens the probe watch without client-side retries (through
// the kind's REST client; a fake clientset's typed watch otherwise).
func (s *shard[T]) probeRequest(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	c := s.c
	rc := c.kind.restClient(c.client)
	if rc == nil || reflect.ValueOf(rc).IsNil() {
		return c.kind.watch(ctx, c.client, s.namespace, opts)
	}
	opts.Watch = true
	return rc.Get().
		Namespace(s.namespace).
		Resource(c.kind.resource).
		VersionedParams(&opts, scheme.ParameterCodec).
		MaxRetries(0).
		Watch(ctx)
}

func isExpired(err error) bool {
	return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
}

// rvAtLeast reports whether resourceVersion a >= b. Unparseable versions
// compare as not-at-least, which errs towards probing again.
func rvAtLeast(a, b string) bool {
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c >= 0
}

func maxRV(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" || rvAtLeast(a, b) {
		return a
	}
	return b
}

// withDeadline is context.WithTimeout on the injected clock, so that
// fake-clock tests drive every deadline.
func withDeadline(ctx context.Context, clk clock.WithDelayedExecution, d time.Duration) (context.Context, context.CancelFunc) {
	return withDeadlineFunc(ctx, clk, d, nil)
}

// withDeadlineFunc is withDeadline that calls onExpire (before cancelling)
// when the deadline passes.
func withDeadlineFunc(ctx context.Context, clk clock.WithDelayedExecution, d time.Duration, onExpire func()) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := afterFunc(clk, d, func() {
		if onExpire != nil {
			onExpire()
		}
		cancel(context.DeadlineExceeded)
	})
	return ctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// afterFunc is clk.AfterFunc with fn always in a goroutine of its own:
// fake clocks call AfterFunc callbacks inline, under their lock, where a
// callback reading the clock would deadlock.
func afterFunc(clk clock.WithDelayedExecution, d time.Duration, fn func()) clock.Timer {
	return clk.AfterFunc(d, func() { go fn() })
}
