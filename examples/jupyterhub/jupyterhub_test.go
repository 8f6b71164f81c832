//go:build integration

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hub"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/spawnersvc"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/svcproxy"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var (
	cluster    *testcluster.Cluster
	spawnerBin string
)

// TestMain fails the package loudly, never skips, when JupyterHub is not
// installed or the spawner service cannot be built.
func TestMain(m *testing.M) {
	if err := hub.Check(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "kubespawn-jupyterhub-test-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	spawnerBin, err = spawnersvc.Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	// The claim protection controller (a deleted claim goes once no pod
	// uses it: delete_forever confirms it gone), the quota controller (a
	// quota refusing a user's claim) and the namespace
	// controller; the garbage collector comes with the defaults. The
	// EndpointSlice controller and a loopback Service range of this
	// process's own: the services test's hub goes through ClusterIPs
	// (internal/svcproxy).
	serviceCIDR, releaseCIDR, err := svcproxy.ReserveLoopbackCIDR()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	cluster = testcluster.MustStart(testcluster.Options{ControllerManager: true, ServiceCIDR: serviceCIDR,
		Controllers: append(slices.Clone(testcluster.DefaultControllers), "persistentvolumeclaim-protection-controller", "endpointslice-controller", "resourcequota-controller")})
	code := cluster.Run(m)
	releaseCIDR()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type hubConfig struct {
	throughProxy bool
	startTimeout time.Duration
	sweep        time.Duration
	stopTimeout  time.Duration // the service's --stop-timeout; 0: 60s
	realServers  bool          // real jupyterhub-singleuser servers (hubtest.Config.ProcessRuntime)
	profiles     bool          // the configuration's profile_list
	storage      string        // a claim per user of this size
}

// hubSlots bounds the hub tests running at once. Each runs a Python hub,
// its proxy, the spawner service and often real single-user servers, and
// spends most of its time waiting (a start, a stall, a restart): three at
// a time keep the 2 cores of CI busy without starving one (measured alone:
// 71 s of CPU in 127 s with two). The package's other tests (the module's
// Python tests) need no slot.
var hubSlots = make(chan struct{}, 3)

// parallelHub runs the hub test t in parallel with the package's other
// tests, once one of the hubSlots is free; the slot is released after the
// test's own cleanups (its hub stopped, its namespace gone).
func parallelHub(t *testing.T) {
	t.Helper()
	t.Parallel()
	select {
	case hubSlots <- struct{}{}:
	case <-t.Context().Done():
		t.Fatal("no hub slot before the test's end")
	}
	t.Cleanup(func() { <-hubSlots })
}

// newHubEnv is one test's namespace (no pod may be left in it), the
// package's pod simulator (every pod at 127.0.0.1) and a running hub,
// service and stand-in, stopped when the test ends, whose hub has users.
func newHubEnv(t *testing.T, c hubConfig, users ...string) *hubtest.Env {
	t.Helper()
	ns := cluster.Namespace(t, "hub", testcluster.NoPodsLeft(""), testcluster.KeepEvents())
	// One simulator for the package: the stand-in's pods at 127.0.0.1,
	// pods of the process runtime (real servers) at IPs of their own in a
	// range the API server takes in EndpointSlices (hubSimOptions).
	cluster.PodSim(t, hubSimOptions())
	dir := t.TempDir()
	e, err := hubtest.Start(t.Context(), hubtest.Config{
		Admin: cluster.Config(), Client: cluster.Client(t), Namespace: ns, Dir: dir, SpawnerBinary: spawnerBin,
		ThroughProxy: c.throughProxy, HubStartTimeout: c.startTimeout, HTTPTimeout: 10 * time.Second,
		SweepInterval: c.sweep, OrphanMinAge: 3 * c.startTimeout, StopTimeout: c.stopTimeout,
		ProcessRuntime: map[bool]string{true: podsim.DefaultProcessRuntimeClass}[c.realServers], Profiles: c.profiles, Storage: c.storage,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", e.Logs())
		}
		e.Close()
	})
	if len(users) > 0 {
		require.NoError(t, e.Hub.CreateUsers(t.Context(), users))
	}
	return e
}

// hubServer is the hub's account of name's default server, and whether
// it has one.
func hubServer(t *testing.T, e *hubtest.Env, name string) (hub.Server, bool) {
	t.Helper()
	u, err := e.Hub.User(t.Context(), name)
	require.NoError(t, err)
	return u.Server()
}

// assertAccounted checks, straight from the API server, that the hub and
// the cluster agree on users: no pod the hub does not believe running
// (an orphan), no server the hub believes running without its pod, and
// running servers the hub runs.
func assertAccounted(t *testing.T, e *hubtest.Env, users []string, running int, msgAndArgs ...any) {
	t.Helper()
	a, err := e.Check(t.Context(), users)
	require.NoError(t, err)
	assert.Empty(t, a.Leaked, "orphaned pods")
	assert.Empty(t, a.Missing, "servers without a pod")
	assert.Equal(t, running, a.HubRunning, msgAndArgs...)
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

// TestTwentyConcurrentUsers: 20 users start at once through the hub's
// REST API; all become ready in the hub with their pods running, the
// service's progress messages reach the hub's own progress stream, and
// stopping them through the hub removes every pod.
func TestTwentyConcurrentUsers(t *testing.T) {
	parallelHub(t)
	users := names("conc", 20)
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute}, users...)
	ctx := t.Context()
	slow := map[string]string{podsim.AnnotationScenario: podsim.ScenarioSlowStart, podsim.AnnotationStartDelay: "2s"}
	progress := map[string][]hub.ProgressEvent{}
	results := make(chan struct {
		name string
		evs  []hub.ProgressEvent
	}, len(users))
	require.NoError(t, hubtest.Parallel(users, len(users), func(name string) error {
		if err := e.Hub.StartServer(ctx, name, slow); err != nil {
			return err
		}
		evs, err := e.Hub.Progress(ctx, name)
		results <- struct {
			name string
			evs  []hub.ProgressEvent
		}{name, evs}
		return err
	}))
	close(results)
	for r := range results {
		progress[r.name] = r.evs
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	seen, err := e.Hub.Settled(sctx, users)
	require.NoError(t, err)
	pods, err := e.Pods(ctx)
	require.NoError(t, err)
	for _, name := range users {
		s, ok := seen[name].Server()
		require.True(t, ok, "%s has a server", name)
		assert.True(t, s.Ready, "%s ready in the hub", name)
		p := pods[name]
		require.NotNil(t, p, "%s has a pod", name)
		assert.Equal(t, corev1.PodRunning, p.Status.Phase)
		evs := progress[name]
		require.NotEmpty(t, evs, name)
		assert.Equal(t, "Server requested", evs[0].Message, name)
		last := evs[len(evs)-1]
		assert.True(t, last.Ready, "%s: the stream ends ready: %+v", name, last)
		var fromKubespawn []string
		for _, ev := range evs[1 : len(evs)-1] {
			if ev.Progress > 0 && ev.Progress < 100 && ev.Message != "" {
				fromKubespawn = append(fromKubespawn, ev.Message)
			}
		}
		assert.NotEmpty(t, fromKubespawn, "%s: the pod's progress reached the hub: %+v", name, evs)
		assert.True(t, slices.ContainsFunc(fromKubespawn, func(m string) bool {
			return strings.Contains(m, "Successfully assigned") || strings.Contains(m, "Started")
		}),
			"%s: Kubernetes events of the pod: %v", name, fromKubespawn)
	}
	known, err := e.Service.KnownPods(ctx)
	require.NoError(t, err)
	assert.Len(t, known, len(users))

	require.NoError(t, e.StopAll(ctx, users))
	known, err = e.Service.KnownPods(ctx)
	require.NoError(t, err)
	assert.Empty(t, known)
}

// TestIncidentWithTheRealHub is the 2018 incident with a real JupyterHub
// and real single-user servers (make demo-jupyterhub at a small scale):
// the pod watch between the service and the API server stalls silently
// mid-run and stays stalled; some pods never become ready (their
// jupyterhub-singleuser runs, its readiness never passes), so the hub's
// own start_timeout fires and the hub itself calls stop(); some fail to
// pull their image (no process starts); users stop servers during the
// stall. At the end, read straight from the API server: no pod the hub
// does not believe running, no server the hub believes running without
// its pod; each running server answers through the hub's proxy.
func TestIncidentWithTheRealHub(t *testing.T) {
	parallelHub(t)
	// start_timeout: a healthy real server (~1 s of CPU) is ready in a few
	// seconds, far within it even on 2 cores shared with other packages'
	// tests; the never-ready ones run into it.
	e := newHubEnv(t, hubConfig{throughProxy: true, startTimeout: 40 * time.Second, sweep: time.Minute, realServers: true})
	sim := cluster.PodSim(t, podsim.Options{})
	t.Cleanup(func() {
		if t.Failed() {
			logProcessPods(t, e)
		}
	})
	o := incidentOptions{Users: 10, Launch: 5 * time.Second, StallAt: 0.35, NeverReady: 5, BadImage: 4, Slow: 3, StopEvery: 3,
		Processes: sim.Processes}
	var checkedRunning []string
	o.AfterAudit = func(ctx context.Context, running []string) error {
		// Real servers: each runs as its pod's process, and answers
		// through the hub's proxy with its user's token.
		checkedRunning = running
		for _, name := range running {
			pod, err := e.UserPod(ctx, name)
			if err != nil || pod == nil {
				return fmt.Errorf("%s: no pod (%v)", name, err)
			}
			if info, ok := sim.ProcessPod(pod.Namespace, pod.Name); !ok || info.Pid == 0 {
				return fmt.Errorf("%s: pod %s runs no process", name, pod.Name)
			}
			token, err := e.Hub.Token(ctx, name)
			if err != nil {
				return err
			}
			code, body, err := e.Hub.Get(ctx, "/user/"+name+"/api/status", token)
			if err != nil || code != http.StatusOK || !strings.Contains(string(body), `"started"`) {
				return fmt.Errorf("%s: GET /user/%s/api/status through the proxy: %d %s (%v)", name, name, code, body, err)
			}
		}
		return nil
	}
	neverReady, badImage := 0, 0
	for i := range o.Users {
		switch scenarioOf(o, i)[podsim.AnnotationScenario] {
		case podsim.ScenarioNeverReady:
			neverReady++
		case podsim.ScenarioImagePullFailure:
			badImage++
		}
	}
	require.Positive(t, neverReady)
	require.Positive(t, badImage)
	var log strings.Builder
	o.Out = &log
	rep, err := runIncident(t.Context(), e, o)
	t.Logf("incident:\n%s", log.String())
	require.NoError(t, err)
	var table strings.Builder
	printReport(&table, rep)
	t.Logf("%s", table.String())

	assert.Empty(t, rep.Final.Leaked, "pods on the API server that the hub does not believe running")
	assert.Empty(t, rep.Final.Missing, "servers the hub believes running without a pod")
	assert.Equal(t, rep.Final.HubRunning, rep.Final.Pods)
	assert.True(t, rep.StallDetected, "the service reported the stalled watch on /readyz")
	assert.Equal(t, neverReady, rep.TimedOut, "the hub's own start_timeout fired for every never-ready pod")
	assert.GreaterOrEqual(t, e.Service.Count("Stop cancels the start"), neverReady, "and the hub's stop() cancelled each start in the service")
	assert.Equal(t, badImage, rep.FailedFast, "image pull failures fail fast, before the timeout")
	assert.Equal(t, o.Users-neverReady-badImage, rep.Started)
	assert.Positive(t, rep.StoppedByUsers)
	assert.Equal(t, rep.Started-rep.StoppedByUsers, rep.Final.HubRunning)
	assert.True(t, rep.RealServers)
	assert.Len(t, checkedRunning, rep.Final.HubRunning, "every running server answered through the proxy")
	assert.GreaterOrEqual(t, rep.PeakServers, rep.Started, "every started server ran as a process at once")
	assert.Positive(t, rep.PeakRSS)
	assert.Positive(t, rep.PeakPSS)
	// After the clean-up (watch back, every server stopped through the hub).
	known, err := e.Service.KnownPods(t.Context())
	require.NoError(t, err)
	assert.Empty(t, known)
}

// TestHubRestart: the hub process stops in the middle of starts and
// starts again on the same database. Servers that were running stay
// running and known to the hub (its check_spawner path: poll() said
// running, the URL answered); the starts that died with the hub were
// cancelled by the spawner service (their requests ended) and their pods
// deleted; nothing is orphaned. A second restart while the service is
// frozen (every poll() times out) keeps the running servers too, and the
// hub then starts and stops servers as before.
func TestHubRestart(t *testing.T) {
	parallelHub(t)
	running, pending := names("run", 4), names("pend", 3)
	all := append(slices.Clone(running), pending...)
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: 2 * time.Second}, all...)
	ctx := t.Context()
	require.NoError(t, hubtest.Parallel(running, 4, func(name string) error { return e.Hub.StartServer(ctx, name, nil) }))
	requireReady(t, e, running)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	hang := map[string]string{podsim.AnnotationScenario: podsim.ScenarioSlowStart, podsim.AnnotationStartDelay: "1h"}
	require.NoError(t, hubtest.Parallel(pending, 3, func(name string) error { return e.Hub.StartServer(ctx, name, hang) }))
	require.Eventually(t, func() bool {
		pods, err := e.Pods(ctx)
		require.NoError(t, err)
		return len(pods) == len(all)
	}, time.Minute, 50*time.Millisecond, "the pending starts created their pods")
	for _, name := range pending {
		s, ok := hubServer(t, e, name)
		require.True(t, ok && s.Pending != nil && *s.Pending == "spawn", "%s pending in the hub: %+v", name, s)
	}

	e.Hub.Stop() // SIGTERM in the middle of the starts; servers are left running
	// The starts that died with the hub: cancelled, their pods deleted.
	require.Eventually(t, func() bool {
		for _, name := range pending {
			if gone, err := podGone(ctx, e, name); err != nil || !gone {
				return false
			}
		}
		return true
	}, time.Minute, 50*time.Millisecond, "the pods of the starts that died with the hub are deleted")
	var known []string
	require.Eventually(t, func() bool {
		var err error
		known, err = e.Service.KnownPods(ctx)
		require.NoError(t, err)
		return len(known) == len(running)
	}, time.Minute, 50*time.Millisecond, "the service forgets the cancelled starts: it knows exactly the running servers (%v)", known)

	require.NoError(t, e.Hub.Start(ctx))
	assert.Equal(t, len(running), e.Hub.Count("still running"), "check_spawner kept every running server")
	for _, name := range running {
		s, ok := hubServer(t, e, name)
		assert.True(t, ok && s.Ready, "%s still running and known to the restarted hub: %+v", name, s)
	}
	for _, name := range pending {
		s, ok := hubServer(t, e, name)
		assert.False(t, ok, "%s's dead start is not a server of the restarted hub: %+v", name, s)
	}
	assertAccounted(t, e, all, len(running))

	// Once more, with the service frozen while the hub starts: every
	// poll() times out, which must read as running (a poll() that raised
	// or said stopped would drop the servers without stop(): orphans).
	e.Hub.Stop()
	require.NoError(t, e.Service.Freeze())
	thawed := false
	defer func() {
		if !thawed {
			_ = e.Service.Thaw()
		}
	}()
	require.NoError(t, e.Hub.Start(ctx))
	require.NoError(t, e.Service.Thaw())
	thawed = true
	assert.Equal(t, len(running), e.Hub.Count("still running"), "unknown reads as running: every server kept")
	assert.GreaterOrEqual(t, e.Hub.Count("service unreachable"), len(running), "the polls did time out")
	assertAccounted(t, e, all, len(running))

	// The restarted hub works as before.
	require.NoError(t, e.Hub.StartServer(ctx, pending[0], nil))
	seen, err := e.Hub.Settled(sctx, all)
	require.NoError(t, err)
	s, ok := seen[pending[0]].Server()
	assert.True(t, ok && s.Ready, "a new start after the restart")
	require.NoError(t, e.StopAll(ctx, all))
}

