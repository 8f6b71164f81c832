//go:build integration

package faultproxy_test

// Integration tests against the real etcd + kube-apiserver of testcluster.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
)

// silence is how long a test watches a stalled stream to confirm that the
// client receives nothing. The stall itself is established deterministically
// first (StalledStreams); this window only shows the client stays silent.
const silence = 2 * time.Second

const protobuf = "application/vnd.kubernetes.protobuf"

// env is one integration test's world: a fresh namespace, a direct admin
// client and a proxy in front of the cluster.
type env struct {
	ns     string
	direct kubernetes.Interface
	proxy  *faultproxy.Proxy
}

func newEnv(t *testing.T, opts faultproxy.Options) *env {
	t.Helper()
	direct, err := kubernetes.NewForConfig(cluster.Config())
	require.NoError(t, err)
	ns, err := direct.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "faultproxy-"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		// No namespace controller runs: the namespace stays Terminating,
		// which is harmless; its name is unique.
		_ = direct.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return &env{ns: ns.Name, direct: direct, proxy: newProxy(t, cluster.Config(), opts)}
}

// client returns a clientset for cfg (admin if nil) through the proxy.
func (e *env) client(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	if cfg == nil {
		cfg = cluster.Config()
	}
	cs, err := kubernetes.NewForConfig(e.proxy.ClientConfig(cfg))
	require.NoError(t, err)
	return cs
}

// encodings are the two wire formats a fault must work with.
var encodings = []struct {
	name string
	cfg  func() *rest.Config
}{
	{"json", func() *rest.Config { return cluster.Config() }}, // cluster is set in TestMain
	{"protobuf", protobufConfig},
}

// forEachEncoding runs test as a parallel subtest for each of the
// encodings, with an env of its own and a client of that encoding through
// the env's proxy.
func forEachEncoding(t *testing.T, test func(t *testing.T, e *env, cs kubernetes.Interface)) {
	t.Helper()
	for _, tc := range encodings {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, faultproxy.Options{})
			test(t, e, e.client(t, tc.cfg()))
		})
	}
}

func protobufConfig() *rest.Config {
	cfg := cluster.Config()
	cfg.ContentType = protobuf
	cfg.AcceptContentTypes = protobuf + ",application/json"
	return cfg
}

// podWatches matches the watches of pods in the test's namespace.
func (e *env) podWatches() faultproxy.Match {
	return faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods", Namespace: e.ns}
}

// requireListPods requires that cs lists the pods of ns: requests go
// through (again).
func requireListPods(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	_, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
}

func (e *env) createPod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	pod, err := e.direct.CoreV1().Pods(e.ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return pod
}

func (e *env) createConfigMap(t *testing.T, name string) {
	t.Helper()
	_, err := e.direct.CoreV1().ConfigMaps(e.ns).Create(t.Context(),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

func watchPodsIn(t *testing.T, cs kubernetes.Interface, ns string) watch.Interface {
	t.Helper()
	w, err := cs.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	t.Cleanup(w.Stop)
	return w
}

// assertNewWatchSees opens a watch of the namespace's pods with cs,
// creates the pod name and asserts that the watch delivers it: a watch
// opened now works.
func (e *env) assertNewWatchSees(t *testing.T, cs kubernetes.Interface, name string, msgAndArgs ...any) {
	t.Helper()
	w := watchPodsIn(t, cs, e.ns)
	e.createPod(t, name)
	assert.Equal(t, name, podName(t, nextEvent(t, w)), msgAndArgs...)
}

func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		require.True(t, ok, "watch ended")
		return ev
	case <-time.After(wait):
		require.FailNow(t, "no watch event")
		return watch.Event{}
	}
}

func requireNoEvent(t *testing.T, w watch.Interface, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		require.FailNow(t, "event delivered through a stalled watch", "%v %v (open %v)", ev.Type, ev.Object, ok)
	case <-time.After(d):
	}
}

func requireClosed(t *testing.T, w watch.Interface) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-w.ResultChan():
			if !ok {
				return
			}
		case <-deadline:
			require.FailNow(t, "watch did not end")
		}
	}
}

