package reflector

import (
	"sync"
	"sync/atomic"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// HandlerRegistration is a handler added with AddEventHandler.
type HandlerRegistration interface {
	// Remove unregisters the handler. Idempotent.
	Remove()
	// HasSynced reports whether the handler has been given the initial
	// list of every namespace in scope.
	HasSynced() bool
}

// addEventHandler registers handler on every shard's informer. client-go
// buffers events per handler, so a slow handler delays only itself; one
// stuck inside a call for longer than HandlerStallThreshold is reported in
// Status.StuckHandlers and counted as a handler_stall gap.
func (c *cache[T]) addEventHandler(handler toolscache.ResourceEventHandler) (HandlerRegistration, error) {
	h := &timedHandler{inner: handler, clock: c.opts.Clock}
	reg := &registration{remove: func() {}}
	for _, s := range c.shards {
		cr, err := s.informer.AddEventHandler(h)
		if err != nil {
			reg.Remove()
			return nil, err
		}
		reg.regs = append(reg.regs, cr)
		reg.informers = append(reg.informers, s.informer)
	}
	c.handlers.add(h)
	reg.remove = func() { c.handlers.remove(h) }
	return reg, nil
}

type registration struct {
	regs      []toolscache.ResourceEventHandlerRegistration
	informers []toolscache.SharedIndexInformer
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
func (c *cache[T]) checkHandlers() {
	for range c.handlers.newlyStuck(c.opts.Clock.Now(), c.opts.HandlerStallThreshold) {
		c.stats.gap(GapHandlerStall)
		c.log().Info("Event handler stuck", "threshold", c.opts.HandlerStallThreshold)
	}
}

// timedHandler records when its handler entered the call in progress.
type timedHandler struct {
	inner     toolscache.ResourceEventHandler
	clock     clock.PassiveClock
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
