//go:build integration

package podsim_test

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/internal/podsim"
)

// TestProcessPodsInARoutablePodCIDR: with Options.PodCIDR
// BenchmarkPodCIDR (not loopback: addresses the API server accepts in
// EndpointSlices) Start makes the range local (a route on lo, left in
// place, if it is not there yet), process pods get IPs from it and their
// processes listen and answer there. Two simulators with the same range
// never give two pods the same IP (the machine-wide lock is per IP,
// whatever the range): six processes on one port, one per address. Not
// parallel: simulators of its own (see TestPodIPOption), whose pods are
// bound to their nodes.
func TestProcessPodsInARoutablePodCIDR(t *testing.T) {
	e := setup(t)
	helper := buildHelper(t)
	prefix := netip.MustParsePrefix(podsim.BenchmarkPodCIDR)
	port := freePort(t)
	type podAt struct{ node, name string }
	var pods []podAt
	pes := map[string]*procEnv{}
	// Both simulators are stopped before the check: it sees every
	// simulator's processes.
	verifyNoProcessLeft(t)
	for _, node := range []string{"podsim-cidr-node-a", "podsim-cidr-node-b"} {
		opts := processOptions(t, node)
		opts.PodCIDR = podsim.BenchmarkPodCIDR
		s := startSim(t, e, opts, "Start makes %s local (run as root)", prefix)
		assert.Equal(t, prefix, s.PodCIDR())
		pe := &procEnv{testEnv: e, sim: s, helper: helper}
		pes[node] = pe
		for i := range 3 {
			p := pe.serverPod(fmt.Sprintf("%s-%d", node, i), port)
			p.Spec.NodeName = node
			pods = append(pods, podAt{node, pe.create(p).Name})
		}
	}

	owner := map[string]string{}
	for _, p := range pods {
		got := pes[p.node].waitPod(p.name, time.Minute, "running", running)
		ip := got.Status.PodIP
		addr, err := netip.ParseAddr(ip)
		require.NoError(t, err, p.name)
		assert.True(t, prefix.Contains(addr), "%s: %s is in %s", p.name, ip, prefix)
		assert.Equal(t, "127.0.0.1", got.Status.HostIP, "the node's address is loopback still")
		require.NotContains(t, owner, ip, "%s has %s's IP", p.name, owner[ip])
		owner[ip] = p.name

		// Its process answers at its IP, and only there.
		hostPort := net.JoinHostPort(ip, strconv.Itoa(port))
		info := waitInfo(t, hostPort, "%s answers at %s", p.name, hostPort)
		assert.Equal(t, hostPort, info.Addr, p.name)
		assert.Contains(t, info.Args, "--ip="+ip, p.name)
	}
}
