//go:build integration

package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/reflector"
)

var userLabels = map[string]string{"component": "singleuser-server"}

type podBody struct {
	Source string      `json:"source"`
	Pod    *corev1.Pod `json:"pod"`
	Error  string      `json:"error"`
}

type listBody struct {
	Source string        `json:"source"`
	Items  []*corev1.Pod `json:"items"`
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), "body: %s", r.body)
	var v T
	require.NoError(t, json.Unmarshal(r.body, &v), "body: %s", r.body)
	return v
}

func names(pods []*corev1.Pod) []string {
	out := []string{}
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// TestReadEndpoints covers GET /pods/{ns}/{name}, GET /pods, /status,
// /readyz, /livez and /metrics on a healthy sidecar.
func TestReadEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.pod("jupyter-alice", map[string]string{"component": "singleuser-server", "tier": "gpu"})
	e.pod("jupyter-bob", userLabels)
	e.pod("other", map[string]string{"component": "something-else"})
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}, Selector: "component=singleuser-server"})
	s.waitReady()

	// A pod in the cache.
	var got podBody
	require.Eventually(t, func() bool {
		r := s.get("/pods/" + e.ns + "/jupyter-alice")
		require.Equal(t, http.StatusOK, r.code, "%s", r.body)
		got = decode[podBody](t, r)
		return got.Source == "cache"
	}, 30*time.Second, 50*time.Millisecond)
	require.NotNil(t, got.Pod)
	assert.Equal(t, "jupyter-alice", got.Pod.Name)
	assert.Equal(t, alice.UID, got.Pod.UID)
	assert.Equal(t, "Pod", got.Pod.Kind)
	assert.Equal(t, "v1", got.Pod.APIVersion)
	assert.Equal(t, "example.invalid/notebook:1", got.Pod.Spec.Containers[0].Image)

	// Missing: only the API server says so.
	r := s.get("/pods/" + e.ns + "/jupyter-nobody")
	require.Equal(t, http.StatusNotFound, r.code, "%s", r.body)
	nf := decode[podBody](t, r)
	assert.Equal(t, "api", nf.Source)
	assert.Contains(t, nf.Error, "not found")

	// A pod outside the selector is out of scope: never served, and never
	// a 404 (it exists, the API server has it).
	r = s.get("/pods/" + e.ns + "/other")
	require.Equal(t, http.StatusForbidden, r.code, "%s", r.body)
	assert.Equal(t, "api", decode[podBody](t, r).Source)
	assert.Equal(t, true, r.json(t)["outOfScope"])

	// A namespace the sidecar does not serve is a client error, not a 404.
	r = s.get("/pods/kube-system/anything")
	require.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)
	assert.Contains(t, s.get("/pods/kube-system/anything").json(t)["error"], "out of scope")

	// Lists.
	r = s.get("/pods")
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	list := decode[listBody](t, r)
	assert.Equal(t, "cache", list.Source)
	assert.Equal(t, []string{"jupyter-alice", "jupyter-bob"}, names(list.Items))
	assert.Equal(t, "Pod", list.Items[0].Kind)

	r = s.get("/pods?namespace=" + e.ns + "&selector=" + url.QueryEscape("tier=gpu"))
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, []string{"jupyter-alice"}, names(decode[listBody](t, r).Items))

	r = s.get("/pods?selector=" + url.QueryEscape("tier=cpu"))
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, "[]", string(mustRaw(t, r.body, "items")), "an empty list is [], not null")

	r = s.get("/pods?selector=" + url.QueryEscape("tier in (a"))
	require.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)
	assert.Contains(t, r.json(t)["error"], "bad selector")

	r = s.get("/pods?namespace=kube-system")
	require.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)

	// Status.
	r = s.get("/status")
	require.Equal(t, http.StatusOK, r.code)
	st := r.json(t)
	assert.Equal(t, "synced", st["state"])
	assert.Equal(t, "pods ns="+e.ns+";labels=component=singleuser-server;fields=", st["name"])
	for _, k := range []string{"state", "reason", "lastEventTime", "gaps", "restarts", "relists", "lagSeconds", "objects"} {
		assert.Contains(t, st, k)
	}
	assert.Equal(t, "", st["reason"], "reason is always present, empty while synced")
	assert.EqualValues(t, 2, st["objects"])
	assert.IsType(t, map[string]any{}, st["gaps"])
	lastEvent, err := time.Parse(time.RFC3339Nano, st["lastEventTime"].(string))
	require.NoError(t, err)
	assert.False(t, lastEvent.IsZero())
	evStatus, ok := st["events"].(map[string]any)
	require.True(t, ok, "the event reflector's status under \"events\": %s", r.body)
	assert.Equal(t, "synced", evStatus["state"])

	// Health.
	r = s.get("/readyz")
	assert.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, "ok", r.json(t)["status"])
	r = s.get("/livez")
	assert.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, "ok", r.json(t)["status"])

	// Metrics: the reflectors' and the Go runtime's.
	r = s.get("/metrics")
	require.Equal(t, http.StatusOK, r.code)
	body := string(r.body)
	assert.Contains(t, body, `kubespawn_reflector_state{reflector="pods ns=`+e.ns+`;labels=component=singleuser-server;fields=",state="synced"} 1`)
	assert.Contains(t, body, `kubespawn_reflector_state{reflector="events ns=`+e.ns+`;labels=;fields=involvedObject.kind=Pod",state="synced"} 1`)
	assert.Contains(t, body, "kubespawn_reflector_lookups_total")
	assert.Contains(t, body, "kubespawn_events_streams")
	assert.Contains(t, body, "go_goroutines")
	assert.Contains(t, body, "process_cpu_seconds_total")
}

