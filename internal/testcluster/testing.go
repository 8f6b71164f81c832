package testcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/podsim"
)

// MustStart is for a test package's TestMain: it starts one control plane
// for the whole package and returns it. If the control plane cannot start,
// it prints why (with the processes' logs) and exits 1: a missing control
// plane fails loudly, it never skips tests.
//
//	var cluster *testcluster.Cluster
//
//	func TestMain(m *testing.M) {
//		cluster = testcluster.MustStart(testcluster.Options{})
//		os.Exit(cluster.Run(m))
//	}
func MustStart(opts Options) *Cluster {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := startForTests(opts)
	if err == nil && c == nil {
		c, err = Start(ctx, opts)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: testcluster: the control plane did not start: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "testcluster: control plane ready at %s in %s\n", c.URL(), time.Since(start).Round(time.Millisecond))
	return c
}

// Run runs the package's tests, stops the pod simulator and the control
// plane, and returns the exit code. When the tests pass it also checks,
// with goleak, that no goroutine the tests started is left running (the
// library's contract: after a factory's Shutdown, a Spawner's last call
// and a service's shutdown, nothing of kubespawn keeps running). When
// tests fail, the control plane's log tails are printed.
//
// m is a *testing.M, or anything that runs the tests: a package that starts
// a second Cluster (Start) wraps m.Run to stop it first, before the leak
// check.
func (c *Cluster) Run(m interface{ Run() int }) int {
	code := m.Run()
	c.stopSim()
	if code != 0 {
		fmt.Fprint(os.Stderr, c.LogTail(30))
	}
	c.Stop()
	if code == 0 {
		if err := goleak.Find(LeakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: goroutines left running after the tests: %v\n", err)
			return 1
		}
	}
	return code
}

// LeakOptions are the goroutines that goleak may ignore: process-wide
// daemons of the libraries kubespawn uses, never kubespawn's own.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/apimachinery/pkg/watch.(*Broadcaster).loop"), // client-go record's shared broadcasters
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),                    // idle keep-alive connections of http.DefaultTransport users
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2ClientConn).readLoop"),
	}
}

// Client returns a direct admin client without client-side rate limit.
func (c *Cluster) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	client, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatalf("testcluster: client: %v", err)
	}
	return client
}

// NamespaceOption tunes Namespace.
type NamespaceOption func(*nsOptions)

type nsOptions struct {
	noPodsLeft *string
	keepEvents bool
}

// NoPodsLeft makes the namespace's cleanup fail the test if any pod
// matching selector ("" for every pod) is left: the check the spawner's
// contract calls for.
func NoPodsLeft(selector string) NamespaceOption {
	return func(o *nsOptions) { o.noPodsLeft = &selector }
}

// KeepEvents leaves the namespace's events in place at cleanup (a flood's
// would take long to delete; they go with the cluster).
func KeepEvents() NamespaceOption { return func(o *nsOptions) { o.keepEvents = true } }

// Namespace creates a namespace for one test, named after prefix, and
// registers its cleanup.
//
// Every test package uses this one policy. Call it first in a test: cleanups run last-in
// first-out, so the cleanup runs after everything the test starts later
// has stopped. The cleanup checks NoPodsLeft if asked, then deletes the
// namespace's pods (finalizers first, grace period 0) and events and the
// namespace, and returns without waiting for the namespace to go. Without a
// namespace controller (a local control plane without
// Options.ControllerManager) the namespace then stays Terminating with
// whatever else is in it, and the pods would stay too if the cleanup did not
// delete them. With one (Options.ControllerManager, or an existing cluster)
// the namespace goes away with its content a few seconds later; the pods are
// still deleted first, with grace period 0, because the namespace controller
// deletes them with their own grace period, which a pod bound to a node
// that no kubelet runs would never finish.
func (c *Cluster) Namespace(t testing.TB, prefix string, opts ...NamespaceOption) string {
	t.Helper()
	var o nsOptions
	for _, opt := range opts {
		opt(&o)
	}
	client := c.Client(t)
	// Always a generated name: without a namespace controller a deleted
	// namespace stays Terminating, and even with one it is gone only
	// seconds later, so a fixed name could not be reused by the next run
	// (go test -count).
	meta := metav1.ObjectMeta{GenerateName: prefix + "-"}
	ns, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: meta}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("testcluster: create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if o.noPodsLeft != nil {
			left, err := client.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: *o.noPodsLeft})
			switch {
			case err != nil:
				t.Errorf("testcluster: list the pods left in %s: %v", ns.Name, err)
			case len(left.Items) > 0:
				var names []string
				for _, p := range left.Items {
					names = append(names, p.Name)
				}
				t.Errorf("pods left behind in %s (selector %q): %v", ns.Name, *o.noPodsLeft, names)
			}
		}
		// Finalizers a test put on pods would keep them forever.
		if pods, err := client.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{}); err == nil {
			for _, p := range pods.Items {
				if len(p.Finalizers) > 0 {
					p.Finalizers = nil
					_, _ = client.CoreV1().Pods(ns.Name).Update(ctx, &p, metav1.UpdateOptions{})
				}
			}
		}
		_ = client.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
		if !o.keepEvents {
			_ = client.CoreV1().Events(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		}
		_ = client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// PodSim returns the package's pod simulator, started on first use with
// opts (later calls' opts are ignored: one simulator per cluster, as two
// would compete for the same pods). It is stopped by Run.
func (c *Cluster) PodSim(t testing.TB, opts podsim.Options) *podsim.Simulator {
	t.Helper()
	c.simOnce.Do(func() {
		client, err := kubernetes.NewForConfig(c.Config())
		if err != nil {
			c.simErr = err
			return
		}
		if c.existing != nil && opts.NodeName == "" {
			// An existing cluster may run another simulator (make
			// localcluster's) or another test run's: a Node of our own.
			opts.NodeName = fmt.Sprintf("kubespawn-test-%d", os.Getpid())
		}
		c.sim, c.simErr = podsim.Start(context.Background(), client, opts)
	})
	if c.simErr != nil {
		t.Fatalf("testcluster: starting the pod simulator: %v", c.simErr)
	}
	return c.sim
}

func (c *Cluster) stopSim() {
	if c.sim != nil {
		c.sim.Stop()
	}
}

// simState is the shared simulator of a Cluster.
type simState struct {
	simOnce sync.Once
	sim     *podsim.Simulator
	simErr  error
}

// KubeConfig writes a kubeconfig file for cfg into a temporary directory
// of t and returns its path.
func KubeConfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := WriteKubeConfig(path, cfg); err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	return path
}

// WriteKubeConfig writes a kubeconfig file for cfg (host, CA, bearer
// token) to path.
func WriteKubeConfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubespawn"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["kubespawn"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["kubespawn"] = &clientcmdapi.Context{Cluster: "kubespawn", AuthInfo: "kubespawn"}
	kc.CurrentContext = "kubespawn"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}
