package reflector

import (
	"context"
	"fmt"
	"time"

	"k8s.io/utils/clock"
)

// result is what a worker (probe or audit) found, sent to the monitor.
type result interface{ isResult() }

// monitor is the shard's health loop. It never waits on the network: it
// waits only for its timer, a wake-up or a worker's result, and starts
// probes and audits as goroutines with their own deadlines. Every
// transition of the shard's health is one of the rules in evaluate; the
// package documentation has the table.
func (s *shard[T]) monitor(ctx context.Context) {
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := s.now()
		s.evaluate(ctx, now)
		next := s.nextWake(now)
		if timer != nil {
			timer.Stop()
		}
		timer = s.c.opts.Clock.NewTimer(max(next.Sub(now), time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case <-s.wake.C():
		case r := <-s.results:
			s.apply(ctx, r)
		}
	}
}

// evaluate applies the rules to the facts: it sets and clears problems,
// takes the actions they call for (restarts), starts the workers that are
// due, and updates the state.
func (s *shard[T]) evaluate(ctx context.Context, now time.Time) {
	o := s.c.opts
	synced := s.informer.HasSynced()
	s.mu.Lock()
	startedAt := s.c.startedAt

	// not_synced: set StallTimeout after the start without the initial
	// list; cleared when the initial list has been stored.
	if synced {
		s.clearLocked(ProblemNotSynced)
	} else if now.Sub(startedAt) >= o.StallTimeout {
		why := fmt.Sprintf("the initial list has not been stored %s after the start", now.Sub(startedAt).Round(time.Second))
		if s.listErr != nil {
			why += ": " + s.listErr.Error()
		}
		s.setLocked(ProblemNotSynced, startedAt, why)
	}

	// list_watch_error: set by a failed main list or watch; cleared by the
	// next main watch opened (onWatchOpened drops listErr).
	if s.listErr != nil {
		s.setLocked(ProblemListWatchError, s.listErrSince, "list/watch failed: "+s.listErr.Error())
	} else {
		s.clearLocked(ProblemListWatchError)
	}

	// hung_request: set when a request was cut at its deadline; cleared
	// when a request of the same kind has succeeded since.
	for kind, at := range s.hung {
		var okSince time.Time
		switch kind {
		case requestList, requestWatchList:
			okSince = s.relistedAt
		case requestWatchOpen:
			okSince = s.watchOpenedAt
		}
		if okSince.After(at) {
			delete(s.hung, kind)
		}
	}
	if len(s.hung) == 0 {
		s.clearLocked(ProblemHungRequest)
	} else {
		earliest, what := time.Time{}, ""
		for kind, at := range s.hung {
			if earliest.IsZero() || at.Before(earliest) {
				earliest, what = at, string(kind)
			}
		}
		if _, ok := s.problems[ProblemHungRequest]; !ok {
			s.setLocked(ProblemHungRequest, earliest, fmt.Sprintf("a %s request passed its deadline and was cut", what))
		}
	}

	// stall, idle, drift are cleared once the relist they forced is done,
	// a main watch has been opened since, and (with probing) a probe that
	// began after that watch opened has confirmed the cache fresh.
	for _, p := range []Problem{ProblemStall, ProblemIdle, ProblemDrift} {
		if cond, ok := s.problems[p]; ok && s.recoveredLocked(cond.since) {
			s.clearLocked(p)
		}
	}

	// probes_failing: set when probes have failed for StallTimeout;
	// cleared by a probe that succeeds (apply drops probeFailingSince).
	if !s.probeFailingSince.IsZero() && now.Sub(s.probeFailingSince) >= o.StallTimeout {
		s.setLocked(ProblemProbesFailing, s.probeFailingSince, fmt.Sprintf("probes failing for %s: %v", now.Sub(s.probeFailingSince).Round(time.Second), s.probeFailure))
	} else if s.probeFailingSince.IsZero() {
		s.clearLocked(ProblemProbesFailing)
	}

	// idle: set when the open main watch delivered nothing, not even a
	// bookmark, for IdleTimeout; the watch is restarted.
	idle := synced && s.watchOpen && o.IdleTimeout > 0 && now.Sub(later(s.lastEvent, s.watchOpenedAt)) >= o.IdleTimeout
	var idleFor time.Duration
	if idle {
		idleFor = now.Sub(later(s.lastEvent, s.watchOpenedAt))
		s.watchOpen = false // one restart per idle period
	}
	// The state with its problems, in one step: no reader sees a problem
	// without the state it makes.
	changed := s.computeStateLocked(now, synced)
	s.mu.Unlock()
	if changed {
		s.c.updateState()
	}
	if idle {
		s.restart(now, ProblemIdle, GapIdle, RelistIdle, fmt.Sprintf("no event or bookmark for %s", idleFor.Round(time.Second)))
	}

	if synced {
		s.scheduleWorkers(ctx, now)
	}
	if s == s.c.shards[0] && now.Sub(s.lastHandlerCheck) >= handlerCheckPeriod(o) {
		s.lastHandlerCheck = now
		s.c.checkHandlers()
	}
	s.computeState(now, synced)
}

