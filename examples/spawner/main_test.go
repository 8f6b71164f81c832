//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// cluster runs no controller-manager: what is gone there was deleted by
// the service (or the test).
var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(runFunc(func() int {
		code := m.Run()
		if claims.c != nil && claims.c != cluster {
			claims.c.Stop() // before Run's leak check
		}
		return code
	})))
}

type runFunc func() int

func (f runFunc) Run() int { return f() }

// claims is a second control plane, started on first use (against an
// existing cluster, that cluster), whose kube-controller-manager runs the
// claim protection controller: it removes the kubernetes.io/pvc-protection
// finalizer of a deleted claim once no pod uses it, without which a
// deleted claim stays Terminating for ever (as on cluster). And the
// namespace controller, so that a test's namespace goes with its claims.
// No garbage collector: what is gone there was deleted by the service,
// and an ownerless Service stays until the sweeper deletes it.
var claims struct {
	once sync.Once
	c    *testcluster.Cluster
	err  error
}

var claimControllers = []string{"namespace-controller", "persistentvolumeclaim-protection-controller"}

func claimCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	if cluster.IsExisting() {
		return cluster
	}
	claims.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		claims.c, claims.err = testcluster.Start(ctx, testcluster.Options{ControllerManager: true, Controllers: claimControllers})
	})
	if claims.err != nil {
		t.Fatalf("the control plane with kube-controller-manager did not start: %v", claims.err)
	}
	return claims.c
}

// env is one test's cluster and namespace and a direct admin client.
type env struct {
	t      *testing.T
	c      *testcluster.Cluster
	ns     string
	direct kubernetes.Interface
}

func newEnv(t *testing.T) *env { return newEnvOn(t, cluster) }

// newEnvOn: one pod simulator per cluster (two would compete for the same
// pods), on a direct admin client: it plays the scheduler and kubelet.
func newEnvOn(t *testing.T, c *testcluster.Cluster) *env {
	t.Helper()
	c.PodSim(t, podsim.Options{})
	// First, so that its cleanup runs last: no test may leave a pod behind.
	ns := c.Namespace(t, "demo", testcluster.NoPodsLeft(""))
	return &env{t: t, c: c, ns: ns, direct: c.Client(t)}
}

// podName is user's pod name for the tests' instance, "default".
func (e *env) podName(user string) string { return e.podNameOf("default", user) }

func (e *env) podNameOf(instance, user string) string {
	prefix, err := spawner.InstancePrefix(namePrefix, instance)
	require.NoError(e.t, err)
	n, err := spawner.PodName(prefix, user)
	require.NoError(e.t, err)
	return n
}

// orNil is what a Get from the API server returned: nil if NotFound, the
// object otherwise; any other error fails the test.
func orNil[T any](t *testing.T, obj *T, err error) *T {
	t.Helper()
	if apierrors.IsNotFound(err) {
		return nil
	}
	require.NoError(t, err)
	return obj
}

// pod reads the pod from the API server; nil if NotFound.
func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.direct.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	return orNil(e.t, p, err)
}

// waitPod waits (a minute at most) until the API server has the pod: a
// start in progress has created it.
func (e *env) waitPod(name string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return e.pod(name) != nil }, time.Minute, 20*time.Millisecond, "pod %s created", name)
}

// waitPodGone waits (a minute at most) until the API server has the pod
// no more.
func (e *env) waitPodGone(name string, msgAndArgs ...any) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return e.pod(name) == nil }, time.Minute, 20*time.Millisecond, msgAndArgs...)
}

// createPod creates a pod behind the service's back (a leak, another
// instance's pod, one that is not a spawner's) with meta, one container
// and a grace period of 1s.
func (e *env) createPod(meta metav1.ObjectMeta) *corev1.Pod {
	e.t.Helper()
	p, err := e.direct.CoreV1().Pods(e.ns).Create(e.t.Context(), &corev1.Pod{
		ObjectMeta: meta,
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: "example.org/notebook:1"}}, TerminationGracePeriodSeconds: ptr.To[int64](1)},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return p
}

// instanceLabels are the labels of a pod of another spawner instance.
func instanceLabels(instance string) map[string]string {
	return map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: instance}
}

// deletePod deletes the pod behind the service's back (an admin, an
// eviction) and waits until it is gone.
func (e *env) deletePod(name string, opts metav1.DeleteOptions) {
	e.t.Helper()
	require.NoError(e.t, e.direct.CoreV1().Pods(e.ns).Delete(e.t.Context(), name, opts))
	e.waitPodGone(name)
}

// demo is a Server under test behind an httptest server that serves it as
// run() does (servicetest.NewServer).
type demo struct {
	t   *testing.T
	srv *Server
	url string
	// token is the Config's: do and sse send it.
	token string
	close func() // shuts the server down (once; also at the test's end)
}

// factory returns a started factory over the admin config (StallTimeout
// 5s) whose metrics go to reg, shut down when the test ends.
func (e *env) factory(reg *prometheus.Registry) *reflector.Factory {
	e.t.Helper()
	f, err := reflector.NewFactory(e.c.Config(), reflector.Options{StallTimeout: 5 * time.Second, Registerer: reg})
	require.NoError(e.t, err)
	e.t.Cleanup(f.Shutdown)
	f.Start(context.Background())
	return f
}

