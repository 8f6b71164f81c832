package spawner

import (
	"context"
	"errors"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

func names(pods []SweptPod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Key)
	}
	sort.Strings(out)
	return out
}

func TestSweep(t *testing.T) {
	now := time.Date(2018, 7, 8, 18, 30, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }
	pod := func(key string, mutate func(*corev1.Pod)) *corev1.Pod {
		return existing(key, func(p *corev1.Pod) {
			p.CreationTimestamp = *at(6 * time.Hour)
			if mutate != nil {
				mutate(p)
			}
		})
	}
	objs := []runtime.Object{
		pod("old-running", func(p *corev1.Pod) { p.Status.StartTime = at(5 * time.Hour) }),
		pod("young-running", func(p *corev1.Pod) { p.CreationTimestamp = *at(time.Hour); p.Status.StartTime = at(59 * time.Minute) }),
		// Never scheduled: no startTime; the creation time counts.
		pod("old-unscheduled", nil),
		pod("young-unscheduled", func(p *corev1.Pod) { p.CreationTimestamp = *at(time.Minute) }),
		pod("other-instance", func(p *corev1.Pod) { p.Labels[LabelInstance] = "hub-2" }),
		pod("not-ours", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "x"} }),
		pod("old-terminating", func(p *corev1.Pod) { p.DeletionTimestamp = at(time.Second); p.Finalizers = []string{"x"} }),
	}
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *Options) { o.Clock = clk; o.Registerer = reg }, objs...)
	ctx := t.Context()

	// Dry run by default: report, delete nothing.
	res, err := f.sp.Sweep(ctx, SweepPolicy{Namespace: testNS, MaxAge: 4 * time.Hour})
	require.NoError(t, err)
	assert.True(t, res.DryRun)
	assert.Equal(t, []string{"old-running", "old-unscheduled"}, names(res.Selected))
	assert.Empty(t, res.Deleted)
	assert.Equal(t, []string{"old-terminating"}, names(res.Skipped))
	assert.Equal(t, 5, res.Scanned, "own instance only")
	assert.NotContains(t, verbs(f.client), "delete pods")

	// All instances.
	res, err = f.sp.Sweep(ctx, SweepPolicy{Namespace: testNS, MaxAge: 4 * time.Hour, AllInstances: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"old-running", "old-unscheduled", "other-instance"}, names(res.Selected))

	// Name filter.
	res, err = f.sp.Sweep(ctx, SweepPolicy{Namespace: testNS, MaxAge: 4 * time.Hour, NameContains: "unscheduled"})
	require.NoError(t, err)
	assert.Equal(t, []string{"old-unscheduled"}, names(res.Selected))

	// Orphans: Select decides, young pods (maybe starting) are protected,
	// errors leave the pod alone.
	known := map[string]bool{"young-running": true}
	isKnown := func(_ context.Context, p *corev1.Pod) (bool, error) {
		if p.Annotations[AnnotationKey] == "old-unscheduled" {
			return false, errors.New("database down")
		}
		return known[p.Annotations[AnnotationKey]], nil
	}
	res, err = f.sp.Sweep(ctx, SweepPolicy{Namespace: testNS, Select: orphansOf(isKnown), MinAge: 10 * time.Minute})
	require.NoError(t, err)
	assert.Equal(t, []string{"old-running"}, names(res.Selected))
	assert.Equal(t, SweepReasonOrphan, res.Selected[0].Reason)
	assert.Equal(t, []string{"old-terminating", "old-unscheduled"}, names(res.Skipped))

	// Delete: exactly the selected pods, each with its UID as precondition.
	res, err = f.sp.Sweep(ctx, SweepPolicy{Namespace: testNS, MaxAge: 4 * time.Hour, Delete: true})
	require.NoError(t, err)
	assert.False(t, res.DryRun)
	assert.Equal(t, []string{"old-running", "old-unscheduled"}, names(res.Deleted))
	for _, sp := range res.Deleted {
		assert.False(t, f.podExists(t, sp.Name))
	}
	for _, a := range f.client.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			require.NotNil(t, d.GetDeleteOptions().Preconditions)
		}
	}
	assert.True(t, f.podExists(t, existing("young-running", nil).Name))
	assert.True(t, f.podExists(t, existing("other-instance", nil).Name))
	assert.Equal(t, 2.0, testutil.ToFloat64(f.sp.metrics.swept.WithLabelValues(string(SweepReasonMaxAge))))

	// Nothing left to match: fine.
	res, err = f.sp.Sweep(ctx, SweepPolicy{Namespace: testNS, MaxAge: 4 * time.Hour, Delete: true})
	require.NoError(t, err)
	assert.Empty(t, res.Selected)

	// An empty namespace is fine too.
	res, err = f.sp.Sweep(ctx, SweepPolicy{Namespace: "empty", MaxAge: time.Hour, Delete: true})
	require.NoError(t, err)
	assert.Zero(t, res.Scanned)
}

