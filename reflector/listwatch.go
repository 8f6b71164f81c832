package reflector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/watchlist"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/internal/signal"
)

// listWatcher is the informer's ListerWatcher for one shard. It adds the
// scope's selectors, puts a deadline on every request, reports every list,
// watch and event to the shard, and can force a relist, which it never
// loses: a relist requested while no watch is open is applied to the next
// watch request.
//
// A relist is forced by ending the main watch with a 410 Expired error
// event (or answering the next watch request with one): exactly client-go's
// own path after a real 410.
type listWatcher[T object] struct {
	s *shard[T]

	mu sync.Mutex
	// current is the open main watch, nil between watches.
	current *trackedWatch[T]
	// wanted and done count forced relists: wanted > done means one is
	// owed; a relist that starts when wanted is n pays it once it
	// completes (done = n).
	wanted, done int
	// reason labels the next relist.
	reason RelistReason
	// begun counts the relists begun; a failed one gives its reason back
	// only if no later one has begun (a retry already running has its
	// own).
	begun int
	// plainList makes the next relist a plain LIST rather than a
	// WatchList: after a stall the watch path is suspect, and a WatchList
	// through it would hang until its deadline before client-go falls back.
	plainList bool
	// consistentUpTo: the relists that pay the forced relists up to this
	// one list with resourceVersion "", a consistent read. client-go
	// relists at the last synced version, which the API server may answer
	// from the very watch cache that lags behind the changes the watch
	// missed.
	consistentUpTo int
	// listing is the relist whose pages are being listed (client-go's
	// pager calls List once per page).
	listing *relistTicket
}

// initialEventsPerDeadline is how many initial events of a WatchList earn
// it another list deadline (10,000 pods: 2-5 s on 2 cores, well within
// one).
const initialEventsPerDeadline = 10_000

// errSkipWatchList makes client-go fall back from WatchList to LIST.
var errSkipWatchList = errors.New("kubespawn: relisting with a plain LIST after a stalled watch")

// forcedRelistMessage is the message of the synthetic 410 that forces a
// relist.
const forcedRelistMessage = "kubespawn: relist forced by the reflector"

func (lw *listWatcher[T]) applyScope(opts *metav1.ListOptions) {
	opts.LabelSelector = lw.s.c.scope.LabelSelector
	opts.FieldSelector = lw.s.c.scope.FieldSelector
}

// labelLocked sets the next relist's reason unless one is set already;
// the generic RelistError gives way to any precise reason.
func (lw *listWatcher[T]) labelLocked(reason RelistReason) {
	if lw.reason == "" || lw.reason == RelistError {
		lw.reason = reason
	}
}

// forceRelist makes the informer relist for reason, now if a watch is
// open, else at its next watch request; plainList: with a plain LIST;
// consistent: a consistent read. It returns at once.
func (lw *listWatcher[T]) forceRelist(reason RelistReason, plainList, consistent bool) {
	lw.mu.Lock()
	lw.wanted++
	lw.labelLocked(reason)
	lw.plainList = lw.plainList || plainList
	if consistent {
		lw.consistentUpTo = lw.wanted
	}
	cur := lw.current
	lw.mu.Unlock()
	if cur != nil {
		cur.expire()
	}
}

// expired labels the relist that client-go makes after a 410.
func (lw *listWatcher[T]) expired() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.labelLocked(RelistExpired)
}

// relistTicket is one relist begun: the forced relists it will pay, its
// reason, and its place among the relists begun.
type relistTicket struct {
	paid, seq int
	reason    RelistReason
}

// beginRelist is called when a list (or WatchList) starts.
func (lw *listWatcher[T]) beginRelist() relistTicket {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	reason := lw.reason
	lw.reason = ""
	if reason == "" {
		if lw.s.informer.HasSynced() {
			reason = RelistError
		} else {
			reason = RelistInitial
		}
	}
	lw.begun++
	return relistTicket{paid: lw.wanted, seq: lw.begun, reason: reason}
}

// endRelist records a relist that completed (the forced relists up to it
// are paid) or failed (its reason is kept for the retry, unless the retry
// has begun already).
func (lw *listWatcher[T]) endRelist(t relistTicket, ok bool) {
	lw.mu.Lock()
	if ok {
		lw.done = max(lw.done, t.paid)
	} else if lw.reason == "" && lw.begun == t.seq {
		lw.reason = t.reason
	}
	lw.mu.Unlock()
	if ok {
		lw.s.c.stats.relist(t.reason)
	}
}

func (lw *listWatcher[T]) List(opts metav1.ListOptions) (runtime.Object, error) {
	return lw.ListWithContext(context.Background(), opts)
}

