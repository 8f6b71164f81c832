//go:build integration

package spawner

// Integration tests against the real etcd + kube-apiserver of testcluster,
// with internal/podsim playing scheduler and kubelet (through a direct
// client) and the spawner and its caches going through internal/faultproxy.

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/reflector"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	// Fuzz workers run only FuzzPodName: they need no control plane.
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(runFunc(func() int {
		code := m.Run()
		if gc.c != nil && gc.c != cluster {
			gc.c.Stop() // before Run's leak check
		}
		return code
	})))
}

type runFunc func() int

func (f runFunc) Run() int { return f() }

// cluster runs no controller-manager: no garbage collector, so what the
// spawner deletes itself is proven deleted by the spawner. gcCluster, for
// the tests of what the real garbage collector and the claim protection
// controller do, is a second control plane with kube-controller-manager,
// started on first use (against an existing cluster, that cluster).
var gc struct {
	once sync.Once
	c    *testcluster.Cluster
	err  error
}

// gcControllers: the garbage collector and namespace controller, the
// claims' protection finalizer's controller (a deleted claim goes once no
// pod uses it) and the quota controller (a ResourceQuota gets its usage).
var gcControllers = append(slices.Clone(testcluster.DefaultControllers),
	"persistentvolumeclaim-protection-controller", "resourcequota-controller")

func gcCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	if cluster.IsExisting() {
		return cluster
	}
	gc.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		gc.c, gc.err = testcluster.Start(ctx, testcluster.Options{ControllerManager: true, Controllers: gcControllers})
	})
	if gc.err != nil {
		t.Fatalf("the control plane with kube-controller-manager did not start: %v", gc.err)
	}
	return gc.c
}

// startSim starts the package's pod simulator (one: two would compete for
// the same pods).
func startSim(t *testing.T) { cluster.PodSim(t, podsim.Options{}) }

// longTimeout is the start timeout of fail-fast tests: failing "fast" means
// well before it.
const longTimeout = 2 * time.Minute

// ienv is one integration test's world: a namespace, a direct admin client,
// a fault proxy, and a spawner whose client and caches go through it.
type ienv struct {
	c       *testcluster.Cluster
	ns      string
	direct  kubernetes.Interface
	proxy   *faultproxy.Proxy
	client  kubernetes.Interface
	factory *reflector.Factory
	pods    *reflector.PodCache
	events  *events.Index
	reg     *prometheus.Registry
	sp      *Spawner
	options Options
}

func newEnv(t *testing.T, mod func(*Options)) *ienv {
	t.Helper()
	return newEnvWith(t, reflector.Options{StallTimeout: 5 * time.Second}, mod)
}

// newEnvWith is newEnv with the factory's options ro.
func newEnvWith(t *testing.T, ro reflector.Options, mod func(*Options)) *ienv {
	t.Helper()
	return newEnvOn(t, cluster, ro, mod)
}

// newEnvOn is newEnvWith on the control plane c.
func newEnvOn(t *testing.T, c *testcluster.Cluster, ro reflector.Options, mod func(*Options)) *ienv {
	t.Helper()
	c.PodSim(t, podsim.Options{})
	// First, so that its cleanup runs last: no test may leave a pod behind.
	ns := c.Namespace(t, "spawner", testcluster.NoPodsLeft(LabelManagedBy+"="+ManagedByValue))
	e := &ienv{c: c, ns: ns, direct: c.Client(t), reg: prometheus.NewRegistry()}
	var err error
	e.proxy, err = faultproxy.New(c.Config(), faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.proxy.Close() })

	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	ro.Logger = &logger
	e.factory, err = reflector.NewFactory(e.proxy.ClientConfig(c.Config()), ro)
	require.NoError(t, err)
	t.Cleanup(e.factory.Shutdown)
	e.pods, err = e.factory.Pods(reflector.Scope{Namespaces: []string{e.ns}})
	require.NoError(t, err)
	e.events, err = events.IndexFor(e.factory, reflector.Scope{Namespaces: []string{e.ns}}, events.Options{})
	require.NoError(t, err)
	e.client = e.factory.Client()
	e.factory.Start(klog.NewContext(context.Background(), logger))
	require.NoError(t, e.factory.WaitForCacheSync(t.Context()))
	require.NoError(t, e.events.WaitForSync(t.Context()))

	e.options = Options{
		Client: e.client, Pods: e.pods, Events: e.events, Logger: &logger, Registerer: e.reg, Instance: "it",
		StartTimeout: 60 * time.Second, StopTimeout: 30 * time.Second,
		ImagePullGrace: time.Second, FallbackInterval: 500 * time.Millisecond,
		DeleteGracePeriod: ptr.To(time.Second),
	}
	if mod != nil {
		mod(&e.options)
	}
	e.sp, err = New(e.options)
	require.NoError(t, err)
	return e
}

