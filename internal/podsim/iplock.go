package podsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ipLockDir holds one lock file per pod IP in use by a process pod:
// simulators with the same Options.PodCIDR (the default, or
// BenchmarkPodCIDR: two test binaries running at once on one machine, say)
// allocate the same addresses, and must not give two processes listening
// on port 8888 the same one. The lock is per address, whatever the range.
// A lock is an flock on the file, so it dies with the process holding it:
// none is ever stale.
var ipLockDir = filepath.Join(os.TempDir(), "podsim-pod-ips")

// errIPBusy: another simulator holds the IP's lock.
var errIPBusy = errors.New("podsim: pod IP in use by another simulator's process pod")

// lockIP takes the machine-wide lock of ip: errIPBusy if another simulator
// (in this process or another) holds it.
func lockIP(ip string) (*os.File, error) {
	if err := os.MkdirAll(ipLockDir, 0o777); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(ipLockDir, ip), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errIPBusy
		}
		return nil, err
	}
	return f, nil
}

// allocateLocked allocates a pod IP from the pool whose machine-wide lock
// it can take, skipping those other simulators hold.
func (s *Simulator) allocateLocked() (string, *os.File, error) {
	var skipped []string
	defer func() {
		for _, ip := range skipped {
			s.ips.release(ip)
		}
	}()
	for range s.ips.size {
		ip, err := s.ips.allocate()
		if err != nil {
			return "", nil, err
		}
		f, err := lockIP(ip)
		switch {
		case err == nil:
			return ip, f, nil
		case errors.Is(err, errIPBusy):
			skipped = append(skipped, ip)
		default:
			// No lock to be had at all (an unwritable temporary
			// directory): go on without, as a single simulator may.
			return ip, nil, err
		}
	}
	return "", nil, fmt.Errorf("podsim: no pod IP free of other simulators' process pods")
}
