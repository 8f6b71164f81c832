//go:build integration

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/examples/internal/manifest"
	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

const (
	secretEnv   = "hub-api-token-4e1f9a7c2b"
	secretArg   = "--password=arg-secret-77aa"
	hardenToken = "sidecar-token-9f8e7d6c5b4a"
)

// secretPod is a pod with secrets where hubs put them: literal
// environment values, a command line, the last-applied annotation.
func (e *env) secretPod(name string, labels map[string]string) *corev1.Pod {
	e.t.Helper()
	p, err := e.direct.CoreV1().Pods(e.ns).Create(e.t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{
			corev1.LastAppliedConfigAnnotation: `{"env":"` + secretEnv + `"}`, "hub.jupyter.org/username": "alice",
		}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "example.invalid/init:1", Env: []corev1.EnvVar{{Name: "JUPYTERHUB_API_TOKEN", Value: secretEnv}}}},
			Containers: []corev1.Container{{
				Name: "notebook", Image: "example.invalid/notebook:1", Args: []string{secretArg},
				Env:          []corev1.EnvVar{{Name: "JUPYTERHUB_API_TOKEN", Value: secretEnv}},
				EnvFrom:      []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "hub-secret"}}}},
				Ports:        []corev1.ContainerPort{{ContainerPort: 8888}},
				VolumeMounts: []corev1.VolumeMount{{Name: "creds", MountPath: "/creds"}},
			}},
			Volumes: []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "hub-secret"}}}},
		},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return p
}

// hardenedSidecar is the sidecar of the hardening tests, ready: e's
// namespace, the user pods of --selector component=singleuser-server, and
// hardenToken required on the pod routes.
func (e *env) hardenedSidecar() *sidecar {
	e.t.Helper()
	s := startSidecar(e.t, nil, Config{Namespaces: []string{e.ns}, Selector: "component=singleuser-server", Token: hardenToken})
	s.waitReady()
	return s
}

// requireNotDeleted checks that the API server still has the pod name:
// what a refused request must leave.
func (e *env) requireNotDeleted(name string) {
	e.t.Helper()
	_, err := e.direct.CoreV1().Pods(e.ns).Get(e.t.Context(), name, metav1.GetOptions{})
	require.NoError(e.t, err, "nothing was deleted")
}

func assertNoSecrets(t *testing.T, body []byte) {
	t.Helper()
	for _, s := range []string{secretEnv, secretArg, "JUPYTERHUB_API_TOKEN", "hub-secret", "last-applied", "managedFields", "envFrom", "volumeMounts"} {
		assert.NotContains(t, string(body), s)
	}
}

// TestPodViewServesNoSecrets: whatever the cache holds (here a full pod,
// as the API server returns it), the view has no environment, command,
// volumes or last-applied copy, and keeps what spawners read.
func TestPodViewServesNoSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	full, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), e.secretPod("jupyter-alice", userLabels).Name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, full.ManagedFields)
	b, err := json.Marshal(podView(full))
	require.NoError(t, err)
	assertNoSecrets(t, b)
	v := podView(full)
	assert.Equal(t, full.UID, v.UID)
	assert.Equal(t, full.Labels, v.Labels)
	assert.Equal(t, map[string]string{"hub.jupyter.org/username": "alice"}, v.Annotations)
	assert.Equal(t, "example.invalid/notebook:1", v.Spec.Containers[0].Image)
	assert.Equal(t, int32(8888), v.Spec.Containers[0].Ports[0].ContainerPort)
	assert.Equal(t, "Pod", v.Kind)
	assert.NotEmpty(t, full.Spec.Containers[0].Env, "the view never modifies the pod")

	// Over HTTP, from the cache and from the API server (a list and a
	// get during the first sync fall back to it), with the token.
	s := e.hardenedSidecar()
	for _, path := range []string{"/pods", "/pods/" + e.ns + "/jupyter-alice"} {
		r := s.get(path)
		require.Equal(t, http.StatusOK, r.code, "%s", r.body)
		assertNoSecrets(t, r.body)
		assert.Contains(t, string(r.body), "example.invalid/notebook:1")
	}
	assert.NotContains(t, s.logs.String(), secretEnv)
}

