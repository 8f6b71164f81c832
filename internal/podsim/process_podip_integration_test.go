//go:build integration

package podsim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// With Options.PodIP (one stand-in for every simulated pod), a process pod
// still gets an IP of its own: its process listens there, and two users'
// servers on one port must not collide. Not parallel: a simulator of its
// own (see TestPodIPOption).
func TestProcessPodsGetTheirOwnIPUnderPodIP(t *testing.T) {
	const node = "podsim-podip-process-node"
	e := setup(t)
	helper := buildHelper(t)
	verifyNoProcessLeft(t)
	opts := processOptions(t, node)
	opts.PodIP = "127.0.0.1"
	pe := &procEnv{testEnv: e, sim: startSim(t, e, opts), helper: helper}

	proc := pe.serverPod("proc", freePort(t))
	proc.Spec.NodeName = node
	proc = pe.create(proc)
	simulated := newPod("simulated")
	simulated.Spec.NodeName = node
	simulated = e.create(simulated)

	got := pe.waitPod(proc.Name, time.Minute, "running", running)
	assert.NotEqual(t, "127.0.0.1", got.Status.PodIP)
	assert.True(t, strings.HasPrefix(got.Status.PodIP, "127.244."), "an IP of its own: %s", got.Status.PodIP)
	sim := pe.waitPod(simulated.Name, time.Minute, "running and ready", runningAndReady)
	assert.Equal(t, "127.0.0.1", sim.Status.PodIP, "a simulated pod reports PodIP")
}
