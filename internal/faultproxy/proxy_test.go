package faultproxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
)

// wait is the generous bound for anything that should happen promptly.
const wait = 20 * time.Second

const tick = 10 * time.Millisecond

// upstream is a fake API server: /stream streams the lines sent on lines
// (one per flush) until the client leaves; everything else answers with a
// JSON echo of the request.
type upstream struct {
	*httptest.Server
	lines   chan string
	hits    atomic.Int64
	mu      sync.Mutex
	gone    chan struct{} // closed when a /stream request's context ends
	started chan struct{} // receives when a /stream request starts
}

type echo struct {
	Method, Path, RawQuery, Accept, AcceptEncoding, Authorization, ContentType, Body string
	ProtoMajor                                                                       int
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{lines: make(chan string), gone: make(chan struct{}), started: make(chan struct{}, 16)}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	if strings.HasSuffix(r.URL.Path, "/stream") || r.URL.Query().Get("watch") != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		u.started <- struct{}{}
		defer func() {
			u.mu.Lock()
			select {
			case <-u.gone:
			default:
				close(u.gone)
			}
			u.mu.Unlock()
		}()
		for {
			select {
			case l := <-u.lines:
				if _, err := io.WriteString(w, l+"\n"); err != nil {
					return
				}
				if err := http.NewResponseController(w).Flush(); err != nil {
					return
				}
			case <-r.Context().Done():
				return
			}
		}
	}
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(echo{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Accept: r.Header.Get("Accept"), AcceptEncoding: r.Header.Get("Accept-Encoding"),
		Authorization: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
		Body: string(body), ProtoMajor: r.ProtoMajor,
	})
}

func newProxy(t *testing.T, cfg *rest.Config, opts faultproxy.Options) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(cfg, opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Close()) })
	return p
}

// newProxied starts an upstream and a proxy in front of it with opts: the
// setup of most tests here.
func newProxied(t *testing.T, opts faultproxy.Options) (*upstream, *faultproxy.Proxy) {
	t.Helper()
	up := newUpstream(t)
	return up, newProxy(t, &rest.Config{Host: up.URL}, opts)
}

// waitStalled waits until the proxy holds one stream of m: the data sent
// upstream has reached the proxy and is kept from the client.
func waitStalled(t *testing.T, p *faultproxy.Proxy, m faultproxy.Match, msgAndArgs ...any) {
	t.Helper()
	require.Eventually(t, func() bool { return p.StalledStreams(m) == 1 }, wait, tick, msgAndArgs...)
}

// waitOpenWatches waits until n watches of m are open through the proxy.
func waitOpenWatches(t *testing.T, p *faultproxy.Proxy, m faultproxy.Match, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return p.OpenWatches(m) == n }, wait, tick)
}

// lines reads body line by line into a channel that closes when the body
// ends or fails.
func lines(body io.ReadCloser) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(body)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

// stream opens the streaming request path through p with client and
// waits until up serves it; its lines arrive on the channel.
func stream(t *testing.T, client *http.Client, p *faultproxy.Proxy, up *upstream, path string) (*http.Response, <-chan string) {
	t.Helper()
	resp := get(t, client, p.URL()+path)
	ch := lines(resp.Body)
	<-up.started
	return resp, ch
}

// drain reads ch until it closes: the stream has ended.
func drain(ch <-chan string) {
	for range ch {
	}
}

// assertOK asserts that a GET of url with client answers 200: requests
// go through the proxy (again).
func assertOK(t *testing.T, client *http.Client, url string) {
	t.Helper()
	assert.Equal(t, http.StatusOK, get(t, client, url).StatusCode)
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-ch:
		require.True(t, ok, "stream ended")
		return l
	case <-time.After(wait):
		require.FailNow(t, "no line received")
		return ""
	}
}

func requireNothing(t *testing.T, ch <-chan string) {
	t.Helper()
	select {
	case l, ok := <-ch:
		require.FailNow(t, "unexpected data", "line %q open %v", l, ok)
	default:
	}
}