// TestPodEvictedWhileRunning: a running server's pod is evicted. The
// hub's periodic poll() hears "stopped" (exit code 137), and since the
// hub never calls stop() after that, the service deleted the pod before
// answering: the hub forgets the server and the API server has no pod
// left; the other server is untouched.
func TestPodEvictedWhileRunning(t *testing.T) {
	parallelHub(t)
	users := []string{"evicted", "stays"}
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute}, users...)
	ctx := t.Context()
	require.NoError(t, e.Hub.StartServer(ctx, "evicted", map[string]string{podsim.AnnotationScenario: podsim.ScenarioEvict, podsim.AnnotationStartDelay: "3s"}))
	require.NoError(t, e.Hub.StartServer(ctx, "stays", nil))
	requireReady(t, e, users)
	// Evicted 3 s after it started; the hub polls every 5 s.
	require.Eventually(t, func() bool {
		_, ok := hubServer(t, e, "evicted")
		return !ok
	}, 2*time.Minute, 100*time.Millisecond, "the hub saw the evicted server stop")
	gone, err := podGone(ctx, e, "evicted")
	require.NoError(t, err)
	assert.True(t, gone, "the evicted pod was deleted, though the hub never calls stop() for it")
	// The hub's own account: its poll callback polls once more (NotFound
	// by then: the service deleted the pod) and logs that poll's exit
	// status, which is still the container's; then User.stop() without
	// stop().
	assert.Equal(t, 1, e.Hub.Count("User evicted server stopped, with exit code: 137"), "the hub's poll noticed, with the container's exit status")
	assertAccounted(t, e, users, 1)
	require.NoError(t, e.StopAll(ctx, users))
}