// recoveredLocked: the relist forced at since is done, a watch opened
// after it, and it has been confirmed fresh.
func (s *shard[T]) recoveredLocked(since time.Time) bool {
	if !s.watchOpen || s.watchOpenedAt.Before(since) || s.relistedAt.Before(since) {
		return false
	}
	return s.c.opts.ProbeInterval < 0 || !s.lastConfirmed.Before(s.watchOpenedAt)
}

// restartPendingLocked: a forced relist has not completed, or its watch
// has not been opened yet.
func (s *shard[T]) restartPendingLocked() bool {
	for _, p := range []Problem{ProblemStall, ProblemIdle, ProblemDrift} {
		if cond, ok := s.problems[p]; ok && (s.relistedAt.Before(cond.since) || !s.watchOpen || s.watchOpenedAt.Before(cond.since)) {
			return true
		}
	}
	return false
}

func (s *shard[T]) setLocked(p Problem, since time.Time, reason string) {
	cond, ok := s.problems[p]
	if !ok {
		cond.since = since
		s.c.logger.Info("Reflector problem", "namespace", s.namespace, "problem", p, "reason", reason)
	}
	if !ok || cond.reason != reason {
		s.problemsGen++
	}
	cond.reason = reason
	s.problems[p] = cond
}

func (s *shard[T]) clearLocked(p Problem) {
	if cond, ok := s.problems[p]; ok {
		delete(s.problems, p)
		s.problemsGen++
		s.c.logger.Info("Reflector problem cleared", "namespace", s.namespace, "problem", p, "after", s.now().Sub(cond.since).Round(time.Millisecond).String())
	}
}

// restart records p (a stall, an idle watch or drift) and forces a relist
// with a plain LIST; the cache's connections are closed first, so a stuck
// TCP connection is never reused.
func (s *shard[T]) restart(now time.Time, p Problem, gap Gap, reason RelistReason, why string) {
	s.mu.Lock()
	s.setLocked(p, now, why)
	s.probeFailingSince = time.Time{}
	changed := s.computeStateLocked(now, true)
	s.mu.Unlock()
	// The state first: whoever sees the gap counted sees the cache degraded.
	if changed {
		s.c.updateState()
	}
	s.c.stats.gap(gap)
	s.c.stats.restart()
	s.c.log().Info("Restarting watch", "namespace", s.namespace, "gap", gap, "why", why)
	if s.c.closeConns != nil {
		s.c.closeConns()
	}
	// Always a plain LIST: whatever made the watch miss changes may hang a
	// WatchList through the same path; and a consistent read, which no
	// lagging watch cache answers.
	s.lw.forceRelist(reason, true, true)
}

// computeState derives the shard's state from its problems. Before the
// initial list the shard is starting, whatever the errors, until
// not_synced is set StallTimeout after the start; not_synced alone then
// decides. After it: synced without problems, else degraded, failed once
// the oldest problem other than probes_failing has lasted FailureTimeout.
// Failing probes alone never fail the cache, however long they last: the
// main watch may be delivering all along, and what they cannot prove is
// left to the rules that can (idle, the audit, canaries, hung requests).
func (s *shard[T]) computeState(now time.Time, synced bool) {
	s.mu.Lock()
	changed := s.computeStateLocked(now, synced)
	s.mu.Unlock()
	if changed {
		s.c.updateState()
	}
}