// spawner returns another Spawner on the same client and caches.
func (e *ienv) spawner(t *testing.T, mod func(*Options)) *Spawner {
	o := e.options
	o.Registerer = prometheus.NewRegistry()
	if mod != nil {
		mod(&o)
	}
	sp, err := New(o)
	require.NoError(t, err)
	return sp
}

func (e *ienv) request(key, scenario string, annotations ...string) Request {
	ann := map[string]string{}
	if scenario != "" {
		ann[podsim.AnnotationScenario] = scenario
	}
	for i := 0; i+1 < len(annotations); i += 2 {
		ann[annotations[i]] = annotations[i+1]
	}
	return Request{Key: key, Namespace: e.ns, Annotations: ann, Spec: &corev1.PodSpec{
		Containers:                    []corev1.Container{{Name: "notebook", Image: "example.org/notebook:1"}},
		TerminationGracePeriodSeconds: ptr.To[int64](1),
	}}
}

// gone asserts the API server has no pod with that name (and UID, if set).
func (e *ienv) gone(t *testing.T, name string, uid types.UID) {
	t.Helper()
	pod, err := e.direct.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	require.NoError(t, err)
	if uid != "" {
		require.NotEqual(t, uid, pod.UID, "pod %s still on the API server", name)
		return
	}
	t.Fatalf("pod %s (UID %s) still on the API server", name, pod.UID)
}

func (e *ienv) get(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	pod, err := e.direct.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return pod
}

func (e *ienv) stop(t *testing.T, name string) {
	t.Helper()
	require.NoError(t, e.sp.Stop(context.Background(), e.ns, name, StopOptions{}))
	e.gone(t, name, "")
}

func (e *ienv) podName(key string) string {
	n, _ := PodName(e.sp.opts.NamePrefix, key)
	return n
}

var podsWatch = faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"}

// stallPodWatches silences the pod watch: open, alive, delivering nothing.
func (e *ienv) stallPodWatches(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return e.proxy.OpenWatches(podsWatch) > 0 }, 10*time.Second, 10*time.Millisecond)
	e.proxy.Stall(podsWatch)
	t.Cleanup(e.proxy.UnstallAll)
}

func TestIntegrationHappyStartWithOrderedProgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var mu sync.Mutex
	var ups []events.Update
	req := e.request("alice@example.com", podsim.ScenarioSlowStart, podsim.AnnotationStartDelay, "1s")
	req.Progress = func(u events.Update) { mu.Lock(); ups = append(ups, u); mu.Unlock() }
	res, err := e.sp.Start(t.Context(), req)
	require.NoError(t, err)

	pod := e.get(t, res.Name)
	assert.Equal(t, res.UID, pod.UID)
	assert.Equal(t, corev1.PodRunning, pod.Status.Phase)
	assert.NotEmpty(t, res.PodIP)
	assert.Equal(t, ManagedByValue, pod.Labels[LabelManagedBy])
	assert.Equal(t, "alice@example.com", pod.Annotations[AnnotationKey])

	mu.Lock()
	got := append([]events.Update(nil), ups...)
	mu.Unlock()
	require.NotEmpty(t, got, "progress reported")
	var msgs []string
	for i, u := range got {
		msgs = append(msgs, u.Message)
		if i > 0 {
			assert.GreaterOrEqual(t, u.Progress, got[i-1].Progress, "progress never decreases")
		}
		if u.Event != nil {
			assert.Equal(t, res.UID, u.Event.InvolvedObject.UID, "only this pod's events")
		}
	}
	joined := strings.Join(msgs, "\n")
	if i, j := strings.Index(joined, "ulling"), strings.Index(joined, "tarted"); i >= 0 && j >= 0 {
		assert.Less(t, i, j, "Pulling before Started: %s", joined)
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(e.sp.metrics.starts.WithLabelValues("running")))
	e.stop(t, res.Name)
	assert.Equal(t, 1.0, testutil.ToFloat64(e.sp.metrics.stops.WithLabelValues("deleted")))
}

