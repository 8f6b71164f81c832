package podsim

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"
)

func TestImageID(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"busybox":                            "docker.io/library/busybox@sha256:",
		"busybox:1.36":                       "docker.io/library/busybox@sha256:",
		"jupyter/base-notebook:latest":       "docker.io/jupyter/base-notebook@sha256:",
		"quay.io/jupyter/base-notebook:2025": "quay.io/jupyter/base-notebook@sha256:",
		"localhost:5000/img:tag":             "localhost:5000/img@sha256:",
	}
	for image, prefix := range cases {
		id := imageID(image)
		assert.True(t, strings.HasPrefix(id, prefix), "%s -> %s", image, id)
		assert.Len(t, id, len(prefix)+64, id)
		assert.Equal(t, id, imageID(image), "not stable")
	}
	digest := "quay.io/x/y@sha256:" + strings.Repeat("a", 64)
	assert.Equal(t, digest, imageID(digest))
}

func TestIPPoolUniqueAndReused(t *testing.T) {
	t.Parallel()
	p := newIPPool(netip.MustParsePrefix(DefaultPodCIDR))
	seen := map[string]bool{}
	for range 600 {
		ip, err := p.allocate()
		require.NoError(t, err)
		require.False(t, seen[ip], "duplicate %s", ip)
		require.True(t, strings.HasPrefix(ip, "127.244."), ip)
		require.False(t, strings.HasSuffix(ip, ".0") || strings.HasSuffix(ip, ".255"), ip)
		seen[ip] = true
	}
	p.reserve("127.244.9.9")
	p.release("127.244.0.1")
	// Wrap around the whole range: the released address comes back, the
	// reserved one and those in use never do.
	got := map[string]bool{}
	for {
		ip, err := p.allocate()
		if err != nil {
			break
		}
		require.False(t, seen[ip] && ip != "127.244.0.1", "in-use %s handed out again", ip)
		require.NotEqual(t, "127.244.9.9", ip)
		require.False(t, got[ip], "duplicate %s", ip)
		got[ip] = true
	}
	assert.True(t, got["127.244.0.1"], "released address never reused")
}

// A small range that is not loopback: every address but the first and the
// last, none twice, then around again.
func TestIPPoolSmallRoutableRange(t *testing.T) {
	t.Parallel()
	prefix := netip.MustParsePrefix("198.18.255.240/28")
	p := newIPPool(prefix)
	var got []string
	for {
		ip, err := p.allocate()
		if err != nil {
			require.ErrorContains(t, err, "198.18.255.240/28 exhausted")
			break
		}
		require.True(t, prefix.Contains(netip.MustParseAddr(ip)), ip)
		require.NotContains(t, got, ip)
		got = append(got, ip)
	}
	assert.Len(t, got, 14)
	assert.NotContains(t, got, "198.18.255.240")
	assert.NotContains(t, got, "198.18.255.255")
	p.release("198.18.255.245")
	ip, err := p.allocate()
	require.NoError(t, err)
	assert.Equal(t, "198.18.255.245", ip)
}

// Two simulators with the same non-loopback range never hand out the same
// process pod IP: the machine-wide lock is per address, whatever the range.
// (Simulators of two test binaries use two processes; flock conflicts
// between two opens of a file in one process just the same.)
func TestAllocateLockedTwoSimulatorsOneRange(t *testing.T) {
	t.Parallel()
	prefix := netip.MustParsePrefix("198.18.254.0/28") // only this test's
	a := &Simulator{ips: newIPPool(prefix)}
	b := &Simulator{ips: newIPPool(prefix)}
	owner := map[string]string{}
	var locks []*os.File
	t.Cleanup(func() {
		for _, f := range locks {
			f.Close()
		}
	})
	for i := range 2 * 14 {
		s, name := a, "a"
		if i%2 == 1 {
			s, name = b, "b"
		}
		ip, lock, err := s.allocateLocked()
		if err != nil {
			// Exhausted: every address is held, by one of the two.
			require.Empty(t, ip, "%v", err)
			continue
		}
		require.NotNil(t, lock, ip)
		locks = append(locks, lock)
		require.NotContains(t, owner, ip, "%s handed out by %s, already %s's", ip, name, owner[ip])
		owner[ip] = name
	}
	assert.LessOrEqual(t, len(owner), 14)
	// Once a's process pods are gone (their locks released), b gets
	// their addresses.
	var freed string
	for i, f := range locks {
		ip := f.Name()[strings.LastIndex(f.Name(), "/")+1:]
		if owner[ip] == "a" {
			f.Close()
			locks[i] = nil
			a.ips.release(ip)
			freed = ip
			break
		}
	}
	require.NotEmpty(t, freed)
	ip, lock, err := b.allocateLocked()
	require.NoError(t, err)
	locks = append(locks, lock)
	assert.Equal(t, freed, ip)
}