func TestSweepSkipsPodsInUse(t *testing.T) {
	now := time.Now()
	clk := clocktesting.NewFakeClock(now)
	old := existing("alice", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-time.Hour)) })
	f := newFixture(t, func(o *Options) { o.Clock = clk }, old)
	unlock, err := f.sp.locks.lock(t.Context(), lockKey(testNS, old.Name), nil)
	require.NoError(t, err)
	res, err := f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: time.Minute, Delete: true})
	unlock()
	require.NoError(t, err)
	assert.Empty(t, res.Selected)
	assert.Equal(t, SweepReason("busy"), res.Skipped[0].Reason)
	assert.True(t, f.podExists(t, old.Name))
}

func TestSweepPolicyValidation(t *testing.T) {
	f := newFixture(t, nil)
	for name, p := range map[string]SweepPolicy{
		"no namespace":             {MaxAge: time.Hour},
		"no criterion":             {Namespace: testNS},
		"negative age":             {Namespace: testNS, MaxAge: -time.Hour},
		"negative page":            {Namespace: testNS, MaxAge: time.Hour, PageSize: -1},
		"negative request timeout": {Namespace: testNS, MaxAge: time.Hour, RequestTimeout: -time.Second},
	} {
		_, err := f.sp.Sweep(t.Context(), p)
		assert.ErrorIs(t, err, ErrInvalidArgument, name)
	}
	err := f.sp.RunSweeper(t.Context(), SweeperOptions{Policy: SweepPolicy{Namespace: testNS}})
	assert.ErrorIs(t, err, ErrInvalidArgument)
	err = f.sp.RunSweeper(t.Context(), SweeperOptions{Policy: SweepPolicy{Namespace: testNS, MaxAge: time.Hour}, LeaseDuration: time.Second, RenewDeadline: 2 * time.Second})
	assert.ErrorIs(t, err, ErrInvalidArgument, "leader election timings")
	assert.Empty(t, verbs(f.client))
}

// The headline race: the sweep lists an old pod the service does not know;
// before the delete, a Start adopts it and the service records it. The
// re-check under the name lock sees it known and leaves it alone.
func TestSweepDoesNotDeletePodJustAdopted(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now().Add(2 * time.Hour))
	running := existing("alice", setReady)
	f := newFixture(t, func(o *Options) { o.Clock = clk; o.AdoptRunning = true }, running)
	var known atomic.Bool
	var adopted *Result
	isKnown := func(ctx context.Context, p *corev1.Pod) (bool, error) {
		if adopted == nil {
			// Between the sweeper's list and its delete, a Start adopts the
			// pod, and the service records it.
			res, err := f.sp.Start(ctx, Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
			require.NoError(t, err)
			adopted = res
			defer known.Store(true)
			return false, nil // the answer at list time
		}
		return known.Load(), nil
	}
	res, err := f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, Select: orphansOf(isKnown), Delete: true})
	require.NoError(t, err)
	require.NotNil(t, adopted)
	assert.True(t, adopted.Adopted)
	assert.Empty(t, res.Deleted)
	assert.Empty(t, res.Selected)
	require.Len(t, res.Skipped, 1)
	assert.Equal(t, SweepReason("no_longer_selected"), res.Skipped[0].Reason, "known now: no longer selected")
	assert.True(t, f.podExists(t, running.Name), "the adopted pod survives")
	assert.NotContains(t, verbs(f.client), "delete pods")
}