// podGone says whether the API server has no pod of user.
func podGone(ctx context.Context, e *hubtest.Env, user string) (bool, error) {
	pod, err := e.UserPod(ctx, user)
	return err == nil && pod == nil, err
}

// requireReady waits (two minutes at most) for the hub to settle and
// requires every one of users to have a ready server.
func requireReady(t *testing.T, e *hubtest.Env, users []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	seen, err := e.Hub.Settled(ctx, users)
	require.NoError(t, err)
	for _, name := range users {
		s, ok := seen[name].Server()
		require.True(t, ok && s.Ready, "%s ready", name)
	}
}

// TestStopWhileTheAPIServerFails (issue 17, defect 1): a user stops a
// running server through the hub while the service's pod watch is stalled
// (reads fall back to the API server) and the API server answers every
// GET and DELETE of a pod with 503. JupyterHub forgets a server once
// stop() returns or raises, so stop() must do neither while the pod
// exists: the service accepts the stop (202 stop-pending) and retries, the
// class waits. Once the API server recovers, the service deletes the pod,
// stop() returns, and the hub forgets the server: no leak, and at no time
// a server the hub had forgotten whose pod was still there.
func TestStopWhileTheAPIServerFails(t *testing.T) {
	parallelHub(t)
	users := []string{"ursula", "victor"}
	e := newHubEnv(t, hubConfig{throughProxy: true, startTimeout: 60 * time.Second, sweep: time.Minute, stopTimeout: 3 * time.Second}, users...)
	ctx := t.Context()
	for _, u := range users {
		require.NoError(t, e.Hub.StartServer(ctx, u, nil))
	}
	requireReady(t, e, users)

	e.Proxy.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	// A change the stalled watch misses: what the stall detector sees.
	victor, err := e.UserPod(ctx, "victor")
	require.NoError(t, err)
	require.NotNil(t, victor)
	_, err = e.Config.Client.CoreV1().Pods(e.Config.Namespace).Patch(ctx, victor.Name, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"test.kubespawn.io/touched":"1"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, e.Service.WaitReadyz(wctx, http.StatusServiceUnavailable), "the service reports its stalled cache")
	for _, verb := range []faultproxy.Verb{faultproxy.VerbGet, faultproxy.VerbDelete} {
		e.Proxy.InjectStatus(faultproxy.Match{Verb: verb, Resource: "pods"}, http.StatusServiceUnavailable, 1<<30, 0)
	}
	// forgotten: the hub has no server for the user whose pod is still on
	// the API server (read without the proxy).
	forgotten := func(name string) bool {
		_, ok := hubServer(t, e, name)
		gone, err := podGone(ctx, e, name)
		require.NoError(t, err)
		return !ok && !gone
	}
	_, err = e.Hub.StopServer(ctx, "ursula")
	require.NoError(t, err)
	// Several of the service's stop attempts (3 s each) fail meanwhile.
	assert.Never(t, func() bool { return forgotten("ursula") }, 12*time.Second, 200*time.Millisecond,
		"the hub forgot a server whose pod still exists")
	s, ok := hubServer(t, e, "ursula")
	require.True(t, ok, "the stop is still pending in the hub")
	require.NotNil(t, s.Pending)
	assert.Equal(t, "stop", *s.Pending)
	assert.Positive(t, e.Service.Count("Stop not completed; the service retries"), "the service took the stop over")

	e.Proxy.ClearFaults() // the API server recovers, the watch resumes
	require.Eventually(t, func() bool {
		_, ok := hubServer(t, e, "ursula")
		gone, err := podGone(ctx, e, "ursula")
		require.NoError(t, err)
		require.False(t, !ok && !gone, "the hub forgot the server before its pod was gone")
		return !ok && gone
	}, 2*time.Minute, 100*time.Millisecond, "the service deleted the pod, then stop() returned")
	assert.Equal(t, 1, e.Hub.Count("kubespawn: stop of ursula confirmed"), "stop() returned once the pod was gone")
	assert.Equal(t, 1, e.Hub.Count("User ursula server took"), "the hub saw the stop succeed (it logs nothing when stop() raises)")
	assert.Zero(t, e.Hub.Count("kubespawn: stop of ursula not confirmed"), "stop() never raised")
	assertAccounted(t, e, users, 1, "victor's server is untouched")
	require.NoError(t, e.StopAll(ctx, users))
}