// config is the tests' Config: short timeouts, a 1s image-pull grace and
// no sweeper unless a test sets SweepInterval. f nil: a factory of its own.
func (e *env) config(f *reflector.Factory) Config {
	logger := ktesting.NewLogger(e.t, ktesting.NewConfig(ktesting.Verbosity(2)))
	metrics := prometheus.NewRegistry()
	if f == nil {
		f = e.factory(metrics)
	}
	return Config{
		Factory: f, Metrics: metrics,
		Namespace: e.ns, Instance: "default", Image: "example.org/notebook:1",
		StartTimeout: time.Minute, StopTimeout: 30 * time.Second, ImagePullGrace: time.Second,
		DeleteGracePeriod: ptr.To(time.Second),
		LeaseNamespace:    e.ns, Logger: &logger,
	}
}

// newDemo is where most tests begin: a fresh env and a demo of the tests'
// Config (as configure changes it), ready.
func newDemo(t *testing.T, configure ...func(*Config)) (*env, *demo) {
	t.Helper()
	e := newEnv(t)
	cfg := e.config(nil)
	for _, c := range configure {
		c(&cfg)
	}
	return e, e.start(cfg)
}

// twoInstances is the Config of instances a and b as one process runs
// them in e's namespace: one factory (one pod watch and one event watch)
// and one metrics registry, the caches' metrics once, the spawners'
// labelled spawner=<instance>.
func (e *env) twoInstances(a, b string) (f *reflector.Factory, cfgA, cfgB Config) {
	e.t.Helper()
	metrics := prometheus.NewRegistry()
	f = e.factory(metrics)
	cfgA, cfgB = e.config(f), e.config(f)
	cfgA.Instance, cfgB.Instance = a, b
	cfgA.Metrics, cfgB.Metrics = metrics, metrics
	return f, cfgA, cfgB
}

func (e *env) start(cfg Config) *demo {
	e.t.Helper()
	d := e.startNoWait(cfg)
	d.waitReady()
	return d
}

// startNoWait starts the server without waiting for /readyz.
func (e *env) startNoWait(cfg Config) *demo {
	e.t.Helper()
	if cfg.Factory == nil {
		cfg.Factory = e.factory(cfg.Metrics)
	}
	srv, err := newServer(e.t.Context(), cfg)
	require.NoError(e.t, err)
	srv.Start()
	// Behind the program's own http.Server: its Host, cross-site and
	// Content-Type checks and its timeouts, as clients of run() see them.
	ts := servicetest.NewServer(srv.Handler(), service.ServerOptions{})
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			srv.Shutdown() // ends starts in flight, so their requests return
			ts.Close()
			srv.Close()
		})
	}
	e.t.Cleanup(closeAll)
	return &demo{t: e.t, srv: srv, url: ts.URL, token: cfg.Token, close: closeAll}
}

type response struct {
	code int
	body []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

// bearer is the Authorization header of the demo's token (nil without).
func (d *demo) bearer() http.Header {
	if d.token == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + d.token}}
}

// do sends a request with the demo's token, if it has one.
func (d *demo) do(method, path string, body any) response {
	d.t.Helper()
	return d.doWith(method, path, body, d.bearer())
}

func (d *demo) doWith(method, path string, body any, header http.Header) response {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(d.t, err)
		rd = bytes.NewReader(b)
		header = header.Clone()
		if header == nil {
			header = http.Header{}
		}
		header.Set("Content-Type", "application/json")
	}
	code, _, b := servicetest.Do(d.t, method, d.url+path, rd, header)
	return response{code: code, body: b}
}

func (d *demo) waitReady() {
	d.t.Helper()
	servicetest.AwaitOK(d.t, d.url+"/readyz", time.Minute, "ready")
}

// startUser starts user's server synchronously and checks it runs.
func (d *demo) startUser(user string) map[string]any {
	d.t.Helper()
	r := d.do(http.MethodPost, "/users/"+user+"/server", nil)
	require.Equal(d.t, http.StatusOK, r.code, "body: %s", r.body)
	m := r.json(d.t)
	require.Equal(d.t, "running", m["state"])
	return m
}

func (d *demo) stopUser(user string) {
	d.t.Helper()
	r := d.do(http.MethodDelete, "/users/"+user+"/server", nil)
	require.Equal(d.t, http.StatusOK, r.code, "body: %s", r.body)
}

// startStopUser starts user's server and stops it again: what a test ends
// with to show that the user is not locked out and nothing is left.
func (d *demo) startStopUser(user string) {
	d.t.Helper()
	d.startUser(user)
	d.stopUser(user)
}

func (d *demo) known() KnownPods {
	d.t.Helper()
	r := d.do(http.MethodGet, "/known-pods", nil)
	require.Equal(d.t, http.StatusOK, r.code)
	var kp KnownPods
	require.NoError(d.t, json.Unmarshal(r.body, &kp))
	return kp
}

type sseEvent struct{ name, data string }

// sse reads a Server-Sent Events response to its end.
func (d *demo) sse(method, path string, body any) []sseEvent {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(d.t.Context(), method, d.url+path, rd)
	require.NoError(d.t, err)
	for k, v := range d.bearer() {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	require.Equal(d.t, http.StatusOK, resp.StatusCode)
	require.Equal(d.t, "text/event-stream", resp.Header.Get("Content-Type"))
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		case line == "" && cur.name != "":
			out = append(out, cur)
			cur = sseEvent{}
		}
	}
	return out
}
