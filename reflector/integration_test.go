//go:build integration

package reflector_test

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/reflector"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// env is one test's namespace, a direct admin client (the rest of the
// world) and a factory whose caches go through a fault proxy.
type env struct {
	t      *testing.T
	ns     string
	direct kubernetes.Interface
	proxy  *faultproxy.Proxy
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ns := cluster.Namespace(t, "refl")
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return &env{t: t, ns: ns, direct: cluster.Client(t), proxy: p}
}

func (e *env) pod(name string, labels map[string]string) *corev1.Pod {
	e.t.Helper()
	p, err := e.direct.CoreV1().Pods(e.ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/app:1"}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return p
}

// factory builds a factory through the proxy (NewFactory: its own
// transports, with connection rotation) and starts it when the test's
// cleanups are not yet running.
func (e *env) factory(opts reflector.Options) *reflector.Factory {
	e.t.Helper()
	f, err := reflector.NewFactory(e.proxy.ClientConfig(cluster.Config()), opts)
	require.NoError(e.t, err)
	e.t.Cleanup(f.Shutdown)
	return f
}

// start returns a started pod cache for the test's namespace.
func (e *env) start(opts reflector.Options, scope reflector.Scope) *reflector.PodCache {
	e.t.Helper()
	_, pods := e.startFactory(opts, scope)
	return pods
}

// startFactory is start that returns the factory too.
func (e *env) startFactory(opts reflector.Options, scope reflector.Scope) (*reflector.Factory, *reflector.PodCache) {
	e.t.Helper()
	f := e.factory(opts)
	if len(scope.Namespaces) == 0 {
		scope.Namespaces = []string{e.ns}
	}
	pods, err := f.Pods(scope)
	require.NoError(e.t, err)
	_, ctx := ktesting.NewTestContext(e.t)
	f.Start(ctx)
	return f, pods
}

func waitSynced(t *testing.T, pods *reflector.PodCache) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, pods.WaitForSync(ctx))
	require.Equal(t, reflector.StateSynced, pods.State(), "WaitForSync returns once the state says synced: %+v", pods.Status())
}

// startSynced is start followed by waitSynced: most tests break a cache
// only once it is healthy.
func (e *env) startSynced(opts reflector.Options, scope reflector.Scope) *reflector.PodCache {
	e.t.Helper()
	pods := e.start(opts, scope)
	waitSynced(e.t, pods)
	return pods
}

// waitState waits up to within for the cache to reach state want.
func waitState(t *testing.T, pods *reflector.PodCache, want reflector.State, within time.Duration, msgAndArgs ...any) {
	t.Helper()
	require.Eventually(t, func() bool { return pods.State() == want }, within, 20*time.Millisecond, msgAndArgs...)
}

// waitHealedWith waits up to within for the cache to be synced and to
// hold ns/name: healed, with the change it had missed.
func waitHealedWith(t *testing.T, pods *reflector.PodCache, ns, name string, within time.Duration, msgAndArgs ...any) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, ok := cached(pods, ns, name)
		return ok && pods.State() == reflector.StateSynced
	}, within, 20*time.Millisecond, msgAndArgs...)
}

// waitGap waits up to within for a gap of kind to be counted and returns
// the Status that first shows it: the cache may heal within milliseconds
// of it, so a second Status could already say synced.
func waitGap(t *testing.T, pods *reflector.PodCache, kind reflector.Gap, within time.Duration, msg string) reflector.Status {
	t.Helper()
	var st reflector.Status
	require.Eventually(t, func() bool { st = pods.Status(); return st.Gaps[kind] > 0 }, within, 10*time.Millisecond, msg)
	return st
}