// mustRaw returns the raw JSON of key in body.
func mustRaw(t *testing.T, body []byte, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &m))
	return m[key]
}

// TestBadPathsAndMethods: 404 and 405 with JSON bodies; without a token,
// DELETE is not served at all.
func TestBadPathsAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("jupyter-alice", nil)
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}})

	for _, path := range []string{"/", "/nope", "/pods/" + e.ns, "/pods/" + e.ns + "/jupyter-alice/events/extra", "/status/x"} {
		r := s.get(path)
		assert.Equal(t, http.StatusNotFound, r.code, "GET %s: %s", path, r.body)
		assert.NotEmpty(t, r.json(t)["error"], "GET %s", path)
		// A wrong URL must never read as "the API server said NotFound".
		assert.NotContains(t, r.json(t), "source", "GET %s", path)
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/pods"},
		{http.MethodPut, "/pods/" + e.ns + "/jupyter-alice"},
		{http.MethodPost, "/pods/" + e.ns + "/jupyter-alice/events"},
		{http.MethodDelete, "/pods/" + e.ns + "/jupyter-alice/events"},
		{http.MethodPost, "/status"},
		{http.MethodDelete, "/readyz"},
		{http.MethodPost, "/livez"},
		{http.MethodPost, "/metrics"},
	} {
		r := s.do(c.method, c.path, nil)
		assert.Equal(t, http.StatusMethodNotAllowed, r.code, "%s %s: %s", c.method, c.path, r.body)
		assert.NotEmpty(t, r.json(t)["error"], "%s %s", c.method, c.path)
		assert.NotEmpty(t, r.header.Get("Allow"))
	}

	// No token configured: DELETE is not served, even with some token.
	r := s.do(http.MethodDelete, "/pods/"+e.ns+"/jupyter-alice", http.Header{"Authorization": {"Bearer anything"}})
	assert.Equal(t, http.StatusMethodNotAllowed, r.code, "%s", r.body)
	assert.Equal(t, "GET, HEAD", r.header.Get("Allow"))
	_, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), "jupyter-alice", metav1.GetOptions{})
	require.NoError(t, err, "the pod was not deleted")
}