// assertAdded asserts that the next event of w is the ADDED of the pod
// name.
func assertAdded(t *testing.T, w watch.Interface, name string) {
	t.Helper()
	ev := nextEvent(t, w)
	assert.Equal(t, watch.Added, ev.Type)
	assert.Equal(t, name, podName(t, ev))
}

func podName(t *testing.T, ev watch.Event) string {
	t.Helper()
	pod, ok := ev.Object.(*corev1.Pod)
	require.True(t, ok, "event object %T", ev.Object)
	return pod.Name
}

// TestStalledPodWatch is the 2018 incident: the proxied watch is open and
// silent while a direct watch sees the pod; after Unstall the proxied watch
// catches up.
func TestStalledPodWatch(t *testing.T) {
	t.Parallel()
	forEachEncoding(t, func(t *testing.T, e *env, cs kubernetes.Interface) {
		proxied := watchPodsIn(t, cs, e.ns)
		direct := watchPodsIn(t, e.direct, e.ns)
		m := e.podWatches()
		require.Equal(t, 1, e.proxy.OpenWatches(m))

		e.proxy.Stall(m)
		e.createPod(t, "stalled")
		assertAdded(t, direct, "stalled")

		waitStalled(t, e.proxy, m, "the event reaches the proxy and is held")
		requireNoEvent(t, proxied, silence)
		require.Equal(t, 1, e.proxy.OpenWatches(m), "the stalled watch stays open")

		e.proxy.Unstall(m)
		assertAdded(t, proxied, "stalled")

		// And it keeps flowing.
		e.createPod(t, "after")
		assert.Equal(t, "after", podName(t, nextEvent(t, proxied)))
	})
}

// TestStalledInformer shows the consequence for a client-go informer: its
// cache silently misses a pod while the watch is stalled.
func TestStalledInformer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	factory := informers.NewSharedInformerFactoryWithOptions(e.client(t, nil), 0, informers.WithNamespace(e.ns))
	pods := factory.Core().V1().Pods()
	informer := pods.Informer()
	factory.Start(t.Context().Done())
	t.Cleanup(factory.Shutdown)
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), informer.HasSynced))

	m := e.podWatches()
	waitOpenWatches(t, e.proxy, m, 1)
	e.proxy.Stall(m)
	e.createPod(t, "invisible")
	waitStalled(t, e.proxy, m)
	_, err := pods.Lister().Pods(e.ns).Get("invisible")
	require.True(t, apierrors.IsNotFound(err), "the stale cache does not have the pod: %v", err)
	assert.True(t, informer.HasSynced(), "and still claims to be synced")

	e.proxy.Unstall(m)
	require.Eventually(t, func() bool {
		_, err := pods.Lister().Pods(e.ns).Get("invisible")
		return err == nil
	}, wait, tick)
}

// TestServiceAccountIdentityIsForwarded checks that a request through the
// proxy keeps the client's identity: the proxy, built from the admin config,
// lends none of its credentials.
func TestServiceAccountIdentityIsForwarded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	ctx := t.Context()
	saCfg, err := cluster.ServiceAccountConfig(ctx, e.ns, "reader")
	require.NoError(t, err)
	_, err = e.direct.RbacV1().Roles(e.ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.direct.RbacV1().RoleBindings(e.ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: e.ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	sa := e.client(t, saCfg)
	require.Eventually(t, func() bool {
		_, err := sa.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		return err == nil
	}, wait, 100*time.Millisecond, "the role allows listing pods through the proxy")
	_, err = sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "not admin through the proxy: %v", err)
	_, err = sa.CoreV1().ConfigMaps(e.ns).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "not admin through the proxy: %v", err)

	e.assertNewWatchSees(t, sa, "seen-by-sa")
}

func TestResetConnectionsEndsWatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	cs := e.client(t, nil)
	w := watchPodsIn(t, cs, e.ns)
	w2 := watchPodsIn(t, cs, e.ns)
	m := e.podWatches()
	require.Equal(t, 2, e.proxy.OpenWatches(m))

	e.proxy.ResetConnections()
	requireClosed(t, w)
	requireClosed(t, w2)
	waitOpenWatches(t, e.proxy, m, 0)

	// New requests work.
	requireListPods(t, cs, e.ns)
}

func TestResetConnectionsEndsStalledWatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	w := watchPodsIn(t, e.client(t, nil), e.ns)
	m := e.podWatches()
	e.proxy.Stall(m)
	e.createPod(t, "held")
	waitStalled(t, e.proxy, m)

	e.proxy.ResetConnections()
	requireClosed(t, w)
	waitOpenWatches(t, e.proxy, m, 0)
}

func TestRefuseRealClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	cs := e.client(t, nil)
	ctx := t.Context()
	// A connection is pooled and idle now.
	_, err := cs.CoreV1().ConfigMaps(e.ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)

	e.proxy.Refuse(true)
	_, err = cs.CoreV1().ConfigMaps(e.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "refused"}}, metav1.CreateOptions{})
	require.Error(t, err)
	assert.True(t, utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err), "want a connection error, got %v", err)
	var status apierrors.APIStatus
	assert.NotErrorAs(t, err, &status, "no HTTP response at all")
	// client-go retries GETs on connection errors (10 times, 1s apart):
	// without retries the error surfaces at once.
	_, err = cs.CoreV1().RESTClient().Get().Namespace(e.ns).Resource("configmaps").MaxRetries(0).DoRaw(ctx)
	require.Error(t, err)
	assert.True(t, utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err), "want a connection error, got %v", err)

	e.proxy.Refuse(false)
	_, err = cs.CoreV1().ConfigMaps(e.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "accepted"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.direct.CoreV1().ConfigMaps(e.ns).Get(ctx, "refused", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the refused create never reached the apiserver: %v", err)
}

func TestInjectStatusRealClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code  int
		check func(error) bool
	}{
		{http.StatusTooManyRequests, apierrors.IsTooManyRequests},
		{http.StatusInternalServerError, apierrors.IsInternalError},
		{http.StatusServiceUnavailable, apierrors.IsServiceUnavailable},
		{http.StatusGatewayTimeout, apierrors.IsTimeout},
		{http.StatusGone, apierrors.IsResourceExpired},
	}
	e := newEnv(t, faultproxy.Options{})
	e.createConfigMap(t, "cm")
	cs := e.client(t, nil)
	rawClient, err := rest.HTTPClientFor(e.proxy.ClientConfig(cluster.Config()))
	require.NoError(t, err)
	m := faultproxy.Match{Verb: faultproxy.VerbGet, Resource: "configmaps", Namespace: e.ns}
	cmURL := e.proxy.URL() + "/api/v1/namespaces/" + e.ns + "/configmaps/cm"

	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			ctx := t.Context()
			e.proxy.InjectStatus(m, tc.code, 2, 0)

			// First: the raw response, as the apiserver would send it.
			resp, err := rawClient.Get(cmURL)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, tc.code, resp.StatusCode)
			if tc.code == http.StatusTooManyRequests {
				assert.Equal(t, "1", resp.Header.Get("Retry-After"))
			} else {
				assert.Empty(t, resp.Header.Get("Retry-After"))
			}
			var st metav1.Status
			require.NoError(t, json.Unmarshal(body, &st))
			assert.Equal(t, "Status", st.Kind)
			assert.Equal(t, "v1", st.APIVersion)
			assert.EqualValues(t, tc.code, st.Code)

			// Second: client-go's typed error (no retries, so that a
			// Retry-After is not followed).
			err = cs.CoreV1().RESTClient().Get().Namespace(e.ns).Resource("configmaps").Name("cm").MaxRetries(0).Do(ctx).Error()
			require.Error(t, err)
			assert.True(t, tc.check(err), "%d: got %v", tc.code, err)
			if tc.code == http.StatusTooManyRequests {
				secs, ok := apierrors.SuggestsClientDelay(err)
				assert.True(t, ok)
				assert.Equal(t, 1, secs)
			}

			// Then normal again.
			got, err := cs.CoreV1().ConfigMaps(e.ns).Get(ctx, "cm", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, "cm", got.Name)
		})
	}
}

