//go:build integration

package svcproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var (
	cluster     *testcluster.Cluster
	serviceCIDR netip.Prefix
)

// TestMain starts a control plane whose ClusterIPs are loopback addresses
// of a /24 this process holds, with the real EndpointSlice controller.
func TestMain(m *testing.M) {
	cidr, release, err := ReserveLoopbackCIDR()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	serviceCIDR = netip.MustParsePrefix(cidr)
	cluster = testcluster.MustStart(testcluster.Options{ServiceCIDR: cidr, ControllerManager: true,
		Controllers: append(slices.Clone(testcluster.DefaultControllers), "endpointslice-controller")})
	code := cluster.Run(m)
	release()
	os.Exit(code)
}

// waitTimeout bounds the waits for the controller and the proxy to act
// (well under a second each); the rest is room for a loaded machine.
const waitTimeout = 60 * time.Second

// env is one test's namespace and proxy, stopped when the test ends.
type env struct {
	t      *testing.T
	ctx    context.Context
	ns     string
	client kubernetes.Interface
	proxy  *Proxy
	ip     netip.Addr // where the backends listen: a non-loopback address of this machine
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ns := cluster.Namespace(t, "svcproxy")
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(3)))
	ctx := klog.NewContext(t.Context(), logger)
	client := cluster.Client(t)
	ip, err := LocalAddress()
	require.NoError(t, err)
	ensureNode(t, client)
	p, err := Start(ctx, Options{Client: client, Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	return &env{t: t, ctx: ctx, ns: ns, client: client, proxy: p, ip: ip}
}

// nodeName is the Node the tests' pods are bound to: the EndpointSlice
// controller leaves out pods whose Node it cannot find. No kubelet runs
// it; the tests write the pods' status themselves.
const nodeName = "svcproxy-node"

var nodeOnce sync.Once

func ensureNode(t *testing.T, client kubernetes.Interface) {
	nodeOnce.Do(func() {
		_, err := client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("node: %v", err)
		}
	})
}

// backend is a TCP server at e.ip that greets each connection with its
// name and then echoes, the way a pod's server would answer.
type backend struct {
	name string
	port int
	ln   net.Listener
	wg   sync.WaitGroup
}

func (e *env) backend(name string) *backend {
	e.t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(e.ip.String(), "0"))
	require.NoError(e.t, err)
	b := &backend{name: name, port: ln.Addr().(*net.TCPAddr).Port, ln: ln}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Go(func() {
				defer c.Close()
				if _, err := fmt.Fprintf(c, "%s\n", name); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			})
		}
	})
	e.t.Cleanup(func() {
		ln.Close()
		b.wg.Wait()
	})
	return b
}

// pod creates a pod bound to nodeName whose container port "http" is
// b's, and writes the status a kubelet would: Running at e.ip, Ready.
func (e *env) pod(name string, b *backend, ip string) *corev1.Pod {
	e.t.Helper()
	pod, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{
			Name: "server", Image: "example.org/server:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(b.port)}},
		}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return e.setReady(pod, ip, true)
}

func (e *env) setReady(pod *corev1.Pod, ip string, ready bool) *corev1.Pod {
	e.t.Helper()
	status := map[bool]corev1.ConditionStatus{true: corev1.ConditionTrue, false: corev1.ConditionFalse}[ready]
	pod = pod.DeepCopy()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: ip, HostIPs: []corev1.HostIP{{IP: ip}},
		StartTime: &metav1.Time{Time: time.Now()},
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: status}, {Type: corev1.ContainersReady, Status: status},
		},
	}
	got, err := e.client.CoreV1().Pods(e.ns).UpdateStatus(e.ctx, pod, metav1.UpdateOptions{})
	require.NoError(e.t, err)
	return got
}

// service creates a Service selecting app=web, ports name → targetPort
// "http" (named: each pod's own container port).
func (e *env) service(name string, ports ...corev1.ServicePort) *corev1.Service {
	e.t.Helper()
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}}
	}
	svc, err := e.client.CoreV1().Services(e.ns).Create(e.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: ports},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	require.True(e.t, serviceCIDR.Contains(netip.MustParseAddr(svc.Spec.ClusterIP)), "ClusterIP %s from the loopback range %s", svc.Spec.ClusterIP, serviceCIDR)
	return svc
}

// waitListening waits until the proxy listens on svc's port.
func (e *env) waitListening(svc *corev1.Service, port int32) {
	e.t.Helper()
	addr := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), uint16(port)).String()
	require.Eventually(e.t, func() bool {
		st, ok := e.status(addr)
		return ok && st.Listening
	}, waitTimeout, 20*time.Millisecond, "the proxy listens on %s: %v", addr, e.proxy.Ports())
}

func (e *env) status(addr string) (PortStatus, bool) {
	for _, st := range e.proxy.Ports() {
		if st.Address == addr {
			return st, true
		}
	}
	return PortStatus{}, false
}