func TestIntegrationFailFast(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.StartTimeout = longTimeout })
	for _, c := range []struct {
		scenario string
		want     error
		warns    bool // the scenario records Warning events
	}{
		{podsim.ScenarioImagePullFailure, ErrImagePull, true},
		{podsim.ScenarioInvalidImageName, ErrInvalidImage, true},
		{podsim.ScenarioCreateContainerConfigError, ErrCreateContainerConfig, true},
		{podsim.ScenarioCrashLoop, ErrCrashLoop, true},
		{podsim.ScenarioUnschedulable, ErrUnschedulable, true},
		{podsim.ScenarioFail, ErrPodFailed, false},
		{podsim.ScenarioComplete, ErrPodFailed, false},
	} {
		t.Run(c.scenario, func(t *testing.T) {
			begin := time.Now()
			_, err := e.sp.Start(t.Context(), e.request("user-"+c.scenario, c.scenario))
			require.ErrorIs(t, err, c.want)
			assert.Less(t, time.Since(begin), longTimeout/2, "well before the start timeout")
			var se *StartError
			require.ErrorAs(t, err, &se)
			assert.True(t, se.Deleted, "pod deleted")
			assert.Equal(t, e.podName("user-"+c.scenario), se.Name)
			e.gone(t, se.Name, se.UID)
			if c.warns {
				assert.NotEmpty(t, se.Events, "warning events attached: %v", err)
			}
		})
	}
}

func TestIntegrationCancelledStartLeavesNoPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	name := e.podName("bob")
	go func() {
		// Cancel once the pod exists on the API server.
		for ctx.Err() == nil {
			if _, err := e.direct.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, err := e.sp.Start(ctx, e.request("bob", podsim.ScenarioSlowStart, podsim.AnnotationStartDelay, "30s"))
	require.ErrorIs(t, err, ErrStartCancelled)
	require.ErrorIs(t, err, context.Canceled)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Deleted)
	e.gone(t, name, "")
}

// A silent watch must not hide a ready pod: the fallback GET finds it.
func TestIntegrationStartDuringStallReturnsReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.stallPodWatches(t)
	res, err := e.sp.Start(t.Context(), e.request("carol", ""))
	require.NoError(t, err)
	assert.True(t, podReady(e.get(t, res.Name)))
	var liveGets int
	for _, r := range e.proxy.Records() {
		if r.Verb == faultproxy.VerbGet && r.Resource == "pods" && r.Name == res.Name {
			liveGets++
		}
	}
	assert.Positive(t, liveGets, "the API server was asked")
	for _, r := range e.proxy.Records() {
		if r.Verb == faultproxy.VerbWatch {
			assert.Empty(t, r.Name, "no per-pod watch: %s?%s", r.Path, r.RawQuery)
		}
	}
	e.proxy.UnstallAll()
	e.stop(t, res.Name)
}

// TestIntegrationStartIsACanary: with probes a minute apart, a Start
// during a silent stall of every watch makes the pod cache find the stall
// within the canary window plus one probe: the spawner reports its create.
func TestIntegrationStartIsACanary(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, reflector.Options{StallTimeout: 2 * time.Minute, ProbeInterval: time.Minute}, nil)
	time.Sleep(2 * time.Second) // past the first probe
	e.stallPodWatches(t)
	begin := time.Now()
	done := make(chan error, 1)
	var res *Result
	go func() {
		var err error
		res, err = e.sp.Start(context.Background(), e.request("canary", ""))
		done <- err
	}()
	var st reflector.Status
	require.Eventually(t, func() bool { st = e.pods.Status(); return st.Gaps[reflector.GapStall] > 0 }, 30*time.Second, 10*time.Millisecond, "stall found")
	found := st.StateSince.Sub(begin)
	t.Logf("stall found %s after the Start began (probe interval 1m)", found)
	// Canary window 1s + a probe whose replay lacks the create 1s after its
	// headers; the create itself and a loaded machine get the rest.
	assert.Less(t, found, 5*time.Second)
	require.NoError(t, <-done, "the start completes from live reads")
	e.proxy.UnstallAll()
	e.stop(t, res.Name)
}

// The 2018 case: the watch is silent, the start times out, and the pod is
// deleted on the API server, not skipped because the cache lacks it.
func TestIntegrationTimeoutDuringStallDeletesPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.StartTimeout = 3 * time.Second })
	e.stallPodWatches(t)
	_, err := e.sp.Start(t.Context(), e.request("dave", podsim.ScenarioNeverReady))
	require.ErrorIs(t, err, ErrStartTimeout)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Deleted)
	require.NotEmpty(t, se.UID)
	e.gone(t, se.Name, "")
	assert.Equal(t, 1.0, testutil.ToFloat64(e.sp.metrics.deletedOnFail))
}

