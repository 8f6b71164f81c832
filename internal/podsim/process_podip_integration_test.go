//go:build integration

package podsim_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/internal/podproc"
	"github.com/kubespawn/kubespawn/internal/podsim"
)

// With Options.PodIP (one stand-in for every simulated pod), a process pod
// still gets an IP of its own: its process listens there, and two users'
// servers on one port must not collide. Not parallel: a simulator of its
// own (see TestPodIPOption).
func TestProcessPodsGetTheirOwnIPUnderPodIP(t *testing.T) {
	e := setup(t)
	helper := buildHelper(t)
	const node = "podsim-podip-process-node"
	s, err := podsim.Start(context.Background(), e.client, podsim.Options{
		NodeName: node, PodIP: "127.0.0.1",
		ProcessRuntimeClass: podsim.DefaultProcessRuntimeClass, ProcessDir: t.TempDir(),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Stop()
		podproc.VerifyNone(t)
		_ = e.client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
	})
	pe := &procEnv{testEnv: e, sim: s, helper: helper}

	port := freePort(t)
	proc := pe.processPod("proc", "--ip=0.0.0.0", "--port="+strconv.Itoa(port))
	proc.Spec.NodeName = node
	proc = pe.create(proc)
	simulated := newPod("simulated")
	simulated.Spec.NodeName = node
	simulated, err = e.client.CoreV1().Pods(e.ns).Create(e.ctx, simulated, metav1.CreateOptions{})
	require.NoError(t, err)

	got := pe.waitPod(proc.Name, time.Minute, "running", running)
	assert.NotEqual(t, "127.0.0.1", got.Status.PodIP)
	assert.True(t, strings.HasPrefix(got.Status.PodIP, "127.244."), "an IP of its own: %s", got.Status.PodIP)
	sim := pe.waitPod(simulated.Name, time.Minute, "running and ready", runningAndReady)
	assert.Equal(t, "127.0.0.1", sim.Status.PodIP, "a simulated pod reports PodIP")
}
