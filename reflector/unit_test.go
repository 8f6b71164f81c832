package reflector_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/ktesting"

	"github.com/kubespawn/kubespawn/reflector"
)

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	for name, opts := range map[string]reflector.Options{
		"negative stall":               {StallTimeout: -time.Second},
		"stall below the minimum":      {StallTimeout: 2 * time.Second},
		"probe interval defeats bound": {StallTimeout: 10 * time.Second, ProbeInterval: 9 * time.Second},
		"probe interval above stall":   {ProbeInterval: time.Minute},
		"idle below bookmark period":   {IdleTimeout: 30 * time.Second},
		"failure below stall":          {StallTimeout: 20 * time.Second, FailureTimeout: 10 * time.Second},
		"negative failure":             {FailureTimeout: -time.Second},
		"negative canary window":       {CanaryWindow: -time.Second},
		"negative handler threshold":   {HandlerStallThreshold: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := reflector.NewFactoryForClient(client, opts)
			require.ErrorIs(t, err, reflector.ErrInvalidOptions)
		})
	}
	_, err := reflector.NewFactoryForClient(nil, reflector.Options{})
	require.ErrorIs(t, err, reflector.ErrInvalidOptions)
	_, err = reflector.NewFactory(nil, reflector.Options{})
	require.ErrorIs(t, err, reflector.ErrInvalidOptions)

	f, err := reflector.NewFactoryForClient(client, reflector.Options{})
	require.NoError(t, err)
	defer f.Shutdown()
	o := f.Options()
	assert.Equal(t, 10*time.Second, o.StallTimeout)
	assert.Equal(t, 5*time.Second, o.ProbeInterval)
	assert.Equal(t, time.Second, o.CanaryWindow)
	for name, scope := range map[string]reflector.Scope{
		"bad label selector": {LabelSelector: "a in (b"},
		"bad field selector": {FieldSelector: "a=b=c"},
		"empty namespace":    {Namespaces: []string{"a", ""}},
	} {
		_, err := f.Pods(scope)
		require.ErrorIs(t, err, reflector.ErrInvalidOptions, name)
	}
	_, err = f.Events(reflector.Scope{FieldSelector: "involvedObject.kind=Node"})
	require.ErrorIs(t, err, reflector.ErrInvalidOptions)
}

func TestFactorySharesOneCachePerScope(t *testing.T) {
	t.Parallel()
	f, err := reflector.NewFactoryForClient(fake.NewClientset(), reflector.Options{})
	require.NoError(t, err)
	a, err := f.Pods(reflector.Scope{Namespaces: []string{"b", "a"}, LabelSelector: "x=y"})
	require.NoError(t, err)
	b, err := f.Pods(reflector.Scope{Namespaces: []string{"a", "b", "a"}, LabelSelector: " x = y "})
	require.NoError(t, err)
	require.Same(t, a, b, "equal scopes spelled differently share one cache")
	c, err := f.Pods(reflector.Scope{Namespaces: []string{"a"}})
	require.NoError(t, err)
	require.NotSame(t, a, c)
	e1, err := f.Events(reflector.Scope{Namespaces: []string{"a"}})
	require.NoError(t, err)
	e2, err := f.Events(reflector.Scope{Namespaces: []string{"a"}, FieldSelector: "involvedObject.kind=Pod"})
	require.NoError(t, err)
	require.Same(t, e1, e2)
	assert.Equal(t, "involvedObject.kind=Pod", e1.Scope().FieldSelector)
	assert.Len(t, f.Status(), 3)

	f.Shutdown()
	assert.Equal(t, reflector.StateStopped, a.State(), "a factory never started stops too")
	_, err = f.Pods(reflector.Scope{})
	require.ErrorIs(t, err, reflector.ErrStopped)
}

