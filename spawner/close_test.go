package spawner

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestCloseReleasesEverything: Close stops a running sweeper (which
// returns nil) and unregisters the metrics, so a new Spawner registers
// with the same Registerer. Goroutines left behind fail the package's
// goleak check (TestMain).
func TestCloseReleasesEverything(t *testing.T) {
	t.Parallel()
	everyone := func(context.Context, *corev1.Pod) (SweepReason, error) { return SweepReasonOrphan, nil }
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *Options) { o.Registerer = reg })
	_, err := New(f.sp.opts)
	require.ErrorIs(t, err, ErrInvalidOptions, "two live Spawners cannot share a Registerer")

	done := make(chan error, 1)
	go func() {
		done <- f.sp.RunSweeper(context.Background(), SweeperOptions{Policy: SweepPolicy{Namespace: testNS, Select: everyone}, Interval: time.Hour, RetryPeriod: 10 * time.Millisecond})
	}()
	require.Eventually(t, func() bool {
		_, err := f.client.CoordinationV1().Leases(testNS).Get(t.Context(), "kubespawn-sweeper-default", metav1.GetOptions{})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the sweeper leads")

	f.sp.Close()
	// Close waited for the sweeper: its Lease is released already.
	lease, err := f.client.CoordinationV1().Leases(testNS).Get(t.Context(), "kubespawn-sweeper-default", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""), "Close returned before the sweeper released its Lease")
	select {
	case err := <-done:
		require.NoError(t, err, "a closed Spawner's sweeper returns nil")
	case <-time.After(10 * time.Second):
		t.Fatal("RunSweeper did not return after Close")
	}
	f.sp.Close() // idempotent
	assert.ErrorIs(t, f.sp.RunSweeper(t.Context(), SweeperOptions{Policy: SweepPolicy{Namespace: testNS, Select: everyone}}), ErrClosed)

	sp, err := New(f.sp.opts)
	require.NoError(t, err, "the closed Spawner's metrics are unregistered")
	defer sp.Close()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	assert.Contains(t, names, "kubespawn_spawner_absence_decisions_total", "the new Spawner's metrics are served")
}
