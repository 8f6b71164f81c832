package childproc

import (
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStopEndsTheWholeGroup: a child that ignores SIGTERM and starts a
// grandchild is killed after the grace, grandchild included; its output
// is in the log.
func TestStopEndsTheWholeGroup(t *testing.T) {
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := Start("shell", log, Options{Env: []string{"GREETING=hello"}, Dir: t.TempDir()}, "/bin/sh", "-c",
		`trap '' TERM; echo "$GREETING from $(pwd)"; sleep 1000 & echo "grandchild $!"; wait`)
	require.NoError(t, err)
	var grandchild int
	require.Eventually(t, func() bool {
		for _, l := range strings.Split(p.Tail(10), "\n") {
			if s, ok := strings.CutPrefix(l, "grandchild "); ok {
				grandchild, _ = strconv.Atoi(s)
			}
		}
		return grandchild > 0
	}, 10*time.Second, 10*time.Millisecond)
	exited, _ := p.Exited()
	assert.False(t, exited)
	assert.Equal(t, 1, p.Count("hello from "), p.Tail(10))
	require.True(t, Alive(grandchild))

	p.Stop(200 * time.Millisecond)
	exited, err = p.Exited()
	assert.True(t, exited)
	assert.Error(t, err, "killed")
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	require.Eventually(t, func() bool { return !Alive(grandchild) }, 10*time.Second, 10*time.Millisecond, "the grandchild outlived Stop")
	p.Stop(time.Second) // idempotent
}

// TestStopOfAnExitedProcess returns at once with its exit status kept.
func TestStopOfAnExitedProcess(t *testing.T) {
	p, err := Start("true", filepath.Join(t.TempDir(), "log"), Options{}, "/bin/true")
	require.NoError(t, err)
	<-p.Done()
	p.Stop(time.Hour)
	exited, err := p.Exited()
	assert.True(t, exited)
	assert.NoError(t, err)
}

// A leader that has exited and been reaped with nothing left in its group:
// Stop sends no signal to the group ID, which may be a stranger's by now.
// One whose group still has a member (a grandchild it left running): Stop
// kills that member.
func TestStopSignalsAGroupOnlyWhileItHasMembers(t *testing.T) {
	p, err := Start("true", filepath.Join(t.TempDir(), "log"), Options{}, "/bin/true")
	require.NoError(t, err)
	<-p.Done()
	var signalled []int
	p.kill = func(pid int, sig syscall.Signal) error {
		signalled = append(signalled, pid)
		return syscall.Kill(pid, sig)
	}
	p.Stop(time.Second)
	assert.Empty(t, signalled, "the exited leader's empty group was signalled")

	p, err = Start("shell", filepath.Join(t.TempDir(), "log"), Options{}, "/bin/sh", "-c", `sleep 1000 & echo "grandchild $!"`)
	require.NoError(t, err)
	<-p.Done()
	var grandchild int
	for _, l := range strings.Split(p.Tail(10), "\n") {
		if s, ok := strings.CutPrefix(l, "grandchild "); ok {
			grandchild, _ = strconv.Atoi(s)
		}
	}
	require.True(t, grandchild > 0 && Alive(grandchild), p.Tail(10))
	p.Stop(time.Second)
	require.Eventually(t, func() bool { return !Alive(grandchild) }, 10*time.Second, 10*time.Millisecond, "the grandchild outlived Stop")
}

func TestStartErrors(t *testing.T) {
	_, err := Start("missing", filepath.Join(t.TempDir(), "log"), Options{}, "/no/such/binary")
	assert.ErrorContains(t, err, "start missing")
	_, err = Start("no log", "/no/such/dir/log", Options{}, "/bin/true")
	assert.Error(t, err)
}

func TestFreePortsAreDistinct(t *testing.T) {
	ports, err := FreePorts(20)
	require.NoError(t, err)
	seen := map[int]bool{}
	for _, p := range ports {
		assert.False(t, seen[p], "port %d twice", p)
		seen[p] = true
		assert.Positive(t, p)
	}
	_, err = FreePort()
	require.NoError(t, err)
}
