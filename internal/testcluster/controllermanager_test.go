//go:build integration

package testcluster

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/kubespawn/kubespawn/internal/childproc"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// gcTimeout bounds how long a test waits for the garbage collector or the
// namespace controller to act; they act within a second or two, the rest is
// room for a loaded 2-core machine.
const gcTimeout = 60 * time.Second

// TestControllerManager starts a control plane of its own with
// Options.ControllerManager (the package's cluster runs without one) and
// proves, against it, each claim the other packages' tests rely on: owned
// objects are collected once their owner is deleted, a deleted namespace
// goes away with its content, both still after an apiserver restart, and
// Stop leaves no process running.
func TestControllerManager(t *testing.T) {
	t.Parallel() // a control plane of its own: the package's is not touched
	start := time.Now()
	c, err := Start(t.Context(), Options{ControllerManager: true})
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	t.Logf("control plane with kube-controller-manager ready in %s", time.Since(start).Round(time.Millisecond))
	client := c.Client(t)

	// The claims that need no restart run side by side, each in a namespace
	// of its own; the group returns once all of them are done.
	t.Run("Controllers", func(t *testing.T) {
		t.Run("ControllersActAsTheirServiceAccounts", func(t *testing.T) {
			t.Parallel()
			// --use-service-account-credentials: each controller got a
			// ServiceAccount (and a token of it) in kube-system, whose
			// bootstrap RBAC role is all it may do.
			for _, sa := range []string{"generic-garbage-collector", "namespace-controller"} {
				_, err := client.CoreV1().ServiceAccounts(metav1.NamespaceSystem).Get(t.Context(), sa, metav1.GetOptions{})
				require.NoError(t, err, "ServiceAccount kube-system/%s", sa)
			}
		})

		t.Run("ConfigMapOwnedByPodIsCollected", func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			ns := c.Namespace(t, "gc-cm")
			pod := createPod(t, client, ns, "owner")
			owned := createConfigMap(t, client, ns, "owned", ownedBy(pod))
			// A dependent of a pod that never existed is garbage at once: when
			// it is gone, the collector has demonstrably processed this
			// namespace's objects, and the live pod's dependent must still be
			// there.
			createConfigMap(t, client, ns, "dangling", &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "ghost", UID: types.UID("00000000-0000-0000-0000-000000000000")})
			unowned := createConfigMap(t, client, ns, "unowned", nil)
			waitNotFound(t, "ConfigMap dangling", func(ctx context.Context) error {
				_, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "dangling", metav1.GetOptions{})
				return err
			})
			_, err := client.CoreV1().ConfigMaps(ns).Get(ctx, owned.Name, metav1.GetOptions{})
			require.NoError(t, err, "the owner lives: its dependent must stay")

			deletePod(t, client, pod)
			waitNotFound(t, "ConfigMap owned by the deleted pod", func(ctx context.Context) error {
				_, err := client.CoreV1().ConfigMaps(ns).Get(ctx, owned.Name, metav1.GetOptions{})
				return err
			})
			_, err = client.CoreV1().ConfigMaps(ns).Get(ctx, unowned.Name, metav1.GetOptions{})
			require.NoError(t, err, "a ConfigMap without owner is not garbage")
		})

		t.Run("ServiceOwnedByPodIsCollected", func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			ns := c.Namespace(t, "gc-svc")
			pod := createPod(t, client, ns, "owner")
			svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "owned", OwnerReferences: []metav1.OwnerReference{*ownedBy(pod)}},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8888}}},
			}, metav1.CreateOptions{})
			require.NoError(t, err)

			deletePod(t, client, pod)
			waitNotFound(t, "Service owned by the deleted pod", func(ctx context.Context) error {
				_, err := client.CoreV1().Services(ns).Get(ctx, svc.Name, metav1.GetOptions{})
				return err
			})
		})

		t.Run("DeletedNamespaceGoesAway", func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ns-delete-"}}, metav1.CreateOptions{})
			require.NoError(t, err)
			cm := createConfigMap(t, client, ns.Name, "content", nil)
			pod := createPod(t, client, ns.Name, "content")

			require.NoError(t, client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &ns.UID}}))
			waitNotFound(t, "Namespace "+ns.Name, func(ctx context.Context) error {
				_, err := client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
				return err
			})
			_, err = client.CoreV1().ConfigMaps(ns.Name).Get(ctx, cm.Name, metav1.GetOptions{})
			require.True(t, apierrors.IsNotFound(err), "the namespace's ConfigMap: want NotFound, got %v", err)
			_, err = client.CoreV1().Pods(ns.Name).Get(ctx, pod.Name, metav1.GetOptions{})
			require.True(t, apierrors.IsNotFound(err), "the namespace's pod: want NotFound, got %v", err)
		})

		t.Run("NamespaceHelperNamespaceGoesAway", func(t *testing.T) {
			t.Parallel()
			var ns string
			t.Run("user", func(t *testing.T) {
				ns = c.Namespace(t, "helper")
				createConfigMap(t, client, ns, "content", nil)
				createPod(t, client, ns, "content")
			}) // its cleanup deleted the namespace
			waitNotFound(t, "Namespace "+ns, func(ctx context.Context) error {
				_, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
				return err
			})
		})
	})

	t.Run("CollectsAfterAPIServerRestart", func(t *testing.T) {
		ctx := t.Context()
		ns := c.Namespace(t, "gc-restart")
		require.NoError(t, c.RestartAPIServer(ctx))
		pod := createPod(t, client, ns, "owner")
		owned := createConfigMap(t, client, ns, "owned", ownedBy(pod))
		deletePod(t, client, pod)
		waitNotFound(t, "ConfigMap owned by the deleted pod", func(ctx context.Context) error {
			_, err := client.CoreV1().ConfigMaps(ns).Get(ctx, owned.Name, metav1.GetOptions{})
			return err
		})
	})

	t.Run("StopLeavesNoProcess", func(t *testing.T) {
		c.mu.Lock()
		procs := map[string]*childproc.Process{"etcd": c.etcd, "kube-apiserver": c.apiserver, "kube-controller-manager": c.controllerManager}
		c.mu.Unlock()
		pids := map[string]int{}
		for name, p := range procs {
			require.NotNil(t, p, name)
			pids[name] = p.Pid()
		}
		for name, pid := range pids {
			require.NoError(t, syscall.Kill(pid, 0), "%s (pid %d) runs before Stop", name, pid)
		}
		c.Stop()
		for name, pid := range pids {
			// Stop waited for each child, so its pid is reaped: signal 0
			// finds no process.
			err := syscall.Kill(pid, 0)
			require.True(t, errors.Is(err, syscall.ESRCH), "%s (pid %d) after Stop: want ESRCH, got %v", name, pid, err)
		}
		_, err := os.Stat(c.Dir())
		require.True(t, os.IsNotExist(err), "working directory after Stop: %v", err)
	})
}