// Rule not_synced: set StallTimeout after the start without the initial
// list (starting until then), failed (the factory's Failed closes) at
// FailureTimeout; cleared, and synced, once the list succeeds, with no
// restart.
func TestRuleNotSynced(t *testing.T) {
	t.Parallel()
	// The list fails from the first request: set before the factory
	// starts (set after, the initial list may already have succeeded).
	h := newHarness(t, reflector.Options{FailureTimeout: 30 * time.Second, AuditInterval: -1},
		func(f *fakeServer) { f.listErr = apierrors.NewServiceUnavailable("etcd is down") })
	h.until(100*time.Millisecond, time.Second, func() bool { return strings.Contains(h.pods.Status().Reason, "etcd is down") }, "list error reported")
	require.Equal(t, reflector.StateStarting, h.state(), "starting, for up to StallTimeout")
	require.NoError(t, h.pods.Healthz(nil))
	require.Error(t, h.pods.Readyz(nil))

	h.untilProblem(time.Second, 15*time.Second, reflector.ProblemNotSynced, "not_synced")
	require.Equal(t, reflector.StateDegraded, h.state())
	h.untilState(time.Second, 30*time.Second, reflector.StateFailed, "failed")
	<-h.f.Failed()
	require.ErrorIs(t, h.f.Err(), reflector.ErrFailed)
	assert.ErrorContains(t, h.f.Err(), "etcd is down")
	require.Error(t, h.pods.Healthz(nil))
	h.step(10*time.Second, time.Second)
	assert.Equal(t, 1, reflector.FailuresForTest(h.f), "one entry into failed, however long it lasts")

	h.srv.set(func(f *fakeServer) { f.listErr = nil })
	h.synced()
	assert.False(t, h.has(reflector.ProblemNotSynced))
	require.NoError(t, h.pods.Healthz(nil))
	assert.Zero(t, h.pods.Status().Restarts, "recovered without a restart")
	select {
	case <-h.f.Failed():
	default:
		t.Fatal("Failed is sticky: it stays closed after the cache recovers")
	}
	assert.ErrorIs(t, h.f.Err(), reflector.ErrFailed, "Err is sticky too")
}

// Rule stall (a probe finds changes the cache lacks): the watch is
// restarted with a plain relist; cleared once the relist's watch is open
// and a probe confirms the cache fresh.
func TestRuleStallFoundByProbe(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1}, "before")

	h.srv.stall()
	h.srv.put("ns", "during", nil)
	start := h.clk.Now()
	h.untilProblem(500*time.Millisecond, 15*time.Second, reflector.ProblemStall, "stall found")
	found := h.clk.Since(start)
	assert.LessOrEqual(t, found, 10*time.Second, "within StallTimeout")
	assert.NotEqual(t, reflector.StateSynced, h.state())
	p, src, err := h.pods.Get(t.Context(), "ns", "during")
	require.NoError(t, err, "reads go to the API server")
	assert.Equal(t, reflector.SourceAPI, src)
	assert.Nil(t, p.ManagedFields, "API answers are slimmed like cached objects")

	h.until(500*time.Millisecond, 15*time.Second, func() bool { return h.state() == reflector.StateSynced && h.cached("during") }, "recovered")
	st := h.pods.Status()
	assert.Equal(t, 1, st.Relists[reflector.RelistStall])
	assert.Equal(t, 1, st.Gaps[reflector.GapStall])
	h.noFailure()
}

// Rule stall (every watch hangs): a probe the server does not close by
// its deadline while the main watch is silent. Cleared once probes work
// again after the relist.
func TestRuleStallWhenProbesHang(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1}, "a")
	h.srv.stall()
	h.srv.set(func(f *fakeServer) { f.probe = probeHang })
	start := h.clk.Now()
	h.untilProblem(500*time.Millisecond, 15*time.Second, reflector.ProblemStall, "stall found")
	assert.LessOrEqual(t, h.clk.Since(start), 10*time.Second)
	assert.Contains(t, h.pods.Status().Reason, "not closed by the server")

	h.srv.set(func(f *fakeServer) { f.probe = probeReplay })
	h.untilState(500*time.Millisecond, 30*time.Second, reflector.StateSynced, "recovered")
	h.noFailure()
}

