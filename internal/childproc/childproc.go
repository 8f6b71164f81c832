package childproc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Options configures Start. The zero value runs the program with this
// process's environment in its working directory.
type Options struct {
	// Env, if not nil, is the program's whole environment.
	Env []string
	// Dir is its working directory ("" for this process's).
	Dir string
	// Append, if set, appends to the log file instead of truncating it
	// (a restarted child keeps its earlier runs' output).
	Append bool
	// KillGroupOnExit, if set, kills (SIGKILL) what is left of the
	// child's process group as soon as the child itself exits, as a
	// container runtime tears down a container whose main process ended,
	// and Done is closed only once no member of the group is alive (see
	// GroupPIDs).
	KillGroupOnExit bool
	// Credential, if not nil, runs the child as that user and those
	// groups (which needs root).
	Credential *syscall.Credential
}

// Process is a running child process.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
	// kill is syscall.Kill (tests record the signals instead).
	kill func(pid int, sig syscall.Signal) error
}

// Start runs path with args, its standard output and error appended to
// the file logPath (created or truncated), in a process group of its own
// (so Stop reaches what it starts, a hub's proxy say) and with SIGKILL as
// its parent-death signal (it dies with the test binary even when that
// panics or is killed). name is for messages.
func Start(name, logPath string, opts Options, path string, args ...string) (*Process, error) {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if opts.Append {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	logFile, err := os.OpenFile(logPath, flags, 0o666)
	if err != nil {
		return nil, fmt.Errorf("childproc: %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = opts.Env, opts.Dir, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: opts.Credential}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("childproc: start %s (%s): %w", name, filepath.Base(path), err)
	}
	p := &Process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{}), kill: syscall.Kill}
	go func() {
		if opts.KillGroupOnExit {
			p.killGroupOnExit()
		}
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Pid is the process's ID (and its group's).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop ends the process: SIGCONT (in case it is frozen), SIGTERM, then,
// after grace or at once if it has exited, SIGKILL to its whole group (of
// an exited child, only while the group has members: its ID may be
// reused once it has none), and waits until it has exited. It is
// idempotent.
func (p *Process) Stop(grace time.Duration) {
	if exited, _ := p.Exited(); !exited {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
	}
	// The group may outlive its leader (children it started). Once the
	// leader is reaped its ID may be reused, as a stranger's group ID too:
	// signal the group only while it has members (Linux reuses no ID that
	// a live process group still carries).
	if exited, _ := p.Exited(); !exited || len(p.GroupPIDs()) > 0 {
		if err := p.kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			_ = p.cmd.Process.Kill()
		}
	}
	<-p.done
}

// LogPath is the file the process's output goes to.
func (p *Process) LogPath() string { return p.logPath }

// Tail returns the last n lines of the process's log, headed by its path.
func (p *Process) Tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s\n", len(lines), p.logPath, strings.Join(lines, "\n"))
}

// Count counts the occurrences of s in the process's log.
func (p *Process) Count(s string) int {
	b, _ := os.ReadFile(p.logPath)
	return strings.Count(string(b), s)
}

// FreePorts returns n distinct free loopback TCP ports (all held open until
// every one is chosen, so they differ). Another process may still take one
// before it is used: callers that start a server retry or fail loudly.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("childproc: free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort returns one free loopback TCP port (see FreePorts).
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}