func cached(pods *reflector.PodCache, ns, name string) (*corev1.Pod, bool) {
	list, src, err := pods.List(context.Background(), ns, nil)
	if err != nil || src != reflector.SourceCache {
		return nil, false
	}
	for _, p := range list {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

func has(pods *reflector.PodCache, p reflector.Problem) bool {
	for _, ps := range pods.Status().Problems {
		if ps.Problem == p {
			return true
		}
	}
	return false
}

var podWatches = faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"}
var podLists = faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods"}

func TestGetFromCacheAndNotFoundOnlyFromAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("a", nil)
	pods := e.startSynced(reflector.Options{}, reflector.Scope{})

	p, src, err := pods.Get(t.Context(), e.ns, "a")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Equal(t, "a", p.Name)
	assert.Nil(t, p.ManagedFields, "managedFields are stripped")

	_, src, err = pods.Get(t.Context(), e.ns, "missing")
	require.True(t, apierrors.IsNotFound(err), "absence is the API server's NotFound, got %v", err)
	assert.Equal(t, reflector.SourceAPI, src)

	_, _, err = pods.Get(t.Context(), "other-namespace", "a")
	require.ErrorIs(t, err, reflector.ErrOutOfScope)
	_, _, err = pods.Get(t.Context(), e.ns, "")
	require.ErrorIs(t, err, reflector.ErrInvalidArgument)
}

func TestNotSyncedCacheNeverAnswersFromCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("exists", nil)
	// The cache can neither list nor watch: it never syncs.
	e.proxy.InjectStatus(podLists, 503, 1_000_000, 0)
	e.proxy.InjectStatus(podWatches, 503, 1_000_000, 0)
	pods := e.start(reflector.Options{StallTimeout: 5 * time.Second}, reflector.Scope{})

	st := pods.Status()
	require.Equal(t, reflector.StateStarting, st.State)
	require.False(t, st.Synced)
	require.Error(t, pods.Readyz(nil))
	require.NoError(t, pods.Healthz(nil), "starting is not a liveness failure")

	p, src, err := pods.Get(t.Context(), e.ns, "exists")
	require.NoError(t, err, "an unsynced cache asks the API server")
	assert.Equal(t, reflector.SourceAPI, src)
	assert.Equal(t, "exists", p.Name)
	_, src, err = pods.Get(t.Context(), e.ns, "absent")
	require.True(t, apierrors.IsNotFound(err))
	assert.Equal(t, reflector.SourceAPI, src)

	// The API fails lists too: an error, never the empty cache as "no pods".
	list, _, err := pods.List(t.Context(), e.ns, nil)
	require.Error(t, err)
	require.Nil(t, list)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, pods.WaitForSync(ctx), reflector.ErrNotSynced)

	e.proxy.ClearFaults()
	waitSynced(t, pods)
	list, src, err = pods.List(t.Context(), e.ns, nil)
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Len(t, list, 1)
}

// TestHungInitialListIsBounded: the initial list never answers (its
// response is held). The cache is degraded after StallTimeout, failed with
// the factory's Failed closing after FailureTimeout, fails liveness; once the
// response is released it syncs and is healthy with no restart.
func TestHungInitialListIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("a", nil)
	e.proxy.Stall(podLists)
	e.proxy.Stall(podWatches) // the WatchList initial sync too
	const stall, failure = 4 * time.Second, 8 * time.Second
	f, pods := e.startFactory(reflector.Options{StallTimeout: stall, FailureTimeout: failure}, reflector.Scope{})

	waitState(t, pods, reflector.StateDegraded, stall+5*time.Second, "degraded: %+v", pods.Status())
	assert.True(t, has(pods, reflector.ProblemNotSynced))
	waitState(t, pods, reflector.StateFailed, failure+5*time.Second, "failed: %+v", pods.Status())
	select {
	case <-f.Failed():
	case <-time.After(5 * time.Second):
		t.Fatalf("the factory's Failed did not close: %+v", pods.Status())
	}
	require.ErrorIs(t, f.Err(), reflector.ErrFailed)
	require.Error(t, pods.Healthz(nil))

	e.proxy.UnstallAll()
	waitState(t, pods, reflector.StateSynced, 30*time.Second, "synced once released: %+v", pods.Status())
	require.NoError(t, pods.Healthz(nil))
	_, ok := cached(pods, e.ns, "a")
	assert.True(t, ok)
	assert.Equal(t, 1, reflector.FailuresForTest(f), "one entry into failed")
	assert.ErrorIs(t, f.Err(), reflector.ErrFailed, "the failure signal is sticky")
	assert.Zero(t, pods.Status().Restarts)
}