// Canary: with a long probe interval, a write reported with ExpectWrite
// that the watch misses is found within the canary window plus one probe.
func TestCanaryFindsAMissedWrite(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{StallTimeout: time.Minute, ProbeInterval: 50 * time.Second, AuditInterval: -1}, "a")
	h.stallAfterFirstProbe()
	h.writeExpected("created")
	start := h.clk.Now()
	h.untilProblem(100*time.Millisecond, 10*time.Second, reflector.ProblemStall, "canary found the stall")
	assert.LessOrEqual(t, h.clk.Since(start), time.Second+time.Second, "canary window plus a probe")

	// A write the cache does receive costs nothing but a comparison.
	h.untilState(100*time.Millisecond, 30*time.Second, reflector.StateSynced, "recovered")
	h.srv.set(func(f *fakeServer) { f.stalled = false })
	_, _, probesBefore := h.srv.counts()
	q := h.srv.put("ns", "seen", nil)
	h.until(100*time.Millisecond, time.Second, func() bool { return h.cached("seen") }, "delivered")
	h.pods.ExpectWrite(q)
	h.step(2*time.Second, 100*time.Millisecond)
	_, _, probesAfter := h.srv.counts()
	assert.Equal(t, probesBefore, probesAfter, "a canary the cache met needs no probe")
	// Out of scope: ignored.
	h.pods.ExpectWrite(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "x", ResourceVersion: "999"}})
}

// Canary during a routine probe: a write lands just before a routine probe
// starts; the probe sees the change and waits its grace (2 s) for the
// cache. The write's canary must not wait for that grace on top of its own
// window: found within the canary window.
func TestCanaryIsNotDelayedByARoutineProbe(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{ProbeInterval: 5 * time.Second, AuditInterval: -1}, "a")
	h.step(4500*time.Millisecond, 100*time.Millisecond) // the next routine probe is 0.5 s away
	h.srv.stall()
	h.writeExpected("created")
	start := h.clk.Now()
	h.untilProblem(100*time.Millisecond, 10*time.Second, reflector.ProblemStall, "the stall is found")
	assert.LessOrEqual(t, h.clk.Since(start), 1200*time.Millisecond, "the canary window (1 s), not the routine probe's grace")
}

// A canary is satisfied only by the cache or the server's replay reaching
// its version. Here the server closes the canary's probe normally (its
// timeoutSeconds, before the client's replay timer) without replaying the
// write, as a watch cache lagging behind the write would: that is a stall
// (found about a second after the canary window, not by the idle rule
// minutes later), and the relist is a consistent read (resourceVersion
// ""), past the lagging watch cache.
func TestCanaryReplayEndedWithoutTheWrite(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1}, "a")
	h.stallAfterFirstProbe()
	h.srv.set(func(f *fakeServer) { f.probe = probeEmpty })
	lists, _, _ := h.srv.counts()
	p := h.writeExpected("written")
	start := h.clk.Now()
	h.untilProblem(100*time.Millisecond, 10*time.Second, reflector.ProblemStall, "the canary found the stall")
	assert.LessOrEqual(t, h.clk.Since(start), 2*time.Second, "canary window plus a probe")
	assert.Contains(t, h.reason(reflector.ProblemStall), "ended without resourceVersion "+p.ResourceVersion)
	h.relisted(reflector.RelistStall, 1)
	relists := h.srv.listed(lists)
	require.Len(t, relists, 1)
	assert.Empty(t, relists[0].ResourceVersion, "the relist after a canary miss is a consistent read: %+v", relists[0])
	h.until(100*time.Millisecond, 10*time.Second, func() bool { return h.state() == reflector.StateSynced && h.cached("written") }, "recovered")
}

// A canary whose probe is refused is not satisfied: it is carried by the
// next probe, which finds the write missing.
func TestCanarySurvivesARefusedProbe(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1}, "a")
	h.stallAfterFirstProbe()
	// The canary's probe is refused; the routine probe after it is
	// answered without the write.
	h.srv.set(func(f *fakeServer) { f.probeNext, f.probe = []probeMode{probeRefuse}, probeEmpty })
	p := h.writeExpected("written")
	h.untilProblem(100*time.Millisecond, 10*time.Second, reflector.ProblemStall, "the next probe carried the canary")
	assert.Contains(t, h.reason(reflector.ProblemStall), "ended without resourceVersion "+p.ResourceVersion)
}

