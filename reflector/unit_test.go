package reflector_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubespawn/kubespawn/reflector"
)

func fakePod(ns, name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1",
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "test"}}}}
}

func TestOptionsValidation(t *testing.T) {
	client := fake.NewClientset()
	for name, opts := range map[string]reflector.Options{
		"bad label selector":   {Scope: reflector.Scope{LabelSelector: "a in (b"}},
		"bad field selector":   {Scope: reflector.Scope{FieldSelector: "a=b=c"}},
		"empty namespace":      {Scope: reflector.Scope{Namespaces: []string{"a", ""}}},
		"negative stall":       {StallTimeout: -time.Second},
		"tiny stall":           {StallTimeout: 100 * time.Millisecond},
		"negative failure":     {FailureTimeout: -time.Second},
		"negative handler thr": {HandlerStallThreshold: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := reflector.New(client, reflector.Pods, opts)
			require.ErrorIs(t, err, reflector.ErrInvalidOptions)
		})
	}
	_, err := reflector.New(nil, reflector.Pods, reflector.Options{})
	require.ErrorIs(t, err, reflector.ErrInvalidOptions)
	_, err = reflector.New(client, reflector.Kind[*corev1.Pod]{Name: "incomplete"}, reflector.Options{})
	require.ErrorIs(t, err, reflector.ErrInvalidOptions)
	_, _, err = reflector.Acquire(t.Context(), nil, client, reflector.Pods, reflector.Options{})
	require.ErrorIs(t, err, reflector.ErrInvalidArgument)
}

func TestStripManagedFieldsIsIdempotent(t *testing.T) {
	p := fakePod("ns", "a")
	out, err := reflector.StripManagedFields(p)
	require.NoError(t, err)
	out, err = reflector.StripManagedFields(out)
	require.NoError(t, err)
	require.Nil(t, out.(*corev1.Pod).ManagedFields)
	// Objects without metadata pass through.
	s := "not an object"
	out, err = reflector.StripManagedFields(s)
	require.NoError(t, err)
	require.Equal(t, s, out)
}

func startFake(t *testing.T, client *fake.Clientset, opts reflector.Options) *reflector.Reflector[*corev1.Pod] {
	t.Helper()
	r, err := reflector.New(client, reflector.Pods, opts)
	require.NoError(t, err)
	_, ctx := ktesting.NewTestContext(t)
	require.NoError(t, r.Start(ctx))
	t.Cleanup(r.Stop)
	return r
}

// stepUntil advances the fake clock in steps until cond holds.
func stepUntil(t *testing.T, clk *clocktesting.FakeClock, step time.Duration, maxSteps int, cond func() bool, msg string) {
	t.Helper()
	for range maxSteps {
		if cond() {
			return
		}
		clk.Step(step)
		time.Sleep(10 * time.Millisecond) // let the monitor run; not a timing assumption
	}
	require.Eventually(t, cond, 5*time.Second, 10*time.Millisecond, msg)
}

// TestIdleWatchIsRestarted: a watch that delivers nothing, not even a
// bookmark, for IdleTimeout is dead and gets restarted, and the reflector
// is healthy again afterwards.
func TestIdleWatchIsRestarted(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	client := fake.NewClientset(fakePod("ns", "a"))
	r := startFake(t, client, reflector.Options{
		Scope: reflector.Scope{Namespaces: []string{"ns"}}, Clock: clk,
		StallTimeout: 30 * time.Second, ProbeInterval: -1, AuditInterval: -1, IdleTimeout: 150 * time.Second,
	})
	require.NoError(t, r.WaitForSync(t.Context()))
	stepUntil(t, clk, 10*time.Second, 5, func() bool { return r.Status().Healthy() }, "healthy")

	stepUntil(t, clk, 10*time.Second, 30, func() bool { return r.Status().Relists[reflector.RelistIdle] >= 1 }, "idle watch restarted")
	st := r.Status()
	assert.GreaterOrEqual(t, st.GapsDetected[reflector.GapIdle], 1)
	assert.GreaterOrEqual(t, st.Restarts, 1)
	stepUntil(t, clk, time.Second, 30, func() bool { return r.Status().Healthy() }, "healthy after the restart")
	p, src, err := r.Get(t.Context(), "ns", "a")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Nil(t, p.ManagedFields)
}

