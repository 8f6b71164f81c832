package reflector_test

import (
	"context"
	"fmt"
	"net/url"
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

func TestMain(m *testing.M) { testcluster.Main(m, &cluster) }

var nsCounter atomic.Int64

// env is one test's namespace, a direct admin client (the "rest of the
// world") and a client through a fault proxy (the reflector's view).
type env struct {
	t       *testing.T
	ns      string
	direct  kubernetes.Interface
	proxy   *faultproxy.Proxy
	proxied kubernetes.Interface
}

func newEnv(t *testing.T) *env {
	t.Helper()
	direct := kubernetes.NewForConfigOrDie(cluster.Config())
	ns := fmt.Sprintf("refl-%d-%d", time.Now().UnixNano()%100000, nsCounter.Add(1))
	_, err := direct.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Close()
		_ = direct.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return &env{t: t, ns: ns, direct: direct, proxy: p, proxied: kubernetes.NewForConfigOrDie(p.ClientConfig(cluster.Config()))}
}

func (e *env) pod(name string, labels map[string]string) *corev1.Pod {
	e.t.Helper()
	p, err := e.direct.CoreV1().Pods(e.ns).Create(e.t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/app:1"}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return p
}

func (e *env) start(opts reflector.Options) *reflector.Reflector[*corev1.Pod] {
	e.t.Helper()
	if len(opts.Scope.Namespaces) == 0 {
		opts.Scope.Namespaces = []string{e.ns}
	}
	r, err := reflector.New(e.proxied, reflector.Pods, opts)
	require.NoError(e.t, err)
	_, ctx := ktesting.NewTestContext(e.t)
	require.NoError(e.t, r.Start(ctx))
	e.t.Cleanup(r.Stop)
	return r
}

func waitSynced(t *testing.T, r *reflector.Reflector[*corev1.Pod]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, r.WaitForSync(ctx))
	require.Eventually(t, func() bool { return r.Status().Healthy() }, 30*time.Second, 20*time.Millisecond, "reflector healthy")
}

func cached(r *reflector.Reflector[*corev1.Pod], ns, name string) (*corev1.Pod, bool) {
	pods, src, err := r.List(context.Background(), ns, nil)
	if err != nil || src != reflector.SourceCache {
		return nil, false
	}
	for _, p := range pods {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

func TestGetFromCacheAndNotFoundOnlyFromAPI(t *testing.T) {
	e := newEnv(t)
	e.pod("a", nil)
	r := e.start(reflector.Options{StallTimeout: 5 * time.Second})
	waitSynced(t, r)

	p, src, err := r.Get(t.Context(), e.ns, "a")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Equal(t, "a", p.Name)
	assert.Nil(t, p.ManagedFields, "managedFields are stripped by the default transform")

	_, src, err = r.Get(t.Context(), e.ns, "missing")
	require.True(t, apierrors.IsNotFound(err), "absence is the API server's NotFound, got %v", err)
	assert.Equal(t, reflector.SourceAPI, src)

	_, _, err = r.Get(t.Context(), "other-namespace", "a")
	require.ErrorIs(t, err, reflector.ErrOutOfScope)
	_, _, err = r.Get(t.Context(), e.ns, "")
	require.ErrorIs(t, err, reflector.ErrInvalidArgument)
}

func TestNotSyncedReflectorNeverAnswersFromCache(t *testing.T) {
	e := newEnv(t)
	e.pod("exists", nil)
	// The reflector cannot list or watch: it never syncs.
	e.proxy.InjectStatus(faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods"}, 503, 1_000_000, 0)
	e.proxy.InjectStatus(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"}, 503, 1_000_000, 0)
	r := e.start(reflector.Options{StallTimeout: 5 * time.Second})

	st := r.Status()
	require.Equal(t, reflector.StateStarting, st.State)
	require.False(t, st.Synced)
	require.Error(t, r.Readyz(nil))
	require.NoError(t, r.Healthz(nil), "starting is not a liveness failure")

	p, src, err := r.Get(t.Context(), e.ns, "exists")
	require.NoError(t, err, "an unsynced reflector asks the API server")
	assert.Equal(t, reflector.SourceAPI, src)
	assert.Equal(t, "exists", p.Name)

	_, src, err = r.Get(t.Context(), e.ns, "absent")
	require.True(t, apierrors.IsNotFound(err))
	assert.Equal(t, reflector.SourceAPI, src)

	// The API fails lists too: an error, never the empty cache as "no pods".
	pods, _, err := r.List(t.Context(), e.ns, nil)
	require.Error(t, err)
	require.Nil(t, pods)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, r.WaitForSync(ctx), reflector.ErrNotSynced)

	// Once the server answers, it syncs by itself.
	e.proxy.ClearFaults()
	waitSynced(t, r)
	pods, src, err = r.List(t.Context(), e.ns, nil)
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Len(t, pods, 1)
}

// TestSilentStallIsDetectedAndRepaired is the 2018 failure: the watch
// stays open and silent while the server moves on.
func TestSilentStallIsDetectedAndRepaired(t *testing.T) {
	e := newEnv(t)
	e.pod("keep", nil)
	e.pod("modify", nil)
	e.pod("remove", nil)
	const stallTimeout = 5 * time.Second
	r := e.start(reflector.Options{StallTimeout: stallTimeout})
	waitSynced(t, r)

	stalledAt := time.Now()
	e.proxy.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	// Changes during the stall: create, modify, delete.
	e.pod("created", nil)
	m, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), "modify", metav1.GetOptions{})
	require.NoError(t, err)
	m.Labels = map[string]string{"changed": "yes"}
	_, err = e.direct.CoreV1().Pods(e.ns).Update(t.Context(), m, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "remove", metav1.DeleteOptions{}))

	require.Eventually(t, func() bool { return r.Status().GapsDetected[reflector.GapStall] > 0 },
		stallTimeout+10*time.Second, 50*time.Millisecond, "stall detected")
	st := r.Status()
	detectedAfter := st.StateSince.Sub(stalledAt)
	t.Logf("stall detected %s after it began (stall timeout %s); state %s: %s", detectedAfter, stallTimeout, st.State, st.Reason)
	// The contract: found within StallTimeout (2s of slack for timer jitter
	// on a loaded 2-core machine with the race detector).
	require.LessOrEqual(t, detectedAfter, stallTimeout+2*time.Second)
	require.NotEqual(t, reflector.StateSynced, st.State, "a stalled reflector does not claim health")
	require.Error(t, r.Readyz(nil))

	// During the stall, reads go to the API server.
	p, src, err := r.Get(t.Context(), e.ns, "created")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceAPI, src)
	assert.Equal(t, "created", p.Name)
	_, src, err = r.Get(t.Context(), e.ns, "remove")
	require.True(t, apierrors.IsNotFound(err))
	assert.Equal(t, reflector.SourceAPI, src)

	// While watches still hang, the relist after the stall is a plain LIST
	// (not a WatchList through the hanging path), so the cache is refilled.
	require.Eventually(t, func() bool {
		for _, rec := range e.proxy.Records() {
			if rec.Verb == faultproxy.VerbList && rec.Resource == "pods" && rec.Namespace == e.ns && rec.Start.After(stalledAt) && rec.Status == 200 {
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "plain LIST after the stall")

	e.proxy.UnstallAll()
	require.Eventually(t, func() bool { return r.Status().Healthy() }, 30*time.Second, 50*time.Millisecond, "recovered")
	_, ok := cached(r, e.ns, "created")
	assert.True(t, ok, "pod created during the stall is cached")
	_, ok = cached(r, e.ns, "remove")
	assert.False(t, ok, "pod deleted during the stall is gone from the cache")
	got, ok := cached(r, e.ns, "modify")
	require.True(t, ok)
	assert.Equal(t, "yes", got.Labels["changed"], "pod modified during the stall is current")
	_, ok = cached(r, e.ns, "keep")
	assert.True(t, ok)
	st = r.Status()
	assert.GreaterOrEqual(t, st.Relists[reflector.RelistStall], 1)
	assert.GreaterOrEqual(t, st.Restarts, 1)
}

// TestDeadStreamIsFoundByProbe: only the open watch stream dies (its TCP
// connection silently dead), the server and new requests are fine. The
// probe sees changes the watch has not delivered, the watch is restarted
// on a new connection, and the reflector heals with no outside help.
func TestDeadStreamIsFoundByProbe(t *testing.T) {
	e := newEnv(t)
	e.pod("gone", nil)
	const stallTimeout = 5 * time.Second
	r := e.start(reflector.Options{StallTimeout: stallTimeout})
	waitSynced(t, r)
	m := faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods", Namespace: e.ns}
	require.Eventually(t, func() bool { return mainWatches(e.proxy, e.ns) == 1 }, 10*time.Second, 20*time.Millisecond)

	stalledAt := time.Now()
	require.Equal(t, 1, e.proxy.StallOpen(m))
	e.pod("new", nil)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "gone", metav1.DeleteOptions{}))

	require.Eventually(t, func() bool { return r.Status().GapsDetected[reflector.GapStall] > 0 },
		stallTimeout+10*time.Second, 50*time.Millisecond, "stall detected")
	st := r.Status()
	detectedAfter := st.StateSince.Sub(stalledAt)
	t.Logf("dead stream detected after %s: %s", detectedAfter, st.Reason)
	require.Contains(t, st.Reason, "the server holds changes")
	require.LessOrEqual(t, detectedAfter, stallTimeout+2*time.Second)

	// No UnstallAll: the frozen stream stays frozen, the reflector moves on.
	require.Eventually(t, func() bool {
		_, hasNew := cached(r, e.ns, "new")
		_, hasGone := cached(r, e.ns, "gone")
		return r.Status().Healthy() && hasNew && !hasGone
	}, 30*time.Second, 50*time.Millisecond, "healed by itself: %+v", r.Status())
	assert.Equal(t, 1, r.Status().Relists[reflector.RelistStall])
}

// TestIdleHealthyWatchIsNeverFlagged runs an idle scope for several stall
// timeouts: nothing changes in scope while plenty changes outside it.
func TestIdleHealthyWatchIsNeverFlagged(t *testing.T) {
	e := newEnv(t)
	e.pod("idle", map[string]string{"app": "mine"})
	const stallTimeout = 2 * time.Second
	r := e.start(reflector.Options{StallTimeout: stallTimeout, Scope: reflector.Scope{LabelSelector: "app=mine"}})
	waitSynced(t, r)
	changes, cancel := r.NotifyState()
	defer cancel()

	// Churn outside the scope (other labels) moves the server's
	// resourceVersion on without any change in scope.
	deadline := time.Now().Add(6 * stallTimeout)
	for i := 0; time.Now().Before(deadline); i++ {
		e.pod("other-"+strconv.Itoa(i), map[string]string{"app": "theirs"})
		time.Sleep(300 * time.Millisecond)
	}
	select {
	case <-changes:
		t.Fatalf("state changed while idle and healthy: %+v", r.Status())
	default:
	}
	st := r.Status()
	assert.Equal(t, reflector.StateSynced, st.State)
	assert.Zero(t, st.Restarts)
	for kind, n := range st.GapsDetected {
		assert.Zero(t, n, "gap %s", kind)
	}
	assert.NotZero(t, st.LastProbeTime, "probes ran")
	assert.Equal(t, 1, st.Relists[reflector.RelistInitial])
	assert.Len(t, st.Relists, 1, "no relist but the initial one: %v", st.Relists)
}

func TestWatchGone410Relists(t *testing.T) {
	e := newEnv(t)
	e.pod("a", nil)
	r := e.start(reflector.Options{StallTimeout: 5 * time.Second})
	waitSynced(t, r)

	// The next watch request is answered with a 410 mid-stream, as a real
	// apiserver does when the resourceVersion was compacted away.
	e.proxy.InjectWatchError(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"}, 410, 1)
	e.proxy.ResetConnections()
	e.pod("after", nil)

	require.Eventually(t, func() bool {
		st := r.Status()
		_, ok := cached(r, e.ns, "after")
		return st.GapsDetected[reflector.GapExpired] > 0 && st.Relists[reflector.RelistExpired] > 0 && st.Healthy() && ok
	}, 30*time.Second, 50*time.Millisecond, "410 counted, relisted, healthy: %+v", r.Status())
}

func TestAPIServerRestartRecovers(t *testing.T) {
	e := newEnv(t)
	e.pod("before", nil)
	// Direct, no proxy: the apiserver itself goes away.
	r, err := reflector.New(e.direct, reflector.Pods, reflector.Options{StallTimeout: 5 * time.Second, Scope: reflector.Scope{Namespaces: []string{e.ns}}})
	require.NoError(t, err)
	_, ctx := ktesting.NewTestContext(t)
	require.NoError(t, r.Start(ctx))
	t.Cleanup(r.Stop)
	waitSynced(t, r)

	require.NoError(t, cluster.RestartAPIServer(t.Context()))
	e.pod("after", nil)

	require.Eventually(t, func() bool {
		_, ok := cached(r, e.ns, "after")
		return ok && r.Status().Healthy()
	}, 60*time.Second, 100*time.Millisecond, "recovered after restart: %+v", r.Status())
	_, ok := cached(r, e.ns, "before")
	assert.True(t, ok)
}

// TestAuditRepairsDrift turns probing off so that only the audit can
// notice what a stalled watch missed.
func TestAuditRepairsDrift(t *testing.T) {
	e := newEnv(t)
	e.pod("ghost", nil)
	r := e.start(reflector.Options{StallTimeout: 2 * time.Second, ProbeInterval: -1, IdleTimeout: -1, AuditInterval: time.Second})
	waitSynced(t, r)

	e.proxy.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "ghost", metav1.DeleteOptions{}))
	e.pod("newcomer", nil)

	// The audit's list is not stalled (only watches are); it finds the
	// ghost and the missing pod, and a relist (plain LIST, since WatchList
	// hangs too) repairs the cache while the watch path is still stalled.
	require.Eventually(t, func() bool {
		st := r.Status()
		if st.DriftRepaired < 2 || st.Relists[reflector.RelistDrift] == 0 {
			return false
		}
		objs := map[string]bool{}
		pods, _, _ := r.List(t.Context(), e.ns, nil)
		for _, p := range pods {
			objs[p.Name] = true
		}
		return !objs["ghost"] && objs["newcomer"]
	}, 30*time.Second, 50*time.Millisecond, "drift repaired: %+v", r.Status())
	e.proxy.UnstallAll()
	require.Eventually(t, func() bool {
		_, ghost := cached(r, e.ns, "ghost")
		_, newcomer := cached(r, e.ns, "newcomer")
		return r.Status().Healthy() && !ghost && newcomer
	}, 30*time.Second, 50*time.Millisecond, "healthy cache equals the server")
}

