package podsim

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	p := newIPPool()
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

func TestCrashBackoffGrowsAndIsCapped(t *testing.T) {
	t.Parallel()
	s := &Simulator{opts: Options{StepDelay: 50 * time.Millisecond, StartDelay: 300 * time.Millisecond}}
	assert.Equal(t, 300*time.Millisecond, s.crashBackoff(0))
	assert.Equal(t, 600*time.Millisecond, s.crashBackoff(1))
	assert.Equal(t, s.crashBackoff(5), s.crashBackoff(50))
}