// TestSilentStallIsDetectedAndRepaired is the 2018 failure: the watch
// stays open and silent while the server moves on. Default options.
func TestSilentStallIsDetectedAndRepaired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("keep", nil)
	e.pod("modify", nil)
	e.pod("remove", nil)
	pods := e.startSynced(reflector.Options{}, reflector.Scope{})
	stallTimeout := 10 * time.Second // the default

	stalledAt := time.Now()
	e.proxy.Stall(podWatches)
	e.pod("created", nil)
	m, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), "modify", metav1.GetOptions{})
	require.NoError(t, err)
	m.Labels = map[string]string{"changed": "yes"}
	_, err = e.direct.CoreV1().Pods(e.ns).Update(t.Context(), m, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "remove", metav1.DeleteOptions{}))

	st := waitGap(t, pods, reflector.GapStall, 2*stallTimeout, "stall detected")
	detectedAfter := st.StateSince.Sub(stalledAt)
	t.Logf("silent stall of every watch detected %s after it began with default options; %s", detectedAfter, st.Reason)
	require.LessOrEqual(t, detectedAfter, stallTimeout, "the documented bound")
	require.NotEqual(t, reflector.StateSynced, st.State)
	require.Error(t, pods.Readyz(nil))

	p, src, err := pods.Get(t.Context(), e.ns, "created")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceAPI, src)
	assert.Equal(t, "created", p.Name)
	_, src, err = pods.Get(t.Context(), e.ns, "remove")
	require.True(t, apierrors.IsNotFound(err))
	assert.Equal(t, reflector.SourceAPI, src)

	// While watches still hang, the relist is a plain LIST (not a
	// WatchList through the hanging path).
	e.relistAfter(stalledAt, "plain LIST after the stall")

	e.proxy.UnstallAll()
	waitState(t, pods, reflector.StateSynced, 30*time.Second, "recovered")
	_, ok := cached(pods, e.ns, "created")
	assert.True(t, ok, "pod created during the stall is cached")
	_, ok = cached(pods, e.ns, "remove")
	assert.False(t, ok, "pod deleted during the stall is gone from the cache")
	got, ok := cached(pods, e.ns, "modify")
	require.True(t, ok)
	assert.Equal(t, "yes", got.Labels["changed"])
	assert.GreaterOrEqual(t, pods.Status().Relists[reflector.RelistStall], 1)
}

// TestDeadStreamIsFoundByProbe: only the open watch stream dies (its TCP
// connection silently dead); new requests are fine. The probe sees
// changes the watch has not delivered and the cache heals by itself.
func TestDeadStreamIsFoundByProbe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("gone", nil)
	pods := e.startSynced(reflector.Options{}, reflector.Scope{})

	stalledAt := e.stallMainWatch()
	e.pod("new", nil)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "gone", metav1.DeleteOptions{}))

	st := waitGap(t, pods, reflector.GapStall, 20*time.Second, "stall detected")
	t.Logf("dead stream detected after %s: %s", st.StateSince.Sub(stalledAt), st.Reason)
	require.Contains(t, st.Reason, "the server holds changes")
	require.LessOrEqual(t, st.StateSince.Sub(stalledAt), 10*time.Second)

	require.Eventually(t, func() bool {
		_, hasNew := cached(pods, e.ns, "new")
		_, hasGone := cached(pods, e.ns, "gone")
		return pods.State() == reflector.StateSynced && hasNew && !hasGone
	}, 30*time.Second, 50*time.Millisecond, "healed by itself: %+v", pods.Status())
	assert.Equal(t, 1, pods.Status().Relists[reflector.RelistStall])
}

// TestForcedRelistIsAConsistentRead: the relist forced by a stall asks
// for resourceVersion "" (a consistent read), not for the cache's last
// version, which the API server answers from the same watch cache that
// may be what lags; client-go's own relists are left as they are.
func TestForcedRelistIsAConsistentRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("a", nil)
	pods := e.startSynced(reflector.Options{}, reflector.Scope{})
	stalledAt := e.stallMainWatch()
	e.pod("new", nil)
	waitGap(t, pods, reflector.GapStall, 20*time.Second, "stall detected")
	relist := e.relistAfter(stalledAt, "the stall's relist")
	q, err := url.ParseQuery(relist.RawQuery)
	require.NoError(t, err)
	assert.Empty(t, q.Get("resourceVersion"), "a consistent read: %s", relist.RawQuery)
	assert.Empty(t, q.Get("resourceVersionMatch"), relist.RawQuery)
	waitHealedWith(t, pods, e.ns, "new", 30*time.Second, "healed: %+v", pods.Status())
}

