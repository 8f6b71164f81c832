package events

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/reflector"
)

// Messages of the synthetic Updates a Stream sends when its source changes.
const (
	MessageDegraded  = "event watch degraded; polling"
	MessageRecovered = "event watch recovered"
)

// streamBuffer is the capacity of a Stream's channel. A consumer that
// falls behind only delays its own Stream's goroutine, never the index.
const streamBuffer = 16

// minPollTimeout bounds one fallback list.
const minPollTimeout = 10 * time.Second

// pollInterval is how often WaitForSync looks at the index's handler,
// whose sync has no notification.
const pollInterval = 20 * time.Millisecond

// Stream returns the progress Updates of pod, and of that pod alone:
// events whose involvedObject.uid is pod.UID, never those of an earlier pod
// with the same name. It replays the events the index already holds for
// the pod, then delivers new ones as they arrive. See the package
// documentation for the order, the deduplication and the progress rule.
//
// The channel is closed when ctx ends or the factory stops. The caller
// should drain it until then; a slow reader delays only its own Stream.
// An incomplete PodRef gets reflector.ErrInvalidArgument, a namespace
// outside the scope reflector.ErrOutOfScope, a stopped factory
// reflector.ErrStopped.
func (x *Index) Stream(ctx context.Context, pod PodRef) (<-chan Update, error) {
	if err := x.checkPod(pod); err != nil {
		return nil, err
	}
	sig, unsubscribe := x.idx.subscribe(pod.UID)
	state, unsubscribeState := x.cache.NotifyState()
	s := &stream{
		x:         x,
		pod:       pod,
		out:       make(chan Update, streamBuffer),
		sig:       sig,
		state:     state,
		delivered: newBoundedSet(max(4*x.opts.PerPodLimit, 256)),
	}
	if !x.hooks.Go(ctx, func(ctx context.Context) {
		defer close(s.out)
		defer unsubscribe()
		defer unsubscribeState()
		s.run(ctx)
	}) {
		unsubscribe()
		unsubscribeState()
		return nil, reflector.ErrStopped
	}
	return s.out, nil
}

// stream is the state of one Stream's goroutine.
type stream struct {
	x     *Index
	pod   PodRef
	out   chan Update
	sig   <-chan struct{}
	state <-chan struct{}

	// version is the index version up to which events have been read.
	version uint64
	// delivered holds the (reason, message) pairs already delivered.
	delivered *boundedSet
	progress  int
	// polling: the stream is fed by the fallback list; announced: the
	// degraded Update was sent (only for degraded or failed, not while the
	// watch is still starting).
	polling   bool
	announced bool
}

func (s *stream) run(ctx context.Context) {
	var ticker clock.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
		if s.polling {
			s.x.metrics.polling.Add(-1)
		}
	}()
	for {
		if s.x.healthy() {
			if s.polling {
				s.polling = false
				s.x.metrics.polling.Add(-1)
				ticker.Stop()
				ticker, tick = nil, nil
				if s.announced {
					s.announced = false
					if !s.send(ctx, Update{Message: MessageRecovered, Progress: s.progress, Time: s.x.clock.Now()}) {
						return
					}
				}
			}
			items, version := s.x.idx.since(s.pod.UID, s.version)
			s.version = version
			if !s.deliver(ctx, items, false) {
				return
			}
		} else {
			state := s.x.cache.State()
			if state == reflector.StateStopped {
				return
			}
			if !s.polling {
				s.polling = true
				s.x.metrics.polling.Add(1)
				ticker = s.x.clock.NewTicker(s.x.opts.FallbackInterval)
				tick = ticker.C()
			}
			if !s.announced && (state == reflector.StateDegraded || state == reflector.StateFailed) {
				s.announced = true
				if !s.send(ctx, Update{Message: MessageDegraded, Progress: s.progress, Degraded: true, Time: s.x.clock.Now()}) {
					return
				}
			}
			if !s.poll(ctx) {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.sig:
		case <-s.state:
		case <-tick:
		}
	}
}

// poll lists the pod's events from the API server and delivers the new
// ones as Degraded. A failed list is logged and retried at the next tick.
// It returns false when the Stream must end.
func (s *stream) poll(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(ctx, max(2*s.x.opts.FallbackInterval, minPollTimeout))
	items, err := s.x.listAPI(pctx, s.pod)
	cancel()
	s.x.metrics.polls.Add(1)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		s.x.metrics.pollErrors.Add(1)
		klog.FromContext(ctx).V(2).Info("Fallback list of pod events failed", "pod", klog.KRef(s.pod.Namespace, s.pod.Name), "err", err)
		return true
	}
	sortByFirst(items)
	return s.deliver(ctx, items, true)
}

// deliver sends an Update for each event whose (reason, message) this
// Stream has not delivered yet.
func (s *stream) deliver(ctx context.Context, items []*item, degraded bool) bool {
	for _, it := range items {
		if !s.delivered.add(dedupKey(it.ev)) {
			continue
		}
		if p, ok := progressOf(it.ev); ok && p > s.progress {
			s.progress = p
		}
		u := Update{
			Event:    it.ev.DeepCopy(),
			Time:     it.first,
			Message:  Message(it.ev),
			Progress: s.progress,
			Warning:  it.ev.Type == corev1.EventTypeWarning,
			Degraded: degraded,
		}
		if !s.send(ctx, u) {
			return false
		}
	}
	return true
}

func (s *stream) send(ctx context.Context, u Update) bool {
	select {
	case s.out <- u:
		if u.Degraded {
			s.x.metrics.updatesFallback.Add(1)
		} else {
			s.x.metrics.updatesLive.Add(1)
		}
		return true
	case <-ctx.Done():
		return false
	}
}

// dedupKey identifies what a Stream delivers once: the event's reason and
// message. A count or lastTimestamp update of the same event keeps both,
// and so does the same event reported again as another object.
func dedupKey(e *corev1.Event) string {
	return fmt.Sprintf("%s\x00%s", e.Reason, e.Message)
}

// boundedSet is a set that forgets its oldest members beyond a capacity,
// so a long-lived Stream's memory stays bounded.
type boundedSet struct {
	cap   int
	m     map[string]struct{}
	order []string
}

func newBoundedSet(capacity int) *boundedSet {
	return &boundedSet{cap: capacity, m: map[string]struct{}{}}
}

// add adds k and reports whether it was new.
func (b *boundedSet) add(k string) bool {
	if _, ok := b.m[k]; ok {
		return false
	}
	b.m[k] = struct{}{}
	b.order = append(b.order, k)
	if len(b.order) > b.cap {
		delete(b.m, b.order[0])
		b.order = b.order[1:]
	}
	return true
}
