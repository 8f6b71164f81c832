//go:build integration

package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

const testToken = "spawner-token-1a2b3c4d5e6f"

// TestEveryUserRouteNeedsTheToken: with a token, creating, deleting,
// polling, progress and /known-pods answer 401 without it, and nothing
// is created; health and metrics stay open.
func TestEveryUserRouteNeedsTheToken(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t, func(cfg *Config) { cfg.Token = testToken })
	wrong := http.Header{"Authorization": {"Bearer not-it"}}
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/users/mallory/server"},
		{http.MethodPost, "/users/mallory/server?progress=sse"},
		{http.MethodGet, "/users/mallory/server"},
		{http.MethodGet, "/users/mallory/server/progress"},
		{http.MethodDelete, "/users/mallory/server"},
		{http.MethodDelete, "/users/mallory/claims"},
		{http.MethodGet, "/known-pods"},
	} {
		for _, h := range []http.Header{nil, wrong} {
			r := d.doWith(c.method, c.path, nil, h)
			assert.Equal(t, http.StatusUnauthorized, r.code, "%s %s: %s", c.method, c.path, r.body)
			assert.NotContains(t, string(r.body), testToken)
		}
	}
	assert.Nil(t, e.pod(e.podName("mallory")), "no pod for an unauthenticated caller")
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		assert.Equal(t, http.StatusOK, d.doWith(http.MethodGet, path, nil, nil).code, path)
	}
	d.startStopUser("alice") // with the token
}

// TestCrossSiteRequestsAreRefused: what a web page can make a browser
// send to a loopback spawner, a CORS-simple POST ("no-cors", text/plain),
// is refused before the handler runs: 403 for its Origin and
// Sec-Fetch-Site, 415 for its Content-Type when it carries neither. No
// pod is created, on the API server or in the table.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	const body = `{"image":"attacker.example/x"}`
	post := func(h http.Header) (int, []byte) {
		code, _, b := servicetest.Do(t, http.MethodPost, d.url+"/users/mallory/server", strings.NewReader(body), h)
		return code, b
	}
	code, b := post(http.Header{
		"Origin":         {"https://attacker.example"},
		"Sec-Fetch-Site": {"cross-site"},
		"Content-Type":   {"text/plain"},
	})
	assert.Equal(t, http.StatusForbidden, code, "%s", b)
	code, b = post(http.Header{"Content-Type": {"text/plain"}})
	assert.Equal(t, http.StatusUnsupportedMediaType, code, "%s", b)
	// delete_forever too: a page cannot delete a user's home directory.
	code, _, b = servicetest.Do(t, http.MethodDelete, d.url+"/users/mallory/claims", nil, http.Header{"Origin": {"https://attacker.example"}})
	assert.Equal(t, http.StatusForbidden, code, "%s", b)

	assert.Nil(t, e.pod(e.podName("mallory")), "no pod for a cross-site request")
	pods, err := e.direct.CoreV1().Pods(e.ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, pods.Items, "no pod at all in the namespace")
	assert.Empty(t, d.known().Pods)
}

// TestPollDeletesATerminatedPod: a pod that terminated on its own (here:
// evicted) is deleted by the poll that reports it stopped, since the hub
// never stops a server poll() called stopped.
func TestPollDeletesATerminatedPod(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	evict := map[string]any{"annotations": map[string]string{podsim.AnnotationScenario: podsim.ScenarioEvict, podsim.AnnotationStartDelay: "1s"}}
	r := d.do(http.MethodPost, "/users/erin/server", evict)
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	name := e.podName("erin")
	require.Eventually(t, func() bool {
		p := e.pod(name)
		return p != nil && p.Status.Phase == corev1.PodFailed
	}, time.Minute, 20*time.Millisecond, "evicted")
	var poll map[string]any
	require.Eventually(t, func() bool {
		r := d.do(http.MethodGet, "/users/erin/server", nil)
		require.Contains(t, []int{http.StatusOK, http.StatusNotFound}, r.code, "%s", r.body)
		poll = r.json(t)
		return poll["state"] == "stopped"
	}, time.Minute, 20*time.Millisecond)
	assert.Equal(t, true, poll["deleted"], "%v", poll)
	assert.Equal(t, "Evicted", poll["reason"])
	assert.Nil(t, e.pod(name), "deleted before the answer")
	assert.Empty(t, d.known().Pods, "and forgotten")
	r = d.do(http.MethodGet, "/users/erin/server", nil)
	assert.Equal(t, http.StatusNotFound, r.code, "%s", r.body)
}

