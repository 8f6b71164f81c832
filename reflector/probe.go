package reflector

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/watch"
)

const (
	// probeServerTimeout is the probe watch's timeoutSeconds: the server
	// replays the changes since the given resourceVersion at once and
	// closes the watch after this long.
	probeServerTimeout = 1
	forcedPrefix       = "kubespawn: watch restarted by the reflector"
)

type probeOutcome int

const (
	probeOK probeOutcome = iota
	probeExpired
	probeFailed
	probeHung
)

// probe asks the server, with a short watch from the cache's
// resourceVersion, whether it holds changes in scope that the cache lacks.
// A healthy main watch delivers a change within milliseconds of the
// server having it, so a change still missing from the cache a short grace
// later means the watch is stalled. A probe watch that the server does not
// close in time, while the main watch is silent too, means the watch path
// itself hangs: also a stall. Detection takes at most ProbeInterval plus
// the probe and its grace (or deadline): within StallTimeout for
// StallTimeout >= 5s.
func (s *shard[T]) probe(ctx context.Context) {
	cacheRV := s.informer.LastSyncResourceVersion()
	if cacheRV == "" || cacheRV == "0" {
		return
	}
	started := s.now()
	outcome, newestRV, err := s.probeWatch(ctx, cacheRV)
	if ctx.Err() != nil {
		return
	}
	now := s.now()
	switch outcome {
	case probeExpired:
		// The cache's resourceVersion is older than the server's watch
		// window (an idle scope between bookmarks): compare lists instead.
		s.probeSucceeded(now, "")
		s.audit(ctx)
		return
	case probeHung:
		s.mu.Lock()
		mainSilent := s.lastEvent.Before(started)
		s.mu.Unlock()
		if mainSilent {
			s.restart(GapStall, RelistStall, fmt.Sprintf("a probe watch was not closed by the server within %s and the main watch is silent: the watch path is stalled", s.probeDeadline()))
			return
		}
		fallthrough
	case probeFailed:
		s.mu.Lock()
		if s.probeFailingSince.IsZero() {
			s.probeFailingSince = started
		}
		failingFor := now.Sub(s.probeFailingSince)
		s.mu.Unlock()
		s.r.logger.V(2).Info("Probe failed", "namespace", s.namespace, "err", err, "failingFor", failingFor)
		if failingFor >= s.r.opts.StallTimeout {
			s.setProblem(fmt.Sprintf("probes failing for %s: %v", failingFor.Round(time.Second), err))
		}
		return
	}

	if newestRV != "" && !rvAtLeast(s.informer.LastSyncResourceVersion(), newestRV) {
		// Not delivered yet: give the main watch a grace to catch up.
		select {
		case <-ctx.Done():
			return
		case <-s.r.opts.Clock.After(s.probeGrace()):
		}
		if current := s.informer.LastSyncResourceVersion(); !rvAtLeast(current, newestRV) {
			s.mu.Lock()
			s.serverRV = maxRV(s.serverRV, newestRV)
			s.mu.Unlock()
			s.restart(GapStall, RelistStall, fmt.Sprintf("watch stalled: the server holds changes up to resourceVersion %s that the cache (at %s) has not received", newestRV, current))
			return
		}
	}
	s.probeSucceeded(s.now(), newestRV)
}

// probeSucceeded records a probe that found the cache holding every change
// the server had in scope.
func (s *shard[T]) probeSucceeded(now time.Time, newestRV string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastProbe = now
	s.lastConfirmed = now
	s.probeFailingSince = time.Time{}
	s.serverRV = maxRV(s.informer.LastSyncResourceVersion(), newestRV)
}

// probeGrace is how long a change the probe saw may take to reach the
// cache through a healthy watch.
func (s *shard[T]) probeGrace() time.Duration {
	return max(time.Second, s.r.opts.ProbeInterval/2)
}

// probeDeadline is how long a probe watch may stay open; the server closes
// it after probeServerTimeout.
func (s *shard[T]) probeDeadline() time.Duration {
	return probeServerTimeout*time.Second + max(2*time.Second, s.r.opts.ProbeInterval)
}

// probeWatch runs one probe watch from rv and returns the newest
// resourceVersion among the changes the server replayed ("" if none).
func (s *shard[T]) probeWatch(ctx context.Context, rv string) (probeOutcome, string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.probeDeadline())
	defer cancel()
	timeout := int64(probeServerTimeout)
	w, err := s.r.kind.Watch(ctx, s.r.client, s.namespace, metav1.ListOptions{
		LabelSelector:   s.r.opts.Scope.LabelSelector,
		FieldSelector:   s.r.opts.Scope.FieldSelector,
		ResourceVersion: rv,
		TimeoutSeconds:  &timeout,
	})
	if err != nil {
		if isExpired(err) {
			return probeExpired, "", err
		}
		if ctx.Err() != nil {
			return probeHung, "", err
		}
		return probeFailed, "", err
	}
	defer w.Stop()
	s.r.stats.probe()
	newest := ""
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				if ctx.Err() != nil {
					return probeHung, "", ctx.Err()
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
			}
		case <-ctx.Done():
			return probeHung, "", fmt.Errorf("probe watch not closed by the server within %s", s.probeDeadline())
		}
	}
}

func isExpired(err error) bool {
	return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
}

func isForced(status *metav1.Status) bool {
	return strings.HasPrefix(status.Message, forcedPrefix)
}

func metaAccessor(obj runtime.Object) (metav1.Object, error) { return meta.Accessor(obj) }

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