// Everything the list said is re-checked under the lock before the delete.
func TestSweepRechecksBeforeDelete(t *testing.T) {
	now := time.Now()
	for name, c := range map[string]struct {
		// change runs between the list and the delete.
		change func(t *testing.T, f *fixture, pod *corev1.Pod)
		reason SweepReason
	}{
		"locked by a start": {func(t *testing.T, f *fixture, pod *corev1.Pod) {
			unlock, err := f.sp.locks.lock(t.Context(), lockKey(pod.Namespace, pod.Name), nil)
			require.NoError(t, err)
			// Released at the end of the test: a sweeper that waited for it
			// would still be waiting.
			t.Cleanup(unlock)
		}, "busy"},
		"replaced": {func(t *testing.T, f *fixture, pod *corev1.Pod) {
			gvr := corev1.SchemeGroupVersion.WithResource("pods")
			require.NoError(t, f.client.Tracker().Delete(gvr, pod.Namespace, pod.Name))
			successor := pod.DeepCopy()
			successor.UID = randUID()
			successor.CreationTimestamp = metav1.NewTime(now)
			successor.Status.StartTime = nil
			require.NoError(t, f.client.Tracker().Add(successor))
		}, "replaced"},
		"terminating": {func(t *testing.T, f *fixture, pod *corev1.Pod) {
			gvr := corev1.SchemeGroupVersion.WithResource("pods")
			p := pod.DeepCopy()
			p.DeletionTimestamp = &metav1.Time{Time: now}
			p.Finalizers = []string{"x"}
			require.NoError(t, f.client.Tracker().Update(gvr, p, p.Namespace))
		}, "terminating"},
		"gone": {func(t *testing.T, f *fixture, pod *corev1.Pod) {
			gvr := corev1.SchemeGroupVersion.WithResource("pods")
			require.NoError(t, f.client.Tracker().Delete(gvr, pod.Namespace, pod.Name))
		}, "gone"},
	} {
		t.Run(name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(now)
			old := existing("alice", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-time.Hour)) })
			f := newFixture(t, func(o *Options) { o.Clock = clk }, old)
			calls := 0
			isKnown := func(_ context.Context, p *corev1.Pod) (bool, error) {
				if calls++; calls == 1 {
					c.change(t, f, p)
				}
				return false, nil
			}
			done := make(chan struct{})
			var res SweepResult
			var err error
			go func() {
				defer close(done)
				res, err = f.sp.Sweep(context.Background(), SweepPolicy{Namespace: testNS, Select: orphansOf(isKnown), MinAge: time.Minute, Delete: true})
			}()
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Fatal("the sweep waited")
			}
			require.NoError(t, err)
			assert.Empty(t, res.Deleted)
			assert.Empty(t, res.Selected)
			require.Len(t, res.Skipped, 1)
			assert.Equal(t, c.reason, res.Skipped[0].Reason)
			assert.NotContains(t, verbs(f.client), "delete pods")
		})
	}
}

// MinAge defaults to the longest start the spawner allows: a pod
// younger than that may belong to a start in progress.
func TestSweepMinAgeDefault(t *testing.T) {
	now := time.Now()
	clk := clocktesting.NewFakeClock(now)
	young := existing("young", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-30 * time.Minute)) })
	old := existing("old", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-2 * time.Hour)) })
	f := newFixture(t, func(o *Options) { o.Clock = clk; o.MaxStartTimeout = time.Hour }, young, old)
	p, err := f.sp.sweepDefaults(SweepPolicy{Namespace: testNS, Select: orphansOf(func(context.Context, *corev1.Pod) (bool, error) { return false, nil })})
	require.NoError(t, err)
	assert.Equal(t, time.Hour, p.MinAge)
	res, err := f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, Select: orphansOf(func(context.Context, *corev1.Pod) (bool, error) { return false, nil })})
	require.NoError(t, err)
	assert.Equal(t, []string{"old"}, names(res.Selected), "a pod younger than MaxStartTimeout is protected")

	g := newFixture(t, nil) // MaxStartTimeout unset: StartTimeout (10s here)
	p, err = g.sp.sweepDefaults(SweepPolicy{Namespace: testNS, MaxAge: time.Hour})
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, p.MinAge)
}

// TestSweepAgesOnTheServerClock: a local clock three hours ahead of the
// API server's makes a one-hour-old pod look four hours old; the sweep
// measures on the server's clock and leaves it alone. A sweep that cannot
// read the server's clock fails rather than guess.
func TestSweepAgesOnTheServerClock(t *testing.T) {
	hourOld := existing("hour-old", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour)) })
	ahead := clocktesting.NewFakeClock(time.Now().Add(3 * time.Hour))
	f := newFixture(t, func(o *Options) { o.Clock = ahead }, hourOld)
	f.client.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &authenticationv1.SelfSubjectReview{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.Now()}}, nil // the server's real time
	})
	res, err := f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: 2 * time.Hour, Delete: true})
	require.NoError(t, err)
	assert.Empty(t, res.Selected, "one hour old on the server's clock")
	res, err = f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: 30 * time.Minute})
	require.NoError(t, err)
	require.Len(t, res.Selected, 1)
	assert.InDelta(t, time.Hour.Seconds(), res.Selected[0].Age.Seconds(), 5, "the age is the server's")
	name := res.Selected[0].Name

	f.client.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(authenticationv1.Resource("selfsubjectreviews"), "", errors.New("no"))
	})
	_, err = f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: 30 * time.Minute, Delete: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the API server's clock")
	assert.True(t, f.podExists(t, name))
}