func TestParsePodCIDR(t *testing.T) {
	t.Parallel()
	p, err := parsePodCIDR("")
	require.NoError(t, err)
	assert.Equal(t, DefaultPodCIDR, p.String())
	for _, ok := range []string{BenchmarkPodCIDR, "198.18.7.16/28", "127.244.0.0/16", "10.128.0.0/14"} {
		p, err := parsePodCIDR(ok)
		require.NoError(t, err, ok)
		assert.Equal(t, ok, p.String())
	}
	for bad, msg := range map[string]string{
		"198.18.0.0":        "no '/'",
		"fd00::/64":         "not an IPv4 range",
		"::ffff:c612:0/112": "not an IPv4 range",
		"198.18.0.0/29":     "longer than /28",
		"198.18.0.1/16":     "not a network address (198.18.0.0/16?)",
		"127.0.0.0/8":       "contains the node's address 127.0.0.1",
		"127.0.0.0/28":      "contains the node's address 127.0.0.1",
		"224.0.0.0/4":       "not a loopback or unicast range",
		"169.254.0.0/16":    "not a loopback or unicast range",
		"0.0.0.0/8":         "not a loopback or unicast range",
	} {
		_, err := parsePodCIDR(bad)
		assert.ErrorIs(t, err, ErrInvalidOptions, bad)
		assert.ErrorContains(t, err, msg, bad)
	}
	// Start refuses it before touching the API server or the network.
	_, err = Start(t.Context(), fake.NewClientset(), Options{PodCIDR: "fd00::/64"})
	assert.ErrorIs(t, err, ErrInvalidOptions)
}

// ensureLocal leaves a bindable range alone, and a range it cannot make
// local is an error that says what to run as root.
func TestEnsureLocal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	require.NoError(t, ensureLocal(ctx, netip.MustParsePrefix(DefaultPodCIDR), "/nonexistent/ip"), "loopback: no route needed, none tried")

	// TEST-NET-3: routed off the machine (if at all), never local.
	notLocal := netip.MustParsePrefix("203.0.113.0/28")
	require.Error(t, bindable(notLocal), "203.0.113.0/28 is local on this machine: the test needs a range that is not")
	err := ensureLocal(ctx, notLocal, "/bin/false") // as ip without CAP_NET_ADMIN
	require.ErrorIs(t, err, ErrPodCIDRNotLocal)
	assert.ErrorContains(t, err, "run as root (CAP_NET_ADMIN): ip route replace local 203.0.113.0/28 dev lo")
	err = ensureLocal(ctx, notLocal, "/nonexistent/ip")
	require.ErrorIs(t, err, ErrPodCIDRNotLocal)
	assert.ErrorContains(t, err, "/nonexistent/ip route replace local 203.0.113.0/28 dev lo")
	err = ensureLocal(ctx, notLocal, "/bin/true") // a route that changes nothing
	require.ErrorIs(t, err, ErrPodCIDRNotLocal)
	assert.ErrorContains(t, err, "still cannot be bound")
	assert.ErrorContains(t, err, "run as root: ip route replace local 203.0.113.0/28 dev lo")
	assert.False(t, errors.Is(err, ErrInvalidOptions))
}

func TestCrashBackoffGrowsAndIsCapped(t *testing.T) {
	t.Parallel()
	s := &Simulator{opts: Options{StepDelay: 50 * time.Millisecond, StartDelay: 300 * time.Millisecond}}
	assert.Equal(t, 300*time.Millisecond, s.crashBackoff(0))
	assert.Equal(t, 600*time.Millisecond, s.crashBackoff(1))
	assert.Equal(t, s.crashBackoff(5), s.crashBackoff(50))
}
