package podproc

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kubespawn/kubespawn/internal/childproc"
)

// Process is one run of a container's process. Its process group is the
// container: when the process exits, what is left of its group is killed.
type Process struct {
	spec    *Spec
	cp      *childproc.Process
	started time.Time
	done    chan struct{}
	exit    Exit
}

// Exit is how a process ended.
type Exit struct {
	// Code is the exit code, or 128+signal for a process killed by a
	// signal, as a container runtime reports it (143 for SIGTERM, 137 for
	// SIGKILL).
	Code int32
	// Signal is the signal that killed the process, or 0.
	Signal syscall.Signal
	// At is when the exit was seen.
	At time.Time
}

// Start creates spec's directories (owned by spec.Credential's user, if
// set), writes a header line to the log and starts the process in a process
// group of its own, its output appended to spec.LogPath. A failure to start
// is a *ContainerError of kind ErrStart.
func Start(spec *Spec) (*Process, error) {
	if len(spec.Argv) == 0 {
		return nil, &ContainerError{Reason: ReasonStartError, kind: ErrStart, Message: "empty command line"}
	}
	for _, d := range spec.MakeDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("podproc: %s: %w", spec.Name, err)
		}
		if c := spec.Credential; c != nil {
			if err := os.Chown(d, int(c.Uid), int(c.Gid)); err != nil {
				return nil, fmt.Errorf("podproc: %s: %w", spec.Name, err)
			}
		}
	}
	now := time.Now()
	if fi, err := os.Stat(spec.Dir); err != nil || !fi.IsDir() {
		// With SysProcAttr set, os.StartProcess does not say which of the
		// executable and the working directory is missing: check here.
		why := "not a directory"
		if err != nil {
			why = errors.Unwrap(err).Error()
		}
		msg := fmt.Sprintf("failed to start container process: chdir to cwd (%q) set in config.json failed: %s", spec.Dir, why)
		_ = appendLog(spec.LogPath, "=== podproc: "+msg+" ===\n")
		return nil, &ContainerError{Reason: ReasonStartError, kind: ErrStart, Message: msg}
	}
	if err := appendLog(spec.LogPath, fmt.Sprintf("=== podproc %s: starting %s: %q ===\n", now.Format(time.RFC3339Nano), spec.Name, spec.Argv)); err != nil {
		return nil, fmt.Errorf("podproc: %s: %w", spec.Name, err)
	}
	cp, err := childproc.Start(spec.Name, spec.LogPath, childproc.Options{
		Env:             spec.Env,
		Dir:             spec.Dir,
		Append:          true,
		KillGroupOnExit: true,
		Credential:      spec.Credential,
	}, spec.Argv[0], spec.Argv[1:]...)
	if err != nil {
		msg := err.Error()
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			msg = fmt.Sprintf("exec: %q: %v", spec.Argv[0], pe.Err)
		}
		_ = appendLog(spec.LogPath, "=== podproc: "+msg+" ===\n")
		return nil, &ContainerError{Reason: ReasonStartError, kind: ErrStart, Message: "failed to start container process: " + msg}
	}
	p := &Process{spec: spec, cp: cp, started: now, done: make(chan struct{})}
	registry.add(p)
	go p.wait()
	return p, nil
}

func appendLog(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// wait records the exit once the process has exited and its group is gone.
func (p *Process) wait() {
	<-p.cp.Done()
	e := Exit{At: time.Now(), Code: -1}
	if st := p.cp.State(); st != nil {
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.Signal = ws.Signal()
			e.Code = 128 + int32(e.Signal)
		} else {
			e.Code = int32(st.ExitCode())
		}
	}
	how := fmt.Sprintf("exit code %d", e.Code)
	if e.Signal != 0 {
		how += " (" + e.Signal.String() + ")"
	}
	_ = appendLog(p.spec.LogPath, fmt.Sprintf("=== podproc %s: %s ended: %s ===\n", e.At.Format(time.RFC3339Nano), p.spec.Name, how))
	p.exit = e
	close(p.done)
}

// Done is closed once the process has exited and no member of its process
// group is left.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit returns how the process ended, and false while it runs.
func (p *Process) Exit() (Exit, bool) {
	select {
	case <-p.done:
		return p.exit, true
	default:
		return Exit{}, false
	}
}

// Started is when the process was started.
func (p *Process) Started() time.Time { return p.started }

// Pid is the process's ID (and its group's).
func (p *Process) Pid() int { return p.cp.Pid() }

// Spec is the spec the process was started with.
func (p *Process) Spec() *Spec { return p.spec }

// LogPath is the file the process's output goes to.
func (p *Process) LogPath() string { return p.spec.LogPath }

// Terminate sends SIGTERM to the process (not its group: a container
// runtime signals the container's main process, which passes it on).
func (p *Process) Terminate() {
	if _, exited := p.Exit(); !exited {
		_ = p.cp.Signal(syscall.SIGTERM)
	}
}

// Kill sends SIGKILL to the process's whole group.
func (p *Process) Kill() { p.cp.KillGroup() }

// Stop terminates the process: SIGTERM, then after grace (or at once if it
// has exited) SIGKILL to its group; it returns once the process and its
// group are gone. It is idempotent.
func (p *Process) Stop(grace time.Duration) {
	if _, exited := p.Exit(); !exited {
		p.Terminate()
		t := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
		p.Kill()
	}
	<-p.done
}

// registry holds every process Start started whose group may still be
// alive, for Find.
var registry = &procRegistry{procs: map[*Process]struct{}{}}

type procRegistry struct {
	mu    sync.Mutex
	procs map[*Process]struct{}
}

func (r *procRegistry) add(p *Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.procs[p] = struct{}{}
}

// Running returns the processes started by Start that are still alive: the
// process itself, or a member of its process group. A process confirmed
// gone is dropped for good: its ID, and so its group's, may be reused.
func Running() []*Process {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	var out []*Process
	for p := range registry.procs {
		if _, exited := p.Exit(); exited && len(p.cp.GroupPIDs()) == 0 {
			delete(registry.procs, p)
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Process) int { return a.started.Compare(b.started) })
	return out
}

// Find returns an error naming every process started by Start that is still
// alive (see Running), with the tail of its log, or nil if there is none.
// Like goleak's Find, it is meant for the end of a test or test binary,
// once every simulator is stopped.
func Find() error {
	procs := Running()
	if len(procs) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "podproc: %d container process(es) still running:", len(procs))
	for _, p := range procs {
		state := "running"
		if _, exited := p.Exit(); exited {
			state = "exited, its process group still has members"
		}
		fmt.Fprintf(&b, "\n  pid %d group %v (%s, started %s, %s): %q\n%s", p.Pid(), p.cp.GroupPIDs(), p.spec.Name,
			p.started.Format(time.RFC3339), state, p.spec.Argv, childproc.TailFile(p.spec.LogPath, 10))
	}
	return errors.New(b.String())
}

// TestingT is the part of testing.TB that VerifyNone uses.
type TestingT interface {
	Helper()
	Errorf(format string, args ...any)
}

// VerifyNone fails t if Find reports a process still running.
func VerifyNone(t TestingT) {
	t.Helper()
	if err := Find(); err != nil {
		t.Errorf("%v", err)
	}
}

// VerifyMain is for a TestMain: given the exit code of m.Run (or of a
// cluster's Run), it prints Find's report and returns 1 if a process is
// still running, else the code unchanged:
//
//	os.Exit(podproc.VerifyMain(cluster.Run(m)))
func VerifyMain(code int) int {
	if err := Find(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			return 1
		}
	}
	return code
}
