package reflector

import (
	"context"
	"errors"
	"net/http"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/watchlist"
)

// listWatcher is the informer's ListerWatcher for one shard. It adds the
// shard's selectors, reports every list, watch and event to the shard, and
// can force a relist by ending the current watch with a 410 Expired error,
// which is exactly what client-go's reflector does after a real 410.
type listWatcher[T Object] struct {
	s *shard[T]

	mu sync.Mutex
	// current is the open main watch, nil between watches.
	current *trackedWatch
	// relistReason labels the next list (or watch-list).
	relistReason string
	// expireNext makes the next Watch call fail with 410, for a relist
	// forced while no watch was open.
	expireNext bool
	// listNext makes the next relist a plain LIST rather than a WatchList:
	// after a stall the watch path is suspect, and a WatchList through it
	// would hang for another StallTimeout before client-go falls back.
	listNext bool
}

// errSkipWatchList makes client-go fall back from WatchList to LIST.
var errSkipWatchList = errors.New("kubespawn: relisting with a plain LIST after a stalled watch")

func (lw *listWatcher[T]) applyScope(opts *metav1.ListOptions) {
	opts.LabelSelector = lw.s.r.opts.Scope.LabelSelector
	opts.FieldSelector = lw.s.r.opts.Scope.FieldSelector
}

func (lw *listWatcher[T]) takeRelistReason() string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	reason := lw.relistReason
	lw.relistReason = ""
	if reason == "" {
		if lw.s.informer.HasSynced() {
			reason = RelistError
		} else {
			reason = RelistInitial
		}
	}
	return reason
}

// setRelistReason records why the next list happens, keeping the first
// reason when several arrive before it.
func (lw *listWatcher[T]) setRelistReason(reason string) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.relistReason == "" {
		lw.relistReason = reason
	}
}

// forceRelist ends the current watch with a synthetic 410 so that the
// informer relists. It returns immediately.
func (lw *listWatcher[T]) forceRelist(reason string) {
	lw.mu.Lock()
	lw.relistReason = reason
	lw.listNext = reason == RelistStall || reason == RelistIdle
	cur := lw.current
	lw.current = nil
	if cur == nil {
		lw.expireNext = true
	}
	lw.mu.Unlock()
	if cur != nil {
		cur.expire("kubespawn: watch restarted by the reflector: " + reason)
	}
}

func (lw *listWatcher[T]) List(opts metav1.ListOptions) (runtime.Object, error) {
	return lw.ListWithContext(context.Background(), opts)
}

func (lw *listWatcher[T]) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	lw.applyScope(&opts)
	reason := lw.takeRelistReason()
	obj, err := lw.s.r.kind.List(ctx, lw.s.r.client, lw.s.namespace, opts)
	if err != nil {
		lw.s.onListWatchError(err)
		lw.setRelistReason(reason) // the retry is still this relist
		return nil, err
	}
	lw.s.r.stats.relist(reason)
	return obj, nil
}

func (lw *listWatcher[T]) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return lw.WatchWithContext(context.Background(), opts)
}

func (lw *listWatcher[T]) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	lw.applyScope(&opts)
	lw.mu.Lock()
	expire := lw.expireNext
	lw.expireNext = false
	lw.mu.Unlock()
	if expire {
		return nil, apierrors.NewResourceExpired("kubespawn: relist forced by the reflector")
	}
	// With client-go's WatchList, the initial list arrives as the first
	// events of a watch with sendInitialEvents: that watch is the relist.
	isWatchList := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	if isWatchList {
		lw.mu.Lock()
		skip := lw.listNext
		lw.listNext = false
		lw.mu.Unlock()
		if skip {
			return nil, errSkipWatchList
		}
	}
	reason := ""
	if isWatchList {
		reason = lw.takeRelistReason()
	}
	w, err := lw.s.r.kind.Watch(ctx, lw.s.r.client, lw.s.namespace, opts)
	if err != nil {
		lw.s.onListWatchError(err)
		if isWatchList {
			lw.setRelistReason(reason)
		}
		return nil, err
	}
	if isWatchList {
		lw.s.r.stats.relist(reason)
	}
	tw := newTrackedWatch(w, lw.s.onWatchEvent)
	lw.mu.Lock()
	lw.current = tw
	lw.mu.Unlock()
	lw.s.onWatchOpened(isWatchList)
	return tw, nil
}

// IsWatchListSemanticsUnSupported lets client-go disable WatchList for
// clients that cannot do it (fake clientsets), as
// cache.ToListWatcherWithWatchListSemantics does.
func (lw *listWatcher[T]) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(lw.s.r.client)
}

// trackedWatch forwards a watch's events, reporting each to onEvent, and
// can be ended with a synthetic 410 Expired error event.
type trackedWatch struct {
	inner    watch.Interface
	out      chan watch.Event
	expireCh chan string
	stopCh   chan struct{}
	stopOnce sync.Once
	onEvent  func(watch.Event)
}

func newTrackedWatch(inner watch.Interface, onEvent func(watch.Event)) *trackedWatch {
	w := &trackedWatch{
		inner:    inner,
		out:      make(chan watch.Event),
		expireCh: make(chan string, 1),
		stopCh:   make(chan struct{}),
		onEvent:  onEvent,
	}
	go w.run()
	return w
}

func (w *trackedWatch) ResultChan() <-chan watch.Event { return w.out }

// Stop ends the watch and closes the inner one, which for HTTP/1.1 closes
// its TCP connection: a stalled connection is never reused.
func (w *trackedWatch) Stop() {
	w.stopOnce.Do(func() {
		close(w.stopCh)
		w.inner.Stop()
	})
}

func (w *trackedWatch) expire(msg string) {
	select {
	case w.expireCh <- msg:
	default:
	}
}

func (w *trackedWatch) run() {
	defer close(w.out)
	in := w.inner.ResultChan()
	for {
		select {
		case ev, ok := <-in:
			if !ok {
				return
			}
			w.onEvent(ev)
			select {
			case w.out <- ev:
			case msg := <-w.expireCh:
				w.sendExpired(msg)
				return
			case <-w.stopCh:
				return
			}
		case msg := <-w.expireCh:
			w.sendExpired(msg)
			return
		case <-w.stopCh:
			return
		}
	}
}

func (w *trackedWatch) sendExpired(msg string) {
	w.inner.Stop()
	status := &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusGone,
		Reason:  metav1.StatusReasonExpired,
		Message: msg,
	}
	select {
	case w.out <- watch.Event{Type: watch.Error, Object: status}:
	case <-w.stopCh:
	}
}
