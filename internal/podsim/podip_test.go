//go:build integration

package podsim_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/internal/podsim"
)

// TestPodIPOption: with Options.PodIP every pod of the node reports that
// loopback IP (where one stand-in server can answer for all of them); an
// address that is not loopback is refused. Not parallel: the parallel
// tests wait until it is over, so its second simulator competes with the
// shared one for no pod (its own pod is bound to its node up front).
func TestPodIPOption(t *testing.T) {
	e := setup(t)
	for _, bad := range []string{"10.0.0.1", "not-an-ip", "0.0.0.0"} {
		_, err := podsim.Start(e.ctx, e.client, podsim.Options{PodIP: bad})
		assert.ErrorContains(t, err, "loopback", bad)
	}
	const node = "podsim-loopback-node"
	s, err := podsim.Start(e.ctx, e.client, podsim.Options{NodeName: node, PodIP: "127.0.0.1"})
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	var pods []string
	for _, name := range []string{"loopback-a", "loopback-b"} {
		p := newPod(name)
		p.Spec.NodeName = node
		pods = append(pods, e.create(p).Name)
	}
	for _, name := range pods {
		var got *v1.Pod
		require.Eventually(t, func() bool {
			p, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, name, metav1.GetOptions{})
			require.NoError(t, err)
			got = p
			return p.Status.Phase == v1.PodRunning
		}, time.Minute, 20*time.Millisecond)
		assert.Equal(t, "127.0.0.1", got.Status.PodIP, name)
		assert.Equal(t, []v1.PodIP{{IP: "127.0.0.1"}}, got.Status.PodIPs, name)
	}
}
