package main

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
)

// TestBadFlagsAreUsageErrors: the library's validation is the only copy of
// its rules (StallTimeout at least 4s, FailureTimeout at least
// StallTimeout); the sidecar reports its error as a usage error, exit
// status 2, with the library's message.
func TestBadFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	o := servicetest.CheckReflectorFlags(t, parseFlags)
	assert.Zero(t, o.cache.StallTimeout, "0: the library's default")
}