// TestCanaryFindsAStallAfterAWrite: with probes far apart, a write
// reported with ExpectWrite that the stalled watch misses is found within
// the canary window plus one probe.
func TestCanaryFindsAStallAfterAWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("before", nil)
	pods := e.startSynced(reflector.Options{StallTimeout: time.Minute, ProbeInterval: 50 * time.Second}, reflector.Scope{})
	require.Eventually(t, func() bool { return !pods.Status().LastProbeTime.IsZero() }, 10*time.Second, 10*time.Millisecond, "the first probe is done")

	e.proxy.Stall(podWatches)
	written := time.Now()
	p := e.pod("written", nil)
	pods.ExpectWrite(p)
	st := waitGap(t, pods, reflector.GapStall, 10*time.Second, "canary found the stall")
	after := st.StateSince.Sub(written)
	t.Logf("stall of every watch found %s after the write", after)
	// canary window 1s + a probe that finds the replay lacking the write
	// 1s after its headers; 1s of slack for a loaded machine.
	assert.LessOrEqual(t, after, 3*time.Second)
	e.proxy.UnstallAll()
	waitHealedWith(t, pods, e.ns, "written", 30*time.Second)
}

// TestHungAuditBlindsNothing: the audit's LIST response is held; then
// every watch stalls and a pod is created. The probes still run: the
// cache is not healthy within 2×StallTimeout and reads go to the API.
func TestHungAuditBlindsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("a", nil)
	const stall = 5 * time.Second
	pods := e.startSynced(reflector.Options{StallTimeout: stall, AuditInterval: time.Second}, reflector.Scope{})
	e.proxy.Stall(podLists)
	require.Eventually(t, func() bool { return e.proxy.StalledStreams(podLists) > 0 }, 10*time.Second, 10*time.Millisecond, "the audit's list is held")

	stalledAt := time.Now()
	e.proxy.Stall(podWatches)
	e.pod("created", nil)
	require.Eventually(t, func() bool { return pods.State() != reflector.StateSynced }, 2*stall, 10*time.Millisecond, "not healthy within 2×StallTimeout")
	t.Logf("found %s after the stall while the audit hung", time.Since(stalledAt))
	p, src, err := pods.Get(t.Context(), e.ns, "created")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceAPI, src)
	assert.Equal(t, "created", p.Name)
	e.proxy.UnstallAll()
	waitState(t, pods, reflector.StateSynced, 60*time.Second, "recovered: %+v", pods.Status())
}

// TestRefusedProbesNeverFail: new watch requests are answered 429 (with
// Retry-After) and then 500 for 2×StallTimeout each while the main watch
// is healthy and busy. The cache may degrade, returns to synced once
// probes work, and the factory's Failed never closes.
func TestRefusedProbesNeverFail(t *testing.T) {
	t.Parallel()
	for _, code := range []int{429, 500} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.pod("a", nil)
			const stall = 5 * time.Second
			f, pods := e.startFactory(reflector.Options{StallTimeout: stall, FailureTimeout: 15 * time.Second}, reflector.Scope{})
			waitSynced(t, pods)
			e.waitMainWatch()

			retryAfter := time.Duration(0)
			if code == 429 {
				retryAfter = time.Second
			}
			e.proxy.InjectStatus(podWatches, code, 1_000_000, retryAfter)
			sawDegraded := false
			deadline := time.Now().Add(2 * stall)
			for i := 0; time.Now().Before(deadline); i++ {
				e.pod("busy-"+strconv.Itoa(i), nil) // the main watch delivers all along
				sawDegraded = sawDegraded || pods.State() != reflector.StateSynced
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("degraded during the refusals: %v (%+v)", sawDegraded, pods.Status().Problems)
			e.proxy.ClearFaults()
			waitState(t, pods, reflector.StateSynced, 3*stall, "synced once probes work: %+v", pods.Status())
			assert.NoError(t, f.Err(), "the factory's Failed never closed")
			assert.Zero(t, pods.Status().Relists[reflector.RelistStall], "no restart: the cache was never wrong")
			_, ok := cached(pods, e.ns, "busy-3")
			assert.True(t, ok)
		})
	}
}