// TestClientGoHonoursRetryAfter: one injected 429 with Retry-After is
// retried by client-go after the delay, transparently to the caller.
func TestClientGoHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	e.createConfigMap(t, "cm")
	cs := e.client(t, nil)
	m := faultproxy.Match{Verb: faultproxy.VerbGet, Resource: "configmaps", Namespace: e.ns}
	e.proxy.InjectStatus(m, http.StatusTooManyRequests, 1, time.Second)
	start := time.Now()
	_, err := cs.CoreV1().ConfigMaps(e.ns).Get(t.Context(), "cm", metav1.GetOptions{})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), time.Second)
	var statuses []int
	for _, r := range e.proxy.Records() {
		if r.Verb == faultproxy.VerbGet && r.Resource == "configmaps" {
			statuses = append(statuses, r.Status)
		}
	}
	assert.Equal(t, []int{http.StatusTooManyRequests, http.StatusOK}, statuses)
}

func TestInjectStatusOnWatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	cs := e.client(t, nil)
	m := e.podWatches()
	e.proxy.InjectStatus(m, http.StatusGone, 1, 0)
	_, err := cs.CoreV1().Pods(e.ns).Watch(t.Context(), metav1.ListOptions{})
	assert.True(t, apierrors.IsResourceExpired(err), "%v", err)
	e.assertNewWatchSees(t, cs, "p")
}

func TestInjectWatchError(t *testing.T) {
	t.Parallel()
	forEachEncoding(t, func(t *testing.T, e *env, cs kubernetes.Interface) {
		m := faultproxy.Match{Resource: "pods", Namespace: e.ns}
		e.proxy.InjectWatchError(m, http.StatusGone, 1)

		// A list is not a watch: it goes through.
		requireListPods(t, cs, e.ns)

		w := watchPodsIn(t, cs, e.ns)
		ev := nextEvent(t, w)
		require.Equal(t, watch.Error, ev.Type)
		err := apierrors.FromObject(ev.Object)
		assert.True(t, apierrors.IsResourceExpired(err), "%v", err)
		requireClosed(t, w)

		// The next watch is real.
		e.assertNewWatchSees(t, cs, "p")
	})
}

func TestLatencyRealClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	cs := e.client(t, nil)
	const d = 500 * time.Millisecond
	m := faultproxy.Match{Verb: faultproxy.VerbList, Resource: "configmaps", Namespace: e.ns}
	e.proxy.SetLatency(m, d)
	start := time.Now()
	_, err := cs.CoreV1().ConfigMaps(e.ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), d)
	e.proxy.SetLatency(m, 0)
	_, err = cs.CoreV1().ConfigMaps(e.ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
}

func TestStatsAndOpenWatchesRealClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	ctx := t.Context()
	e.createPod(t, "p1")
	cs := e.client(t, nil)
	e.proxy.ResetStats()

	list, err := cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	_, err = cs.CoreV1().Namespaces().Get(ctx, e.ns, metav1.GetOptions{})
	require.NoError(t, err)
	_, err = cs.CoreV1().ConfigMaps(e.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	stats := e.proxy.Stats()
	listPods := stats[faultproxy.Key{Verb: faultproxy.VerbList, Resource: "pods"}]
	assert.Equal(t, int64(1), listPods.Requests)
	assert.Positive(t, listPods.ResponseBytes)
	assert.Equal(t, int64(1), stats[faultproxy.Key{Verb: faultproxy.VerbGet, Resource: "namespaces"}].Requests)
	assert.Equal(t, int64(1), stats[faultproxy.Key{Verb: faultproxy.VerbCreate, Resource: "configmaps"}].Requests)

	recs := e.proxy.Records()
	require.Len(t, recs, 3)
	assert.Equal(t, faultproxy.VerbList, recs[0].Verb)
	assert.Equal(t, "pods", recs[0].Resource)
	assert.Equal(t, e.ns, recs[0].Namespace)
	assert.Equal(t, http.StatusOK, recs[0].Status)
	assert.Equal(t, listPods.ResponseBytes, recs[0].Bytes)
	assert.Equal(t, http.StatusCreated, recs[2].Status)
	assert.Equal(t, "configmaps", recs[2].Resource)
	for _, r := range recs {
		assert.False(t, r.End.IsZero())
		assert.False(t, r.Injected)
	}

	m := e.podWatches()
	w1 := watchPodsIn(t, cs, e.ns)
	w2 := watchPodsIn(t, cs, e.ns)
	assert.Equal(t, 2, e.proxy.OpenWatches(m))
	assert.Equal(t, 0, e.proxy.OpenWatches(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "events"}))
	// Initial ADDED events for the existing pod are counted as watch bytes.
	nextEvent(t, w1)
	nextEvent(t, w2)
	assert.Positive(t, e.proxy.Stats()[faultproxy.Key{Verb: faultproxy.VerbWatch, Resource: "pods"}].ResponseBytes)
	w1.Stop()
	waitOpenWatches(t, e.proxy, m, 1)
	w2.Stop()
	waitOpenWatches(t, e.proxy, m, 0)
}

