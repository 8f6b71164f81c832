package reflector

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// shard is the part of a Reflector that watches one namespace (or all
// namespaces): one informer, one main watch, its own probe and audit.
type shard[T Object] struct {
	r         *Reflector[T]
	namespace string
	informer  cache.SharedIndexInformer
	lw        *listWatcher[T]

	probeNow chan struct{}
	auditNow chan struct{}

	mu sync.Mutex
	// problem is why this shard is not healthy ("" when healthy), since
	// problemSince. It is cleared once a main watch has been opened after
	// the problem began and, with probing on, a probe has confirmed the
	// cache fresh after that.
	problem      string
	problemSince time.Time
	// watchUpSince is when the current main watch was opened (for a
	// WatchList relist: when its initial events ended).
	watchUpSince  time.Time
	lastEvent     time.Time
	lastConfirmed time.Time
	lastProbe     time.Time
	serverRV      string
	// probeFailingSince is when probes began to fail or hang.
	probeFailingSince time.Time
	lastAudit         time.Time
	// watchListSince is when a WatchList relist opened; zero once its
	// initial events have ended.
	watchListSince time.Time
}

func (s *shard[T]) now() time.Time { return s.r.opts.Clock.Now() }

// setProblem marks the shard unhealthy; the first reason is kept until it
// is cleared.
func (s *shard[T]) setProblem(reason string) {
	s.mu.Lock()
	fresh := s.problem == ""
	if fresh {
		s.problem = reason
		s.problemSince = s.now()
	}
	s.mu.Unlock()
	if fresh {
		s.r.logger.Info("Reflector degraded", "reflector", s.r.opts.Name, "namespace", s.namespace, "reason", reason)
		s.r.updateState()
	}
}

// maybeRecovered clears the problem once a watch has been (re)opened after
// it began and the cache has been confirmed fresh since.
func (s *shard[T]) maybeRecovered() {
	s.mu.Lock()
	cleared := false
	if s.problem != "" && !s.watchUpSince.IsZero() && !s.watchUpSince.Before(s.problemSince) &&
		(s.r.opts.ProbeInterval < 0 || !s.lastConfirmed.Before(s.watchUpSince)) {
		s.r.logger.Info("Reflector recovered", "reflector", s.r.opts.Name, "namespace", s.namespace, "after", s.now().Sub(s.problemSince).String(), "problem", s.problem)
		s.problem = ""
		s.problemSince = time.Time{}
		cleared = true
	}
	s.mu.Unlock()
	if cleared {
		s.r.updateState()
	}
}

func (s *shard[T]) onListWatchError(err error) {
	kind := GapWatchError
	if isExpired(err) {
		kind = GapExpired
		s.lw.setRelistReason(RelistExpired)
	}
	s.r.stats.gap(kind)
	s.setProblem(fmt.Sprintf("list/watch failed: %v", err))
}

func (s *shard[T]) onWatchOpened(isWatchList bool) {
	now := s.now()
	s.mu.Lock()
	s.lastEvent = now
	if isWatchList {
		s.watchListSince = now
	} else {
		s.watchUpSince = now
	}
	s.mu.Unlock()
	if !isWatchList {
		s.requestProbe()
		s.maybeRecovered()
	}
}

func (s *shard[T]) onWatchEvent(ev watch.Event) {
	s.r.stats.event(ev.Type)
	now := s.now()
	s.mu.Lock()
	s.lastEvent = now
	s.mu.Unlock()
	switch ev.Type {
	case watch.Bookmark:
		if m, err := metaAccessor(ev.Object); err == nil && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
			// The WatchList relist has delivered its initial state.
			s.mu.Lock()
			s.watchUpSince = now
			s.watchListSince = time.Time{}
			s.mu.Unlock()
			s.requestProbe()
			s.maybeRecovered()
		}
	case watch.Error:
		err := apierrors.FromObject(ev.Object)
		if status, ok := ev.Object.(*metav1.Status); ok && status.Message != "" && isForced(status) {
			return // our own forced relist, already counted
		}
		s.onListWatchError(err)
	}
}

func (s *shard[T]) requestProbe() {
	select {
	case s.probeNow <- struct{}{}:
	default:
	}
}

func (s *shard[T]) requestAudit() {
	select {
	case s.auditNow <- struct{}{}:
	default:
	}
}

// restart forces a relist for the given gap kind and relist reason.
func (s *shard[T]) restart(gapKind, relistReason, why string) {
	// The state first: whoever sees the gap counted also sees the problem.
	s.setProblem(why)
	s.r.stats.gap(gapKind)
	s.r.stats.restart()
	s.mu.Lock()
	s.probeFailingSince = time.Time{}
	s.mu.Unlock()
	s.r.logger.Info("Restarting watch", "reflector", s.r.opts.Name, "namespace", s.namespace, "gap", gapKind, "why", why)
	if s.r.closeConns != nil {
		// A stuck TCP connection must not be reused by the next watch.
		s.r.closeConns()
	}
	s.lw.forceRelist(relistReason)
}

// monitor runs the shard's probes, idle check and audits until ctx ends.
func (s *shard[T]) monitor(ctx context.Context) {
	o := s.r.opts
	tick := o.ProbeInterval
	if tick <= 0 {
		tick = o.StallTimeout / 3
	}
	ticker := o.Clock.NewTicker(tick)
	defer ticker.Stop()
	s.mu.Lock()
	s.lastAudit = s.now()
	s.mu.Unlock()
	for {
		probe, audit := false, false
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
			probe = o.ProbeInterval > 0
			s.mu.Lock()
			audit = o.AuditInterval > 0 && s.now().Sub(s.lastAudit) >= o.AuditInterval
			s.mu.Unlock()
		case <-s.probeNow:
			probe = o.ProbeInterval > 0
		case <-s.auditNow:
			audit = true
		}
		s.checkWatchList()
		if !s.informer.HasSynced() {
			s.r.updateState()
			continue
		}
		s.checkIdle()
		if probe {
			s.probe(ctx)
		}
		if audit {
			s.audit(ctx)
		}
		s.r.checkHandlers()
		s.maybeRecovered()
		s.r.updateState()
	}
}

// checkWatchList ends a WatchList relist whose initial events have not
// ended within StallTimeout; client-go then falls back to a plain LIST, so
// a path where watches hang cannot keep the cache from being refilled.
func (s *shard[T]) checkWatchList() {
	s.mu.Lock()
	since := s.watchListSince
	stuck := !since.IsZero() && s.now().Sub(since) >= s.r.opts.StallTimeout
	if stuck {
		s.watchListSince = time.Time{}
	}
	s.mu.Unlock()
	if stuck {
		s.restart(GapStall, RelistStall, "the WatchList relist delivered no end of its initial events within the stall timeout")
	}
}

// checkIdle restarts a main watch that has delivered nothing, not even a
// bookmark, for IdleTimeout.
func (s *shard[T]) checkIdle() {
	if s.r.opts.IdleTimeout <= 0 {
		return
	}
	s.mu.Lock()
	idle := s.now().Sub(s.lastEvent)
	s.mu.Unlock()
	if idle >= s.r.opts.IdleTimeout {
		s.mu.Lock()
		s.lastEvent = s.now() // one restart per idle period
		s.mu.Unlock()
		s.restart(GapIdle, RelistIdle, fmt.Sprintf("no event or bookmark for %s", idle.Round(time.Second)))
	}
}