// ListWithContext lists one page. A relist is its pages, from the first
// (no continue token) to the one without a continue token: it is begun
// and counted once.
func (lw *listWatcher[T]) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	s := lw.s
	lw.applyScope(&opts)
	var ticket relistTicket
	if opts.Continue == "" {
		ticket = lw.beginRelist()
		lw.mu.Lock()
		lw.plainList = false // this is the plain list
		lw.listing = &ticket
		if lw.consistentUpTo > lw.done {
			// A forced relist: past whatever made the watch miss changes,
			// the API server's watch cache included.
			opts.ResourceVersion, opts.ResourceVersionMatch = "", ""
		}
		lw.mu.Unlock()
	} else {
		lw.mu.Lock()
		if lw.listing != nil {
			ticket = *lw.listing
		} else { // cannot happen: client-go's pager begins with a first page
			ticket = relistTicket{paid: lw.done, seq: lw.begun, reason: RelistError}
		}
		lw.mu.Unlock()
	}
	var hung atomic.Bool
	lctx, cancel := withDeadlineFunc(ctx, s.c.opts.Clock, s.c.opts.listDeadline(), func() {
		hung.Store(true)
		s.onHung(requestList)
	})
	obj, err := s.c.kind.list(lctx, s.c.client, s.namespace, opts)
	cancel()
	switch {
	case err == nil && hung.Load():
		err = fmt.Errorf("list cut after %s: %w", s.c.opts.listDeadline(), context.DeadlineExceeded)
	case err != nil && hung.Load():
		err = fmt.Errorf("list cut after %s: %w", s.c.opts.listDeadline(), err)
	case err != nil && ctx.Err() == nil:
		s.onListWatchError(err)
	}
	last := err != nil || !hasContinue(obj)
	if last {
		lw.mu.Lock()
		lw.listing = nil
		lw.mu.Unlock()
		lw.endRelist(ticket, err == nil)
	}
	if err != nil {
		return nil, err
	}
	if last {
		s.onRelisted(false)
	}
	return obj, nil
}

func hasContinue(obj runtime.Object) bool {
	type continuer interface{ GetContinue() string }
	if l, ok := obj.(continuer); ok {
		return l.GetContinue() != ""
	}
	return false
}

func (lw *listWatcher[T]) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return lw.WatchWithContext(context.Background(), opts)
}

func (lw *listWatcher[T]) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	s := lw.s
	lw.applyScope(&opts)
	// With client-go's WatchList, the initial list arrives as the first
	// events of a watch with sendInitialEvents: that watch is a relist.
	isWatchList := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	lw.mu.Lock()
	owed := lw.wanted > lw.done
	skip := isWatchList && lw.plainList
	if skip {
		lw.plainList = false
	}
	lw.mu.Unlock()
	if skip {
		return nil, errSkipWatchList
	}
	if owed && !isWatchList {
		// A relist is owed: client-go relists on 410.
		return nil, apierrors.NewResourceExpired(forcedRelistMessage)
	}
	var ticket relistTicket
	if isWatchList {
		ticket = lw.beginRelist()
	}

	// The watch's context lasts as long as the stream; the open has its
	// own deadline, disarmed once the response headers are in.
	wctx, cancel := context.WithCancel(ctx)
	var hung atomic.Bool
	openTimer := afterFunc(s.c.opts.Clock, s.c.opts.openDeadline(), func() {
		hung.Store(true)
		s.onHung(requestWatchOpen)
		cancel()
	})
	w, err := s.c.kind.watch(wctx, s.c.client, s.namespace, opts)
	openTimer.Stop()
	if hung.Load() && err == nil {
		w.Stop()
		err = fmt.Errorf("watch open cut after %s: %w", s.c.opts.openDeadline(), context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		if !hung.Load() && ctx.Err() == nil {
			if isExpired(err) {
				lw.expired()
			}
			s.onListWatchError(err)
		}
		if isWatchList {
			lw.endRelist(ticket, false)
		}
		return nil, err
	}

	tw := &trackedWatch[T]{inner: w, out: make(chan watch.Event), expiry: signal.NewFlag(), stopCh: make(chan struct{}), lw: lw, cancel: cancel}
	if isWatchList {
		// The initial events must keep coming (one at least every
		// StallTimeout) and end within the list deadline, or the relist
		// is cut and redone as a plain LIST.
		tw.initial = true
		tw.ticket = ticket
		cut := func() {
			if tw.initialDone.Load() || !tw.cut.CompareAndSwap(false, true) {
				return
			}
			s.onHung(requestWatchList)
			lw.forceRelist(ticket.reason, true, false)
		}
		tw.initialDeadline = s.c.opts.Clock.Now().Add(s.c.opts.listDeadline())
		tw.initialTimer = afterFunc(s.c.opts.Clock, s.c.opts.listDeadline(), cut)
		tw.progressTimer = afterFunc(s.c.opts.Clock, s.c.opts.StallTimeout, cut)
	}
	lw.mu.Lock()
	lw.current = tw
	owed = lw.wanted > lw.done
	lw.mu.Unlock()
	go tw.run()
	if !isWatchList {
		s.onWatchOpened()
		if owed {
			tw.expire() // a relist was requested while this watch was opening
		}
	}
	return tw, nil
}