// A forced relist (stall, idle, drift) is a consistent read: the
// LIST asks for resourceVersion "", not the last synced version, which
// the API server may serve from the same watch cache that missed the
// changes.
func TestRuleStallRelistIsAConsistentRead(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1}, "a")
	initial := h.srv.listed(0)
	require.NotEmpty(t, initial)
	lists, _, _ := h.srv.counts()
	h.srv.stall()
	h.srv.put("ns", "during", nil)
	h.untilProblem(500*time.Millisecond, 15*time.Second, reflector.ProblemStall, "stall found")
	h.relisted(reflector.RelistStall, 1)
	relists := h.srv.listed(lists)
	require.Len(t, relists, 1)
	assert.Empty(t, relists[0].ResourceVersion, "a consistent read: %+v", relists[0])
	assert.Empty(t, relists[0].ResourceVersionMatch)

	// A relist that is not forced (client-go's, after a real 410) is
	// client-go's own: at the last synced version.
	h.untilState(500*time.Millisecond, 15*time.Second, reflector.StateSynced, "recovered")
	h.srv.set(func(f *fakeServer) { f.stalled = false })
	lists, _, _ = h.srv.counts()
	h.srv.set(func(f *fakeServer) {
		for _, w := range f.mains {
			w.Error(&apierrors.NewResourceExpired("too old").ErrStatus)
		}
	})
	h.relisted(reflector.RelistExpired, 1)
	relists = h.srv.listed(lists)
	require.Len(t, relists, 1)
	assert.NotEmpty(t, relists[0].ResourceVersion, "client-go's relist is unchanged: %+v", relists[0])
}

// A paginated relist (the server returns pages with continue tokens) is
// one relist, counted once with its reason: not one per page, with the
// later pages counted as "error" relists.
func TestPaginatedRelistIsCountedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, reflector.Options{AuditInterval: -1}, func(f *fakeServer) {
		f.pageSize = 2
		for i := range 5 {
			f.put("ns", "p"+strconv.Itoa(i), nil)
		}
	})
	h.synced()
	require.Len(t, h.srv.listed(0), 3, "the initial list came in three pages")
	assert.Equal(t, map[reflector.RelistReason]int{reflector.RelistInitial: 1}, h.pods.Status().Relists)

	lists, _, _ := h.srv.counts()
	h.srv.stall()
	h.srv.put("ns", "during", nil)
	h.untilProblem(500*time.Millisecond, 15*time.Second, reflector.ProblemStall, "stall found")
	h.relisted(reflector.RelistStall, 1)
	h.untilState(500*time.Millisecond, 15*time.Second, reflector.StateSynced, "recovered")
	pages := h.srv.listed(lists)
	require.Len(t, pages, 3, "the stall's relist came in three pages: %+v", pages)
	assert.Empty(t, pages[0].ResourceVersion, "a consistent read")
	assert.NotEmpty(t, pages[1].Continue)
	assert.NotEmpty(t, pages[2].Continue)
	assert.Equal(t, map[reflector.RelistReason]int{reflector.RelistInitial: 1, reflector.RelistStall: 1}, h.pods.Status().Relists)
	assert.True(t, h.cached("during"))
	h.noFailure()
}

// Rule idle: the open main watch delivers nothing for IdleTimeout; it is
// restarted, and the problem clears once the new watch is confirmed.
func TestRuleIdle(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1, IdleTimeout: 150 * time.Second})
	h.step(60*time.Second, time.Second)
	h.srv.bookmark() // a bookmark keeps a watch alive
	h.step(100*time.Second, time.Second)
	assert.False(t, h.has(reflector.ProblemIdle), "a bookmark 100s ago")
	h.untilProblem(time.Second, 60*time.Second, reflector.ProblemIdle, "idle")
	h.until(100*time.Millisecond, time.Minute, func() bool { return h.pods.Status().Relists[reflector.RelistIdle] == 1 }, "idle restart")
	assert.Equal(t, 1, h.pods.Status().Gaps[reflector.GapIdle])
	h.until(500*time.Millisecond, 20*time.Second, func() bool { return h.state() == reflector.StateSynced && !h.has(reflector.ProblemIdle) }, "cleared")
}