// TestControllerManagerIgnoredOnExistingCluster: an existing cluster runs a
// controller-manager of its own, so the option neither fails nor starts
// anything there.
func TestControllerManagerIgnoredOnExistingCluster(t *testing.T) {
	// Serial: t.Setenv (the process's environment is every test's).
	t.Setenv(EnvExistingKubeConfig, KubeConfig(t, cluster.Config()))
	c, err := startForTests(Options{ControllerManager: true})
	require.NoError(t, err)
	require.True(t, c.IsExisting())
	require.Nil(t, c.controllerManager)
	c.Stop()

	_, err = startForTests(Options{ControllerManager: true, ControllerManagerArgs: []string{"--concurrent-gc-syncs=1"}})
	require.ErrorContains(t, err, "--concurrent-gc-syncs=1", "flags for a controller-manager of its own cannot be honoured")
}

func ownedBy(pod *corev1.Pod) *metav1.OwnerReference {
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}
}

func createPod(t *testing.T, client kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	pod, err := client.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/none"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return pod
}

func createConfigMap(t *testing.T, client kubernetes.Interface, ns, name string, owner *metav1.OwnerReference) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if owner != nil {
		cm.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	cm, err := client.CoreV1().ConfigMaps(ns).Create(t.Context(), cm, metav1.CreateOptions{})
	require.NoError(t, err)
	return cm
}

func deletePod(t *testing.T, client kubernetes.Interface, pod *corev1.Pod) {
	t.Helper()
	require.NoError(t, client.CoreV1().Pods(pod.Namespace).Delete(t.Context(), pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	}))
}

// waitNotFound polls get until it answers NotFound, failing the test on any
// other error or after gcTimeout.
func waitNotFound(t *testing.T, what string, get func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), gcTimeout)
	defer cancel()
	var last error
	for {
		reqCtx, reqCancel := context.WithTimeout(ctx, 10*time.Second)
		last = get(reqCtx)
		reqCancel()
		if apierrors.IsNotFound(last) {
			return
		}
		if last != nil && ctx.Err() == nil {
			t.Fatalf("%s: want NotFound, got %v", what, last)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s still there after %s (last answer: %v)", what, gcTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
