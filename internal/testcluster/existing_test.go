//go:build integration

package testcluster

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubespawn/kubespawn/internal/podsim"
)

// TestExistingClusterMode: with KUBESPAWN_TEST_KUBECONFIG set, MustStart's
// choice is the cluster of that kubeconfig (here a control plane started
// beside the package's, standing for one started by hand): namespaces and
// the pod simulator work on it, a restart is refused with a typed error, and
// stopping the handle leaves that cluster running.
func TestExistingClusterMode(t *testing.T) {
	// Serial: t.Setenv (the process's environment is every test's).
	ctx := t.Context()
	byHand, err := Start(ctx, Options{})
	require.NoError(t, err)
	t.Cleanup(byHand.Stop) // after the namespace's cleanup (last in, first out)
	t.Setenv(EnvExistingKubeConfig, KubeConfig(t, byHand.Config()))

	c, err := startForTests(Options{})
	require.NoError(t, err)
	require.NotNil(t, c, "the variable is set: no local control plane")
	require.True(t, c.IsExisting())
	assert.Equal(t, byHand.URL(), c.URL())
	assert.Empty(t, c.LogTail(10))
	require.ErrorIs(t, c.RestartAPIServer(ctx), ErrExistingCluster)
	_, err = startForTests(Options{APIServerArgs: []string{"--watch-cache=false"}})
	require.ErrorContains(t, err, "its own control plane flags")

	ns := c.Namespace(t, "existing")
	sim := c.PodSim(t, podsim.Options{NodeName: "kubespawn-existing-node"})
	defer c.stopSim()
	client := c.Client(t)
	_, err = client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, err := client.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == sim.NodeName()
	}, time.Minute, 100*time.Millisecond, "the simulator runs pods on the existing cluster")

	// The pod is on the cluster of the kubeconfig, not the package's.
	_, err = kubernetes.NewForConfigOrDie(cluster.Config()).CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.Error(t, err, "namespace %s must not exist on the package's own control plane", ns)

	c.Stop()
	sa, err := c.ServiceAccountConfig(ctx, ns, "after-stop")
	require.NoError(t, err, "Stop of an existing cluster's handle stops nothing")
	_, err = kubernetes.NewForConfigOrDie(sa).Discovery().ServerVersion()
	require.NoError(t, err)
}