// TestIdleHealthyWatchIsNeverFlagged runs an idle scope while plenty
// changes outside it.
func TestIdleHealthyWatchIsNeverFlagged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("idle", map[string]string{"app": "mine"})
	pods := e.startSynced(reflector.Options{}, reflector.Scope{LabelSelector: "app=mine"})
	changes, cancel := pods.NotifyState()
	defer cancel()

	deadline := time.Now().Add(30 * time.Second) // six probes
	for i := 0; time.Now().Before(deadline); i++ {
		e.pod("other-"+strconv.Itoa(i), map[string]string{"app": "theirs"})
		time.Sleep(300 * time.Millisecond)
	}
	select {
	case <-changes:
		t.Fatalf("state changed while idle and healthy: %+v", pods.Status())
	default:
	}
	st := pods.Status()
	assert.Equal(t, reflector.StateSynced, st.State)
	assert.Zero(t, st.Restarts)
	for kind, n := range st.Gaps {
		assert.Zero(t, n, "gap %s", kind)
	}
	assert.NotZero(t, st.LastProbeTime, "probes ran")
	assert.Equal(t, map[reflector.RelistReason]int{reflector.RelistInitial: 1}, st.Relists)
}

// TestWatchGone410Relists: every watch is answered with a 410 Expired in
// its stream, as a real apiserver does when the resourceVersion was
// compacted away: counted, relisted, healthy once watches work.
func TestWatchGone410Relists(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("a", nil)
	pods := e.startSynced(reflector.Options{}, reflector.Scope{})
	e.proxy.InjectWatchError(podWatches, 410, 1_000_000)
	e.proxy.ResetConnections()
	e.pod("after", nil)
	waitGap(t, pods, reflector.GapExpired, 30*time.Second, "410 counted")
	e.proxy.ClearFaults()
	var st reflector.Status
	var ok bool
	require.Eventually(t, func() bool {
		st = pods.Status()
		_, ok = cached(pods, e.ns, "after")
		return st.Relists[reflector.RelistExpired] > 0 && st.Healthy() && ok
	}, 30*time.Second, 50*time.Millisecond, "relisted, healthy: %+v, after cached: %v", &st, &ok)
}

func TestAPIServerRestartRecovers(t *testing.T) {
	// Serial: it restarts the package's one apiserver under every other test.
	e := newEnv(t)
	e.pod("before", nil)
	f, err := reflector.NewFactory(cluster.Config(), reflector.Options{}) // direct: the apiserver itself goes away
	require.NoError(t, err)
	t.Cleanup(f.Shutdown)
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{e.ns}})
	require.NoError(t, err)
	f.Start(context.Background())
	waitSynced(t, pods)

	require.NoError(t, cluster.RestartAPIServer(t.Context()))
	e.pod("after", nil)
	waitHealedWith(t, pods, e.ns, "after", 60*time.Second, "recovered after restart: %+v", pods.Status())
	_, ok := cached(pods, e.ns, "before")
	assert.True(t, ok)
}

// TestAuditRepairsDrift turns probing off so that only the audit can
// notice what a stalled watch missed.
func TestAuditRepairsDrift(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("ghost", nil)
	pods := e.startSynced(reflector.Options{ProbeInterval: -1, IdleTimeout: -1, AuditInterval: time.Second}, reflector.Scope{})

	e.proxy.Stall(podWatches)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "ghost", metav1.DeleteOptions{}))
	e.pod("newcomer", nil)
	// The audit's list is not stalled (only watches are); it finds the
	// ghost and the missing pod, and a relist (plain LIST) repairs the
	// cache while the watch path is still stalled.
	require.Eventually(t, func() bool {
		st := pods.Status()
		return st.DriftRepaired >= 2 && st.Relists[reflector.RelistDrift] > 0
	}, 30*time.Second, 50*time.Millisecond, "drift found: %+v", pods.Status())
	e.proxy.UnstallAll()
	require.Eventually(t, func() bool {
		_, ghost := cached(pods, e.ns, "ghost")
		_, newcomer := cached(pods, e.ns, "newcomer")
		return pods.State() == reflector.StateSynced && !ghost && newcomer
	}, 30*time.Second, 50*time.Millisecond, "healthy cache equals the server: %+v", pods.Status())
}