// Rule drift: the audit finds a ghost twice; a relist repairs it.
// Without probing, the problem clears once the relist's watch is open.
func TestRuleDrift(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{ProbeInterval: -1, IdleTimeout: -1, AuditInterval: time.Minute}, "ghost")
	h.srv.stall()
	h.srv.remove("ns", "ghost") // the watch misses the deletion
	h.srv.set(func(f *fakeServer) { f.stalled = false })
	h.until(time.Second, 2*time.Minute, func() bool { return h.has(reflector.ProblemDrift) || h.pods.Status().DriftRepaired > 0 }, "drift found")
	h.until(time.Second, 30*time.Second, func() bool { return h.state() == reflector.StateSynced && !h.cached("ghost") }, "repaired")
	st := h.pods.Status()
	assert.Equal(t, 1, st.DriftRepaired)
	assert.Equal(t, 1, st.Relists[reflector.RelistDrift])
}

// Rule probes_failing: probes refused (429), or held past their deadline,
// while the main watch delivers, for three times FailureTimeout:
// degraded all along, never failed, the factory's Failed never closed (probe
// failures are no reason to distrust the cache, let alone to restart the
// process); synced again as soon as a probe succeeds, without a restart.
func TestRuleProbesFailing(t *testing.T) {
	t.Parallel()
	for name, mode := range map[string]probeMode{"refused": probeRefuse, "held": probeHang} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const failure = time.Minute
			h := syncedHarness(t, reflector.Options{AuditInterval: -1, FailureTimeout: failure})
			h.srv.set(func(f *fakeServer) { f.probe = mode })
			start := h.clk.Now()
			for i := 0; h.clk.Since(start) < 3*failure; i++ { // the main watch stays busy
				h.srv.put("ns", "busy", map[string]string{"i": strconv.Itoa(i)})
				h.step(time.Second, 500*time.Millisecond)
				require.NotEqual(t, reflector.StateFailed, h.state(), "%s after the probes began to fail: %+v", h.clk.Since(start), h.pods.Status())
				if h.clk.Since(start) > 20*time.Second { // StallTimeout, and a probe's deadline
					require.True(t, h.has(reflector.ProblemProbesFailing), "status %+v", h.pods.Status())
					require.Equal(t, reflector.StateDegraded, h.state())
				}
			}
			require.NoError(t, h.pods.Healthz(nil), "liveness holds")
			h.srv.set(func(f *fakeServer) { f.probe = probeReplay })
			// Busy still: a held probe in flight would otherwise pass its
			// deadline with the main watch silent, which is a stall.
			h.untilBusy(500*time.Millisecond, 10*time.Second, func() bool { return h.state() == reflector.StateSynced }, "cleared by a probe")
			assert.Zero(t, h.pods.Status().Restarts)
			h.noFailure()
		})
	}
}