// TestEveryPodRouteNeedsTheToken: with a token, every route that reads
// or deletes pods answers 401 without it; health, status and metrics
// (no pod data) stay open for probes and scrapers.
func TestEveryPodRouteNeedsTheToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("jupyter-alice", userLabels)
	s := e.hardenedSidecar()
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/pods"},
		{http.MethodGet, "/pods?namespace=" + e.ns},
		{http.MethodGet, "/pods/" + e.ns + "/jupyter-alice"},
		{http.MethodGet, "/pods/" + e.ns + "/jupyter-alice/events"},
		{http.MethodDelete, "/pods/" + e.ns + "/jupyter-alice"},
	} {
		r := s.do(c.method, c.path, http.Header{"Authorization": {"Bearer wrong"}})
		assert.Equal(t, http.StatusUnauthorized, r.code, "%s %s: %s", c.method, c.path, r.body)
		assert.NotContains(t, string(r.body), "jupyter-alice", "%s %s", c.method, c.path)
	}
	for _, path := range []string{"/readyz", "/livez", "/status", "/metrics"} {
		assert.Equal(t, http.StatusOK, s.do(http.MethodGet, path, nil).code, path)
	}
	e.requireNotDeleted("jupyter-alice")
	assert.NotContains(t, s.logs.String(), hardenToken)
}

// TestOutOfScopePodsAreNeverServedOrDeleted: a pod outside --selector
// (the hub's own, say) gets 403 with outOfScope on every route, DELETE
// included, and stays.
func TestOutOfScopePodsAreNeverServedOrDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hub := e.secretPod("hub-7d9f", map[string]string{"component": "hub"})
	e.pod("jupyter-alice", userLabels)
	s := e.hardenedSidecar()
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/pods/" + e.ns + "/hub-7d9f"},
		{http.MethodGet, "/pods/" + e.ns + "/hub-7d9f/events"},
		{http.MethodDelete, "/pods/" + e.ns + "/hub-7d9f"},
		{http.MethodDelete, "/pods/" + e.ns + "/hub-7d9f?uid=" + string(hub.UID)},
	} {
		r := s.do(c.method, c.path, s.bearer())
		require.Equal(t, http.StatusForbidden, r.code, "%s %s: %s", c.method, c.path, r.body)
		body := r.json(t)
		assert.Equal(t, true, body["outOfScope"], "%s %s", c.method, c.path)
		assert.Contains(t, body["error"], "outside", "%s %s", c.method, c.path)
		assertNoSecrets(t, r.body)
	}
	got, err := e.direct.CoreV1().Pods(e.ns).Get(t.Context(), "hub-7d9f", metav1.GetOptions{})
	require.NoError(t, err, "the hub's pod is still there")
	assert.Nil(t, got.DeletionTimestamp)
	r := s.get("/pods")
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, []string{"jupyter-alice"}, names(decode[listBody](t, r).Items), "lists are in scope")
	r = s.do(http.MethodDelete, "/pods/"+e.ns+"/jupyter-alice", s.bearer())
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, true, r.json(t)["deleted"], "a pod in scope is deleted")
}

// TestMalformedNamesAre400: names the API server would reject are the
// client's error, not a 503 (and never a 404 with a source).
func TestMalformedNamesAre400(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}, Token: hardenToken})
	s.waitReady()
	long := strings.Repeat("a", 254)
	for _, p := range []string{"%25", "a%2Fb", "Upper", "-x", "x_y", "a%20b", long, "%2E%2E"} {
		for _, c := range []struct{ method, path string }{
			{http.MethodGet, "/pods/" + e.ns + "/" + p},
			{http.MethodGet, "/pods/" + e.ns + "/" + p + "/events"},
			{http.MethodDelete, "/pods/" + e.ns + "/" + p},
			{http.MethodGet, "/pods/" + p + "/x"},
		} {
			r := s.do(c.method, c.path, s.bearer())
			assert.Equal(t, http.StatusBadRequest, r.code, "%s %s: %s", c.method, c.path, r.body)
			assert.NotContains(t, r.json(t), "source", "%s %s", c.method, c.path)
		}
	}
	r := s.get("/pods?namespace=Bad_NS")
	assert.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)
}

// dialFrom is an HTTP client whose connections come from a given
// loopback address (one client IP each).
func dialFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// TestEventStreamCaps: past the cap per client, or in all, a stream is
// refused with 429 and Retry-After; a closed stream frees its slot.
func TestEventStreamCaps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("jupyter-alice", userLabels)
	s := startSidecar(t, nil, Config{Namespaces: []string{e.ns}, Token: hardenToken, Streams: service.StreamLimits{Max: 2, PerClient: 1}})
	s.waitReady()
	path := s.url + "/pods/" + e.ns + "/jupyter-alice/events"
	open := func(ip string) (*http.Response, context.CancelFunc) {
		t.Helper()
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+hardenToken)
		resp, err := dialFrom(ip).Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { cancel(); resp.Body.Close() })
		return resp, cancel
	}
	a1, closeA1 := open("127.0.0.1")
	require.Equal(t, http.StatusOK, a1.StatusCode)
	a2, _ := open("127.0.0.1")
	assert.Equal(t, http.StatusTooManyRequests, a2.StatusCode, "per-client cap")
	assert.NotEmpty(t, a2.Header.Get("Retry-After"))
	b1, _ := open("127.0.0.2")
	require.Equal(t, http.StatusOK, b1.StatusCode)
	c1, _ := open("127.0.0.3")
	assert.Equal(t, http.StatusTooManyRequests, c1.StatusCode, "global cap")
	closeA1()
	require.Eventually(t, func() bool { return s.srv.streams.Open() == 1 }, 30*time.Second, 20*time.Millisecond)
	c2, _ := open("127.0.0.3")
	assert.Equal(t, http.StatusOK, c2.StatusCode, "a freed slot is taken again")
}

