package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
)

// TestBadFlagsAreUsageErrors: the library's validation is the only copy of
// its rules (StallTimeout at least 4s, FailureTimeout at least
// StallTimeout); the demo spawner reports its error as a usage error, exit
// status 2, with the library's message.
func TestBadFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--instance=demo", "--stall-timeout=500ms"}, "StallTimeout must be at least 4s"},
		{[]string{"--instance=demo", "--stall-timeout=-1s"}, "StallTimeout must not be negative"},
		{[]string{"--instance=demo", "--failure-timeout=5s"}, "FailureTimeout 5s is below StallTimeout 10s"},
	} {
		_, err := parseFlags(c.args, io.Discard)
		require.ErrorIs(t, err, reflector.ErrInvalidOptions, "%v", c.args)
		var stderr bytes.Buffer
		assert.Equal(t, 2, service.ExitCode(err, &stderr), "%v", c.args)
		assert.Contains(t, stderr.String(), c.msg, "%v", c.args)
		assert.Contains(t, stderr.String(), "--stall-timeout", "%v: names the flags", c.args)
	}
	for _, args := range [][]string{{"--no-such-flag"}, {"extra"}, {"--instance=demo", "--namespace="}} {
		_, err := parseFlags(args, io.Discard)
		assert.Equal(t, 2, service.ExitCode(err, io.Discard), "%v", args)
	}
	o, err := parseFlags([]string{"--instance=demo"}, io.Discard)
	require.NoError(t, err)
	assert.Zero(t, o.stallTimeout, "0: the library's default")
	assert.Equal(t, 0, service.ExitCode(flag.ErrHelp, io.Discard))
	assert.Equal(t, 1, service.ExitCode(errors.New("reflector failed"), io.Discard))
}