func TestIntegrationStopDuringStallDeletes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res, err := e.sp.Start(t.Context(), e.request("erin", ""))
	require.NoError(t, err)
	e.stallPodWatches(t)
	require.NoError(t, e.sp.Stop(t.Context(), e.ns, res.Name, StopOptions{UID: res.UID}))
	e.gone(t, res.Name, "")
	// Stopping again is fine: the API server's NotFound means gone.
	require.NoError(t, e.sp.Stop(t.Context(), e.ns, res.Name, StopOptions{}))
}

func TestIntegrationStopPendingPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	req := e.request("frank", podsim.ScenarioUnschedulable)
	// Create it behind the spawner's back, as a crashed service would have.
	pod, err := e.sp.buildPodForTest(req)
	require.NoError(t, err)
	_, err = e.direct.CoreV1().Pods(e.ns).Create(t.Context(), pod, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, e.sp.Stop(t.Context(), e.ns, pod.Name, StopOptions{}))
	e.gone(t, pod.Name, "")
}

func TestIntegrationConcurrentStartStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	name := e.podName("grace")
	for round := range 4 {
		var wg sync.WaitGroup
		var startErr error
		wg.Go(func() {
			_, startErr = e.sp.Start(t.Context(), e.request("grace", podsim.ScenarioSlowStart, podsim.AnnotationStartDelay, "2s"))
		})
		if round%2 == 0 {
			// Stop once the pod exists: it must cancel the start.
			require.Eventually(t, func() bool {
				_, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), name, metav1.GetOptions{})
				return err == nil
			}, 30*time.Second, 20*time.Millisecond)
		}
		stopErr := e.sp.Stop(t.Context(), e.ns, name, StopOptions{})
		wg.Wait()
		require.NoError(t, stopErr)
		if startErr != nil {
			require.ErrorIs(t, startErr, ErrStopRequested, "round %d", round)
			e.gone(t, name, "")
		} else {
			// Stop ran first; the start then completed: stop it.
			e.stop(t, name)
		}
	}
	res, err := e.sp.Start(t.Context(), e.request("grace", ""))
	require.NoError(t, err, "startable again")
	e.stop(t, res.Name)
}

func TestIntegrationAlreadyExists(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)

	t.Run("not ours", func(t *testing.T) {
		name := e.podName("heidi")
		_, err := e.direct.CoreV1().Pods(e.ns).Create(t.Context(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "someone-else"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}, TerminationGracePeriodSeconds: ptr.To[int64](0)},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = e.sp.Start(t.Context(), e.request("heidi", ""))
		require.ErrorIs(t, err, ErrNameConflict)
		e.get(t, name) // untouched
		require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	})

	t.Run("ours running", func(t *testing.T) {
		res, err := e.sp.Start(t.Context(), e.request("ivan", ""))
		require.NoError(t, err)
		_, err = e.sp.Start(t.Context(), e.request("ivan", ""))
		require.ErrorIs(t, err, ErrAlreadyRunning)
		assert.Equal(t, res.UID, e.get(t, res.Name).UID, "left running")

		adopter := e.spawner(t, func(o *Options) { o.AdoptRunning = true })
		res2, err := adopter.Start(t.Context(), e.request("ivan", ""))
		require.NoError(t, err)
		assert.True(t, res2.Adopted)
		assert.Equal(t, res.UID, res2.UID)
		e.stop(t, res.Name)
	})

	t.Run("ours terminating", func(t *testing.T) {
		res, err := e.sp.Start(t.Context(), e.request("judy", ""))
		require.NoError(t, err)
		// A finalizer keeps the old pod terminating until we lift it.
		_, err = e.direct.CoreV1().Pods(e.ns).Patch(t.Context(), res.Name, types.MergePatchType,
			[]byte(`{"metadata":{"finalizers":["kubespawn.io/test"]}}`), metav1.PatchOptions{})
		require.NoError(t, err)
		require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), res.Name, metav1.DeleteOptions{}))
		go func() {
			time.Sleep(2 * time.Second)
			_, _ = e.direct.CoreV1().Pods(e.ns).Patch(context.Background(), res.Name, types.JSONPatchType,
				[]byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{})
		}()
		res2, err := e.sp.Start(t.Context(), e.request("judy", ""))
		require.NoError(t, err)
		assert.NotEqual(t, res.UID, res2.UID, "a new pod")
		e.stop(t, res2.Name)
	})
}

