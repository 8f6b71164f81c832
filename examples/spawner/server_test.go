//go:build integration

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/spawner"
)

func TestStartPollStop(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	name := e.podName("alice@example.com")

	res := d.startUser("alice@example.com")
	assert.Equal(t, name, res["pod"])
	assert.NotEmpty(t, res["podIP"])
	assert.Equal(t, 200.0, res["status"])
	// The pod runs on the API server, ready, with the spawner's labels.
	pod := e.pod(name)
	require.NotNil(t, pod)
	assert.Equal(t, corev1.PodRunning, pod.Status.Phase)
	assert.Equal(t, string(pod.UID), res["uid"])
	assert.Equal(t, "default", pod.Labels[spawner.LabelInstance])
	assert.Equal(t, "example.org/notebook:1", pod.Spec.Containers[0].Image)

	poll := d.do(http.MethodGet, "/users/alice@example.com/server", nil)
	require.Equal(t, http.StatusOK, poll.code, "%s", poll.body)
	p := poll.json(t)
	assert.Equal(t, "running", p["state"])
	assert.Equal(t, true, p["ready"])
	assert.Equal(t, "running", p["serviceState"])
	assert.Equal(t, pod.Status.PodIP, p["podIP"])

	// A second start while running is refused.
	again := d.do(http.MethodPost, "/users/alice@example.com/server", nil)
	assert.Equal(t, http.StatusConflict, again.code)
	assert.Equal(t, "running", again.json(t)["state"])

	d.stopUser("alice@example.com")
	assert.Nil(t, e.pod(name), "the API server still has the pod after stop")
	poll = d.do(http.MethodGet, "/users/alice@example.com/server", nil)
	require.Equal(t, http.StatusNotFound, poll.code)
	assert.Equal(t, "stopped", poll.json(t)["state"])
	assert.Equal(t, "NotFound", poll.json(t)["reason"])
	assert.Empty(t, d.known().Pods)

	// Stop is idempotent: always a DELETE, NotFound is "already gone".
	d.stopUser("alice@example.com")
	// The user can start again.
	d.startStopUser("alice@example.com")
}