// TestPollOfAVanishedPodForgetsIt (issue 22, defect): a running user's
// pod deleted behind the service's back. The poll that hears the API
// server's NotFound answers 404 (the hub then forgets the server without
// calling stop()), so it must drop the user's row too, or every later
// start is a 409 "server is running" and the user is locked out. The
// pod's Service goes with it (Stop with the row's UID; no garbage
// collector here).
func TestPollOfAVanishedPodForgetsIt(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t, func(cfg *Config) { cfg.ServicesEnabled = true })
	d.startUser("vera")
	name := e.podName("vera")
	require.NotNil(t, e.service(name))
	e.deletePod(name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})

	// The service's cache may still show the pod for a moment (200,
	// running or terminating); the 404 is the API server's.
	var r response
	require.Eventually(t, func() bool {
		r = d.do(http.MethodGet, "/users/vera/server", nil)
		return r.code != http.StatusOK
	}, time.Minute, 20*time.Millisecond)
	require.Equal(t, http.StatusNotFound, r.code, "%s", r.body)
	poll := r.json(t)
	assert.Equal(t, "stopped", poll["state"])
	assert.Equal(t, "NotFound", poll["reason"])
	assert.Nil(t, poll["serviceState"], "the row is gone with the pod: %v", poll)
	state, _ := d.row("vera")
	assert.Empty(t, state, "no row left")
	assert.Empty(t, d.known().Pods)
	assert.Nil(t, e.service(name), "the vanished pod's Service was deleted with the row")

	d.startStopUser("vera") // not locked out
}

// TestPodsOutOfScopeAreForbidden: a pod with the name of a user's pod
// that is not this instance's (another instance's, or not a spawner's)
// is never reported nor deleted: 403, never a 404 that reads as gone.
func TestPodsOutOfScopeAreForbidden(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	for user, labels := range map[string]map[string]string{
		"mallory": {"component": "hub"},
		"oscar":   instanceLabels("hub-2"),
	} {
		e.createPod(metav1.ObjectMeta{Name: e.podName(user), Labels: labels})
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			r := d.do(method, "/users/"+user+"/server", nil)
			require.Equal(t, http.StatusForbidden, r.code, "%s %s: %s", method, user, r.body)
			assert.Equal(t, true, r.json(t)["outOfScope"])
		}
		p := e.pod(e.podName(user))
		require.NotNil(t, p, "not deleted")
		assert.Nil(t, p.DeletionTimestamp)
		e.deletePod(p.Name, metav1.DeleteOptions{})
	}
}

