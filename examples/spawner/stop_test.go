//go:build integration

package main

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// proxied returns a fault proxy in front of the API server and a started
// factory (StallTimeout 5s) whose requests go through it; both end with
// the test.
func (e *env) proxied(reg *prometheus.Registry) (*faultproxy.Proxy, *reflector.Factory) {
	e.t.Helper()
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = p.Close() })
	f, err := reflector.NewFactory(p.ClientConfig(cluster.Config()), reflector.Options{StallTimeout: 5 * time.Second, Registerer: reg})
	require.NoError(e.t, err)
	e.t.Cleanup(f.Shutdown)
	f.Start(context.Background())
	return p, f
}

// proxiedConfig is config over a proxied factory, with short stops and
// fast retries.
func (e *env) proxiedConfig() (*faultproxy.Proxy, Config) {
	metrics := prometheus.NewRegistry()
	p, f := e.proxied(metrics)
	cfg := e.config(f)
	cfg.Metrics = metrics
	cfg.StopTimeout = 3 * time.Second
	cfg.StopRetryInterval, cfg.StopRetryMaxInterval = 100*time.Millisecond, 500*time.Millisecond
	return p, cfg
}

// row is the user table's row of user: its state ("" without a row).
func (d *demo) row(user string) (state string, uid types.UID) {
	d.srv.mu.Lock()
	defer d.srv.mu.Unlock()
	if u := d.srv.users[user]; u != nil {
		return u.state, u.uid
	}
	return "", ""
}