func TestHTTP2RealClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{HTTP2: true})
	cfg := e.proxy.ClientConfig(cluster.Config())
	rt, err := rest.TransportFor(cfg)
	require.NoError(t, err)
	raw := &http.Client{Transport: rt}
	resp, err := raw.Get(e.proxy.URL() + "/api/v1/namespaces/" + e.ns + "/pods")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 2, resp.ProtoMajor)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list corev1.PodList
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	assert.Equal(t, "PodList", list.Kind)

	cs := e.client(t, nil)
	w := watchPodsIn(t, cs, e.ns)
	m := e.podWatches()
	e.proxy.Stall(m)
	e.createPod(t, "h2")
	waitStalled(t, e.proxy, m)
	requireNoEvent(t, w, silence)
	// The same HTTP/2 connection still serves other requests.
	requireListPods(t, cs, e.ns)
	e.proxy.Unstall(m)
	assert.Equal(t, "h2", podName(t, nextEvent(t, w)))

	for _, r := range e.proxy.Records() {
		assert.Equal(t, "HTTP/2.0", r.Proto)
	}
}

// TestAPIServerRestart: an upstream restart ends proxied watches like direct
// ones, and the proxy serves again once the apiserver is back.
func TestAPIServerRestart(t *testing.T) {
	// Serial: it restarts the package's one apiserver under every other test.
	e := newEnv(t, faultproxy.Options{})
	cs := e.client(t, nil)
	w := watchPodsIn(t, cs, e.ns)
	require.NoError(t, cluster.RestartAPIServer(t.Context()))
	requireClosed(t, w)
	m := faultproxy.Match{Verb: faultproxy.VerbWatch}
	waitOpenWatches(t, e.proxy, m, 0)
	requireListPods(t, cs, e.ns)
}

// TestGzipRealClient: the apiserver compresses large responses for
// client-go (which asks for gzip); the proxy passes the compressed body
// through and counts the bytes as sent.
func TestGzipRealClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	ctx := t.Context()
	big := strings.Repeat("kubespawn ", 40<<10) // 400 KiB, above the apiserver's 128 KiB threshold
	_, err := e.direct.CoreV1().ConfigMaps(e.ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "big"}, Data: map[string]string{"k": big},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	list, err := e.client(t, nil).CoreV1().ConfigMaps(e.ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	assert.Equal(t, big, list.Items[0].Data["k"])
	sent := e.proxy.Stats()[faultproxy.Key{Verb: faultproxy.VerbList, Resource: "configmaps"}].ResponseBytes
	assert.Positive(t, sent)
	assert.Less(t, sent, int64(len(big)/4), "the body was sent compressed")
}

// TestStallOpenFreezesOnlyOpenStreams: the open watch goes silent while a
// watch opened afterwards, and other requests, work normally.
func TestStallOpenFreezesOnlyOpenStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultproxy.Options{})
	client := e.client(t, nil)
	old := watchPodsIn(t, client, e.ns)
	m := e.podWatches()
	require.Equal(t, 1, e.proxy.StallOpen(m))

	e.assertNewWatchSees(t, client, "p", "a new watch is not stalled")
	_, err := client.CoreV1().Pods(e.ns).Get(t.Context(), "p", metav1.GetOptions{})
	require.NoError(t, err, "other requests flow")
	waitStalled(t, e.proxy, m)
	requireNoEvent(t, old, silence)

	e.proxy.UnstallAll()
	assert.Equal(t, "p", podName(t, nextEvent(t, old)), "released, it continues where it stopped")
}