// TestStartCancelledWhenItsClientGoesAway: with cancelOnDisconnect a
// start ends with its client (a hub process that died): its pod is
// deleted and the user forgotten. Without it, the start goes on.
func TestStartCancelledWhenItsClientGoesAway(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	for _, path := range []string{"/users/gina/server?cancelOnDisconnect=true", "/users/gina/server?cancelOnDisconnect=true&progress=sse"} {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url+path, strings.NewReader(`{"annotations":{"`+podsim.AnnotationScenario+`":"slow-start","`+podsim.AnnotationStartDelay+`":"1h"}}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		e.waitPod(e.podName("gina"))
		cancel() // the client goes away
		<-done
		e.waitPodGone(e.podName("gina"), "%s: the cancelled start deleted its pod", path)
		require.Eventually(t, func() bool { return len(d.known().Pods) == 0 }, time.Minute, 20*time.Millisecond)
	}
	// Without cancelOnDisconnect, the start outlives its request.
	ctx, cancel := context.WithCancel(t.Context())
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"/users/gina/server",
			strings.NewReader(`{"annotations":{"`+podsim.AnnotationScenario+`":"slow-start","`+podsim.AnnotationStartDelay+`":"2s"}}`))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	e.waitPod(e.podName("gina"))
	cancel()
	<-gone
	require.Eventually(t, func() bool {
		p := e.pod(e.podName("gina"))
		return p != nil && p.Status.Phase == corev1.PodRunning
	}, time.Minute, 20*time.Millisecond)
	assert.Equal(t, []string{e.podName("gina")}, d.known().Pods)
	d.stopUser("gina")
}

// TestBadUserNamesAre400 and the stream caps: 429 past them.
func TestBadUserNamesAndStreamCaps(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t, func(cfg *Config) { cfg.Streams = service.StreamLimits{Max: 1, PerClient: 1} })
	for _, user := range []string{strings.Repeat("u", maxUserLen+1), "%ff%fe", "a%0Ab", "%00"} {
		for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
			r := d.do(method, "/users/"+user+"/server", nil)
			assert.Equal(t, http.StatusBadRequest, r.code, "%s %q: %s", method, user, r.body)
		}
	}
	assert.Empty(t, d.known().Pods)

	slow := map[string]any{"annotations": map[string]string{podsim.AnnotationScenario: podsim.ScenarioSlowStart, podsim.AnnotationStartDelay: "1h"}}
	started := make(chan response, 1)
	go func() { started <- d.do(http.MethodPost, "/users/hal/server", slow) }()
	e.waitPod(e.podName("hal"))
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/users/hal/server/progress", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	second := d.do(http.MethodGet, "/users/hal/server/progress", nil)
	assert.Equal(t, http.StatusTooManyRequests, second.code, "%s", second.body)
	third := d.do(http.MethodPost, "/users/ida/server?progress=sse", nil)
	assert.Equal(t, http.StatusTooManyRequests, third.code, "%s", third.body)
	assert.Nil(t, e.pod(e.podName("ida")), "a refused stream starts nothing")
	cancel()
	resp.Body.Close()
	d.stopUser("hal")
	<-started
}

// TestRunRefusesWideListenWithoutTokenAndChecksHost: the real program
// refuses an address beyond loopback without --token-file; on loopback
// with one, it answers only loopback Host names and requires the token.
func TestRunRefusesWideListenWithoutTokenAndChecksHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	kc := testcluster.KubeConfig(t, cluster.Config())
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		err := run(t.Context(), []string{"--kubeconfig", kc, "--namespace", e.ns, "--instance", "demo", "--listen", addr}, &strings.Builder{})
		assert.ErrorIs(t, err, service.ErrInsecureListen, addr)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(testToken), 0o600))
	addr := servicetest.FreeAddr(t)
	servicetest.RunInBackground(t, func(ctx context.Context) error {
		return run(ctx, []string{"--kubeconfig", kc, "--namespace", e.ns, "--instance", "demo", "--listen", addr,
			"--token-file", tokenFile, "--sweep-interval", "0"}, &strings.Builder{})
	})
	get := servicetest.Prober(t, addr)
	require.Eventually(t, func() bool { return get(addr, "/readyz", nil) == http.StatusOK }, time.Minute, 50*time.Millisecond)
	bearer := http.Header{"Authorization": {"Bearer " + testToken}}
	assert.Equal(t, http.StatusForbidden, get("rebind.attacker.example", "/known-pods", bearer))
	assert.Equal(t, http.StatusUnauthorized, get(addr, "/known-pods", nil))
	assert.Equal(t, http.StatusOK, get(addr, "/known-pods", bearer))
	assert.Equal(t, http.StatusOK, get("localhost", "/known-pods", bearer))
	// A page on another site gets nothing, even from a browser that holds
	// the token.
	assert.Equal(t, http.StatusForbidden, get(addr, "/known-pods", http.Header{
		"Authorization": {"Bearer " + testToken}, "Origin": {"http://attacker.example"},
	}))
}