// mainWatch matches the long-running pod watches in ns: client-go asks
// for 5-10 minutes; probe watches for 1 second.
func mainWatch(ns string) faultproxy.Match {
	return faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods", Namespace: ns, MinTimeout: time.Minute}
}

// mainWatches counts the main pod watches open through the proxy in ns.
func mainWatches(p *faultproxy.Proxy, ns string) int { return p.OpenWatches(mainWatch(ns)) }

// waitMainWatch waits until the cache's one main watch is open through
// the proxy: before that there is nothing to stall or count.
func (e *env) waitMainWatch() {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return mainWatches(e.proxy, e.ns) == 1 }, 10*time.Second, 20*time.Millisecond)
}

// stallMainWatch silences the open main watch only, as a silently dead
// TCP connection does (new requests, probes among them, are fine; a probe
// open at this instant must not stall too), and returns when it did.
func (e *env) stallMainWatch() time.Time {
	e.t.Helper()
	e.waitMainWatch()
	stalledAt := time.Now()
	require.Equal(e.t, 1, e.proxy.StallOpen(mainWatch(e.ns)))
	return stalledAt
}

// relistAfter waits for a successful plain LIST of the test's pods
// started after since (the relist a stall forces) and returns its record.
func (e *env) relistAfter(since time.Time, msg string) faultproxy.Record {
	e.t.Helper()
	var relist faultproxy.Record
	require.Eventually(e.t, func() bool {
		for _, rec := range e.proxy.Records() {
			if rec.Verb == faultproxy.VerbList && rec.Resource == "pods" && rec.Namespace == e.ns && rec.Start.After(since) && rec.Status == 200 {
				relist = rec
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, msg)
	return relist
}

func TestFactorySharesOneWatchPerScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.factory(reflector.Options{})
	scope := reflector.Scope{Namespaces: []string{e.ns}, LabelSelector: "app=x"}
	a, err := f.Pods(scope)
	require.NoError(t, err)
	f.Start(context.Background())
	b, err := f.Pods(reflector.Scope{Namespaces: []string{e.ns, e.ns}, LabelSelector: " app = x "}) // after Start: shared too
	require.NoError(t, err)
	require.Same(t, a, b)
	waitSynced(t, a)
	e.waitMainWatch()
	time.Sleep(time.Second)
	require.Equal(t, 1, mainWatches(e.proxy, e.ns), "two users, one watch")

	f.Shutdown()
	require.Equal(t, reflector.StateStopped, a.State())
	require.Eventually(t, func() bool { return mainWatches(e.proxy, e.ns) == 0 }, 10*time.Second, 20*time.Millisecond, "Shutdown stops the watch")
}

func TestStuckHandlerBlocksNeitherOthersNorCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pods := e.startSynced(reflector.Options{HandlerStallThreshold: 500 * time.Millisecond}, reflector.Scope{})

	block := make(chan struct{})
	defer close(block)
	stuck, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { <-block }})
	require.NoError(t, err)
	defer stuck.Remove()
	var seen atomic.Int64
	healthy, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { seen.Add(1) }})
	require.NoError(t, err)
	defer healthy.Remove()
	require.Eventually(t, healthy.HasSynced, 10*time.Second, 10*time.Millisecond)

	for i := range 5 {
		e.pod("p"+strconv.Itoa(i), nil)
	}
	require.Eventually(t, func() bool { return seen.Load() == 5 }, 10*time.Second, 20*time.Millisecond, "the healthy handler gets every event")
	require.Eventually(t, func() bool { _, ok := cached(pods, e.ns, "p4"); return ok }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		st := pods.Status()
		return st.StuckHandlers == 1 && st.Gaps[reflector.GapHandlerStall] == 1
	}, 10*time.Second, 50*time.Millisecond, "stuck handler reported: %+v", pods.Status())
}

func TestNotifySignalsChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pods := e.startSynced(reflector.Options{}, reflector.Scope{})
	ch, cancel := pods.Notify(e.ns, "watched")
	defer cancel()
	e.pod("unrelated", nil)
	e.pod("watched", nil)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no signal for the watched pod")
	}
	p, src, err := pods.Get(t.Context(), e.ns, "watched")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Equal(t, "watched", p.Name)
}