// TestDeleteAuthAndSemantics: DELETE needs the bearer token (compared in
// constant time, never logged), always reaches the API server, honours a
// UID precondition and reports a pod already gone.
func TestDeleteAuthAndSemantics(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token-value-0123456789"
	e := newEnv(t)
	alice := e.pod("jupyter-alice", nil)
	e.pod("jupyter-bob", nil)
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}, Token: token})
	s.waitReady()
	path := "/pods/" + e.ns + "/jupyter-alice"
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	exists := func(name string) bool {
		_, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false
		}
		require.NoError(t, err)
		return true
	}

	for name, h := range map[string]http.Header{
		"missing":     nil,
		"wrong":       bearer("not-the-token"),
		"prefix":      bearer(token[:10]),
		"longer":      bearer(token + "x"),
		"empty":       bearer(""),
		"basic":       {"Authorization": {"Basic " + token}},
		"token-alone": {"Authorization": {token}},
	} {
		r := s.do(http.MethodDelete, path, h)
		assert.Equal(t, http.StatusUnauthorized, r.code, "%s: %s", name, r.body)
		assert.NotEmpty(t, r.json(t)["error"], name)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), "Bearer", name)
	}
	require.True(t, exists("jupyter-alice"), "unauthorized requests delete nothing")

	// UID precondition: another incarnation's UID is a conflict.
	r := s.do(http.MethodDelete, path+"?uid=00000000-0000-0000-0000-000000000000", bearer(token))
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	assert.NotEmpty(t, r.json(t)["error"])
	require.True(t, exists("jupyter-alice"))

	r = s.do(http.MethodDelete, path+"?gracePeriodSeconds=soon", bearer(token))
	require.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)

	// The right UID deletes (the pod is unscheduled: gone at once).
	r = s.do(http.MethodDelete, path+"?uid="+string(alice.UID), bearer(token))
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, map[string]any{"deleted": true}, r.json(t))
	require.False(t, exists("jupyter-alice"))

	// Again: the API server says NotFound, whatever the cache holds.
	r = s.do(http.MethodDelete, path, bearer(token))
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, map[string]any{"deleted": false, "alreadyGone": true}, r.json(t))
	r = s.do(http.MethodDelete, path+"?uid="+string(alice.UID), bearer(token))
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, true, r.json(t)["alreadyGone"])

	// Without a UID precondition, and with the token in lower-case scheme.
	r = s.do(http.MethodDelete, "/pods/"+e.ns+"/jupyter-bob", http.Header{"Authorization": {"bearer " + token}})
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, true, r.json(t)["deleted"])
	require.False(t, exists("jupyter-bob"))

	// A pod the cache never saw (created and deleted behind its back would
	// be the same): DELETE does not consult the cache.
	e.pod("jupyter-carol", nil)
	r = s.do(http.MethodDelete, "/pods/"+e.ns+"/jupyter-carol", bearer(token))
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, true, r.json(t)["deleted"])

	// Out of scope namespaces are refused.
	r = s.do(http.MethodDelete, "/pods/kube-system/kube-apiserver", bearer(token))
	require.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)

	// With a token configured, reads need it too (they serve pods); the
	// token never reaches the logs.
	require.Equal(t, http.StatusUnauthorized, s.do(http.MethodGet, "/pods", nil).code)
	require.Equal(t, http.StatusOK, s.get("/pods").code)
	logs := s.logs.String()
	require.Contains(t, logs, "HTTP request", "requests are logged")
	require.NotContains(t, logs, token)
	require.NotContains(t, logs, token[:10])
}

// TestStalledWatch is the 2018 incident through the fault proxy: the pod
// watch goes silent while its connection stays open. The sidecar must
// stop claiming readiness and keep answering from the API server.
func TestStalledWatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("before", userLabels)
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	s := startSidecar(t, p.ClientConfig(cluster.Config()), Config{Namespaces: []string{e.ns}})
	s.waitReady()

	p.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	created := e.pod("during-stall", userLabels)

	var ready response
	require.Eventually(t, func() bool {
		ready = s.get("/readyz")
		return ready.code == http.StatusServiceUnavailable
	}, 60*time.Second, 50*time.Millisecond, "readyz fails during the stall")
	h := ready.json(t)
	assert.Equal(t, "unhealthy", h["status"])
	assert.Contains(t, string(ready.body), "reflector pods", "the reason names the pod reflector: %s", ready.body)
	assert.Equal(t, http.StatusOK, s.get("/livez").code, "degraded is not dead")

	// Reads still answer, from the API server.
	r := s.get("/pods/" + e.ns + "/during-stall")
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	pb := decode[podBody](t, r)
	assert.Equal(t, "api", pb.Source)
	assert.Equal(t, created.UID, pb.Pod.UID)
	r = s.get("/pods")
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	lb := decode[listBody](t, r)
	assert.Equal(t, "api", lb.Source)
	assert.ElementsMatch(t, []string{"before", "during-stall"}, names(lb.Items))
	r = s.get("/pods/" + e.ns + "/never-existed")
	require.Equal(t, http.StatusNotFound, r.code)
	assert.Equal(t, "api", decode[podBody](t, r).Source)

	// Status and metrics tell why.
	var st reflector.Status
	require.Eventually(t, func() bool {
		r := s.get("/status")
		require.NoError(t, json.Unmarshal(r.body, &st))
		return st.Gaps[reflector.GapStall] > 0
	}, 60*time.Second, 50*time.Millisecond)
	assert.NotEqual(t, reflector.StateSynced, st.State)
	assert.NotEmpty(t, st.Reason)
	assert.GreaterOrEqual(t, st.Restarts, 1)
	assert.Contains(t, string(s.get("/metrics").body), `kubespawn_reflector_gaps_detected_total{kind="stall",reflector="pods ns=`)

	// Recovery.
	p.UnstallAll()
	s.waitReady()
	require.Eventually(t, func() bool {
		r := s.get("/pods/" + e.ns + "/during-stall")
		return r.code == http.StatusOK && decode[podBody](t, r).Source == "cache"
	}, 60*time.Second, 50*time.Millisecond, "served from the cache again")
}

