//go:build !integration

package podproc_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kubespawn/kubespawn/internal/podproc"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

// TestMain of the unit tier: the goroutine-leak check, and the package's
// own check that no process is left running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(verifyMain{m}, testcluster.LeakOptions()...)
}

type verifyMain struct{ m *testing.M }

func (v verifyMain) Run() int { return podproc.VerifyMain(v.m.Run()) }
