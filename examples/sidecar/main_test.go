//go:build integration

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/reflector"
)

var cluster *testcluster.Cluster

// childEnv makes the test binary run main() instead of the tests, so that
// tests can check the real process's exit status.
const childEnv = "KUBESPAWN_SIDECAR_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// env is one test's namespace and a direct admin client (the rest of the
// world).
type env struct {
	t      *testing.T
	ns     string
	direct kubernetes.Interface
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{t: t, ns: cluster.Namespace(t, "sidecar"), direct: cluster.Client(t)}
}

func (e *env) pod(name string, labels map[string]string) *corev1.Pod {
	e.t.Helper()
	p, err := e.direct.CoreV1().Pods(e.ns).Create(e.t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: "example.invalid/notebook:1"}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return p
}

// logBuffer collects a Server's logs, to check what they never contain.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sidecar is a Server under test behind an httptest server.
type sidecar struct {
	t    *testing.T
	srv  *Server
	url  string
	logs *logBuffer
	// token is the Config's: get and openSSE send it (the pod routes
	// require it when it is set).
	token string
}

// startSidecar runs a Server for cfg on a factory over restCfg (nil: the
// admin config; StallTimeout 5s) until the test ends, behind the
// program's own http.Server (its Host and cross-site checks, its
// timeouts).
func startSidecar(t *testing.T, restCfg *rest.Config, cfg Config) *sidecar {
	t.Helper()
	return startSidecarWith(t, restCfg, cfg, service.ServerOptions{})
}

// startSidecarWith is startSidecar with the http.Server's options.
func startSidecarWith(t *testing.T, restCfg *rest.Config, cfg Config, opts service.ServerOptions) *sidecar {
	t.Helper()
	if restCfg == nil {
		restCfg = cluster.Config()
	}
	logs := &logBuffer{}
	logger := funcr.New(func(prefix, args string) {
		logs.mu.Lock()
		fmt.Fprintf(&logs.b, "%s %s\n", prefix, args)
		logs.mu.Unlock()
	}, funcr.Options{Verbosity: 10})
	cfg.Logger = &logger
	metrics := service.NewRegistry()
	cfg.Metrics = metrics
	f, err := reflector.NewFactory(restCfg, reflector.Options{StallTimeout: 5 * time.Second, Registerer: metrics})
	require.NoError(t, err)
	cfg.Factory = f
	srv, err := newServer(cfg)
	require.NoError(t, err)
	f.Start(klog.NewContext(context.Background(), logger))
	ts := servicetest.NewServer(srv.Handler(), opts)
	t.Cleanup(func() {
		srv.CloseStreams() // SSE streams end, so Close does not wait for them
		ts.Close()
		f.Shutdown()
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", logs.String())
		}
	})
	return &sidecar{t: t, srv: srv, url: ts.URL, logs: logs, token: cfg.Token}
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), "body: %s", r.body)
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func (s *sidecar) do(method, path string, header http.Header) response {
	s.t.Helper()
	code, h, body := servicetest.Do(s.t, method, s.url+path, nil, header)
	return response{code: code, header: h, body: body}
}

// bearer is the Authorization header of the sidecar's token (nil without
// one).
func (s *sidecar) bearer() http.Header {
	if s.token == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + s.token}}
}

// get reads path with the sidecar's token, if it has one.
func (s *sidecar) get(path string) response {
	s.t.Helper()
	return s.do(http.MethodGet, path, s.bearer())
}

// waitReady waits until /readyz answers 200.
func (s *sidecar) waitReady() {
	s.t.Helper()
	servicetest.AwaitOK(s.t, s.url+"/readyz", 60*time.Second, "sidecar ready")
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data string
}

// sseStream reads a Server-Sent Events response.
type sseStream struct {
	t      *testing.T
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent
}

// openSSE opens path and checks it is an event stream.
func (s *sidecar) openSSE(path string) *sseStream {
	s.t.Helper()
	ctx, cancel := context.WithCancel(s.t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+path, nil)
	require.NoError(s.t, err)
	for k, v := range s.bearer() {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	require.Equal(s.t, http.StatusOK, resp.StatusCode)
	require.Equal(s.t, "text/event-stream", resp.Header.Get("Content-Type"))
	st := &sseStream{t: s.t, resp: resp, cancel: cancel, events: make(chan sseEvent, 100)}
	go func() {
		defer close(st.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					st.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	s.t.Cleanup(st.close)
	return st
}

func (st *sseStream) close() {
	st.cancel()
	st.resp.Body.Close()
}

// next returns the next event, failing the test if the stream ends or
// nothing comes for a long time.
func (st *sseStream) next() (sseEvent, bool) {
	st.t.Helper()
	select {
	case ev, ok := <-st.events:
		return ev, ok
	case <-time.After(60 * time.Second):
		st.t.Fatal("no server-sent event for 60s")
		return sseEvent{}, false
	}
}