// TestEventsStreamWithSimulator streams a simulated pod start (scheduler
// and kubelet events) and ends when the pod is gone.
// Not parallel: its simulator binds the unbound pods of every namespace.
func TestEventsStreamWithSimulator(t *testing.T) {
	e := newEnv(t)
	sim, err := podsim.Start(t.Context(), e.direct, podsim.Options{})
	require.NoError(t, err)
	t.Cleanup(sim.Stop)
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}})
	s.waitReady()
	pod := e.pod("jupyter-alice", userLabels)

	st := s.openSSE("/pods/" + e.ns + "/jupyter-alice/events?uid=" + string(pod.UID))
	var progress []progressEvent
	for {
		ev, ok := st.next()
		require.True(t, ok, "stream ended before the pod started; got %+v", progress)
		require.Equal(t, "progress", ev.name, "data: %s", ev.data)
		var p progressEvent
		require.NoError(t, json.Unmarshal([]byte(ev.data), &p), ev.data)
		progress = append(progress, p)
		if p.Reason == "Started" {
			break
		}
	}
	// The scheduler's and the kubelet's events are written by different
	// recorders, so only their presence is certain, not their order.
	var reasons []string
	for _, p := range progress {
		reasons = append(reasons, p.Reason)
		assert.Equal(t, "Normal", p.Type)
		assert.NotEmpty(t, p.Message)
		assert.NotNil(t, p.Time)
		assert.False(t, p.Degraded)
	}
	assert.Contains(t, reasons, "Scheduled")
	last := progress[len(progress)-1]
	assert.Equal(t, 90, last.Progress)
	for i := 1; i < len(progress); i++ {
		assert.GreaterOrEqual(t, progress[i].Progress, progress[i-1].Progress, "progress never decreases")
	}

	// The pod goes away (graceful deletion by the simulated kubelet): the
	// stream says so and ends.
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "jupyter-alice", metav1.DeleteOptions{}))
	var gone *sseEvent
	for {
		ev, ok := st.next()
		if !ok {
			break
		}
		if ev.name == "gone" {
			gone = &ev
		}
	}
	require.NotNil(t, gone, "a final gone event")
	assert.Contains(t, gone.data, "pod deleted")
}

// TestEventsStreamIsPerUID: events of an earlier pod with the same name are
// never shown; the stream ends on client disconnect; errors are JSON.
func TestEventsStreamIsPerUID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}})
	s.waitReady()
	event := func(pod *corev1.Pod, name, reason, message string) {
		t.Helper()
		now := metav1.Now()
		_, err := e.direct.CoreV1().Events(e.ns).Create(t.Context(), &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: name},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: e.ns, Name: pod.Name, UID: pod.UID, APIVersion: "v1"},
			Reason:         reason, Message: message, Type: corev1.EventTypeNormal,
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
			Source: corev1.EventSource{Component: "kubelet"},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}

	old := e.pod("jupyter-alice", userLabels)
	event(old, "old-pulling", "Pulling", `Pulling image "old"`)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "jupyter-alice", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), "jupyter-alice", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 30*time.Second, 20*time.Millisecond)
	cur := e.pod("jupyter-alice", userLabels)
	require.NotEqual(t, old.UID, cur.UID)
	event(cur, "new-pulling", "Pulling", `Pulling image "new"`)

	// Errors before the stream starts are JSON.
	r := s.get("/pods/" + e.ns + "/jupyter-nobody/events")
	require.Equal(t, http.StatusNotFound, r.code, "%s", r.body)
	assert.Equal(t, "api", r.json(t)["source"])
	r = s.get("/pods/" + e.ns + "/jupyter-alice/events?uid=" + string(old.UID))
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	assert.Contains(t, r.json(t)["error"], string(cur.UID))
	r = s.get("/pods/kube-system/x/events")
	require.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)

	st := s.openSSE("/pods/" + e.ns + "/jupyter-alice/events")
	event(cur, "new-pulled", "Pulled", `Successfully pulled image "new"`)
	var seen []string
	for {
		ev, ok := st.next()
		require.True(t, ok, "stream ended early; got %v", seen)
		require.Equal(t, "progress", ev.name)
		var p progressEvent
		require.NoError(t, json.Unmarshal([]byte(ev.data), &p))
		seen = append(seen, p.Message)
		if p.Reason == "Pulled" {
			assert.Equal(t, 60, p.Progress)
			break
		}
	}
	assert.Equal(t, []string{`Pulling image "new"`, `Successfully pulled image "new"`}, seen)
	for _, m := range seen {
		assert.NotContains(t, m, "old", "an earlier pod's events are never shown")
	}

	// The client goes away: the server's stream ends.
	require.Equal(t, 1, s.srv.events.Stats().Streams)
	st.close()
	require.Eventually(t, func() bool { return s.srv.events.Stats().Streams == 0 }, 30*time.Second, 20*time.Millisecond)

	// Replaced by a pod with the same name: the stream ends.
	st = s.openSSE("/pods/" + e.ns + "/jupyter-alice/events?uid=" + string(cur.UID))
	ev, ok := st.next()
	require.True(t, ok)
	require.Equal(t, "progress", ev.name)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(t.Context(), "jupyter-alice", metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(cur.UID))}))
	e.pod("jupyter-alice", userLabels)
	var last sseEvent
	for {
		ev, ok := st.next()
		if !ok {
			break
		}
		last = ev
	}
	require.Equal(t, "gone", last.name, "the stream ends with a gone event")
	assert.True(t, strings.Contains(last.data, "deleted") || strings.Contains(last.data, "replaced"), last.data)
}