func TestStartStreamsProgress(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)

	evs := d.sse(http.MethodPost, "/users/bob/server?progress=sse", map[string]any{"image": "example.org/other:2"})
	require.NotEmpty(t, evs)
	last := evs[len(evs)-1]
	require.Equal(t, "result", last.name)
	var res serverJSON
	require.NoError(t, json.Unmarshal([]byte(last.data), &res))
	assert.Equal(t, "running", res.State)
	prev, reasons := 0, []string{}
	for _, ev := range evs[:len(evs)-1] {
		require.Equal(t, "progress", ev.name)
		var p progressJSON
		require.NoError(t, json.Unmarshal([]byte(ev.data), &p))
		assert.GreaterOrEqual(t, p.Progress, prev, "progress never decreases")
		prev = p.Progress
		reasons = append(reasons, p.Reason)
	}
	// The stream carries the pod's events up to the start's result. An
	// event is written apart from the pod's status (by the kubelet's
	// asynchronous event recorder, here the simulator's), so the last ones
	// (Pulled, Started) may reach the API server after the pod is Ready and
	// the start has ended: those earlier than the pull are in the stream,
	// and Started is among the pod's events on the API server.
	assert.Subset(t, reasons, []string{"Scheduled", "Pulling"})
	pod := e.pod(e.podName("bob"))
	assert.Equal(t, "example.org/other:2", pod.Spec.Containers[0].Image)
	require.Eventually(t, func() bool {
		l, err := e.direct.CoreV1().Events(e.ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(pod.UID)})
		if err != nil {
			return false
		}
		for _, ev := range l.Items {
			if ev.Reason == "Started" {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "the pod's Started event")

	// GET .../progress replays the finished start, then its result.
	replay := d.sse(http.MethodGet, "/users/bob/server/progress", nil)
	assert.Equal(t, evs, replay)
	d.stopUser("bob")
	assert.Equal(t, http.StatusNotFound, d.do(http.MethodGet, "/users/bob/server/progress", nil).code)
}

func TestFailingStartReturnsReasonAndLeavesNoPod(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	body := map[string]any{"image": "example.org/no-such:image", "annotations": map[string]string{podsim.AnnotationScenario: podsim.ScenarioImagePullFailure}}

	r := d.do(http.MethodPost, "/users/carol/server", body)
	require.Equal(t, http.StatusUnprocessableEntity, r.code, "%s", r.body)
	var res serverJSON
	require.NoError(t, json.Unmarshal(r.body, &res))
	assert.Equal(t, "failed", res.State)
	assert.Equal(t, "image_pull", res.Reason)
	require.NotNil(t, res.PodDeleted)
	assert.True(t, *res.PodDeleted)
	assert.False(t, res.CleanupFailed)
	assert.NotEmpty(t, res.Events, "the pod's Warning events")
	assert.Contains(t, strings.Join(res.Events, "\n"), "[Warning]")
	assert.Nil(t, e.pod(e.podName("carol")), "a failed start leaves no pod")
	assert.Empty(t, d.known().Pods)
	assert.Equal(t, http.StatusNotFound, d.do(http.MethodGet, "/users/carol/server", nil).code)

	// The same failure, streamed.
	evs := d.sse(http.MethodPost, "/users/carol/server?progress=sse", body)
	require.Equal(t, "result", evs[len(evs)-1].name)
	require.NoError(t, json.Unmarshal([]byte(evs[len(evs)-1].data), &res))
	assert.Equal(t, "image_pull", res.Reason)
	assert.Equal(t, http.StatusUnprocessableEntity, res.Status)
	assert.Nil(t, e.pod(e.podName("carol")))

	// Bad input: typed 400s, nothing created.
	bad := d.do(http.MethodPost, "/users/carol/server", map[string]any{"annotations": map[string]string{spawner.AnnotationKey: "x"}})
	assert.Equal(t, http.StatusBadRequest, bad.code, "%s", bad.body)
	assert.Equal(t, "invalid_request", bad.json(t)["reason"])
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, d.url+"/users/carol/server", strings.NewReader("{not json"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestKnownPodsListsExactlyRunningUsers(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	assert.Equal(t, KnownPods{Namespace: e.ns, Instance: "default", Pods: []string{}}, d.known())
	for _, u := range []string{"alice", "bob", "carol"} {
		d.startUser(u)
	}
	fail := d.do(http.MethodPost, "/users/dave/server", map[string]any{"annotations": map[string]string{podsim.AnnotationScenario: podsim.ScenarioImagePullFailure}})
	require.Equal(t, http.StatusUnprocessableEntity, fail.code)
	d.stopUser("bob")
	got := d.known()
	assert.Equal(t, e.ns, got.Namespace)
	assert.ElementsMatch(t, []string{e.podName("alice"), e.podName("carol")}, got.Pods)
	d.stopUser("alice")
	d.stopUser("carol")
	assert.Empty(t, d.known().Pods)
}

// Stop during a start cancels it: the start deletes its pod and answers
// 409 "stopped"; a second start while one is in progress is refused.
func TestStopDuringStart(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	slow := map[string]any{"annotations": map[string]string{podsim.AnnotationScenario: podsim.ScenarioSlowStart, podsim.AnnotationStartDelay: "1h"}}
	started := make(chan response, 1)
	go func() { started <- d.do(http.MethodPost, "/users/erin/server", slow) }()
	e.waitPod(e.podName("erin"))
	assert.Equal(t, []string{e.podName("erin")}, d.known().Pods, "a starting pod is known")
	dup := d.do(http.MethodPost, "/users/erin/server", nil)
	assert.Equal(t, http.StatusConflict, dup.code)
	assert.Equal(t, "starting", dup.json(t)["state"])

	d.stopUser("erin")
	r := <-started
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	assert.Equal(t, "stopped", r.json(t)["reason"])
	assert.Nil(t, e.pod(e.podName("erin")))
	assert.Empty(t, d.known().Pods)
}

// The sweeper runs only while its replica holds the Lease, and then deletes
// a managed pod its user table does not know, never a known one.
func TestSweeperDeletesOrphanWhenLeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	leaseName := "kubespawn-sweeper-default"
	// Another replica holds the Lease.
	_, err := e.direct.CoordinationV1().Leases(e.ns).Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: leaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("other-replica"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: ptr.To(metav1.NewMicroTime(time.Now())), RenewTime: ptr.To(metav1.NewMicroTime(time.Now()))},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := e.config(nil)
	cfg.SweepInterval, cfg.OrphanMinAge, cfg.Identity = 200*time.Millisecond, time.Second, "demo-1"
	cfg.RetryPeriod = 200 * time.Millisecond
	d := e.start(cfg)
	d.startUser("alice")

	// A pod with the service's labels, created behind its back (a leak).
	orphan := e.createPod(metav1.ObjectMeta{
		Name:        e.podName("mallory"),
		Labels:      map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: "default", spawner.LabelKeyHash: spawner.KeyHash("mallory")},
		Annotations: map[string]string{spawner.AnnotationKey: "mallory"},
	})
	// Another instance's pod: not this sweeper's business.
	foreign := e.createPod(metav1.ObjectMeta{Name: "kubespawn-other-instance", Labels: instanceLabels("hub-2")})

	// Not the leader: well past Config.OrphanMinAge and many retry periods, the
	// orphan is still there.
	assert.Never(t, func() bool { return e.pod(orphan.Name) == nil }, 3*time.Second, 100*time.Millisecond)
	assert.NotContains(t, metric(t, d, "kubespawn_spawner_sweeps_total"), `mode="delete"`)

	// The other replica goes away (its Lease released): this one leads
	// and sweeps the orphan.
	require.NoError(t, e.direct.CoordinationV1().Leases(e.ns).Delete(t.Context(), leaseName, metav1.DeleteOptions{}))
	e.waitPodGone(orphan.Name)
	lease, err := e.direct.CoordinationV1().Leases(e.ns).Get(t.Context(), leaseName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "demo-1", *lease.Spec.HolderIdentity)
	// Counted once the sweep has confirmed every delete, a moment after
	// the pod disappears.
	require.Eventually(t, func() bool {
		return strings.Contains(metric(t, d, "kubespawn_spawner_swept_pods_total"), `kubespawn_spawner_swept_pods_total{reason="orphan",spawner="default"} 1`)
	}, 30*time.Second, 50*time.Millisecond, "swept metric: %s", metric(t, d, "kubespawn_spawner_swept_pods_total"))
	require.NotNil(t, e.pod(e.podName("alice")), "a known pod is never swept")
	require.NotNil(t, e.pod(foreign.Name), "another instance's pod is never swept")

	d.stopUser("alice")
	e.deletePod(foreign.Name, metav1.DeleteOptions{})
}

// metric returns the /metrics lines of one metric family.
func metric(t *testing.T, d *demo, name string) string {
	t.Helper()
	r := d.do(http.MethodGet, "/metrics", nil)
	require.Equal(t, http.StatusOK, r.code)
	var out []string
	for line := range strings.Lines(string(r.body)) {
		if strings.HasPrefix(line, name) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "\n")
}

// Two spawner instances in one process share one pod watch and one event
// watch through the factory; each knows only its own users.
func TestInstancesShareCaches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f, cfgA, cfgB := e.twoInstances("hub-a", "hub-b")
	a, b := e.start(cfgA), e.start(cfgB)
	assert.Same(t, a.srv.pods, b.srv.pods)
	assert.Len(t, f.Status(), 2, "one pod cache and one event cache")

	a.startUser("ann")
	b.startUser("ben")
	assert.Equal(t, []string{e.podNameOf("hub-a", "ann")}, a.known().Pods)
	assert.Equal(t, []string{e.podNameOf("hub-b", "ben")}, b.known().Pods)
	assert.Equal(t, "hub-b", e.pod(e.podNameOf("hub-b", "ben")).Labels[spawner.LabelInstance])
	for _, d := range []*demo{a, b} {
		assert.Contains(t, metric(t, d, "kubespawn_reflector_state"), `reflector="pods ns=`+e.ns+`;labels=app.kubernetes.io/managed-by=kubespawn;fields=",state="synced"} 1`)
		assert.Contains(t, metric(t, d, "kubespawn_reflector_state"), `reflector="events ns=`+e.ns+`;labels=;fields=involvedObject.kind=Pod",state="synced"} 1`)
	}
	starts := metric(t, a, "kubespawn_spawner_starts_total")
	assert.Contains(t, starts, `kubespawn_spawner_starts_total{result="running",spawner="hub-a"} 1`)
	assert.Contains(t, starts, `kubespawn_spawner_starts_total{result="running",spawner="hub-b"} 1`)
	a.stopUser("ann")
	b.stopUser("ben")
}

