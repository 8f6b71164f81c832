package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) { testcluster.Main(m, &cluster) }

// One pod simulator for the test binary (two would compete for the same
// pods), on a direct admin client: it plays the scheduler and kubelet.
var (
	simOnce sync.Once
	simErr  error
)

func startSim(t *testing.T) {
	t.Helper()
	simOnce.Do(func() {
		var c kubernetes.Interface
		if c, simErr = kubernetes.NewForConfig(cluster.Config()); simErr == nil {
			_, simErr = podsim.Start(context.Background(), c, podsim.Options{})
		}
	})
	require.NoError(t, simErr, "starting the pod simulator")
}

// env is one test's namespace and a direct admin client.
type env struct {
	t      *testing.T
	ns     string
	direct kubernetes.Interface
}

func newEnv(t *testing.T) *env {
	t.Helper()
	require.NotNil(t, cluster, "testcluster did not start")
	startSim(t)
	direct, err := kubernetes.NewForConfig(cluster.Config())
	require.NoError(t, err)
	ns, err := direct.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "demo-"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	e := &env{t: t, ns: ns.Name, direct: direct}
	// Registered first, so it runs last: no test may leave a pod behind.
	t.Cleanup(func() {
		ctx := context.Background()
		left, err := direct.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		if assert.NoError(t, err) {
			var names []string
			for _, p := range left.Items {
				names = append(names, p.Name)
			}
			assert.Empty(t, names, "pods left behind in %s", e.ns)
		}
		_ = direct.CoreV1().Pods(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
		_ = direct.CoreV1().Events(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = direct.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{})
	})
	return e
}

func (e *env) podName(user string) string {
	n, err := spawner.PodName(namePrefix, user)
	require.NoError(e.t, err)
	return n
}

// pod reads the pod from the API server; nil if NotFound.
func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.direct.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	require.NoError(e.t, err)
	return p
}

// demo is a Server under test behind an httptest server.
type demo struct {
	t   *testing.T
	srv *Server
	url string
}

// config is the tests' Config: short timeouts, a 1s image-pull grace and
// no sweeper unless a test sets SweepInterval.
func (e *env) config(client kubernetes.Interface, reg *reflector.Registry) Config {
	logger := ktesting.NewLogger(e.t, ktesting.NewConfig(ktesting.Verbosity(2)))
	return Config{
		Client: client, Registry: reg,
		Namespace: e.ns, Instance: "default", Image: "example.org/notebook:1",
		StartTimeout: time.Minute, StopTimeout: 30 * time.Second, ImagePullGrace: time.Second,
		StallTimeout: 5 * time.Second, DeleteGracePeriod: ptr.To(time.Second),
		LeaseNamespace: e.ns, Logger: &logger,
	}
}

func (e *env) start(cfg Config) *demo {
	e.t.Helper()
	if cfg.Client == nil {
		c, err := kubernetes.NewForConfig(cluster.Config())
		require.NoError(e.t, err)
		cfg.Client = c
	}
	if cfg.Registry == nil {
		cfg.Registry = reflector.NewRegistry()
	}
	srv, err := newServer(e.t.Context(), cfg)
	require.NoError(e.t, err)
	srv.Start()
	ts := httptest.NewServer(srv.Handler())
	e.t.Cleanup(func() {
		srv.Shutdown() // ends starts in flight, so their requests return
		ts.Close()
		srv.Close()
	})
	d := &demo{t: e.t, srv: srv, url: ts.URL}
	d.waitReady()
	return d
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

func (d *demo) do(method, path string, body any) response {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(d.t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(d.t.Context(), method, d.url+path, rd)
	require.NoError(d.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(d.t, err)
	return response{code: resp.StatusCode, body: b}
}

func (d *demo) waitReady() {
	d.t.Helper()
	var last string
	require.Eventually(d.t, func() bool {
		resp, err := http.Get(d.url + "/readyz")
		if err != nil {
			last = err.Error() // not listening yet
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		last = string(b)
		return resp.StatusCode == http.StatusOK
	}, time.Minute, 50*time.Millisecond, "ready (last answer %s)", last)
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

// writeKubeconfig writes a kubeconfig file for the test cluster's admin.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
}