// TestPodResponsesAreTheSlimView: with default options the sidecar serves
// reflector's slim pod view, from the cache and from the API server alike:
// images, ports and status, never the environment (which holds tokens).
func TestPodResponsesAreTheSlimView(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, benchpod.Create(t.Context(), e.direct, e.ns, 0, 1, 1, nil))
	outside := benchpod.Pod(e.ns, 1)
	outside.Labels["component"] = "something-else"
	_, err := e.direct.CoreV1().Pods(e.ns).Create(t.Context(), outside, metav1.CreateOptions{FieldManager: "jupyterhub"})
	require.NoError(t, err)
	full, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), benchpod.Name(0), metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, full.Spec.Containers[0].Env)
	require.NotEmpty(t, full.ManagedFields)
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}, Selector: benchpod.Selector})
	s.waitReady()

	var r response
	var got podBody
	require.Eventually(t, func() bool {
		r = s.get("/pods/" + e.ns + "/" + benchpod.Name(0))
		require.Equal(t, http.StatusOK, r.code, "%s", r.body)
		got = decode[podBody](t, r)
		return got.Source == "cache"
	}, 30*time.Second, 50*time.Millisecond)
	check := func(r response, p *corev1.Pod) {
		t.Helper()
		for _, secret := range []string{"JUPYTERHUB_API_TOKEN", "5f2c0e4b8a9d4c7f9e1b3a6d8c0f2e4a", "managedFields", corev1.LastAppliedConfigAnnotation} {
			assert.NotContains(t, string(r.body), secret)
		}
		require.Len(t, p.Spec.Containers, 2)
		for _, c := range p.Spec.Containers {
			assert.Nil(t, c.Env, c.Name)
			assert.Nil(t, c.VolumeMounts, c.Name)
			assert.Empty(t, c.Resources, c.Name)
		}
		assert.Nil(t, p.Spec.Volumes)
		assert.Equal(t, "quay.io/jupyter/scipy-notebook:2026-11-02", p.Spec.Containers[0].Image)
		assert.Equal(t, int32(8888), p.Spec.Containers[0].Ports[0].ContainerPort)
		assert.Equal(t, "Pod", p.Kind)
	}
	check(r, got.Pod)
	assert.Equal(t, full.UID, got.Pod.UID)
	assert.Equal(t, full.Labels, got.Pod.Labels)
	assert.Equal(t, corev1.PodRunning, got.Pod.Status.Phase)
	assert.Equal(t, full.Status.PodIP, got.Pod.Status.PodIP)
	assert.Len(t, got.Pod.Status.ContainerStatuses, 2)
	assert.Len(t, got.Pod.Status.Conditions, 5)

	// Outside the selector: out of scope since the services were hardened
	// (a 403 from the API server's answer, never the pod, never a 404).
	r = s.get("/pods/" + e.ns + "/" + benchpod.Name(1))
	require.Equal(t, http.StatusForbidden, r.code, "%s", r.body)
	got = decode[podBody](t, r)
	assert.Equal(t, "api", got.Source)
	assert.Nil(t, got.Pod)
	for _, secret := range []string{"JUPYTERHUB_API_TOKEN", "5f2c0e4b8a9d4c7f9e1b3a6d8c0f2e4a", "managedFields"} {
		assert.NotContains(t, string(r.body), secret)
	}
}