func TestIntegrationUIDPreconditionProtectsSuccessor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	first, err := e.sp.Start(t.Context(), e.request("kim", ""))
	require.NoError(t, err)
	require.NoError(t, e.sp.Stop(t.Context(), e.ns, first.Name, StopOptions{UID: first.UID}))
	second, err := e.sp.Start(t.Context(), e.request("kim", ""))
	require.NoError(t, err)
	require.NotEqual(t, first.UID, second.UID)

	// A late Stop of the first incarnation must not touch the second.
	require.NoError(t, e.sp.Stop(t.Context(), e.ns, first.Name, StopOptions{UID: first.UID}))
	assert.Equal(t, second.UID, e.get(t, second.Name).UID, "successor survives")
	e.stop(t, second.Name)
}

func TestIntegrationEvictedPodPollsStoppedAndRestarts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res, err := e.sp.Start(t.Context(), e.request("liam", podsim.ScenarioEvict, podsim.AnnotationStartDelay, "6s"))
	require.NoError(t, err)
	var st PodStatus
	require.Eventually(t, func() bool {
		st, err = e.sp.Poll(t.Context(), e.ns, res.Name)
		return err == nil && st.State == StateStopped
	}, 30*time.Second, 100*time.Millisecond)
	assert.Equal(t, "Evicted", st.Reason)

	res2, err := e.sp.Start(t.Context(), e.request("liam", ""))
	require.NoError(t, err, "an evicted pod does not block a new start")
	assert.NotEqual(t, res.UID, res2.UID)
	e.stop(t, res2.Name)
}

func TestIntegrationExternallyDeletedPodPollsStoppedAndRestarts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res, err := e.sp.Start(t.Context(), e.request("mia", ""))
	require.NoError(t, err)
	st, err := e.sp.Poll(t.Context(), e.ns, res.Name)
	require.NoError(t, err)
	assert.Equal(t, StateRunning, st.State)

	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), res.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	require.Eventually(t, func() bool {
		st, err = e.sp.Poll(t.Context(), e.ns, res.Name)
		return err == nil && st.State == StateStopped
	}, 30*time.Second, 100*time.Millisecond)
	assert.Equal(t, "NotFound", st.Reason)
	assert.Equal(t, reflector.SourceAPI, st.Source, "absence proven by the API server")

	res2, err := e.sp.Start(t.Context(), e.request("mia", ""))
	require.NoError(t, err)
	e.stop(t, res2.Name)
}

// Deleting a pod while it starts is ErrDeletedExternally, proven by the API.
func TestIntegrationDeletedWhileStarting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.StartTimeout = longTimeout })
	name := e.podName("nina")
	go func() {
		for ctx := t.Context(); ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
			if err := e.direct.CoreV1().Pods(e.ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err == nil {
				return
			}
		}
	}()
	_, err := e.sp.Start(t.Context(), e.request("nina", podsim.ScenarioSlowStart, podsim.AnnotationStartDelay, "30s"))
	require.ErrorIs(t, err, ErrDeletedExternally)
	e.gone(t, name, "")
}

func TestIntegrationCreateErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	creates := faultproxy.Match{Verb: faultproxy.VerbCreate, Resource: "pods"}
	countCreates := func() int {
		n := 0
		for _, r := range e.proxy.Records() {
			if r.Verb == faultproxy.VerbCreate && r.Resource == "pods" && r.Subresource == "" {
				n++
			}
		}
		return n
	}

	// Transient: retried until it works.
	e.proxy.InjectStatus(creates, 503, 2, 0)
	e.proxy.InjectStatus(creates, 500, 1, 0)
	res, err := e.sp.Start(t.Context(), e.request("olga", ""))
	require.NoError(t, err)
	assert.Equal(t, 4, countCreates())
	e.stop(t, res.Name)

	// Permanent: the server's validation refuses; no retry, nothing left.
	e.proxy.ResetStats()
	req := e.request("pete", "")
	req.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("-1")}
	_, err = e.sp.Start(t.Context(), req)
	require.ErrorIs(t, err, ErrRejected)
	assert.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.Equal(t, 1, countCreates())
	e.gone(t, e.podName("pete"), "")

	// Bad input: nothing reaches the API server.
	e.proxy.ResetStats()
	for _, req := range []Request{
		{Namespace: e.ns, Spec: testSpec()},
		{Key: "q", Spec: testSpec()},
		{Key: "q", Namespace: e.ns},
		{Key: "q", Namespace: e.ns, Spec: &corev1.PodSpec{}},
		{Key: "q", Namespace: e.ns, Spec: testSpec(), StartTimeout: -1},
	} {
		_, err := e.sp.Start(t.Context(), req)
		require.ErrorIs(t, err, ErrInvalidArgument)
	}
	assert.Zero(t, countCreates())
}

