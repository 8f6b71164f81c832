//go:build !integration

package svcproxy

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kubespawn/kubespawn/internal/testcluster"
)

// TestMain of the unit tier (make test-unit): no control plane, the same
// goroutine-leak check as the integration tier's.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testcluster.LeakOptions()...) }