// run: the real program, with flags, until SIGTERM (ctx): a start in
// progress at shutdown is cancelled and its pod deleted; the process
// returns nil.
func TestRunGracefulShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addr := servicetest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig", testcluster.KubeConfig(t, cluster.Config()), "--namespace", e.ns, "--listen", addr,
			"--instance", "demo", "--stall-timeout", "5s", "--sweep-interval", "1s", "--stop-timeout", "30s"}, &strings.Builder{})
	}()
	d := &demo{t: t, url: "http://" + addr}
	d.waitReady()

	slow := map[string]any{"annotations": map[string]string{podsim.AnnotationScenario: podsim.ScenarioSlowStart, podsim.AnnotationStartDelay: "1h"}}
	started := make(chan response, 1)
	go func() { started <- d.do(http.MethodPost, "/users/frank/server", slow) }()
	e.waitPod(e.podNameOf("demo", "frank"))

	cancel() // SIGTERM
	r := <-started
	assert.Equal(t, http.StatusServiceUnavailable, r.code, "%s", r.body)
	assert.Equal(t, "cancelled", r.json(t)["reason"])
	require.NoError(t, <-done)
	assert.Nil(t, e.pod(e.podNameOf("demo", "frank")), "the start cancelled by the shutdown deleted its pod")
	// The sweeper released its Lease on the way out.
	lease, err := e.direct.CoordinationV1().Leases(e.ns).Get(context.Background(), "kubespawn-sweeper-demo", metav1.GetOptions{})
	if err == nil {
		assert.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""))
	}
}