// waitEndpoints waits until the controller's EndpointSlices of svc list
// exactly want as ready addresses:ports of port "web", and the proxy's
// cache too (it may lag the API server).
func (e *env) waitEndpoints(svc *corev1.Service, want ...string) {
	e.t.Helper()
	slices.Sort(want)
	var got, cached []string
	require.Eventually(e.t, func() bool {
		cached = nil
		for _, ep := range e.proxy.Endpoints(types.NamespacedName{Namespace: e.ns, Name: svc.Name}, "web") {
			cached = append(cached, ep.String())
		}
		slices.Sort(cached)
		return slices.Equal(cached, want)
	}, waitTimeout, 20*time.Millisecond, "the proxy's cache lists %v: %v", want, cached)
	require.Eventually(e.t, func() bool {
		list, err := e.client.DiscoveryV1().EndpointSlices(e.ns).List(e.ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name})
		if err != nil {
			return false
		}
		got = nil
		for _, s := range list.Items {
			if s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
				continue
			}
			for _, ep := range readyEndpoints([]*discoveryv1.EndpointSlice{&s}, "web", discoveryv1.AddressTypeIPv4) {
				got = append(got, ep.String())
			}
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	}, waitTimeout, 20*time.Millisecond, "the controller's EndpointSlices of %s list %v", svc.Name, want)
}

// hello connects to svc's ClusterIP:port through the proxy and returns the
// name the backend greets with (after an echo round trip).
func (e *env) hello(svc *corev1.Service, port int32) (string, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(e.ctx, "tcp", net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(port)))
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang fails, it never blocks the suite
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if _, err := fmt.Fprintln(c, "ping"); err != nil {
		return "", err
	}
	echo, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if echo != "ping\n" {
		return "", fmt.Errorf("echo %q", echo)
	}
	return strings.TrimSpace(name), nil
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}

// TestForwardsToReadyEndpointsInTurn: a Service of two ready pods (the
// EndpointSlice controller's slices name them, each with its own target
// port) is served on its ClusterIP; connections go to each in turn, and
// to the other alone once one is no longer ready.
func TestForwardsToReadyEndpointsInTurn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.backend("a"), e.backend("b")
	podA := e.pod("a", a, e.ip.String())
	e.pod("b", b, e.ip.String())
	svc := e.service("web")
	e.waitEndpoints(svc, fmt.Sprintf("%s:%d", e.ip, a.port), fmt.Sprintf("%s:%d", e.ip, b.port))
	e.waitListening(svc, 80)

	var got []string
	for range 4 {
		name, err := e.hello(svc, 80)
		require.NoError(t, err)
		got = append(got, name)
	}
	first, second := "a", "b"
	if b.port < a.port {
		first, second = "b", "a"
	}
	assert.Equal(t, []string{first, second, first, second}, got, "round robin over the endpoints sorted by address and port")

	e.setReady(podA, e.ip.String(), false)
	e.waitEndpoints(svc, fmt.Sprintf("%s:%d", e.ip, b.port))
	for range 3 {
		name, err := e.hello(svc, 80)
		require.NoError(t, err)
		assert.Equal(t, "b", name, "a is not ready")
	}
	st, _ := e.status(netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80).String())
	assert.Equal(t, uint64(7), st.Forwarded)
	assert.Zero(t, st.Rejected)
	assert.Equal(t, types.NamespacedName{Namespace: e.ns, Name: "web"}, st.Service)
	assert.Equal(t, "web", st.Port)
	assert.Equal(t, Counts{Forwarded: 7}, e.proxy.Served(st.Service), "the Service's counts")
}

// TestNoReadyEndpointIsRejected: a Service that selects no ready pod is
// served, and each connection is reset at once (kube-proxy REJECTs), never
// left hanging. A dial that fails resets too.
func TestNoReadyEndpointIsRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	svc := e.service("web")
	e.waitListening(svc, 80)
	_, err := e.hello(svc, 80)
	require.Error(t, err)
	assert.True(t, isReset(err), "reset, not a timeout: %v", err)
	addr := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80).String()
	st, _ := e.status(addr)
	assert.Equal(t, uint64(1), st.Rejected)

	// A ready endpoint whose server is gone: the dial is refused, the
	// client's connection reset.
	gone := e.backend("gone")
	e.pod("gone", gone, e.ip.String())
	e.waitEndpoints(svc, fmt.Sprintf("%s:%d", e.ip, gone.port))
	require.NoError(t, gone.ln.Close())
	_, err = e.hello(svc, 80)
	require.Error(t, err)
	assert.True(t, isReset(err), "reset, not a timeout: %v", err)
	st, _ = e.status(addr)
	assert.Equal(t, uint64(1), st.Failed)
	assert.Zero(t, st.Forwarded)
}