// computeStateLocked is computeState under s.mu; it reports whether the
// cache must publish again (updateState): the state, its reason or the
// problems changed since the last publication.
func (s *shard[T]) computeStateLocked(now time.Time, synced bool) bool {
	state, reason := StateSynced, ""
	var earliest, failing time.Time
	failReason := ""
	for _, p := range problems {
		cond, ok := s.problems[p]
		if !ok || !(synced || p == ProblemNotSynced) {
			continue
		}
		if earliest.IsZero() || cond.since.Before(earliest) {
			earliest, reason = cond.since, cond.reason
		}
		if p != ProblemProbesFailing && (failing.IsZero() || cond.since.Before(failing)) {
			failing, failReason = cond.since, cond.reason
		}
	}
	switch {
	case !synced && earliest.IsZero():
		state, reason = StateStarting, "waiting for the initial list"
		if s.listErr != nil {
			reason += ": " + s.listErr.Error()
		}
	case earliest.IsZero():
	case !failing.IsZero() && now.Sub(failing) >= s.c.opts.FailureTimeout:
		state = StateFailed
		reason = fmt.Sprintf("not recovered for %s: %s", now.Sub(failing).Round(time.Second), failReason)
	default:
		state = StateDegraded
	}
	changed := state != s.state || reason != s.reason || s.problemsGen != s.publishedGen
	s.state, s.reason = state, reason
	s.publishedGen = s.problemsGen
	return changed
}

// nextWake is when the monitor must look again without news: the earliest
// future deadline its rules depend on. Work that is due but blocked (a
// worker running, a relist pending) is woken by that worker's result or by
// the watch's callbacks instead.
func (s *shard[T]) nextWake(now time.Time) time.Time {
	o := s.c.opts
	next := now.Add(o.StallTimeout)
	at := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	synced := s.informer.HasSynced()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !synced {
		at(s.c.startedAt.Add(o.StallTimeout))
	}
	for p, cond := range s.problems {
		if p != ProblemProbesFailing { // never fails (computeState)
			at(cond.since.Add(o.FailureTimeout))
		}
	}
	if !s.probeFailingSince.IsZero() {
		at(s.probeFailingSince.Add(o.StallTimeout))
	}
	if s.watchOpen && o.IdleTimeout > 0 {
		at(later(s.lastEvent, s.watchOpenedAt).Add(o.IdleTimeout))
	}
	if synced && !s.restartPendingLocked() {
		if !s.probeRunning {
			for _, cn := range s.canaries {
				if !cn.probed {
					at(cn.due)
				}
			}
			if o.ProbeInterval > 0 {
				at(s.lastProbeStart.Add(o.ProbeInterval))
			}
		}
		if o.AuditInterval > 0 && !s.auditRunning {
			at(s.lastAuditStart.Add(o.AuditInterval))
		}
	}
	if s == s.c.shards[0] {
		at(s.lastHandlerCheck.Add(handlerCheckPeriod(o)))
	}
	return next
}

func handlerCheckPeriod(o Options) time.Duration {
	return max(o.HandlerStallThreshold/2, 100*time.Millisecond)
}

// scheduleWorkers starts the probe and the audit when they are due. A
// probe is not started while a forced relist is still to complete (it
// would only find the same gap again); it is started at once after the
// relist's watch opens, to confirm recovery.
func (s *shard[T]) scheduleWorkers(ctx context.Context, now time.Time) {
	o := s.c.opts
	s.mu.Lock()
	if s.lastAuditStart.IsZero() {
		s.lastAuditStart = now // the first audit is one interval after the sync
	}
	cacheRV := s.informer.LastSyncResourceVersion()
	// A canary is done only once the cache has reached its version. One
	// past due calls for a probe at once, the first time; until the cache
	// reaches it, every later probe expects its version too (a probe that
	// was refused, or whose replay lacked it, has not satisfied it).
	pending := s.restartPendingLocked()
	expectRV, canaryDue := "", false
	kept := s.canaries[:0]
	for _, cn := range s.canaries {
		if rvAtLeast(cacheRV, cn.rv) {
			s.c.stats.canary("met")
			continue
		}
		if !now.Before(cn.due) && !s.probeRunning && !pending {
			expectRV = maxRV(expectRV, cn.rv)
			if !cn.probed {
				cn.probed, canaryDue = true, true
				s.c.stats.canary("probed")
			}
		}
		kept = append(kept, cn)
	}
	clear(s.canaries[len(kept):])
	s.canaries = kept
	// After a forced relist, confirm recovery at once.
	recovering := false
	for _, p := range []Problem{ProblemStall, ProblemIdle, ProblemDrift} {
		if _, ok := s.problems[p]; ok && !pending && s.lastProbeStart.Before(s.watchOpenedAt) {
			recovering = true
		}
	}
	probe := o.ProbeInterval > 0 && !s.probeRunning && !pending &&
		(canaryDue || s.probeWanted || recovering || !now.Before(s.lastProbeStart.Add(o.ProbeInterval)))
	if probe {
		s.probeRunning, s.probeWanted, s.lastProbeStart = true, false, now
	}
	audit := o.AuditInterval > 0 && !s.auditRunning && !pending &&
		(s.auditWanted || !now.Before(s.lastAuditStart.Add(o.AuditInterval)))
	if audit {
		s.auditRunning, s.auditWanted, s.lastAuditStart = true, false, now
	}
	s.mu.Unlock()
	if probe {
		s.c.goFor(ctx, func(ctx context.Context) { s.send(ctx, s.runProbe(ctx, now, cacheRV, expectRV)) })
	}
	if audit {
		s.c.goFor(ctx, func(ctx context.Context) { s.send(ctx, s.runAudit(ctx, now)) })
	}
}

