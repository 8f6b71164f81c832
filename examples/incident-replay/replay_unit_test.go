package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScheduleIsSeeded(t *testing.T) {
	c := DefaultConfig()
	c.StallAt = 20 * time.Second
	a, b := makeSchedule(c), makeSchedule(c)
	require.Equal(t, a, b, "same seed, same schedule")
	c.Seed++
	assert.NotEqual(t, a, makeSchedule(c))

	var slow, stops int
	for i, u := range a {
		assert.GreaterOrEqual(t, u.LaunchAt, time.Duration(0))
		assert.Less(t, u.LaunchAt, c.Duration)
		if i > 0 {
			assert.GreaterOrEqual(t, u.LaunchAt, a[i-1].LaunchAt, "a steady stream, in order")
		}
		if u.Slow {
			slow++
		}
		if u.StopAfter > 0 {
			stops++
			assert.LessOrEqual(t, u.LaunchAt+u.StartDelay+u.StopAfter, c.Duration)
		}
	}
	assert.Positive(t, slow, "some pods race the start timeout")
	assert.Positive(t, stops, "some users stop their servers")
}

func TestJSONNeverDetectedIsNull(t *testing.T) {
	d := 2500 * time.Millisecond
	data, err := jsonReport(&Report{Kubespawn: RunResult{StallDetectedAfter: &d}})
	require.NoError(t, err)
	assert.Contains(t, string(data), `"baseline":{"launches":0,"started":0,"failed":0,"leaked":0,"stallDetectedAfterSeconds":null,`)
	assert.Contains(t, string(data), `"stallDetectedAfterSeconds":2.5,`)
}

// TestMissingBinaries: without the control plane binaries the demo says
// how to build them and exits 1.
func TestMissingBinaries(t *testing.T) {
	t.Setenv("KUBESPAWN_BIN_DIR", t.TempDir())
	var stdout, stderr bytes.Buffer
	code := run([]string{"-svg", ""}, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "make tools", stderr.String())
}

func TestBadFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 2, run([]string{"-stall-at", "2m"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), "inside the launch window")
}