// TestListenersFollowTheService: a listener per TCP port; a port removed
// from the Service, then the Service deleted, closes its listeners (a new
// connection is refused by the kernel).
func TestListenersFollowTheService(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.backend("a")
	e.pod("a", a, e.ip.String())
	svc := e.service("web",
		corev1.ServicePort{Name: "web", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "alt", Port: 8080, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)})
	e.waitListening(svc, 80)
	e.waitListening(svc, 8080)
	require.Len(t, e.proxy.Ports(), 2, "UDP is not served: %v", e.proxy.Ports())

	svc, err := e.client.CoreV1().Services(e.ns).Get(e.ctx, svc.Name, metav1.GetOptions{})
	require.NoError(t, err)
	svc.Spec.Ports = svc.Spec.Ports[:1]
	svc, err = e.client.CoreV1().Services(e.ns).Update(e.ctx, svc, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(e.proxy.Ports()) == 1 }, waitTimeout, 20*time.Millisecond, "%v", e.proxy.Ports())
	_, err = net.Dial("tcp", net.JoinHostPort(svc.Spec.ClusterIP, "8080"))
	assert.ErrorIs(t, err, syscall.ECONNREFUSED, "the removed port's listener is closed")
	e.waitEndpoints(svc, fmt.Sprintf("%s:%d", e.ip, a.port))
	name, err := e.hello(svc, 80)
	require.NoError(t, err)
	assert.Equal(t, "a", name)

	require.NoError(t, e.client.CoreV1().Services(e.ns).Delete(e.ctx, svc.Name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return len(e.proxy.Ports()) == 0 }, waitTimeout, 20*time.Millisecond, "%v", e.proxy.Ports())
	_, err = net.Dial("tcp", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
	assert.ErrorIs(t, err, syscall.ECONNREFUSED, "the deleted Service's listener is closed")
	assert.Equal(t, Counts{Forwarded: 1}, e.proxy.Served(types.NamespacedName{Namespace: e.ns, Name: "web"}), "counted after the Service went")
}

// TestListenFailureIsReportedAndRetried: a ClusterIP:port someone else
// listens on is reported (PortStatus.Err) and retried; once it is free
// the proxy listens and the error is cleared.
func TestListenFailureIsReportedAndRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A Service of a UDP port only holds a ClusterIP that the allocator
	// gives no one else, and the proxy serves nothing of it yet.
	svc, err := e.client.CoreV1().Services(e.ns).Create(e.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	squatter, err := net.Listen("tcp", netip.AddrPortFrom(clusterIP, 80).String())
	require.NoError(t, err)
	defer squatter.Close()
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "web", Port: 80, TargetPort: intstr.FromString("http")})
	svc, err = e.client.CoreV1().Services(e.ns).Update(e.ctx, svc, metav1.UpdateOptions{})
	require.NoError(t, err)
	addr := netip.AddrPortFrom(clusterIP, 80).String()
	require.Eventually(t, func() bool {
		st, ok := e.status(addr)
		return ok && !st.Listening && errors.Is(st.Err, syscall.EADDRINUSE)
	}, waitTimeout, 20*time.Millisecond, "the failed listen is reported: %v", e.proxy.Ports())

	require.NoError(t, squatter.Close())
	e.waitListening(svc, 80)
	st, _ := e.status(addr)
	assert.NoError(t, st.Err, "cleared by the listen that succeeded")
}

// TestStopClosesEverything: Stop closes the listeners and the connections
// being forwarded (goleak, in TestMain, checks that no goroutine is left).
func TestStopClosesEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.backend("a")
	e.pod("a", a, e.ip.String())
	svc := e.service("web")
	e.waitEndpoints(svc, fmt.Sprintf("%s:%d", e.ip, a.port))
	e.waitListening(svc, 80)
	c, err := net.Dial("tcp", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "a\n", name)

	e.proxy.Stop()
	_, err = r.ReadString('\n')
	assert.True(t, isReset(err), "the forwarded connection is closed: %v", err)
	_, err = net.Dial("tcp", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.Empty(t, e.proxy.Ports())
	e.proxy.Stop() // idempotent
}

// TestStartFailsWhenTheCachesCannotSync: a context that ends before the
// caches sync fails Start and leaves nothing running.
func TestStartFailsWhenTheCachesCannotSync(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Start(ctx, Options{Client: cluster.Client(t), Namespace: "default"})
	require.ErrorContains(t, err, "did not sync")
}

// TestLoopbackPodsGetNoEndpoints pins why the backends above listen at a
// non-loopback address: the API server refuses loopback addresses in
// EndpointSlices, so the controller cannot publish a pod at 127.244.x.y
// (the pod simulator's IPs) and says so in a Warning event on the Service.
func TestLoopbackPodsGetNoEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.backend("a")
	e.pod("a", a, "127.244.250.1")
	svc := e.service("web")
	var msgs []string
	require.Eventually(t, func() bool {
		list, err := e.client.CoreV1().Events(e.ns).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Service,involvedObject.name=web"})
		if err != nil {
			return false
		}
		msgs = nil
		for _, ev := range list.Items {
			msgs = append(msgs, ev.Reason+": "+ev.Message)
			if ev.Type == corev1.EventTypeWarning && ev.Reason == "FailedToUpdateEndpointSlices" && strings.Contains(ev.Message, "may not be in the loopback range") {
				return true
			}
		}
		return false
	}, waitTimeout, 50*time.Millisecond, "the controller reports the refused loopback endpoint: %v", msgs)
	e.waitListening(svc, 80)
	_, err := e.hello(svc, 80)
	assert.True(t, isReset(err), "no endpoint: rejected: %v", err)
}