// Failing probes hide no real problem: while probes are refused, an idle
// main watch, a hung relist and a stall found by a canary still reach
// failed once they (not the probe failures before them) have lasted
// FailureTimeout, and the factory's Failed closes.
func TestProbesFailingHideNoRealProblem(t *testing.T) {
	t.Parallel()
	const failure = 30 * time.Second
	failed := func(h *harness, p reflector.Problem) {
		t := h.t
		t.Helper()
		h.untilState(time.Second, 5*time.Minute, reflector.StateFailed, "failed")
		var since time.Time
		for _, ps := range h.pods.Status().Problems {
			if ps.Problem == p {
				since = ps.Since
			}
		}
		require.False(t, since.IsZero(), "%s active when failed: %+v", p, h.pods.Status())
		assert.GreaterOrEqual(t, h.clk.Since(since), failure, "failed once %s, not the failing probes, has lasted FailureTimeout", p)
		select {
		case <-h.f.Failed():
			assert.ErrorIs(t, h.f.Err(), reflector.ErrFailed)
		case <-time.After(10 * time.Second):
			t.Fatal("the factory's Failed did not close")
		}
	}
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		h := syncedHarness(t, reflector.Options{AuditInterval: -1, IdleTimeout: time.Minute, FailureTimeout: failure})
		h.srv.set(func(f *fakeServer) { f.probe = probeRefuse })
		h.srv.stall() // the main watch is dead, and every one after it
		h.untilProblem(time.Second, 2*time.Minute, reflector.ProblemIdle, "idle")
		failed(h, reflector.ProblemIdle)
	})
	t.Run("hung relist", func(t *testing.T) {
		t.Parallel()
		h := syncedHarness(t, reflector.Options{AuditInterval: -1, FailureTimeout: failure})
		h.srv.set(func(f *fakeServer) { f.probe = probeRefuse })
		h.step(20*time.Second, time.Second)
		require.True(t, h.has(reflector.ProblemProbesFailing))
		release := make(chan struct{})
		defer close(release)
		h.srv.set(func(f *fakeServer) {
			f.listHang = release
			for _, w := range f.mains {
				w.Error(&apierrors.NewResourceExpired("too old").ErrStatus)
			}
		})
		h.untilProblem(time.Second, 2*time.Minute, reflector.ProblemHungRequest, "hung list cut")
		failed(h, reflector.ProblemListWatchError)
		assert.True(t, h.has(reflector.ProblemHungRequest))
	})
	t.Run("stall found by a canary", func(t *testing.T) {
		t.Parallel()
		h := syncedHarness(t, reflector.Options{AuditInterval: -1, FailureTimeout: failure}, "a")
		h.stallAfterFirstProbe()
		// The canary's probe is answered without the write; every probe
		// after it is refused, so recovery is never confirmed.
		h.srv.set(func(f *fakeServer) { f.probeNext, f.probe = []probeMode{probeEmpty}, probeRefuse })
		h.writeExpected("written")
		h.untilProblem(100*time.Millisecond, 10*time.Second, reflector.ProblemStall, "the canary found the stall")
		failed(h, reflector.ProblemStall)
	})
}

// Rule list_watch_error: a failing main watch request; cleared by the
// next watch opened.
func TestRuleListWatchError(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1})
	h.srv.set(func(f *fakeServer) {
		f.watchErr = apierrors.NewInternalError(errString("authn webhook down"))
		for _, w := range f.mains {
			w.Stop() // the server ends the watch: client-go re-watches
		}
	})
	h.untilProblem(200*time.Millisecond, 10*time.Second, reflector.ProblemListWatchError, "watch error")
	assert.Equal(t, reflector.StateDegraded, h.state())
	h.srv.set(func(f *fakeServer) { f.watchErr = nil })
	h.untilState(200*time.Millisecond, 60*time.Second, reflector.StateSynced, "cleared")
}

// Rule hung_request: a relist whose LIST never answers is cut at its
// deadline; cleared when a LIST succeeds.
func TestRuleHungRequest(t *testing.T) {
	t.Parallel()
	h := syncedHarness(t, reflector.Options{AuditInterval: -1})
	release := make(chan struct{})
	h.srv.set(func(f *fakeServer) {
		f.listHang = release
		for _, w := range f.mains {
			w.Error(&apierrors.NewResourceExpired("too old").ErrStatus) // 410: client-go relists
		}
	})
	h.untilProblem(time.Second, 90*time.Second, reflector.ProblemHungRequest, "hung list cut")
	assert.GreaterOrEqual(t, h.pods.Status().Gaps[reflector.GapHungRequest], 1)
	h.srv.set(func(f *fakeServer) { f.listHang = nil })
	close(release)
	h.untilState(time.Second, 60*time.Second, reflector.StateSynced, "cleared")
}

type errString string

func (e errString) Error() string { return string(e) }

