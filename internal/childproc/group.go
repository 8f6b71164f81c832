package childproc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// groupDrainTimeout bounds how long the wait for a killed group's members
// to die may take: SIGKILL cannot be caught, so only a process stuck in the
// kernel (uninterruptible sleep) outlives it.
const groupDrainTimeout = 10 * time.Second

// State is the child's exit status once it has exited, else nil.
func (p *Process) State() *os.ProcessState {
	select {
	case <-p.done:
		return p.cmd.ProcessState
	default:
		return nil
	}
}

// GroupPIDs returns the IDs of the live (not zombie) members of the child's
// process group, the child itself included until it has been reaped. A
// process that left the group (setsid, a daemon's double fork) is not seen.
//
// Process IDs are reused (pid_max may be as low as 32768): once the child
// has been reaped, a process whose ID is the group's ID is a stranger's new
// group, and means that the child's group is empty.
func (p *Process) GroupPIDs() []int {
	pgid := p.cmd.Process.Pid
	reaped := p.State() != nil
	members := ProcessGroups()[pgid]
	var out []int
	for _, pid := range members {
		if pid == pgid && reaped {
			return nil
		}
		out = append(out, pid)
	}
	return out
}

// KillGroup sends SIGKILL to the child's whole process group, unless the
// child has exited (its group ID may then belong to a stranger).
func (p *Process) KillGroup() {
	if exited, _ := p.Exited(); exited {
		return
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		_ = p.cmd.Process.Kill()
	}
}

// killGroupOnExit waits for the child to exit without reaping it (so its ID,
// the group's, cannot be reused meanwhile), kills the rest of its group and
// waits until no member is alive.
func (p *Process) killGroupOnExit() {
	pid := p.cmd.Process.Pid
	if err := waitExitedNoReap(pid); err != nil {
		return // cmd.Wait reports it
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	deadline := time.Now().Add(groupDrainTimeout)
	for time.Now().Before(deadline) {
		alive := false
		for _, m := range ProcessGroups()[pid] {
			if m != pid { // the child is a zombie until cmd.Wait
				alive = true
			}
		}
		if !alive {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitExitedNoReap blocks until process pid has exited, leaving it a zombie
// (waitid with WNOWAIT).
func waitExitedNoReap(pid int) error {
	const (
		pPID    = 1
		wEXITED = 4
		wNOWAIT = 0x1000000
	)
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info[0])), wEXITED|wNOWAIT, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return errno
		}
	}
}

// ProcessGroups reads /proc and returns the live (not zombie) processes of
// this PID namespace by process group ID.
func ProcessGroups() map[int][]int {
	groups := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return groups
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		pgrp, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		groups[pgrp] = append(groups[pgrp], pid)
	}
	return groups
}

// TailFile returns the last n lines of the file at path, headed by its path,
// like Process.Tail.
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("--- %s: %v ---\n", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s\n", len(lines), path, strings.Join(lines, "\n"))
}