// mainWatches counts the long-running pod watches open through the proxy
// in ns: client-go asks for 5-10 minutes; probe watches ask for 1 second.
func mainWatches(p *faultproxy.Proxy, ns string) int {
	n := 0
	for _, rec := range p.Records() {
		if rec.Verb != faultproxy.VerbWatch || rec.Resource != "pods" || rec.Namespace != ns || !rec.End.IsZero() {
			continue
		}
		q, _ := url.ParseQuery(rec.RawQuery)
		if secs, _ := strconv.Atoi(q.Get("timeoutSeconds")); secs >= 60 {
			n++
		}
	}
	return n
}

func TestRegistrySharesOneWatchPerScope(t *testing.T) {
	e := newEnv(t)
	reg := reflector.NewRegistry()
	opts := reflector.Options{StallTimeout: 5 * time.Second, Scope: reflector.Scope{Namespaces: []string{e.ns}, LabelSelector: "app=x"}}
	r1, release1, err := reflector.Acquire(t.Context(), reg, e.proxied, reflector.Pods, opts)
	require.NoError(t, err)
	// Same scope spelled differently: same reflector.
	opts2 := opts
	opts2.Scope = reflector.Scope{Namespaces: []string{e.ns, e.ns}, LabelSelector: " app = x "}
	r2, release2, err := reflector.Acquire(t.Context(), reg, e.proxied, reflector.Pods, opts2)
	require.NoError(t, err)
	require.Same(t, r1, r2)
	require.Equal(t, 1, reg.Len())
	waitSynced(t, r1)
	require.Eventually(t, func() bool { return mainWatches(e.proxy, e.ns) == 1 }, 10*time.Second, 20*time.Millisecond)
	// Stays one (no second watch appears later).
	time.Sleep(time.Second)
	require.Equal(t, 1, mainWatches(e.proxy, e.ns), "two users, one watch")

	release1()
	release1() // idempotent
	require.Equal(t, reflector.StateSynced, r2.Status().State, "still used by the second")
	require.Equal(t, 1, mainWatches(e.proxy, e.ns))
	release2()
	require.Equal(t, reflector.StateStopped, r1.Status().State)
	require.Equal(t, 0, reg.Len())
	require.Eventually(t, func() bool { return mainWatches(e.proxy, e.ns) == 0 }, 10*time.Second, 20*time.Millisecond, "release stops the watch")
}