// stallPods stalls the pod watch behind p, changes pod (a label: the
// watch misses a change, which is what a stall detector can see) and
// waits until d's /readyz says the cache is unhealthy.
func (e *env) stallPods(p *faultproxy.Proxy, d *demo, pod string) {
	e.t.Helper()
	p.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	_, err := e.direct.CoreV1().Pods(e.ns).Patch(e.t.Context(), pod, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"test.kubespawn.io/touched":"1"}}}`), metav1.PatchOptions{})
	require.NoError(e.t, err)
	require.Eventually(e.t, func() bool {
		return d.do(http.MethodGet, "/readyz", nil).code == http.StatusServiceUnavailable
	}, time.Minute, 50*time.Millisecond, "the service reports its cache unhealthy")
}

// proxiedUser starts a demo over a fault proxy (proxiedConfig) and user's
// server on it: where the tests of stops the API server fails begin. It
// returns the proxy, the demo and the user's pod name.
func (e *env) proxiedUser(user string) (*faultproxy.Proxy, *demo, string) {
	e.t.Helper()
	p, cfg := e.proxiedConfig()
	d := e.start(cfg)
	d.startUser(user)
	return p, d, e.podName(user)
}

// TestStopWhoseReadsFailStillDeletesThePod (issue 17, defect 1): the pod
// watch stalls, so reads fall back to the API server, whose GETs of pods
// answer 503. A stop must still send the DELETE (the row has the pod's
// UID: no read is needed), and must not forget the row while the pod may
// exist: the service owns the cleanup and finishes it.
func TestStopWhoseReadsFailStillDeletesThePod(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, d, name := e.proxiedUser("alice")
	uid := e.pod(name).UID

	e.stallPods(p, d, name)
	getPods := faultproxy.Match{Verb: faultproxy.VerbGet, Resource: "pods"}
	p.InjectStatus(getPods, http.StatusServiceUnavailable, 1<<30, 0)

	r := d.do(http.MethodDelete, "/users/alice/server", nil)
	require.Equal(t, http.StatusAccepted, r.code, "not confirmed gone, so not 200; and never a 503 that leaves the pod to nobody: %s", r.body)
	assert.Equal(t, stateStopPending, r.json(t)["state"])
	if pod := e.pod(name); pod != nil {
		assert.NotNil(t, pod.DeletionTimestamp, "the DELETE reached the API server without a read first")
		state, rowUID := d.row("alice")
		assert.Equal(t, stateStopPending, state, "while the pod may exist, its row is kept")
		assert.Equal(t, uid, rowUID)
	}
	// The API server recovers: the service's retry confirms the pod gone.
	p.InjectStatus(getPods, 0, 0, 0)
	p.UnstallAll()
	require.Eventually(t, func() bool { state, _ := d.row("alice"); return state == "" && e.pod(name) == nil },
		time.Minute, 50*time.Millisecond, "the service finished the stop: pod gone and row dropped")
	assert.Equal(t, http.StatusNotFound, d.do(http.MethodGet, "/users/alice/server", nil).code)
	d.startStopUser("alice")
}

// TestStopWhoseDeleteFailsIsRetried (issue 17, defect 1): the API server
// answers every DELETE of a pod with 503 for a while. The stop answers 202
// stop-pending; the row stays (poll reports it, a new start gets 409); the
// service retries in the background and the pod goes once the DELETEs
// pass again.
func TestStopWhoseDeleteFailsIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, d, name := e.proxiedUser("bob")

	deletes := faultproxy.Match{Verb: faultproxy.VerbDelete, Resource: "pods"}
	p.InjectStatus(deletes, http.StatusServiceUnavailable, 1<<30, 0)
	r := d.do(http.MethodDelete, "/users/bob/server", nil)
	require.Equal(t, http.StatusAccepted, r.code, "%s", r.body)
	body := r.json(t)
	assert.Equal(t, stateStopPending, body["state"])
	assert.Contains(t, body["error"], "unable to handle the request", "the API server's answer is in the body")
	require.NotNil(t, e.pod(name), "every DELETE failed: the pod is still there")

	poll := d.do(http.MethodGet, "/users/bob/server", nil)
	require.Equal(t, http.StatusOK, poll.code, "%s", poll.body)
	assert.Equal(t, stateStopPending, poll.json(t)["serviceState"])
	again := d.do(http.MethodPost, "/users/bob/server", nil)
	require.Equal(t, http.StatusConflict, again.code, "%s", again.body)
	assert.Equal(t, stateStopPending, again.json(t)["state"])
	assert.Empty(t, d.known().Pods, "a stop-pending pod is not one the service keeps: the sweep CLI may take it")
	// A second stop while pending: accepted again, still owned.
	assert.Equal(t, http.StatusAccepted, d.do(http.MethodDelete, "/users/bob/server", nil).code)
	state, _ := d.row("bob")
	assert.Equal(t, stateStopPending, state)

	p.InjectStatus(deletes, 0, 0, 0) // the DELETEs pass again
	require.Eventually(t, func() bool { state, _ := d.row("bob"); return state == "" && e.pod(name) == nil },
		time.Minute, 50*time.Millisecond, "the service's retry deleted the pod and dropped the row")
	assert.Greater(t, p.Stats()[faultproxy.Key{Verb: faultproxy.VerbDelete, Resource: "pods"}].Requests, int64(2), "DELETEs were retried")
	d.startStopUser("bob")
}

// TestSweeperSelection: the sweeper's selection keeps the table's pods,
// takes the pods it does not know and those of stop-pending rows, and
// selects nothing before the table is rebuilt.
func TestSweeperSelection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fresh, err := newServer(t.Context(), e.config(nil)) // never started: not rebuilt
	require.NoError(t, err)
	t.Cleanup(fresh.Close)
	d := e.start(e.config(nil))
	pod := func(user string, uid types.UID) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: e.podName(user), UID: uid, Annotations: map[string]string{spawner.AnnotationKey: user}}}
	}
	d.srv.mu.Lock()
	d.srv.users["run"] = &userServer{user: "run", pod: e.podName("run"), uid: "u-run", state: stateRunning}
	d.srv.users["pend"] = &userServer{user: "pend", pod: e.podName("pend"), uid: "u-pend", state: stateStopPending, retrying: true}
	d.srv.mu.Unlock()
	for _, c := range []struct {
		pod  *corev1.Pod
		want spawner.SweepReason
	}{
		{pod("run", "u-run"), ""},
		{pod("run", "u-other"), spawner.SweepReasonOrphan},
		{pod("pend", "u-pend"), sweepReasonStopPending},
		{pod("nobody", "u-x"), spawner.SweepReasonOrphan},
	} {
		got, err := d.srv.orphan(t.Context(), c.pod)
		require.NoError(t, err)
		assert.Equal(t, c.want, got, "%s %s", c.pod.Name, c.pod.UID)
	}
	got, err := fresh.orphan(t.Context(), pod("nobody", "u-x"))
	assert.Error(t, err, "before the rebuild, no selection")
	assert.Empty(t, got)

	// Claims: those of users the table has no server for are reported;
	// a stop-pending row still has its pod, so its claim is not.
	claim := func(user string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "claim-" + user, Annotations: map[string]string{spawner.AnnotationKey: user}}}
	}
	for user, want := range map[string]spawner.SweepReason{"run": "", "pend": "", "nobody": sweepReasonNoServer} {
		got, err := d.srv.claimOfNoServer(t.Context(), claim(user))
		require.NoError(t, err)
		assert.Equal(t, want, got, user)
	}
	got, err = fresh.claimOfNoServer(t.Context(), claim("nobody"))
	assert.Error(t, err, "before the rebuild, no claim is reported")
	assert.Empty(t, got)
	d.srv.mu.Lock()
	clear(d.srv.users)
	d.srv.mu.Unlock()
}

var sweepsOK = regexp.MustCompile(`kubespawn_spawner_sweeps_total\{mode="delete",result="ok",spawner="default"\} (\d+)`)

// sweeps counts the demo's successful deleting sweeps.
func sweeps(t *testing.T, d *demo) int {
	m := sweepsOK.FindStringSubmatch(metric(t, d, "kubespawn_spawner_sweeps_total"))
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// TestRestartedServiceRebuildsItsTable (issue 17, defect 2): the service
// is replaced (a crash, an exit on its factory's failure) while its users' pods run. The
// new one, its sweeper on and leading at once with a tiny orphan age,
// first rebuilds its table from the API server: until that succeeds (here
// its LISTs fail for a while) it serves no user and no /known-pods, and
// sweeps nothing; then it knows every running pod: the sweeper deletes
// none, poll reports them running, stop works.
func TestRestartedServiceRebuildsItsTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.start(e.config(nil))
	users := []string{"alice", "bob", "carol"}
	uids := map[string]types.UID{}
	for _, u := range users {
		uids[u] = types.UID(first.startUser(u)["uid"].(string))
	}
	first.close() // gone without a word: its table with it

	p, cfg := e.proxiedConfig()
	lists := faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods"}
	p.InjectStatus(lists, http.StatusServiceUnavailable, 1<<30, 0)
	cfg.SweepInterval, cfg.OrphanMinAge, cfg.RetryPeriod, cfg.Identity = 100*time.Millisecond, time.Millisecond, 100*time.Millisecond, "replacement"
	d := e.startNoWait(cfg)
	// Until the rebuild succeeds: no user routes, no /known-pods (the
	// sweep CLI must not read an empty table), no sweep.
	assert.Never(t, func() bool {
		return d.do(http.MethodGet, "/known-pods", nil).code != http.StatusServiceUnavailable ||
			d.do(http.MethodGet, "/users/alice/server", nil).code != http.StatusServiceUnavailable ||
			d.do(http.MethodGet, "/readyz", nil).code != http.StatusServiceUnavailable
	}, 2*time.Second, 100*time.Millisecond)
	r := d.do(http.MethodDelete, "/users/alice/server", nil)
	assert.Equal(t, http.StatusServiceUnavailable, r.code)
	assert.Contains(t, string(r.body), "rebuilding")

	p.InjectStatus(lists, 0, 0, 0)
	d.waitReady()
	require.Eventually(t, func() bool { return sweeps(t, d) >= 3 }, time.Minute, 50*time.Millisecond, "the replacement's sweeper leads and sweeps")
	for _, u := range users {
		pod := e.pod(e.podName(u))
		require.NotNil(t, pod, "%s's running pod was swept", u)
		assert.Equal(t, uids[u], pod.UID)
		assert.Nil(t, pod.DeletionTimestamp, u)
		poll := d.do(http.MethodGet, "/users/"+u+"/server", nil)
		require.Equal(t, http.StatusOK, poll.code, "%s", poll.body)
		assert.Equal(t, "running", poll.json(t)["state"])
		assert.Equal(t, stateRunning, poll.json(t)["serviceState"], "known to the replacement")
		assert.Equal(t, http.StatusConflict, d.do(http.MethodPost, "/users/"+u+"/server", nil).code, "a second start is refused")
	}
	assert.ElementsMatch(t, []string{e.podName("alice"), e.podName("bob"), e.podName("carol")}, d.known().Pods)
	for _, u := range users {
		d.stopUser(u)
		assert.Nil(t, e.pod(e.podName(u)))
	}
	assert.Empty(t, d.known().Pods)
}

// TestRebuildTakesTerminatingPodsAsStopPending: a pod already terminating
// when the service starts (a stop the last process sent but could not
// confirm) is rebuilt as stop-pending: the service confirms it gone.
func TestRebuildTakesTerminatingPodsAsStopPending(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := e.podName("dora")
	_, err := e.direct.CoreV1().Pods(e.ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: "default", spawner.LabelKeyHash: spawner.KeyHash("dora")},
			Annotations: map[string]string{spawner.AnnotationKey: "dora"},
			Finalizers:  []string{"kubespawn.io/test-hold"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: "example.org/notebook:1"}}, TerminationGracePeriodSeconds: ptr.To[int64](0)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), name, metav1.DeleteOptions{}))

	cfg := e.config(nil)
	cfg.StopTimeout = time.Second
	cfg.StopRetryInterval, cfg.StopRetryMaxInterval = 100*time.Millisecond, 200*time.Millisecond
	d := e.start(cfg)
	state, _ := d.row("dora")
	assert.Equal(t, stateStopPending, state)
	assert.Equal(t, http.StatusConflict, d.do(http.MethodPost, "/users/dora/server", nil).code)
	// The finalizer goes (the kubelet's part): the service sees it gone.
	pod := e.pod(name)
	pod.Finalizers = nil
	_, err = e.direct.CoreV1().Pods(e.ns).Update(t.Context(), pod, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { state, _ := d.row("dora"); return state == "" }, time.Minute, 50*time.Millisecond)
	assert.Nil(t, e.pod(name))
}

// TestInstancesNeverShareAPod (issue 17, defect 8): two service instances
// in one namespace, the same user: each has its own pod (their names
// differ), and a stop on one never touches the other's.
func TestInstancesNeverShareAPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, cfgA, cfgB := e.twoInstances("hub", "hub-a")
	a, b := e.start(cfgA), e.start(cfgB)
	// A key long enough to be cut, shaped so that "hub" + it would meet
	// "hub-a" + it if the names carried the instance readably only.
	long := "a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a"
	for _, user := range []string{"sam", long} {
		ra, rb := a.startUser(user), b.startUser(user)
		require.NotEqual(t, ra["pod"], rb["pod"], "one pod name for two instances")
		assert.Equal(t, "hub", e.pod(ra["pod"].(string)).Labels[spawner.LabelInstance])
		assert.Equal(t, "hub-a", e.pod(rb["pod"].(string)).Labels[spawner.LabelInstance])

		a.stopUser(user)
		assert.Nil(t, e.pod(ra["pod"].(string)))
		other := e.pod(rb["pod"].(string))
		require.NotNil(t, other, "stopping on one instance deleted the other's pod")
		assert.Nil(t, other.DeletionTimestamp)
		assert.Equal(t, types.UID(rb["uid"].(string)), other.UID)
		poll := b.do(http.MethodGet, "/users/"+user+"/server", nil)
		require.Equal(t, http.StatusOK, poll.code, "%s", poll.body)
		assert.Equal(t, "running", poll.json(t)["state"])
		b.stopUser(user)
	}
}

// TestStopAfterOurPodWasReplacedKeepsNoRow (issue 17, defect 8): the
// user's pod was deleted behind the service's back and the name now holds
// a pod that is not this instance's. The stop deletes nothing of it (the
// row's UID is the precondition: our pod is already gone) and keeps no
// row, so a later start is not refused as "running" forever; a stop with
// no row is a 403 that leaves no row either.
func TestStopAfterOurPodWasReplacedKeepsNoRow(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	d.startUser("olga")
	name := e.podName("olga")
	e.deletePod(name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	foreign := e.createPod(metav1.ObjectMeta{Name: name, Labels: instanceLabels("hub-2")})

	r := d.do(http.MethodDelete, "/users/olga/server", nil)
	require.Equal(t, http.StatusOK, r.code, "our pod is gone: the stop is done: %s", r.body)
	state, _ := d.row("olga")
	assert.Empty(t, state, "no row left")
	p := e.pod(name)
	require.NotNil(t, p)
	assert.Equal(t, foreign.UID, p.UID)
	assert.Nil(t, p.DeletionTimestamp, "the other instance's pod is untouched")

	again := d.do(http.MethodPost, "/users/olga/server", nil)
	require.Equal(t, http.StatusConflict, again.code, "%s", again.body)
	assert.Equal(t, "name_conflict", again.json(t)["reason"], "refused for the pod that holds the name, not for a stale row")
	r = d.do(http.MethodDelete, "/users/olga/server", nil)
	require.Equal(t, http.StatusForbidden, r.code, "%s", r.body)
	assert.Equal(t, true, r.json(t)["outOfScope"])
	state, _ = d.row("olga")
	assert.Empty(t, state, "a 403 keeps no row")
	assert.Nil(t, e.pod(name).DeletionTimestamp)

	e.deletePod(name, metav1.DeleteOptions{})
}