// TestCrossSiteRequestsAreRefused: what a web page can make a browser
// send (another site's Origin or Sec-Fetch-Site, a body that is not
// JSON) is refused on the real routes, DELETE and event streams
// included, and deletes nothing; the hub's own requests pass.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("jupyter-alice", userLabels)
	s := e.hardenedSidecar()
	pod := "/pods/" + e.ns + "/jupyter-alice"
	for _, c := range []struct {
		method, path string
		header       http.Header
		body         string
		want         int
	}{
		{http.MethodDelete, pod, http.Header{"Origin": {"https://attacker.example"}, "Sec-Fetch-Site": {"cross-site"}}, "", http.StatusForbidden},
		{http.MethodDelete, pod, http.Header{"Origin": {"http://attacker.example"}}, "", http.StatusForbidden},
		{http.MethodDelete, pod, http.Header{"Content-Type": {"text/plain"}}, "{}", http.StatusUnsupportedMediaType},
		{http.MethodGet, "/pods", http.Header{"Sec-Fetch-Site": {"cross-site"}}, "", http.StatusForbidden},
		{http.MethodGet, pod + "/events", http.Header{"Sec-Fetch-Site": {"same-site"}}, "", http.StatusForbidden},
		{http.MethodGet, "/status", http.Header{"Origin": {"null"}}, "", http.StatusForbidden},
	} {
		h := c.header.Clone()
		h.Set("Authorization", "Bearer "+hardenToken)
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		code, hdr, b := servicetest.Do(t, c.method, s.url+c.path, body, h)
		r := response{code: code, header: hdr, body: b}
		require.Equal(t, c.want, r.code, "%s %s %v: %s", c.method, c.path, c.header, r.body)
		assert.NotEmpty(t, r.json(t)["error"])
		assert.NotContains(t, string(r.body), "example.invalid/notebook", "no pod data")
	}
	e.requireNotDeleted("jupyter-alice")
	r := s.get(pod)
	require.Equal(t, http.StatusOK, r.code, "the hub's own request: %s", r.body)
	r = s.do(http.MethodGet, "/status", http.Header{"Sec-Fetch-Site": {"none"}})
	assert.Equal(t, http.StatusOK, r.code, "a URL typed in a browser's address bar: %s", r.body)
	r = s.do(http.MethodDelete, pod, s.bearer())
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, true, r.json(t)["deleted"])
}

// TestUnsentBodyDoesNotHoldTheConnection: a client that announces a body
// and never sends it, to routes that answer without reading it (401
// without the token, /readyz), has its connection closed within the
// server's ReadTimeout instead of held forever.
func TestUnsentBodyDoesNotHoldTheConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("jupyter-alice", userLabels)
	s := startSidecarWith(t, nil, Config{Namespaces: []string{e.ns}, Selector: "component=singleuser-server", Token: hardenToken},
		service.ServerOptions{ReadTimeout: 300 * time.Millisecond})
	s.waitReady()
	addr := strings.TrimPrefix(s.url, "http://")
	pod := "/pods/" + e.ns + "/jupyter-alice"
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodDelete, pod, http.StatusUnauthorized},
		{http.MethodGet, pod, http.StatusUnauthorized},
		{http.MethodGet, pod + "/events", http.StatusUnauthorized},
		{http.MethodGet, "/readyz", http.StatusOK},
	} {
		head := c.method + " " + c.path + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
		got := servicetest.RawRequest(t, addr, head, 30*time.Second) // generous: ReadTimeout is 300ms
		line, _, _ := strings.Cut(got, "\r\n")
		assert.Contains(t, line, strconv.Itoa(c.want), "%s %s: %q", c.method, c.path, got)
	}
	e.requireNotDeleted("jupyter-alice")
}

// TestRunRefusesWideListenWithoutToken: beyond loopback the pod routes
// must be authenticated, so run refuses to start without --token-file.
func TestRunRefusesWideListenWithoutToken(t *testing.T) {
	t.Parallel()
	kc := testcluster.KubeConfig(t, cluster.Config())
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		err := run(t.Context(), []string{"--kubeconfig=" + kc, "--listen=" + addr}, io.Discard)
		assert.ErrorIs(t, err, service.ErrInsecureListen, addr)
	}
}