// A reflector that cannot recover (here: no RBAC permission at all) fails
// after --failure-timeout, and run returns an error (exit status 1) so
// that Kubernetes restarts the container.
func TestRunExitsOnReflectorFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	saCfg, err := cluster.ServiceAccountConfig(t.Context(), e.ns, "no-permissions")
	require.NoError(t, err)
	err = run(t.Context(), []string{"--kubeconfig", testcluster.KubeConfig(t, saCfg), "--namespace", e.ns,
		"--listen", "127.0.0.1:0", "--instance", "demo", "--stall-timeout", "4s", "--failure-timeout", "4s", "--sweep-interval", "0"}, &strings.Builder{})
	servicetest.AssertReflectorFailure(t, err)
}

func TestRunBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--stall-timeout", "10ms"},
		{"--instance", "demo", "--start-timeout", "-1s"}, // 0 is the library's default now; its validation refuses a negative one
		{"--instance", "demo", "--max-claim-age", "-1s"},
		{"--instance", "demo", "--storage-capacity", "0"},
		{"--sweep-interval", "-1s"},
		{"--namespace", ""},
		{"extra"},
		{"--no-such-flag"},
		{"--failure-timeout", "-1s"},
		{"--instance", "demo", "--stall-timeout", "10s", "--failure-timeout", "5s"},
		{"--namespace", "u"}, // no --instance
		{"--instance", "demo", "--stop-retry-interval", "0"},
		{"--instance", "demo", "--stop-retry-max-interval", "-1s"},
	} {
		err := run(t.Context(), args, &strings.Builder{})
		assert.Error(t, err, "%v", args)
	}
	_, err := parseFlags([]string{"--instance", "not a label value"}, &strings.Builder{})
	assert.ErrorIs(t, err, spawner.ErrInvalidArgument, "the instance names the pods: a label value")
}