// aheadClock is the real clock running ahead: a machine whose clock is
// skewed. Sweeps measure ages on the server's clock, so it must not make
// young pods look old.
type aheadClock struct {
	clock.RealClock
	ahead time.Duration
}

func (c aheadClock) Now() time.Time                  { return time.Now().Add(c.ahead) }
func (c aheadClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// ageAtLeast waits until pods created now are older than d on the
// server's clock (its timestamps have second resolution).
func ageAtLeast(d time.Duration) { time.Sleep(d + 2*time.Second) }

// createManaged creates n pods labelled as the spawner's, directly.
func (e *ienv) createManaged(t *testing.T, prefix string, n int, scenario string) []string {
	var names []string
	for i := range n {
		pod, err := e.sp.buildPodForTest(e.request(fmt.Sprintf("%s-%d", prefix, i), scenario))
		require.NoError(t, err)
		_, err = e.direct.CoreV1().Pods(e.ns).Create(t.Context(), pod, metav1.CreateOptions{})
		require.NoError(t, err)
		names = append(names, pod.Name)
	}
	return names
}

func TestIntegrationSweeper(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	running := e.createManaged(t, "run", 2, "")
	// Never scheduled: no status.startTime.
	unscheduled := e.createManaged(t, "unsched", 2, podsim.ScenarioUnschedulable)
	require.Eventually(t, func() bool {
		for _, n := range running {
			if e.get(t, n).Status.StartTime == nil {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond)
	for _, n := range unscheduled {
		require.Nil(t, e.get(t, n).Status.StartTime)
	}
	// A sweeper on a machine whose clock runs two hours ahead: ages are the
	// server's, so pods seconds old are not "older than an hour".
	skewed := e.spawner(t, func(o *Options) { o.Clock = aheadClock{ahead: 2 * time.Hour} })
	res, err := skewed.Sweep(t.Context(), SweepPolicy{Namespace: e.ns, MaxAge: time.Hour, Select: orphansOf(func(context.Context, *corev1.Pod) (bool, error) { return false, nil }), MinAge: time.Hour, Delete: true})
	require.NoError(t, err)
	assert.Empty(t, res.Selected, "a skewed local clock ages nothing")
	assert.Equal(t, 4, res.Scanned)

	sweeper := e.spawner(t, nil)
	ageAtLeast(time.Second)
	policy := SweepPolicy{Namespace: e.ns, MaxAge: time.Second}
	res, err = sweeper.Sweep(t.Context(), policy)
	require.NoError(t, err)
	assert.True(t, res.DryRun)
	assert.Len(t, res.Selected, 4)
	assert.Empty(t, res.Deleted)
	for _, n := range append(running, unscheduled...) {
		e.get(t, n) // dry run deleted nothing
	}

	// An older MaxAge selects nothing: fine.
	res, err = e.sp.Sweep(t.Context(), SweepPolicy{Namespace: e.ns, MaxAge: time.Hour, Delete: true})
	require.NoError(t, err)
	assert.Empty(t, res.Selected)

	// Orphans only: the service knows run-0.
	policy.MaxAge = 0
	policy.MinAge = time.Second
	policy.Select = orphansOf(func(_ context.Context, p *corev1.Pod) (bool, error) {
		return p.Annotations[AnnotationKey] == "run-0", nil
	})
	policy.Delete = true
	res, err = sweeper.Sweep(t.Context(), policy)
	require.NoError(t, err)
	assert.Len(t, res.Deleted, 3)
	for _, d := range res.Deleted {
		e.gone(t, d.Name, "")
	}
	e.get(t, running[0])
	assert.Equal(t, 3.0, testutil.ToFloat64(sweeper.metrics.swept.WithLabelValues(string(SweepReasonOrphan))))
	e.stop(t, running[0])
}

func TestIntegrationSweeperPaginates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	names := e.createManaged(t, "page", 12, podsim.ScenarioUnschedulable)
	sweeper := e.spawner(t, nil)
	ageAtLeast(time.Second)
	e.proxy.ResetStats()
	res, err := sweeper.Sweep(t.Context(), SweepPolicy{Namespace: e.ns, MaxAge: time.Second, PageSize: 5, Delete: true})
	require.NoError(t, err)
	assert.Equal(t, 12, res.Scanned)
	assert.Len(t, res.Deleted, 12)
	lists := 0
	for _, r := range e.proxy.Records() {
		if r.Verb == faultproxy.VerbList && r.Resource == "pods" && r.Namespace == e.ns {
			lists++
			assert.Contains(t, r.RawQuery, "limit=5")
		}
	}
	assert.Equal(t, 3, lists, "12 pods in pages of 5")
	for _, n := range names {
		e.gone(t, n, "")
	}
}

// Two replicas run the sweeper on one Lease: only the leader sweeps; when
// it stops (releasing the Lease), the other takes over.
func TestIntegrationSweeperLeaderElection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	names := e.createManaged(t, "le", 4, podsim.ScenarioUnschedulable)
	ageAtLeast(time.Second)
	type replica struct {
		sp     *Spawner
		cancel context.CancelFunc
		done   chan struct{}
		sweeps atomic.Int64
	}
	var replicas [2]*replica
	for i := range replicas {
		ctx, cancel := context.WithCancel(t.Context())
		r := &replica{sp: e.spawner(t, nil), cancel: cancel, done: make(chan struct{})}
		replicas[i] = r
		t.Cleanup(func() { cancel(); <-r.done })
		go func() {
			defer close(r.done)
			err := r.sp.RunSweeper(ctx, SweeperOptions{
				Policy:        SweepPolicy{Namespace: e.ns, MaxAge: time.Second, Delete: true},
				Interval:      300 * time.Millisecond,
				LeaseName:     "sweeper",
				Identity:      fmt.Sprintf("replica-%d", i),
				LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 500 * time.Millisecond,
				OnSweep: func(SweepResult, error) { r.sweeps.Add(1) },
			})
			assert.NoError(t, err)
		}()
	}
	total := func() int64 { return replicas[0].sweeps.Load() + replicas[1].sweeps.Load() }
	require.Eventually(t, func() bool { return total() >= 5 }, 60*time.Second, 50*time.Millisecond)
	leader, follower := replicas[0], replicas[1]
	if leader.sweeps.Load() == 0 {
		leader, follower = follower, leader
	}
	assert.Zero(t, follower.sweeps.Load(), "only the leader sweeps")
	swept := func(r *replica) float64 {
		return testutil.ToFloat64(r.sp.metrics.swept.WithLabelValues(string(SweepReasonMaxAge)))
	}
	assert.Equal(t, 4.0, swept(leader), "the leader swept every pod")
	assert.Zero(t, swept(follower))
	for _, n := range names {
		e.gone(t, n, "")
	}

	// The leader stops and releases the Lease: the follower takes over, and
	// the old leader sweeps no more.
	leader.cancel()
	<-leader.done
	stoppedAt := leader.sweeps.Load()
	require.Eventually(t, func() bool { return follower.sweeps.Load() > 0 }, 30*time.Second, 50*time.Millisecond)
	assert.Equal(t, stoppedAt, leader.sweeps.Load())
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestIntegrationCancelBeforeTheCreateIsSentIsNotAmbiguous: the caller
// cancels while the create request is still on the client side (never
// written to a connection). Nothing can have been created, so the start
// fails as cancelled with nothing to look for: no settle window, no search
// for the pod.
func TestIntegrationCancelBeforeTheCreateIsSentIsNotAmbiguous(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var gets atomic.Int64
	entered := make(chan struct{}, 1)
	cfg := cluster.Config()
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			switch {
			case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/pods"):
				entered <- struct{}{}
				<-r.Context().Done() // held before it is sent, until the caller gives up
				return nil, r.Context().Err()
			case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/pods/"):
				gets.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	sp := e.spawner(t, func(o *Options) { o.Client = client; o.StopTimeout = time.Minute })
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-entered; cancel() }()
	_, err = sp.Start(ctx, e.request("not-sent", ""))
	require.ErrorIs(t, err, ErrStartCancelled)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.Nil(t, se.Cleanup, "no cleanup failure: nothing was sent")
	assert.False(t, se.Deleted)
	assert.Zero(t, gets.Load(), "no search for a pod that cannot exist")
	e.gone(t, e.podName("not-sent"), "")
}

// sweepRound is one sweep of RunSweeper, as OnSweep saw it.
type sweepRound struct {
	res SweepResult
	err error
}

// TestIntegrationStalledSweepListHasADeadline: the LIST of a sweep is
// stalled (headers sent, body held back). Each page has a deadline: the
// sweep fails with it instead of hanging for good while the replica keeps
// renewing its Lease, and the next round sweeps once the LIST answers.
func TestIntegrationStalledSweepListHasADeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	names := e.createManaged(t, "stall", 2, podsim.ScenarioUnschedulable)
	ageAtLeast(time.Second)
	list := faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods", Namespace: e.ns}
	e.proxy.Stall(list)
	t.Cleanup(e.proxy.UnstallAll)

	rounds := make(chan sweepRound, 1000)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- e.spawner(t, nil).RunSweeper(ctx, SweeperOptions{
			Policy:   SweepPolicy{Namespace: e.ns, MaxAge: time.Second, Delete: true, RequestTimeout: time.Second},
			Interval: 200 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
			OnSweep: func(res SweepResult, err error) { rounds <- sweepRound{res, err} },
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	next := func() sweepRound {
		t.Helper()
		select {
		case r := <-rounds:
			return r
		case <-time.After(time.Minute):
			t.Fatal("no sweep came back: the stalled LIST has no deadline")
			return sweepRound{}
		}
	}
	r := next()
	require.Error(t, r.err)
	assert.ErrorIs(t, r.err, context.DeadlineExceeded)
	assert.Contains(t, r.err.Error(), "listing pods")
	for _, n := range names {
		e.get(t, n) // nothing decided on a list that never came
	}

	e.proxy.Unstall(list)
	giveUp := time.Now().Add(2 * time.Minute) // a hang guard, not a speed limit
	for deleted := 0; deleted < len(names); {
		require.True(t, time.Now().Before(giveUp), "the sweeps after the stall never deleted the pods (last error: %v)", r.err)
		if r = next(); r.err == nil {
			deleted += len(r.res.Deleted)
		}
	}
	for _, n := range names {
		e.gone(t, n, "")
	}
}

// TestIntegrationSweeperLeaseRequestsHaveADeadline: client-go's leader
// election sends its Lease requests, while acquiring, on the caller's
// context. A stalled Lease GET must not keep the replica from ever
// leading: each request has a deadline, is retried, and once the Lease
// answers again the replica leads and sweeps.
func TestIntegrationSweeperLeaseRequestsHaveADeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	leases := faultproxy.Match{Resource: "leases", Namespace: e.ns}
	e.proxy.Stall(leases)
	t.Cleanup(e.proxy.UnstallAll)
	e.proxy.ResetStats()

	var sweeps atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- e.spawner(t, nil).RunSweeper(ctx, SweeperOptions{
			Policy:        SweepPolicy{Namespace: e.ns, MaxAge: time.Hour},
			Interval:      200 * time.Millisecond,
			LeaseDuration: 15 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond,
			OnSweep: func(SweepResult, error) { sweeps.Add(1) },
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	leaseGets := func() int {
		n := 0
		for _, r := range e.proxy.Records() {
			if r.Resource == "leases" && r.Verb == faultproxy.VerbGet && r.Namespace == e.ns {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return leaseGets() >= 2 }, time.Minute, 20*time.Millisecond,
		"the stalled Lease GET was never given up and retried")
	assert.Zero(t, sweeps.Load(), "not leading while the Lease does not answer")
	e.proxy.Unstall(leases)
	require.Eventually(t, func() bool { return sweeps.Load() > 0 }, time.Minute, 20*time.Millisecond)
}

// TestIntegrationStopWithoutUIDOfAnotherInstancesPod: two instances in one
// namespace derive the same pod name for a key. A Stop without a UID by
// one of them must not delete the other's pod.
func TestIntegrationStopWithoutUIDOfAnotherInstancesPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	other := e.spawner(t, func(o *Options) { o.Instance = "it-other" })
	res, err := other.Start(t.Context(), e.request("lena", ""))
	require.NoError(t, err)
	err = e.sp.Stop(t.Context(), e.ns, res.Name, StopOptions{})
	require.ErrorIs(t, err, ErrNotOwned)
	assert.Equal(t, res.UID, e.get(t, res.Name).UID, "the other instance's pod is untouched")
	require.NoError(t, other.Stop(t.Context(), e.ns, res.Name, StopOptions{}))
	e.gone(t, res.Name, "")
}

// TestIntegrationFailedStartKeepsTheRunningPodsEvents: a second Start of a
// running pod's key fails with ErrAlreadyRunning; the running pod's events
// stay in the event index.
func TestIntegrationFailedStartKeepsTheRunningPodsEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res, err := e.sp.Start(t.Context(), e.request("mona", ""))
	require.NoError(t, err)
	ref := events.PodRef{Namespace: e.ns, Name: res.Name, UID: res.UID}
	started := func() bool {
		for _, ev := range e.events.Events(ref) {
			if ev.Reason == "Started" {
				return true
			}
		}
		return false
	}
	require.Eventually(t, started, 30*time.Second, 20*time.Millisecond)
	_, err = e.sp.Start(t.Context(), e.request("mona", ""))
	require.ErrorIs(t, err, ErrAlreadyRunning)
	assert.True(t, started(), "the running pod's events are still indexed")
	e.stop(t, res.Name)
}
