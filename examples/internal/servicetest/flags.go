package servicetest

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
)

// ParseFunc is a program's parseFlags: its flags parsed into its options,
// usage and errors written to stderr.
type ParseFunc[O any] func(args []string, stderr io.Writer) (O, error)

// MustParse is parseFlags(args) that must succeed: the options of a test
// that checks what the flags set.
func MustParse[O any](t testing.TB, parseFlags ParseFunc[O], args ...string) O {
	t.Helper()
	o, err := parseFlags(args, io.Discard)
	require.NoError(t, err, "%v", args)
	return o
}

// AssertUsageError checks that err is what a program reports as bad
// flags: service.ExitCode gives exit status 2 and writes a message that
// contains each of msgs. what names the case in failures.
func AssertUsageError(t testing.TB, err error, what string, msgs ...string) {
	t.Helper()
	var stderr bytes.Buffer
	assert.Equal(t, 2, service.ExitCode(err, &stderr), "%s: %v", what, err)
	for _, msg := range msgs {
		assert.Contains(t, stderr.String(), msg, what)
	}
}

// CheckReflectorFlags checks what every program that runs reflectors
// shares: the library's validation is the only copy of the rules of
// --stall-timeout and --failure-timeout (StallTimeout at least 4s,
// FailureTimeout at least StallTimeout), and the program reports its
// error as a usage error, exit status 2, with the library's message
// naming the flags; an unknown flag, a stray argument and an empty
// --namespace are usage errors too; -h is exit status 0, any other error
// 1. required are the flags the program cannot run without. It returns
// the options of required alone (the defaults), for the caller to check.
func CheckReflectorFlags[O any](t testing.TB, parseFlags ParseFunc[O], required ...string) O {
	t.Helper()
	with := func(args ...string) []string { return append(append([]string{}, required...), args...) }
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{with("--stall-timeout=500ms"), "StallTimeout must be at least 4s"},
		{with("--stall-timeout=-1s"), "StallTimeout must not be negative"},
		{with("--failure-timeout=5s"), "FailureTimeout 5s is below StallTimeout 10s"},
	} {
		_, err := parseFlags(c.args, io.Discard)
		require.ErrorIs(t, err, reflector.ErrInvalidOptions, "%v", c.args)
		AssertUsageError(t, err, fmt.Sprint(c.args), c.msg, "--stall-timeout")
	}
	for _, args := range [][]string{{"--no-such-flag"}, {"extra"}, with("--namespace=")} {
		_, err := parseFlags(args, io.Discard)
		AssertUsageError(t, err, fmt.Sprint(args))
	}
	assert.Equal(t, 0, service.ExitCode(flag.ErrHelp, io.Discard))
	assert.Equal(t, 1, service.ExitCode(errors.New("reflector failed"), io.Discard))
	return MustParse(t, parseFlags, required...)
}

// AssertReflectorFailure checks run's error when a reflector cannot
// recover (no RBAC permission at all) for --failure-timeout: an error
// (which main turns into exit status 1) that says the reflector failed,
// why (forbidden), and that the container is to be restarted.
func AssertReflectorFailure(t testing.TB, err error) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorContains(t, err, "failed")
	assert.ErrorContains(t, err, "forbidden")
	assert.ErrorContains(t, err, "restarted")
}
