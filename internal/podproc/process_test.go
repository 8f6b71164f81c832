package podproc_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/internal/podproc"

	"github.com/kubespawn/kubespawn/internal/childproc"
)

// shellSpec runs script with /bin/sh in a directory of t.
func shellSpec(t *testing.T, name, script string) *podproc.Spec {
	t.Helper()
	dir := t.TempDir()
	return &podproc.Spec{
		Name:     "ns/" + name + "/c",
		Argv:     []string{"/bin/sh", "-c", script},
		Env:      []string{"PATH=" + podproc.DefaultPath, "HOME=" + filepath.Join(dir, "home")},
		Dir:      filepath.Join(dir, "work"),
		MakeDirs: []string{filepath.Join(dir, "home"), filepath.Join(dir, "work")},
		LogPath:  filepath.Join(dir, "c.log"),
	}
}

func logOf(t *testing.T, p *podproc.Process) string {
	t.Helper()
	b, err := os.ReadFile(p.LogPath())
	require.NoError(t, err)
	return string(b)
}

// waitLog waits until the process's log has the line s (not just in the
// header line, which quotes the script).
func waitLog(t *testing.T, p *podproc.Process, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(logOf(t, p), "\n"+s+"\n") }, 30*time.Second, 5*time.Millisecond, "log never had the line %q", s)
}

func TestExitCodeAndLog(t *testing.T) {
	spec := shellSpec(t, "exit3", `echo "out in $(pwd) home $HOME"; echo err >&2; exit 3`)
	p, err := podproc.Start(spec)
	require.NoError(t, err)
	_, exited := p.Exit()
	<-p.Done()
	ex, exited := p.Exit()
	require.True(t, exited)
	assert.Equal(t, int32(3), ex.Code)
	assert.Zero(t, ex.Signal)
	assert.False(t, ex.At.Before(p.Started()))
	log := logOf(t, p)
	assert.Contains(t, log, "starting ns/exit3/c")
	assert.Contains(t, log, "out in "+spec.Dir+" home "+spec.Env[1][len("HOME="):])
	assert.Contains(t, log, "err\n")
	assert.Contains(t, log, "ns/exit3/c ended: exit code 3")

	// A second run appends to the same log.
	p2, err := podproc.Start(spec)
	require.NoError(t, err)
	<-p2.Done()
	assert.Equal(t, 2, strings.Count(logOf(t, p2), "starting ns/exit3/c"))
}

func TestTheGroupDiesWithTheProcess(t *testing.T) {
	p, err := podproc.Start(shellSpec(t, "orphan", `sleep 1000 & echo "child $!"; exit 0`))
	require.NoError(t, err)
	<-p.Done()
	var child int
	for _, l := range strings.Split(logOf(t, p), "\n") {
		if s, ok := strings.CutPrefix(l, "child "); ok {
			child, _ = strconv.Atoi(s)
		}
	}
	require.Positive(t, child, logOf(t, p))
	assert.False(t, childproc.Alive(child), "the container's other process outlived it")
	ex, _ := p.Exit()
	assert.Equal(t, int32(0), ex.Code)
}

func TestStopTerminatesThenKills(t *testing.T) {
	// Handles SIGTERM: exits 0.
	p, err := podproc.Start(shellSpec(t, "polite", `trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.01; done`))
	require.NoError(t, err)
	waitLog(t, p, "ready")
	p.Stop(time.Minute)
	ex, exited := p.Exit()
	require.True(t, exited)
	assert.Equal(t, int32(0), ex.Code)
	assert.Contains(t, logOf(t, p), "got TERM")

	// Ignores SIGTERM: killed after the grace, with its children.
	p, err = podproc.Start(shellSpec(t, "stubborn", `trap '' TERM; sleep 1000 & echo "child $!"; echo ready; while :; do sleep 0.01; done`))
	require.NoError(t, err)
	waitLog(t, p, "ready")
	p.Stop(50 * time.Millisecond)
	ex, _ = p.Exit()
	assert.Equal(t, int32(137), ex.Code)
	assert.Equal(t, syscall.SIGKILL, ex.Signal)
	assert.Contains(t, logOf(t, p), "exit code 137 (killed)")
	p.Stop(time.Minute) // idempotent

	// Killed by the default action of SIGTERM.
	p, err = podproc.Start(shellSpec(t, "plain", `exec sleep 1000`))
	require.NoError(t, err)
	p.Terminate()
	<-p.Done()
	ex, _ = p.Exit()
	assert.Equal(t, int32(143), ex.Code)
}

func TestStartErrors(t *testing.T) {
	spec := shellSpec(t, "nodir", "true")
	spec.MakeDirs = nil
	spec.Dir = "/podproc/no/such/dir"
	_, err := podproc.Start(spec)
	assert.ErrorIs(t, err, podproc.ErrStart)
	assert.ErrorContains(t, err, `chdir to cwd ("/podproc/no/such/dir") set in config.json failed: no such file or directory`)

	spec = shellSpec(t, "noexe", "true")
	spec.Argv = []string{"/podproc/no/such/exe"}
	_, err = podproc.Start(spec)
	assert.ErrorIs(t, err, podproc.ErrStart)
	assert.ErrorContains(t, err, `exec: "/podproc/no/such/exe": no such file or directory`)
	b, _ := os.ReadFile(spec.LogPath)
	assert.Contains(t, string(b), "no such file or directory", "the failure is in the log")
}

// recorder is a TestingT that records what it is told.
type recorder struct {
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, format+" "+strings.TrimSpace(strings.Join(strings.Fields(sprint(args)), " ")))
}

func sprint(args []any) string {
	var b strings.Builder
	for _, a := range args {
		if e, ok := a.(error); ok {
			b.WriteString(e.Error())
		}
	}
	return b.String()
}

// TestFindReportsALeftoverProcess: the leftover check itself, on a process
// leaked on purpose, then stopped. Not parallel: Find sees every process of
// the package's tests.
func TestFindReportsALeftoverProcess(t *testing.T) {
	require.NoError(t, podproc.Find(), "processes left by an earlier test")
	p, err := podproc.Start(shellSpec(t, "leaked", `echo leaked-process-says-hi; exec sleep 1000`))
	require.NoError(t, err)
	waitLog(t, p, "leaked-process-says-hi")

	err = podproc.Find()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 container process(es) still running")
	assert.Contains(t, err.Error(), "pid "+strconv.Itoa(p.Pid()))
	assert.Contains(t, err.Error(), "ns/leaked/c")
	assert.Contains(t, err.Error(), "leaked-process-says-hi", "the log's tail")
	r := &recorder{}
	podproc.VerifyNone(r)
	assert.Len(t, r.errors, 1)
	assert.Equal(t, []*podproc.Process{p}, podproc.Running())
	assert.Equal(t, 1, podproc.VerifyMain(0), "VerifyMain fails a passing run")

	p.Stop(time.Second)
	assert.NoError(t, podproc.Find())
	assert.Empty(t, podproc.Running())
	podproc.VerifyNone(t)
	assert.Equal(t, 0, podproc.VerifyMain(0))
}