// TestSweepWithoutAPodCache: a Spawner given no pod cache (a one-shot
// CLI) sweeps with live reads only.
func TestSweepWithoutAPodCache(t *testing.T) {
	old := existing("old", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(time.Now().Add(-2 * time.Hour)) })
	f := newFixture(t, func(o *Options) { o.Pods = nil }, old)
	res, err := f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: time.Hour, Delete: true})
	require.NoError(t, err)
	require.Len(t, res.Deleted, 1)
	assert.False(t, f.podExists(t, res.Deleted[0].Name))
}

// TestTwoServicesInOneNamespaceNeverSweepEachOther: each instance's
// sweeper considers only its own pods, and elects its leader on a Lease of
// its own, even when both take every pod they do not know for an orphan.
func TestTwoServicesInOneNamespaceNeverSweepEachOther(t *testing.T) {
	old := func(key, instance string) *corev1.Pod {
		return existing(key, func(p *corev1.Pod) {
			p.Labels[LabelInstance] = instance
			p.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
		})
	}
	f := newFixture(t, func(o *Options) { o.Instance = "hub-a" }, old("ann", "hub-a"), old("ben", "hub-b"))
	b, err := New(Options{Client: f.client, Pods: f.cache, Instance: "hub-b"})
	require.NoError(t, err)
	everyone := func(context.Context, *corev1.Pod) (SweepReason, error) { return SweepReasonOrphan, nil }
	for _, sp := range []*Spawner{f.sp, b} {
		res, err := sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, Select: everyone, MinAge: time.Minute})
		require.NoError(t, err)
		require.Len(t, res.Selected, 1)
		assert.Contains(t, res.Selected[0].Key, map[string]string{"hub-a": "ann", "hub-b": "ben"}[sp.opts.Instance])
	}
	// Their sweepers' Leases differ.
	for _, sp := range []*Spawner{f.sp, b} {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- sp.RunSweeper(ctx, SweeperOptions{Policy: SweepPolicy{Namespace: testNS, Select: everyone}, Interval: time.Hour, RetryPeriod: 10 * time.Millisecond})
		}()
		lease := "kubespawn-sweeper-" + sp.opts.Instance
		require.Eventually(t, func() bool {
			_, err := f.client.CoordinationV1().Leases(testNS).Get(t.Context(), lease, metav1.GetOptions{})
			return err == nil
		}, 10*time.Second, 10*time.Millisecond, "lease %s", lease)
		cancel()
		require.NoError(t, <-done)
	}
}

// TestSweepAgesIgnoreTheNodesClock: status.startTime is written by the
// kubelet with its node's clock. A node clock an hour behind makes a pod
// created seconds ago look an hour old by its startTime; ages come from the
// server's clock only (creationTimestamp), so neither MaxAge nor Select
// past MinAge takes the pod of a start in progress.
func TestSweepAgesIgnoreTheNodesClock(t *testing.T) {
	now := time.Now()
	clk := clocktesting.NewFakeClock(now)
	fresh := existing("fresh", func(p *corev1.Pod) {
		setReady(p)
		p.CreationTimestamp = metav1.NewTime(now.Add(-10 * time.Second))
		p.Status.StartTime = &metav1.Time{Time: now.Add(-time.Hour)} // the node's clock
	})
	f := newFixture(t, func(o *Options) { o.Clock = clk }, fresh)
	everyone := func(context.Context, *corev1.Pod) (SweepReason, error) { return SweepReasonOrphan, nil }
	res, err := f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, Select: everyone, MinAge: time.Minute, Delete: true})
	require.NoError(t, err)
	assert.Empty(t, res.Selected, "10 seconds old: MinAge protects it")
	res, err = f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: 30 * time.Minute, Delete: true})
	require.NoError(t, err)
	assert.Empty(t, res.Selected, "10 seconds old: not older than MaxAge")
	assert.True(t, f.podExists(t, fresh.Name))
	assert.NotContains(t, verbs(f.client), "delete pods")

	res, err = f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: time.Second})
	require.NoError(t, err)
	require.Len(t, res.Selected, 1)
	assert.InDelta(t, 10, res.Selected[0].Age.Seconds(), 1, "the age runs from the creation, on the server's clock")
}
