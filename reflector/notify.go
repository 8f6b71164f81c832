package reflector

import (
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/cache"
)

// subscribers fans cache changes out to Notify channels. Sends never
// block: each channel holds at most one pending signal.
type subscribers struct {
	mu    sync.Mutex
	byKey map[string]map[chan struct{}]struct{}
}

func (s *subscribers) init() { s.byKey = map[string]map[chan struct{}]struct{}{} }

func (s *subscribers) subscribe(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.byKey[key] == nil {
		s.byKey[key] = map[chan struct{}]struct{}{}
	}
	s.byKey[key][ch] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.byKey[key], ch)
			if len(s.byKey[key]) == 0 {
				delete(s.byKey, key)
			}
			s.mu.Unlock()
		})
	}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *subscribers) notifyObject(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.byKey[key] {
		poke(ch)
	}
}

func (s *subscribers) notifyAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, chans := range s.byKey {
		for ch := range chans {
			poke(ch)
		}
	}
}

// HandlerRegistration is a handler added with AddEventHandler.
type HandlerRegistration interface {
	// Remove unregisters the handler. Idempotent.
	Remove()
	// HasSynced reports whether the handler has been given the initial
	// list of every namespace in scope.
	HasSynced() bool
}

// AddEventHandler registers handler on every namespace's informer. client-go
// buffers events per handler, so a slow handler delays only itself; one
// stuck inside a call for longer than HandlerStallThreshold is reported in
// Status.StuckHandlers and counted as a handler_stall gap.
func (r *Reflector[T]) AddEventHandler(handler cache.ResourceEventHandler) (HandlerRegistration, error) {
	h := &timedHandler{inner: handler, clock: r.opts.Clock}
	reg := &registration{remove: func() {}}
	for _, s := range r.shards {
		cr, err := s.informer.AddEventHandler(h)
		if err != nil {
			reg.Remove()
			return nil, err
		}
		reg.regs = append(reg.regs, cr)
		reg.informers = append(reg.informers, s.informer)
	}
	r.handlers.add(h)
	reg.remove = func() { r.handlers.remove(h) }
	return reg, nil
}

type registration struct {
	regs      []cache.ResourceEventHandlerRegistration
	informers []cache.SharedIndexInformer
	remove    func()
	once      sync.Once
}

func (g *registration) Remove() {
	g.once.Do(func() {
		for i, cr := range g.regs {
			_ = g.informers[i].RemoveEventHandler(cr)
		}
		g.remove()
	})
}

func (g *registration) HasSynced() bool {
	for _, cr := range g.regs {
		if !cr.HasSynced() {
			return false
		}
	}
	return true
}

// checkHandlers counts each handler that became stuck since the last check.
func (r *Reflector[T]) checkHandlers() {
	for range r.handlers.newlyStuck(r.opts.Clock.Now(), r.opts.HandlerStallThreshold) {
		r.stats.gap(GapHandlerStall)
		r.logger.Info("Event handler stuck", "threshold", r.opts.HandlerStallThreshold)
	}
}

// timedHandler records when its handler entered the call in progress.
type timedHandler struct {
	inner     cache.ResourceEventHandler
	clock     interface{ Now() time.Time }
	busySince atomic.Int64 // unix nanos; 0 when idle
	reported  atomic.Bool
}

func (h *timedHandler) enter() { h.busySince.Store(h.clock.Now().UnixNano()) }
func (h *timedHandler) leave() { h.busySince.Store(0); h.reported.Store(false) }

func (h *timedHandler) OnAdd(obj any, isInInitialList bool) {
	h.enter()
	defer h.leave()
	h.inner.OnAdd(obj, isInInitialList)
}

func (h *timedHandler) OnUpdate(oldObj, newObj any) {
	h.enter()
	defer h.leave()
	h.inner.OnUpdate(oldObj, newObj)
}

func (h *timedHandler) OnDelete(obj any) {
	h.enter()
	defer h.leave()
	h.inner.OnDelete(obj)
}

func (h *timedHandler) stuck(now time.Time, threshold time.Duration) bool {
	since := h.busySince.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) >= threshold
}

type handlerSet struct {
	mu sync.Mutex
	hs map[*timedHandler]struct{}
}

func (s *handlerSet) add(h *timedHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hs == nil {
		s.hs = map[*timedHandler]struct{}{}
	}
	s.hs[h] = struct{}{}
}

func (s *handlerSet) remove(h *timedHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.hs, h)
}

func (s *handlerSet) stuck(now time.Time, threshold time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for h := range s.hs {
		if h.stuck(now, threshold) {
			n++
		}
	}
	return n
}

// newlyStuck returns the handlers stuck now that were not reported yet.
func (s *handlerSet) newlyStuck(now time.Time, threshold time.Duration) []*timedHandler {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*timedHandler
	for h := range s.hs {
		if h.stuck(now, threshold) && h.reported.CompareAndSwap(false, true) {
			out = append(out, h)
		}
	}
	return out
}
