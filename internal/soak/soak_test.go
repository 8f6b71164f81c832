//go:build integration

package soak_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/soak"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	if soak.IsInstance() { // re-executed as a service instance
		os.Exit(soak.RunInstance())
	}
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// TestSoak is the short soak of `make test`: 100 cycles of each run on a
// seeded schedule (SOAK_SEED replays one), kubespawn against the 2018
// replica. kubespawn leaks nothing (pods, Services, Secrets), deletes
// nothing wrongly and keeps one claim per user; the replica leaks pods,
// which proves the soak has teeth.
func TestSoak(t *testing.T) {
	cluster.PodSim(t, podsim.Options{})
	seed := uint64(20180707)
	if s, err := strconv.ParseUint(os.Getenv("SOAK_SEED"), 10, 64); err == nil {
		seed = s
	}
	cycles := 100
	if n, err := strconv.Atoi(os.Getenv("SOAK_CYCLES")); err == nil && n > 0 {
		cycles = n
	}
	logDir := os.Getenv("SOAK_LOG_DIR") // to keep the instances' logs
	if logDir == "" {
		logDir = t.TempDir()
	}
	rep, err := soak.Run(t.Context(), soak.Config{Cluster: cluster, Seed: seed, Cycles: cycles, Progress: testWriter{t}, LogDir: logDir})
	require.NoError(t, err)
	rep.Print(testWriter{t})

	k := rep.Kubespawn
	assert.Equal(t, cycles, k.Cycles)
	assert.Empty(t, k.Leaks, "kubespawn leaked pods")
	assert.Empty(t, k.WrongDeletions, "kubespawn deleted pods of users believed running")
	// A claim per user and a Service and a Secret per pod, on a control
	// plane with no garbage collector: nothing left, nothing lost.
	assert.Empty(t, k.ObjectLeaks, "kubespawn left Services or Secrets of no pod believed running")
	assert.Positive(t, k.Claims, "users got claims")
	assert.Empty(t, k.ClaimsLost, "a claim deleted without DeleteClaims")
	assert.Empty(t, k.ClaimsDuplicated, "two claims for one user")
	assert.Zero(t, k.AbsenceWithoutAPI, "an absence decided without the API server")
	assert.Positive(t, k.AbsenceFromAPI, "absence decisions are counted")
	assert.Positive(t, k.Starts["running"])
	detected := 0
	for _, s := range k.Stalls {
		if s.Detected {
			detected++
		}
	}
	assert.Positive(t, detected, "silent stalls are found")
	// Probes throttled for longer than FailureTimeout while the main
	// watches deliver: no cache failed for it.
	require.Positive(t, rep.Faults[soak.FaultThrottleProbes], "the schedule throttles the probes")
	assert.Zero(t, k.ProbesOnlyFailures(), "a cache failed with failing probes its only problem: %+v", k.CacheFailures)
	longest := time.Duration(0)
	for _, d := range k.ProbeThrottles {
		longest = max(longest, d)
	}
	assert.Greater(t, longest, rep.FailureTimeout, "the probes were throttled for longer than FailureTimeout: %v", k.ProbeThrottles)
	assert.NotEmpty(t, rep.Legacy.Leaks, "the 2018 replica leaks on the same schedule: the soak has teeth")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