// TestRunChecksHostAndAuthenticates: the real program on loopback refuses
// a request for another host name (DNS rebinding from a browser on the
// same machine) and a cross-site one, and with --token-file requires the
// token for pods.
func TestRunChecksHostAndAuthenticates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pod("jupyter-alice", nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(hardenToken+"\n"), 0o600))
	addr := servicetest.FreeAddr(t)
	servicetest.RunInBackground(t, func(ctx context.Context) error {
		return run(ctx, []string{"--kubeconfig=" + testcluster.KubeConfig(t, cluster.Config()), "--namespace=" + e.ns,
			"--listen=" + addr, "--token-file=" + tokenFile}, io.Discard)
	})
	do := servicetest.Prober(t, addr)
	require.Eventually(t, func() bool { return do(addr, "/readyz", nil) == http.StatusOK }, 60*time.Second, 50*time.Millisecond)
	bearer := http.Header{"Authorization": {"Bearer " + hardenToken}}
	assert.Equal(t, http.StatusForbidden, do("attacker.example:80", "/pods", bearer), "rebinding host")
	assert.Equal(t, http.StatusForbidden, do("attacker.example", "/readyz", nil))
	assert.Equal(t, http.StatusUnauthorized, do(addr, "/pods", nil))
	assert.Equal(t, http.StatusForbidden, do(addr, "/pods", http.Header{"Authorization": bearer["Authorization"], "Origin": {"http://attacker.example"}}), "cross-origin")
	assert.Equal(t, http.StatusForbidden, do(addr, "/readyz", http.Header{"Sec-Fetch-Site": {"cross-site"}}), "cross-site")
	assert.Equal(t, http.StatusOK, do(addr, "/pods", bearer))
	assert.Equal(t, http.StatusOK, do("localhost", "/pods/"+e.ns+"/jupyter-alice", bearer))
}

// admits says whether policy admits TCP traffic to port from a pod with
// podLabels in a namespace with nsLabels (sameNS: the policy's own).
func admits(t *testing.T, policy *networkingv1.NetworkPolicy, port int, podLabels, nsLabels map[string]string, sameNS bool) bool {
	t.Helper()
	ok, err := manifest.Admits(policy, port, manifest.Peer{Pod: podLabels, Namespace: nsLabels, SameNamespace: sameNS})
	require.NoError(t, err)
	return ok
}

// TestDeployNetworkPolicy: networkpolicy.yaml selects the hub's pod of
// deployment.yaml and admits to the sidecar's port only the hub and
// Prometheus, never a user pod; JupyterHub's own port stays reachable.
func TestDeployNetworkPolicy(t *testing.T) {
	t.Parallel()
	objs := readManifests(t, "deploy/networkpolicy.yaml")
	require.Len(t, objs, 1)
	np, ok := objs[0].(*networkingv1.NetworkPolicy)
	require.True(t, ok, "%T", objs[0])
	dep := readManifests(t, "deploy/deployment.yaml")[0].(*appsv1.Deployment)
	assert.True(t, matchesSelector(t, &np.Spec.PodSelector, dep.Spec.Template.Labels), "the policy selects the hub's pod")
	assert.Contains(t, np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
	var listen string
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "kubespawn-sidecar" {
			o, err := parseFlags(c.Args, io.Discard)
			require.NoError(t, err)
			listen = o.listen
			require.NoError(t, service.CheckListen(o.listen, service.NewAuth("from --token-file")))
			require.NotEmpty(t, o.tokenFile, "beyond loopback the token is required")
		}
	}
	_, portStr, err := net.SplitHostPort(listen)
	require.NoError(t, err)
	port, err := strconv.Atoi(portStr)
	require.NoError(t, err)
	ns := map[string]string{"kubernetes.io/metadata.name": "default"}
	user := map[string]string{"component": "singleuser-server", "hub.jupyter.org/username": "mallory"}
	assert.False(t, admits(t, np, port, user, ns, true), "a user pod cannot reach the sidecar")
	assert.False(t, admits(t, np, port, map[string]string{}, ns, true), "nor any other pod of the namespace")
	assert.False(t, admits(t, np, port, dep.Spec.Template.Labels, map[string]string{"kubernetes.io/metadata.name": "other"}, false), "nor a pod of another namespace")
	assert.True(t, admits(t, np, port, dep.Spec.Template.Labels, ns, true), "the hub can")
	assert.True(t, admits(t, np, port, map[string]string{"app.kubernetes.io/name": "prometheus"}, map[string]string{"kubernetes.io/metadata.name": "monitoring"}, false), "Prometheus can")
	assert.True(t, admits(t, np, 8081, user, ns, true), "user servers still reach the hub's API")
}

func matchesSelector(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	ok, err := manifest.Selects(sel, set)
	require.NoError(t, err)
	return ok
}
