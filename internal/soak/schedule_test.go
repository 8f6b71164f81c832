package soak

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestScheduleThrottlesProbes: every run, the short one of `make test`
// and the long one of `make soak`, throttles the probes for longer than
// FailureTimeout once the long stall of every watch is over (the main
// watches deliver meanwhile); a long run a second time, held.
func TestScheduleThrottlesProbes(t *testing.T) {
	for name, c := range map[string]Config{
		"make test": {Cycles: 100, Users: 12},
		"make soak": {Cycles: 1000, Users: 16},
	} {
		t.Run(name, func(t *testing.T) {
			c.FailureTimeout = 15 * time.Second
			for seed := range uint64(20) {
				s := newSchedule(seed, c.Users, c.Cycles, c.span(), c.FailureTimeout)
				var throttles []fault
				for _, f := range s.Faults {
					if f.Kind == FaultThrottleProbes {
						throttles = append(throttles, f)
					}
				}
				require.NotEmpty(t, throttles, "seed %d", seed)
				assert.False(t, throttles[0].Hold, "the first is answered 429")
				for _, f := range throttles {
					assert.Greater(t, f.For, c.FailureTimeout, "seed %d", seed)
					assert.GreaterOrEqual(t, f.At, s.Span/5+longStall, "after the long stall, seed %d", seed)
				}
				if name == "make soak" {
					require.Len(t, throttles, 2, "seed %d", seed)
					assert.True(t, throttles[1].Hold)
				}
			}
		})
	}
	// A seed replays the faults drawn before as they were.
	a := newSchedule(7, 12, 100, 30*time.Second, 15*time.Second)
	b := newSchedule(7, 12, 100, 30*time.Second, 20*time.Second)
	require.Equal(t, len(a.Faults), len(b.Faults))
	for i := range a.Faults {
		if a.Faults[i].Kind != FaultThrottleProbes {
			assert.Equal(t, a.Faults[i], b.Faults[i])
		}
	}
}