// TestFailureTimeoutCallsOnFailure: a reflector that cannot list for
// FailureTimeout reports failed, calls OnFailure, fails liveness, and
// recovers by itself once the server answers.
func TestFailureTimeoutCallsOnFailure(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	client := fake.NewClientset(fakePod("ns", "a"))
	var broken atomic.Bool
	broken.Store(true)
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if broken.Load() {
			return true, nil, apierrors.NewServiceUnavailable("down")
		}
		return false, nil, nil
	})
	failures := make(chan reflector.Status, 4)
	r := startFake(t, client, reflector.Options{
		Scope: reflector.Scope{Namespaces: []string{"ns"}}, Clock: clk,
		StallTimeout: 3 * time.Second, FailureTimeout: time.Minute, ProbeInterval: -1, AuditInterval: -1,
		OnFailure: func(st reflector.Status) { failures <- st },
	})
	require.Eventually(t, func() bool { return strings.Contains(r.Status().Reason, "down") }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, reflector.StateStarting, r.Status().State)
	require.NoError(t, r.Healthz(nil))

	stepUntil(t, clk, time.Second, 90, func() bool { return r.Status().State == reflector.StateFailed }, "failed")
	select {
	case st := <-failures:
		assert.Equal(t, reflector.StateFailed, st.State)
		assert.Contains(t, st.Reason, "down")
	case <-time.After(5 * time.Second):
		t.Fatal("OnFailure not called")
	}
	require.Error(t, r.Healthz(nil))
	require.Error(t, r.Readyz(nil))

	broken.Store(false)
	stepUntil(t, clk, time.Second, 120, func() bool { return r.Status().Healthy() }, "recovered")
	require.NoError(t, r.Healthz(nil))
	require.NoError(t, r.Readyz(nil))
}

func TestMetricsAreExportedAndUnregistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	client := fake.NewClientset(fakePod("ns", "a"), fakePod("ns", "b"))
	r := startFake(t, client, reflector.Options{Name: "pods-ns", Scope: reflector.Scope{Namespaces: []string{"ns"}}, Registerer: reg, ProbeInterval: -1})
	require.NoError(t, r.WaitForSync(t.Context()))
	_, _, err := r.Get(t.Context(), "ns", "missing")
	require.True(t, apierrors.IsNotFound(err))

	require.Eventually(t, func() bool {
		return testutil.ToFloat64(collectorFor(t, reg, "kubespawn_reflector_objects")) == 2
	}, 5*time.Second, 10*time.Millisecond)
	n, err := testutil.GatherAndCount(reg, "kubespawn_reflector_state", "kubespawn_reflector_lookups_total",
		"kubespawn_reflector_relists_total", "kubespawn_reflector_gaps_detected_total", "kubespawn_reflector_lag_seconds")
	require.NoError(t, err)
	assert.Equal(t, 5+1+1+7+1, n)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kubespawn_reflector_lookups_total Get lookups by source (cache, api) and result (found, not_found, error).
# TYPE kubespawn_reflector_lookups_total counter
kubespawn_reflector_lookups_total{reflector="pods-ns",result="not_found",source="api"} 1
`), "kubespawn_reflector_lookups_total"))

	r.Stop()
	n, err = testutil.GatherAndCount(reg)
	require.NoError(t, err)
	assert.Zero(t, n, "metrics unregistered on Stop")
}

// collectorFor gathers one gauge as a collector testutil can read.
func collectorFor(t *testing.T, g prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: name})
			gauge.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return gauge
		}
	}
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name})
}

func TestStoppedReflectorFallsBackToAPI(t *testing.T) {
	client := fake.NewClientset(fakePod("ns", "a"))
	r := startFake(t, client, reflector.Options{Scope: reflector.Scope{Namespaces: []string{"ns"}}, ProbeInterval: -1})
	require.NoError(t, r.WaitForSync(t.Context()))
	r.Stop()
	require.Equal(t, reflector.StateStopped, r.Status().State)
	_, src, err := r.Get(t.Context(), "ns", "a")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceAPI, src)
	require.True(t, errors.Is(r.Start(t.Context()), reflector.ErrStopped))
	require.ErrorIs(t, r.WaitForSync(t.Context()), reflector.ErrStopped)
}

func TestMultiNamespaceScope(t *testing.T) {
	client := fake.NewClientset(fakePod("a", "p1"), fakePod("b", "p2"), fakePod("c", "p3"))
	r := startFake(t, client, reflector.Options{Scope: reflector.Scope{Namespaces: []string{"b", "a"}}, ProbeInterval: -1})
	require.NoError(t, r.WaitForSync(t.Context()))
	require.Eventually(t, func() bool { return r.Status().Healthy() }, 5*time.Second, 10*time.Millisecond)
	pods, src, err := r.List(t.Context(), "", nil)
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Len(t, pods, 2)
	assert.Equal(t, []string{"a", "b"}, r.Scope().Namespaces)
	_, _, err = r.Get(t.Context(), "c", "p3")
	require.ErrorIs(t, err, reflector.ErrOutOfScope)
}