func TestMetricsAreExportedAndUnregistered(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	f, err := reflector.NewFactoryForClient(fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"}},
	), reflector.Options{Registerer: reg, ProbeInterval: -1})
	require.NoError(t, err)
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{"ns"}})
	require.NoError(t, err)
	_, ctx := ktesting.NewTestContext(t)
	f.Start(ctx)
	require.NoError(t, f.WaitForCacheSync(t.Context()))
	_, _, err = pods.Get(t.Context(), "ns", "missing")
	require.True(t, apierrors.IsNotFound(err))

	n, err := testutil.GatherAndCount(reg, "kubespawn_reflector_state", "kubespawn_reflector_problem",
		"kubespawn_reflector_gaps_detected_total", "kubespawn_reflector_objects")
	require.NoError(t, err)
	assert.Equal(t, 5+7+8+1, n)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kubespawn_reflector_lookups_total Get lookups by source (cache, api) and result (found, not_found, error).
# TYPE kubespawn_reflector_lookups_total counter
kubespawn_reflector_lookups_total{reflector="pods ns=ns;labels=;fields=",result="not_found",source="api"} 1
`), "kubespawn_reflector_lookups_total"))
	// A second factory on the same Registerer and scope: the registration
	// error is returned, not logged and ignored.
	f2, err := reflector.NewFactoryForClient(fake.NewClientset(), reflector.Options{Registerer: reg})
	require.NoError(t, err)
	_, err = f2.Pods(reflector.Scope{Namespaces: []string{"ns"}})
	require.Error(t, err)
	f2.Shutdown()

	f.Shutdown()
	n, err = testutil.GatherAndCount(reg)
	require.NoError(t, err)
	assert.Zero(t, n, "metrics unregistered when the factory stops")
}

func TestStoppedCacheFallsBackToAPI(t *testing.T) {
	t.Parallel()
	f, err := reflector.NewFactoryForClient(fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}), reflector.Options{ProbeInterval: -1})
	require.NoError(t, err)
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{"ns"}})
	require.NoError(t, err)
	f.Start(t.Context())
	require.NoError(t, pods.WaitForSync(t.Context()))
	f.Shutdown()
	require.Equal(t, reflector.StateStopped, pods.State())
	require.Error(t, f.Healthz(nil))
	_, src, err := pods.Get(t.Context(), "ns", "a")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceAPI, src)
	require.ErrorIs(t, pods.WaitForSync(t.Context()), reflector.ErrStopped)
	f.Start(t.Context()) // a no-op after Shutdown
	assert.Equal(t, reflector.StateStopped, pods.State())
}

func TestMultiNamespaceScope(t *testing.T) {
	t.Parallel()
	f, err := reflector.NewFactoryForClient(fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p1"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "p2"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "c", Name: "p3"}},
	), reflector.Options{ProbeInterval: -1})
	require.NoError(t, err)
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{"b", "a"}})
	require.NoError(t, err)
	f.Start(t.Context())
	defer f.Shutdown()
	require.NoError(t, f.WaitForCacheSync(t.Context()))
	list, src, err := pods.List(t.Context(), "", nil)
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Len(t, list, 2)
	assert.Equal(t, []string{"a", "b"}, pods.Scope().Namespaces)
	_, _, err = pods.Get(t.Context(), "c", "p3")
	require.ErrorIs(t, err, reflector.ErrOutOfScope)
	_, _, err = pods.Get(t.Context(), "a", "")
	require.ErrorIs(t, err, reflector.ErrInvalidArgument)
}

var _ = watch.Added

// TestFactoryLeavesRateLimitingToTheServer: without a limit in the
// config, the factory's client has none (client-go's default 5 QPS would
// throttle a class starting at once); a configured limit is kept.
func TestFactoryLeavesRateLimitingToTheServer(t *testing.T) {
	t.Parallel()
	f, err := reflector.NewFactory(&rest.Config{Host: "https://127.0.0.1:1"}, reflector.Options{})
	require.NoError(t, err)
	defer f.Shutdown()
	rc := f.Client().CoreV1().RESTClient().(*rest.RESTClient)
	assert.Nil(t, rc.GetRateLimiter(), "no client-side rate limiter")
	g, err := reflector.NewFactory(&rest.Config{Host: "https://127.0.0.1:1", QPS: 7, Burst: 9}, reflector.Options{})
	require.NoError(t, err)
	defer g.Shutdown()
	assert.NotNil(t, g.Client().CoreV1().RESTClient().(*rest.RESTClient).GetRateLimiter())
}