// send hands a worker's result to the monitor, or drops it at shutdown.
func (s *shard[T]) send(ctx context.Context, r result) {
	select {
	case s.results <- r:
	case <-ctx.Done():
	}
}

// apply turns a worker's result into facts and problems.
func (s *shard[T]) apply(ctx context.Context, r result) {
	now := s.now()
	switch r := r.(type) {
	case probeResult:
		s.mu.Lock()
		s.probeRunning = false
		s.mu.Unlock()
		s.applyProbe(now, r)
	case auditResult:
		s.mu.Lock()
		s.auditRunning = false
		s.mu.Unlock()
		s.applyAudit(now, r)
	}
}

// applyProbe: a probe that confirmed freshness clears probes_failing; one
// that proved a stall restarts the watch; failures accumulate toward
// probes_failing.
func (s *shard[T]) applyProbe(now time.Time, r probeResult) {
	s.c.stats.probe(r.outcome.String())
	s.mu.Lock()
	outdated := false
	for _, p := range []Problem{ProblemStall, ProblemIdle, ProblemDrift} {
		if cond, ok := s.problems[p]; ok && cond.since.After(r.started) {
			outdated = true // the watch was restarted after this probe began
		}
	}
	s.mu.Unlock()
	if outdated && r.outcome != probeOK {
		return
	}
	switch r.outcome {
	case probeOK:
		s.mu.Lock()
		s.lastProbe, s.lastConfirmed = now, r.started
		s.probeFailingSince, s.probeFailure = time.Time{}, nil
		s.serverRV = maxRV(s.serverRV, r.newest)
		s.mu.Unlock()
	case probeExpired:
		// The cache's resourceVersion is older than the server's watch
		// window: compare lists instead.
		s.mu.Lock()
		s.lastProbe = now
		s.probeFailingSince, s.probeFailure = time.Time{}, nil
		s.auditWanted = true
		s.mu.Unlock()
	case probeStale:
		s.mu.Lock()
		s.lastProbe = now
		s.serverRV = maxRV(s.serverRV, r.newest)
		s.mu.Unlock()
		s.restart(now, ProblemStall, GapStall, RelistStall, r.err.Error())
	case probeHung:
		s.mu.Lock()
		s.lastProbe = now
		mainSilent := s.lastEvent.Before(r.started)
		s.mu.Unlock()
		if mainSilent {
			s.restart(now, ProblemStall, GapStall, RelistStall, fmt.Sprintf("%v, and the main watch has been silent since the probe began %s ago: the watch path is stalled", r.err, now.Sub(r.started).Round(time.Millisecond)))
			return
		}
		s.probeFailed(now, r)
	case probeFailed:
		s.probeFailed(now, r)
	}
}

func (s *shard[T]) probeFailed(now time.Time, r probeResult) {
	s.mu.Lock()
	s.lastProbe = now
	if s.probeFailingSince.IsZero() {
		s.probeFailingSince = r.started
	}
	s.probeFailure = r.err
	s.mu.Unlock()
	s.c.log().V(2).Info("Probe failed", "namespace", s.namespace, "err", r.err)
}

// applyAudit: a clean audit confirms the cache; confirmed differences
// restart it (drift); a failed audit is counted and retried at the next
// interval.
func (s *shard[T]) applyAudit(now time.Time, r auditResult) {
	switch {
	case r.err != nil:
		s.c.stats.audit("error")
		s.c.log().V(2).Info("Audit failed", "namespace", s.namespace, "err", r.err)
	case r.confirmed > 0:
		s.c.stats.audit("drift")
		s.c.stats.drift(r.confirmed)
		s.restart(now, ProblemDrift, GapDrift, RelistDrift, fmt.Sprintf("audit: %d object(s) differ from the server", r.confirmed))
	default:
		s.c.stats.audit("clean")
		s.mu.Lock()
		s.lastConfirmed = later(s.lastConfirmed, r.started)
		s.mu.Unlock()
	}
}
