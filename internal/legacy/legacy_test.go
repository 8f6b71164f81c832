//go:build integration

package legacy_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/legacy"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

func createPod(t *testing.T, c kubernetes.Interface, ns, name string) {
	t.Helper()
	_, err := c.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// TestReplicaFreezesOnSilentStall reproduces the 2018 failure: with no
// client-side timeout, a silent watch freezes the replica's cache.
func TestReplicaFreezesOnSilentStall(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ns := cluster.Namespace(t, "legacy")
	direct := cluster.Client(t)
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(t, err)
	defer p.Close()
	client := kubernetes.NewForConfigOrDie(legacy.JSONConfig(p.ClientConfig(cluster.Config())))

	r := legacy.New(client, legacy.Of2018(ns, ""))
	go r.Run(ctx)
	createPod(t, direct, ns, "before")
	require.Eventually(t, func() bool { _, ok := r.Get("before"); return ok }, 20*time.Second, 20*time.Millisecond)

	p.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	// Let the open watch pass its server timeout (10s) and KubeSpawner's
	// restart period (30s) while stalled: the replica never sees the close
	// and never relists.
	createPod(t, direct, ns, "during")
	time.Sleep(35 * time.Second)
	_, ok := r.Get("during")
	require.False(t, ok, "the replica's cache is frozen, as in 2018")
	require.False(t, r.GaveUp(), "and nothing says so")
	require.True(t, r.Synced())

	p.UnstallAll()
	require.Eventually(t, func() bool { _, ok := r.Get("during"); return ok }, 30*time.Second, 50*time.Millisecond, "unstalled, it catches up")
	require.Equal(t, []string{"before", "during"}, r.Names())
}