func get(t *testing.T, client *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

var watchPods = faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"}

func TestForwardsTransparently(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	// The upstream config's credentials must never be used by the proxy.
	p := newProxy(t, &rest.Config{Host: up.URL, BearerToken: "proxy-must-not-send-this"}, faultproxy.Options{})

	req, err := http.NewRequest(http.MethodPost, p.URL()+"/api/v1/namespaces/ns1/pods?dryRun=All&fieldManager=x", strings.NewReader(`{"kind":"Pod"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer client-token")
	req.Header.Set("Accept", "application/vnd.kubernetes.protobuf, application/json")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got echo
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	assert.Equal(t, echo{
		Method: "POST", Path: "/api/v1/namespaces/ns1/pods", RawQuery: "dryRun=All&fieldManager=x",
		Accept: "application/vnd.kubernetes.protobuf, application/json", AcceptEncoding: "gzip",
		Authorization: "Bearer client-token", ContentType: "application/json", Body: `{"kind":"Pod"}`,
		ProtoMajor: 1,
	}, got)

	resp = get(t, http.DefaultClient, p.URL()+"/version")
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	assert.Empty(t, got.Authorization, "the proxy adds no credentials of its own")
}

func TestUpstreamTLSUsesConfigCAAndHTTP1(t *testing.T) {
	t.Parallel()
	up := &upstream{lines: make(chan string), gone: make(chan struct{}), started: make(chan struct{}, 16)}
	up.Server = httptest.NewUnstartedServer(http.HandlerFunc(up.serve))
	up.EnableHTTP2 = true
	up.StartTLS()
	t.Cleanup(up.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw})

	p := newProxy(t, &rest.Config{Host: up.URL, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}, faultproxy.Options{})
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got echo
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	assert.Equal(t, 1, got.ProtoMajor, "the proxy talks HTTP/1.1 to the upstream")

	// Without the CA the upstream is not trusted.
	p2 := newProxy(t, &rest.Config{Host: up.URL}, faultproxy.Options{})
	resp = get(t, http.DefaultClient, p2.URL()+"/api/v1/namespaces")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
}

func TestClientConfig(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	in := &rest.Config{
		Host:            "https://10.0.0.1:6443",
		APIPath:         "/api",
		BearerToken:     "tok",
		BearerTokenFile: "/var/run/token",
		Impersonate:     rest.ImpersonationConfig{UserName: "alice"},
		TLSClientConfig: rest.TLSClientConfig{CAData: []byte("ca"), CertData: []byte("c"), KeyData: []byte("k"), ServerName: "kubernetes"},
		QPS:             42,
		UserAgent:       "ua",
	}
	out := p.ClientConfig(in)
	assert.Equal(t, p.URL(), out.Host)
	assert.Equal(t, "tok", out.BearerToken)
	assert.Equal(t, "/var/run/token", out.BearerTokenFile)
	assert.Equal(t, "alice", out.Impersonate.UserName)
	assert.Equal(t, rest.TLSClientConfig{}, out.TLSClientConfig)
	assert.Equal(t, float32(42), out.QPS)
	assert.Equal(t, "ua", out.UserAgent)
	assert.Equal(t, "/api", out.APIPath)
	assert.Equal(t, "https://10.0.0.1:6443", in.Host, "input not modified")
	assert.Equal(t, []byte("ca"), in.CAData, "input not modified")
	assert.True(t, strings.HasPrefix(p.URL(), "http://127.0.0.1:"))

	p2 := newProxy(t, &rest.Config{Host: up.URL}, faultproxy.Options{HTTP2: true})
	out = p2.ClientConfig(in)
	assert.True(t, strings.HasPrefix(out.Host, "https://127.0.0.1:"))
	assert.NotEmpty(t, out.CAData)
	assert.Empty(t, out.CertData)
	assert.Empty(t, out.ServerName)
}

func TestStallOpenStream(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods?watch=true")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	ch := lines(resp.Body)
	up.lines <- "one"
	assert.Equal(t, "one", recv(t, ch))

	p.Stall(watchPods)
	up.lines <- "two"
	up.lines <- "three"
	waitStalled(t, p, watchPods)
	// The proxy holds the data: the client cannot have it.
	requireNothing(t, ch)
	assert.Equal(t, 1, p.StalledStreams(faultproxy.Match{}))
	assert.Equal(t, 0, p.StalledStreams(faultproxy.Match{Namespace: "other"}))

	p.Unstall(watchPods)
	assert.Equal(t, "two", recv(t, ch))
	assert.Equal(t, "three", recv(t, ch))
	assert.Equal(t, 0, p.StalledStreams(watchPods))
	up.lines <- "four"
	assert.Equal(t, "four", recv(t, ch))
}

func TestStallNewRequestForwardsHeaders(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	p.Stall(faultproxy.Match{Resource: "pods"})

	// Headers arrive although the stream is stalled.
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods?watch=1")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	ch := lines(resp.Body)
	up.lines <- "one"
	waitStalled(t, p, watchPods)
	requireNothing(t, ch)

	// Other requests are not affected: not pods, or not matching.
	resp2 := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/events")
	body, err := io.ReadAll(resp2.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), `"Path":"/api/v1/namespaces/ns1/events"`)

	p.UnstallAll()
	assert.Equal(t, "one", recv(t, ch))
}

func TestStallNonStreamingResponse(t *testing.T) {
	t.Parallel()
	_, p := newProxied(t, faultproxy.Options{})
	list := faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods", Namespace: "ns1"}
	p.Stall(list)
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	bodyCh := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		bodyCh <- b
	}()
	waitStalled(t, p, list)
	select {
	case b := <-bodyCh:
		require.FailNow(t, "body delivered while stalled", "%s", b)
	default:
	}
	// Another namespace is not stalled.
	resp2 := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns2/pods")
	_, err := io.ReadAll(resp2.Body)
	require.NoError(t, err)

	p.Unstall(list)
	select {
	case b := <-bodyCh:
		assert.Contains(t, string(b), `"Path":"/api/v1/namespaces/ns1/pods"`)
	case <-time.After(wait):
		require.FailNow(t, "body not delivered after Unstall")
	}
}

func TestStallBoundsBuffering(t *testing.T) {
	t.Parallel()
	const chunk = 64 << 10
	const total = 64 << 20
	var written atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		buf := bytes.Repeat([]byte("x"), chunk)
		for written.Load() < total {
			n, err := w.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	p := newProxy(t, &rest.Config{Host: up.URL}, faultproxy.Options{})
	m := faultproxy.Match{Resource: "configmaps"}
	p.Stall(m)
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/configmaps")
	waitStalled(t, p, m)

	// Wait until the upstream can no longer write: back-pressure reached it.
	last := int64(-1)
	require.Eventually(t, func() bool {
		w := written.Load()
		settled := w == last
		last = w
		return settled
	}, wait, 200*time.Millisecond)
	assert.Less(t, written.Load(), int64(total/2), "the proxy must not buffer a stalled stream without bound")
	assert.Zero(t, p.Stats()[faultproxy.Key{Verb: "list", Resource: "configmaps"}].ResponseBytes)

	p.Unstall(m)
	n, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	assert.Equal(t, int64(total), n, "nothing is lost")
	assert.Equal(t, int64(total), p.Stats()[faultproxy.Key{Verb: "list", Resource: "configmaps"}].ResponseBytes)
}

func TestResetConnections(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})

	// One live stream and one stalled stream.
	_, ch := stream(t, http.DefaultClient, p, up, "/api/v1/namespaces/ns1/pods?watch=true")
	stalled := faultproxy.Match{Resource: "events"}
	p.Stall(stalled)
	_, ch2 := stream(t, http.DefaultClient, p, up, "/api/v1/namespaces/ns1/events?watch=true")
	up.lines <- "to someone"
	up.lines <- "to someone"
	waitStalled(t, p, stalled)
	require.Equal(t, 2, p.OpenWatches(faultproxy.Match{}))

	p.ResetConnections()
	drain(ch)
	drain(ch2)
	// Both upstream requests were cancelled.
	select {
	case <-up.gone:
	case <-time.After(wait):
		require.FailNow(t, "upstream request not cancelled")
	}
	waitOpenWatches(t, p, faultproxy.Match{}, 0)
	assert.Equal(t, 0, p.StalledStreams(faultproxy.Match{}))

	// New connections work.
	p.UnstallAll()
	assertOK(t, http.DefaultClient, p.URL()+"/version")
}

func TestRefuse(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	// Leave an idle keep-alive connection in the client's pool.
	resp := get(t, client, p.URL()+"/version")
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	p.Refuse(true)
	hits := up.hits.Load()
	for range 3 {
		_, err := client.Get(p.URL() + "/version")
		require.Error(t, err)
	}
	_, err := http.Post(p.URL()+"/api/v1/namespaces/ns1/pods", "application/json", strings.NewReader("{}"))
	require.Error(t, err)
	assert.Equal(t, hits, up.hits.Load(), "nothing reached the upstream")

	p.Refuse(false)
	assertOK(t, client, p.URL()+"/version")
}

func TestLatency(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	const d = 300 * time.Millisecond
	m := faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods"}
	p.SetLatency(m, d)
	p.SetLatency(faultproxy.Match{Resource: "pods"}, d/3) // the longest applies

	start := time.Now()
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.GreaterOrEqual(t, time.Since(start), d)

	// A client that gives up during the delay is never forwarded.
	hits := up.hits.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/api/v1/namespaces/ns1/pods", nil)
	_, err := http.DefaultClient.Do(req)
	require.Error(t, err)
	require.Eventually(t, func() bool {
		for _, r := range p.Records() {
			if r.End.IsZero() {
				return false
			}
		}
		return true
	}, wait, tick)
	assert.Equal(t, hits, up.hits.Load())

	p.SetLatency(m, 0)
	p.SetLatency(faultproxy.Match{Resource: "pods"}, 0)
	assertOK(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods")
}

func decodeStatus(t *testing.T, resp *http.Response) *metav1.Status {
	t.Helper()
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var st metav1.Status
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	assert.Equal(t, "Status", st.Kind)
	assert.Equal(t, "v1", st.APIVersion)
	assert.Equal(t, metav1.StatusFailure, st.Status)
	assert.EqualValues(t, resp.StatusCode, st.Code)
	return &st
}

func TestInjectStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code       int
		retryAfter time.Duration
		wantRetry  string
		reason     metav1.StatusReason
		check      func(error) bool
	}{
		{410, 0, "", metav1.StatusReasonExpired, apierrors.IsResourceExpired},
		{429, 0, "1", metav1.StatusReasonTooManyRequests, apierrors.IsTooManyRequests},
		{429, 1500 * time.Millisecond, "2", metav1.StatusReasonTooManyRequests, apierrors.IsTooManyRequests},
		{500, 0, "", metav1.StatusReasonInternalError, apierrors.IsInternalError},
		{503, 0, "", metav1.StatusReasonServiceUnavailable, apierrors.IsServiceUnavailable},
		{503, 3 * time.Second, "3", metav1.StatusReasonServiceUnavailable, apierrors.IsServiceUnavailable},
		{504, 0, "", metav1.StatusReasonTimeout, apierrors.IsTimeout},
		{404, 0, "", metav1.StatusReasonNotFound, apierrors.IsNotFound},
		{409, 0, "", metav1.StatusReasonConflict, apierrors.IsConflict},
		{403, 0, "", metav1.StatusReasonForbidden, apierrors.IsForbidden},
		{502, 0, "", metav1.StatusReasonInternalError, apierrors.IsInternalError},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d-%s", tc.code, tc.retryAfter), func(t *testing.T) {
			up, p := newProxied(t, faultproxy.Options{})
			m := faultproxy.Match{Verb: faultproxy.VerbGet, Resource: "pods", Namespace: "ns1"}
			p.InjectStatus(m, tc.code, 2, tc.retryAfter)

			// Non-matching requests pass.
			resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns2/pods/p1")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			hits := up.hits.Load()

			for range 2 {
				resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods/p1?resourceVersion=5")
				require.Equal(t, tc.code, resp.StatusCode)
				assert.Equal(t, tc.wantRetry, resp.Header.Get("Retry-After"))
				st := decodeStatus(t, resp)
				assert.Equal(t, tc.reason, st.Reason)
				err := apierrors.FromObject(st)
				assert.True(t, tc.check(err), "%v", err)
				if tc.code == 410 {
					assert.Contains(t, st.Message, "too old resource version")
				}
				if tc.wantRetry != "" {
					secs, ok := apierrors.SuggestsClientDelay(err)
					assert.True(t, ok)
					assert.Equal(t, tc.wantRetry, fmt.Sprint(secs))
				}
			}
			assert.Equal(t, hits, up.hits.Load(), "injected answers do not reach the upstream")

			resp = get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods/p1")
			require.Equal(t, http.StatusOK, resp.StatusCode)

			var injected int
			for _, r := range p.Records() {
				if r.Injected {
					injected++
					assert.Equal(t, tc.code, r.Status)
					assert.Positive(t, r.Bytes)
				}
			}
			assert.Equal(t, 2, injected)
		})
	}
}

func TestInjectStatusQueueAndCancel(t *testing.T) {
	t.Parallel()
	_, p := newProxied(t, faultproxy.Options{})
	all := faultproxy.Match{}
	p.InjectStatus(all, 500, 1, 0)
	p.InjectStatus(all, 503, 1, 0)
	assert.Equal(t, 500, get(t, http.DefaultClient, p.URL()+"/api/v1/pods").StatusCode)
	assert.Equal(t, 503, get(t, http.DefaultClient, p.URL()+"/api/v1/pods").StatusCode)
	assert.Equal(t, 200, get(t, http.DefaultClient, p.URL()+"/api/v1/pods").StatusCode)

	p.InjectStatus(all, 500, 5, 0)
	p.InjectStatus(all, 0, 0, 0) // cancel
	assert.Equal(t, 200, get(t, http.DefaultClient, p.URL()+"/api/v1/pods").StatusCode)

	assert.Panics(t, func() { p.InjectStatus(all, 200, 1, 0) })
	assert.Panics(t, func() { p.InjectWatchError(all, 600, 1) })
}

// clientset returns a client-go clientset for cfg through p.
func clientset(t *testing.T, p *faultproxy.Proxy, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(p.ClientConfig(cfg))
	require.NoError(t, err)
	return cs
}

func TestInjectWatchErrorClientGo(t *testing.T) {
	t.Parallel()
	for _, contentType := range []string{"application/json", "application/vnd.kubernetes.protobuf"} {
		t.Run(contentType, func(t *testing.T) {
			up, p := newProxied(t, faultproxy.Options{})
			cs := clientset(t, p, &rest.Config{Host: up.URL, ContentConfig: rest.ContentConfig{ContentType: contentType}})

			p.InjectWatchError(faultproxy.Match{Resource: "pods"}, http.StatusGone, 1)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			// A list does not take a watch-error injection.
			_, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/ns1/pods").DoRaw(ctx)
			require.NoError(t, err)

			w, err := cs.CoreV1().Pods("ns1").Watch(ctx, metav1.ListOptions{ResourceVersion: "7"})
			require.NoError(t, err)
			defer w.Stop()
			ev, ok := <-w.ResultChan()
			require.True(t, ok)
			require.Equal(t, watch.Error, ev.Type)
			err = apierrors.FromObject(ev.Object)
			assert.True(t, apierrors.IsResourceExpired(err), "%v", err)
			assert.Contains(t, err.Error(), "too old resource version: 7")
			_, ok = <-w.ResultChan()
			assert.False(t, ok, "the stream ends after the error")

			recs := p.Records()
			last := recs[len(recs)-1]
			assert.True(t, last.Injected)
			assert.Equal(t, faultproxy.VerbWatch, last.Verb)
			assert.Equal(t, http.StatusOK, last.Status)
		})
	}
}

func TestInjectStatusClientGo(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	cs := clientset(t, p, &rest.Config{Host: up.URL})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	p.InjectStatus(faultproxy.Match{Verb: faultproxy.VerbWatch}, http.StatusGone, 1, 0)
	_, err := cs.CoreV1().Pods("ns1").Watch(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsResourceExpired(err), "%v", err)

	p.InjectStatus(faultproxy.Match{Verb: faultproxy.VerbCreate}, http.StatusConflict, 1, 0)
	_, err = cs.CoreV1().RESTClient().Post().AbsPath("/api/v1/namespaces/ns1/pods").Body([]byte("{}")).DoRaw(ctx)
	assert.True(t, apierrors.IsAlreadyExists(err), "%v", err)
}

func TestStatsRecordsOpenWatches(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})

	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods")
	listBody, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	logResp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods/p1/log")
	_, _ = io.Copy(io.Discard, logResp.Body)
	logResp.Body.Close()
	// The log request is finished once its whole body is read.
	require.Eventually(t, func() bool {
		for _, r := range p.Records() {
			if r.Subresource == "log" {
				return !r.End.IsZero()
			}
		}
		return false
	}, wait, tick)
	resp, ch := stream(t, http.DefaultClient, p, up, "/api/v1/namespaces/ns1/pods?watch=true")
	up.lines <- "event"
	recv(t, ch)

	stats := p.Stats()
	assert.Equal(t, faultproxy.Counter{Requests: 1, ResponseBytes: int64(len(listBody))}, stats[faultproxy.Key{Verb: "list", Resource: "pods"}])
	assert.Equal(t, int64(1), stats[faultproxy.Key{Verb: "get", Resource: "pods/log"}].Requests)
	assert.Equal(t, faultproxy.Counter{Requests: 1, ResponseBytes: int64(len("event\n"))}, stats[faultproxy.Key{Verb: "watch", Resource: "pods"}])

	assert.Equal(t, 1, p.OpenWatches(faultproxy.Match{}))
	assert.Equal(t, 1, p.OpenWatches(watchPods))
	assert.Equal(t, 1, p.OpenWatches(faultproxy.Match{Namespace: "ns1"}))
	assert.Equal(t, 0, p.OpenWatches(faultproxy.Match{Namespace: "ns2"}))
	assert.Equal(t, 0, p.OpenWatches(faultproxy.Match{Resource: "events"}))
	assert.Equal(t, 0, p.OpenWatches(faultproxy.Match{Verb: faultproxy.VerbList}))

	recs := p.Records()
	require.Len(t, recs, 3)
	assert.Equal(t, faultproxy.VerbList, recs[0].Verb)
	assert.Equal(t, "pods", recs[0].Resource)
	assert.Equal(t, "ns1", recs[0].Namespace)
	assert.Equal(t, "/api/v1/namespaces/ns1/pods", recs[0].Path)
	assert.Equal(t, http.StatusOK, recs[0].Status)
	assert.Equal(t, int64(len(listBody)), recs[0].Bytes)
	assert.Equal(t, "HTTP/1.1", recs[0].Proto)
	assert.False(t, recs[0].End.IsZero())
	assert.False(t, recs[0].End.Before(recs[0].Start))
	assert.Equal(t, "log", recs[1].Subresource)
	assert.Equal(t, "p1", recs[1].Name)
	assert.Equal(t, faultproxy.VerbWatch, recs[2].Verb)
	assert.Equal(t, "watch=true", recs[2].RawQuery)
	assert.True(t, recs[2].End.IsZero(), "open watch")
	assert.False(t, recs[2].Injected)

	p.ResetStats()
	assert.Empty(t, p.Stats())
	recs = p.Records()
	require.Len(t, recs, 1, "open requests are kept")
	assert.Equal(t, faultproxy.VerbWatch, recs[0].Verb)
	up.lines <- "more"
	recv(t, ch)
	assert.Equal(t, int64(len("more\n")), p.Stats()[faultproxy.Key{Verb: "watch", Resource: "pods"}].ResponseBytes)

	resp.Body.Close()
	waitOpenWatches(t, p, faultproxy.Match{}, 0)
	assert.False(t, p.Records()[0].End.IsZero())
}

func TestGzipPassThrough(t *testing.T) {
	t.Parallel()
	payload := strings.Repeat(`{"kind":"Pod","metadata":{"name":"p"}}`, 10000)
	var compressed atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			_, _ = io.WriteString(w, payload)
			return
		}
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = io.WriteString(zw, payload)
		_ = zw.Close()
		compressed.Store(int64(buf.Len()))
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(buf.Bytes())
	}))
	t.Cleanup(up.Close)
	p := newProxy(t, &rest.Config{Host: up.URL}, faultproxy.Options{})

	// A default Go client (as client-go's) asks for gzip and decompresses.
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/pods")
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.True(t, resp.Uncompressed)
	assert.Equal(t, payload, string(body))
	require.Positive(t, compressed.Load())
	assert.Equal(t, compressed.Load(), p.Stats()[faultproxy.Key{Verb: "list", Resource: "pods"}].ResponseBytes,
		"bytes are counted as written to the client, compressed")
}

func TestHTTP2(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{HTTP2: true})
	cfg := p.ClientConfig(&rest.Config{Host: "https://unused.example", BearerToken: "h2-token"})
	rt, err := rest.TransportFor(cfg)
	require.NoError(t, err)
	client := &http.Client{Transport: rt}

	resp := get(t, client, p.URL()+"/api/v1/namespaces/ns1/pods")
	assert.Equal(t, 2, resp.ProtoMajor)
	var got echo
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	assert.Equal(t, "Bearer h2-token", got.Authorization)
	assert.Equal(t, 1, got.ProtoMajor, "upstream is HTTP/1.1")

	// Stall works on an HTTP/2 stream, and other streams on the same
	// connection are unaffected.
	resp, ch := stream(t, client, p, up, "/api/v1/namespaces/ns1/pods?watch=true")
	require.Equal(t, 2, resp.ProtoMajor)
	p.Stall(watchPods)
	up.lines <- "held"
	waitStalled(t, p, watchPods)
	requireNothing(t, ch)
	assertOK(t, client, p.URL()+"/api/v1/namespaces/ns1/pods")
	p.Unstall(watchPods)
	assert.Equal(t, "held", recv(t, ch))
	assert.Equal(t, "HTTP/2.0", p.Records()[0].Proto)

	// ResetConnections ends the HTTP/2 stream.
	p.ResetConnections()
	drain(ch)
	<-up.gone

	// Refuse on HTTP/2: a new request on the (new) pooled connection fails,
	// its stream is reset, while an open stream on that connection goes on.
	_, ch = stream(t, client, p, up, "/api/v1/namespaces/ns1/pods?watch=true")
	p.Refuse(true)
	_, err = client.Get(p.URL() + "/api/v1/namespaces/ns1/pods")
	require.Error(t, err)
	up.lines <- "still flowing"
	assert.Equal(t, "still flowing", recv(t, ch))
	// A new connection is refused too.
	tlsConfig, err := rest.TLSConfigFor(cfg)
	require.NoError(t, err)
	fresh := &http.Transport{TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true}
	defer fresh.CloseIdleConnections()
	_, err = (&http.Client{Transport: fresh}).Get(p.URL() + "/api/v1/namespaces/ns1/pods")
	require.Error(t, err)
	p.Refuse(false)
	assertOK(t, client, p.URL()+"/api/v1/namespaces/ns1/pods")
}

func TestClearFaults(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	_, ch := stream(t, http.DefaultClient, p, up, "/api/v1/namespaces/ns1/pods?watch=true")
	p.Stall(faultproxy.Match{})
	p.Stall(watchPods)
	up.lines <- "held"
	waitStalled(t, p, watchPods)
	p.SetLatency(faultproxy.Match{}, time.Hour)
	p.InjectStatus(faultproxy.Match{}, 500, 100, 0)
	p.InjectWatchError(faultproxy.Match{}, 410, 100)
	p.Refuse(true)

	p.ClearFaults()
	assert.Equal(t, "held", recv(t, ch))
	assertOK(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods")
}

func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	up, p := newProxied(t, faultproxy.Options{})
	up.Close()
	resp := get(t, http.DefaultClient, p.URL()+"/api/v1/namespaces/ns1/pods")
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	st := decodeStatus(t, resp)
	assert.Contains(t, st.Message, "upstream request failed")
}

func TestCloseReleasesEverything(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	p, err := faultproxy.New(&rest.Config{Host: up.URL}, faultproxy.Options{})
	require.NoError(t, err)
	_, ch := stream(t, http.DefaultClient, p, up, "/api/v1/namespaces/ns1/pods?watch=true")
	p.Stall(faultproxy.Match{})
	up.lines <- "held"
	waitStalled(t, p, faultproxy.Match{})
	p.SetLatency(faultproxy.Match{Resource: "events"}, time.Hour)
	errc := make(chan error, 1)
	go func() {
		_, err := http.Get(p.URL() + "/api/v1/namespaces/ns1/events")
		errc <- err
	}()
	require.Eventually(t, func() bool { return len(p.Records()) == 2 }, wait, tick)

	require.NoError(t, p.Close())
	drain(ch)
	assert.Error(t, <-errc)
	assert.Equal(t, 0, p.OpenWatches(faultproxy.Match{}))
	require.NoError(t, p.Close(), "idempotent")
	_, err = http.Get(p.URL() + "/version")
	assert.Error(t, err)
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	_, err := faultproxy.New(nil, faultproxy.Options{})
	assert.Error(t, err)
	_, err = faultproxy.New(&rest.Config{Host: "https://127.0.0.1:1", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("not a pem")}}, faultproxy.Options{})
	assert.Error(t, err)
}