func TestStuckHandlerBlocksNeitherOthersNorCache(t *testing.T) {
	e := newEnv(t)
	r := e.start(reflector.Options{StallTimeout: 2 * time.Second, HandlerStallThreshold: 500 * time.Millisecond})
	waitSynced(t, r)

	block := make(chan struct{})
	defer close(block)
	stuck, err := r.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { <-block }})
	require.NoError(t, err)
	defer stuck.Remove()
	var seen atomic.Int64
	healthy, err := r.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { seen.Add(1) }})
	require.NoError(t, err)
	defer healthy.Remove()
	require.Eventually(t, healthy.HasSynced, 10*time.Second, 10*time.Millisecond)

	for i := range 5 {
		e.pod("p"+strconv.Itoa(i), nil)
	}
	require.Eventually(t, func() bool { return seen.Load() == 5 }, 10*time.Second, 20*time.Millisecond, "the healthy handler gets every event")
	require.Eventually(t, func() bool {
		_, ok := cached(r, e.ns, "p4")
		return ok
	}, 10*time.Second, 20*time.Millisecond, "the cache keeps up")
	require.Eventually(t, func() bool {
		st := r.Status()
		return st.StuckHandlers == 1 && st.GapsDetected[reflector.GapHandlerStall] == 1
	}, 10*time.Second, 50*time.Millisecond, "stuck handler reported: %+v", r.Status())
}

func TestNotifySignalsChanges(t *testing.T) {
	e := newEnv(t)
	r := e.start(reflector.Options{StallTimeout: 5 * time.Second})
	waitSynced(t, r)
	ch, cancel := r.Notify(e.ns, "watched")
	defer cancel()
	e.pod("unrelated", nil)
	e.pod("watched", nil)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no signal for the watched pod")
	}
	p, src, err := r.Get(t.Context(), e.ns, "watched")
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Equal(t, "watched", p.Name)
}