// IsWatchListSemanticsUnSupported lets client-go disable WatchList for
// clients that cannot do it (fake clientsets), as
// cache.ToListWatcherWithWatchListSemantics does, and for caches whose
// Options say NoWatchList. client-go asks once, when it builds the
// reflector.
func (lw *listWatcher[T]) IsWatchListSemanticsUnSupported() bool {
	return lw.s.c.opts.NoWatchList || watchlist.DoesClientNotSupportWatchListSemantics(lw.s.c.client)
}

// trackedWatch forwards a main watch's events to the informer, reporting
// each to the shard, and can be ended with a synthetic 410 Expired error
// event. When it ends, it is no longer the listWatcher's current watch.
type trackedWatch[T object] struct {
	inner    watch.Interface
	out      chan watch.Event
	expiry   signal.Flag
	stopCh   chan struct{}
	stopOnce sync.Once
	lw       *listWatcher[T]
	cancel   context.CancelFunc

	// WatchList relists: the initial events, their deadline and the relist
	// they pay when the initial-events-end bookmark arrives.
	initial         bool
	initialEvents   int       // received so far; only run's goroutine
	initialDeadline time.Time // only run's goroutine, after the open
	initialDone     atomic.Bool
	cut             atomic.Bool
	initialTimer    clock.Timer
	progressTimer   clock.Timer
	ticket          relistTicket
}

func (lw *listWatcher[T]) ended(tw *trackedWatch[T]) {
	lw.mu.Lock()
	mine := lw.current == tw
	if mine {
		lw.current = nil
	}
	lw.mu.Unlock()
	if tw.initial && !tw.initialDone.Load() {
		lw.endRelist(tw.ticket, false)
	}
	if mine && (!tw.initial || tw.initialDone.Load()) {
		lw.s.onWatchClosed()
	}
}

func (w *trackedWatch[T]) ResultChan() <-chan watch.Event { return w.out }

// Stop ends the watch and cancels its request, which for HTTP/1.1 closes
// its TCP connection: a stalled connection is never reused.
func (w *trackedWatch[T]) Stop() {
	w.stopOnce.Do(func() {
		close(w.stopCh)
		w.inner.Stop()
		w.cancel()
	})
}

func (w *trackedWatch[T]) expire() { w.expiry.Raise() }

func (w *trackedWatch[T]) run() {
	defer func() {
		if w.initial {
			w.initialTimer.Stop()
			w.progressTimer.Stop()
		}
		w.cancel()
		w.lw.ended(w)
		close(w.out)
	}()
	in := w.inner.ResultChan()
	for {
		select {
		case ev, ok := <-in:
			if !ok {
				return
			}
			w.observe(ev)
			select {
			case w.out <- ev:
			case <-w.expiry.C():
				w.sendExpired()
				return
			case <-w.stopCh:
				return
			}
		case <-w.expiry.C():
			w.sendExpired()
			return
		case <-w.stopCh:
			return
		}
	}
}

// observe reports one event of the main watch to the shard.
func (w *trackedWatch[T]) observe(ev watch.Event) {
	lw, s := w.lw, w.lw.s
	s.c.stats.event(ev.Type)
	s.onEvent()
	if w.initial && !w.initialDone.Load() {
		w.progressTimer.Reset(s.c.opts.StallTimeout)
		// The bound grows with the state: another list deadline for every
		// initialEventsPerDeadline objects received, so a large namespace
		// streaming steadily is never cut (and relisted from scratch)
		// while a trickle still is.
		w.initialEvents++
		if w.initialEvents%initialEventsPerDeadline == 0 {
			w.initialDeadline = w.initialDeadline.Add(s.c.opts.listDeadline())
			w.initialTimer.Reset(w.initialDeadline.Sub(s.c.opts.Clock.Now()))
		}
	}
	switch ev.Type {
	case watch.Bookmark:
		if w.initial && !w.initialDone.Load() && isInitialEventsEnd(ev.Object) {
			// The WatchList relist has delivered its initial state; the
			// watch goes on as the main watch.
			w.initialDone.Store(true)
			lw.endRelist(w.ticket, true)
			s.onRelisted(true)
			lw.mu.Lock()
			owed := lw.wanted > lw.done
			lw.mu.Unlock()
			if owed {
				w.expire()
			}
		}
	case watch.Error:
		err := apierrors.FromObject(ev.Object)
		if isExpired(err) {
			lw.expired()
		}
		s.onListWatchError(err)
	}
}

func isInitialEventsEnd(obj runtime.Object) bool {
	m, err := meta.Accessor(obj)
	return err == nil && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true"
}

func (w *trackedWatch[T]) sendExpired() {
	w.inner.Stop()
	status := &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusGone,
		Reason:  metav1.StatusReasonExpired,
		Message: forcedRelistMessage,
	}
	select {
	case w.out <- watch.Event{Type: watch.Error, Object: status}:
	case <-w.stopCh:
	}
}
