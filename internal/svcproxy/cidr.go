package svcproxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// cidrLockDir holds one lock file per reserved range: two control planes
// on one machine (two test binaries at once) with the same loopback
// Service range would allocate the same ClusterIPs, and their proxies
// would fight over the listeners. A lock is an flock, so it dies with the
// process holding it: none is ever stale.
var cidrLockDir = filepath.Join(os.TempDir(), "svcproxy-service-cidrs")

// held keeps the lock files of the ranges reserved and not released
// reachable: an unreachable *os.File is closed by its finalizer, which
// would drop the lock under a caller that ignored release.
var held struct {
	sync.Mutex
	files map[*os.File]bool
}

// ReserveLoopbackCIDR picks a /24 of 127.96.0.0/16 that no other process
// of this machine holds, for testcluster.Options.ServiceCIDR: ClusterIPs
// in 127/8 are bindable on loopback without any setup. It stays out of
// internal/podsim's pod range (127.244.0.0/16) and its node address
// (127.0.0.1). release gives the range back (the process's exit does too:
// a caller may ignore it and hold the range until then).
func ReserveLoopbackCIDR() (cidr string, release func(), err error) {
	if err := os.MkdirAll(cidrLockDir, 0o777); err != nil {
		return "", nil, fmt.Errorf("svcproxy: %w", err)
	}
	first := rand.IntN(256) // two binaries starting at once rarely try the same first
	for i := range 256 {
		n := (first + i) % 256
		f, err := lockCIDR(n)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		held.Lock()
		if held.files == nil {
			held.files = map[*os.File]bool{}
		}
		held.files[f] = true
		held.Unlock()
		var once sync.Once
		return cidrOf(n), func() {
			once.Do(func() {
				held.Lock()
				delete(held.files, f)
				held.Unlock()
				f.Close()
			})
		}, nil
	}
	return "", nil, errors.New("svcproxy: every /24 of 127.96.0.0/16 is held by another process")
}

func cidrOf(n int) string { return fmt.Sprintf("127.96.%d.0/24", n) }

// lockCIDR takes the machine-wide lock of cidrOf(n): EWOULDBLOCK if
// another holder has it.
func lockCIDR(n int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(cidrLockDir, fmt.Sprintf("127.96.%d.0-24", n)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("svcproxy: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, err
		}
		return nil, fmt.Errorf("svcproxy: locking %s: %w", cidrOf(n), err)
	}
	return f, nil
}
