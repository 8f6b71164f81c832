package spawner

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// nameLocks serialises operations per pod (namespace/name) and lets Stop
// cancel a Start in progress.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	sem  chan struct{} // capacity 1: held while an operation runs
	refs int           // holders and waiters; the entry is removed at 0
	// cancelStart cancels the Start holding the lock, if any; startUID is
	// the UID of the pod it created or adopted, once known.
	cancelStart context.CancelCauseFunc
	startUID    types.UID
	// stopGen counts Stop requests, so that a Start that was already waiting
	// (or acquiring) when a Stop came is cancelled as soon as it holds the
	// lock: a Stop cancels every Start of the name that began before it.
	stopGen int
}

// lock acquires the per-name lock, or returns ctx's cause. The returned
// function releases it. startCancel, for a Start, is registered so that
// Stop can cancel it (see stopGen).
func (l *nameLocks) lock(ctx context.Context, key string, startCancel context.CancelCauseFunc) (func(), error) {
	l.mu.Lock()
	nl := l.m[key]
	if nl == nil {
		nl = &nameLock{sem: make(chan struct{}, 1)}
		l.m[key] = nl
	}
	nl.refs++
	gen := nl.stopGen
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		nl.refs--
		if nl.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
	select {
	case nl.sem <- struct{}{}:
	case <-ctx.Done():
		release()
		return nil, context.Cause(ctx)
	}
	if startCancel != nil {
		l.mu.Lock()
		nl.cancelStart = startCancel
		stopped := nl.stopGen != gen
		l.mu.Unlock()
		if stopped {
			startCancel(ErrStopRequested)
		}
	}
	return func() {
		l.mu.Lock()
		nl.cancelStart, nl.startUID = nil, ""
		l.mu.Unlock()
		<-nl.sem
		release()
	}, nil
}

// cancelStart cancels the Start running for key and those waiting for it.
// It reports whether there was one running.
func (l *nameLocks) cancelStart(key string, cause error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	nl := l.m[key]
	if nl == nil {
		return false
	}
	nl.stopGen++
	if nl.cancelStart != nil {
		nl.cancelStart(cause)
		return true
	}
	return false
}

// cancelStartOf cancels the Start holding key's lock if it created or
// adopted the pod uid. busy reports whether any operation holds or waits
// for the lock.
func (l *nameLocks) cancelStartOf(key string, uid types.UID, cause error) (cancelled, busy bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	nl := l.m[key]
	if nl == nil {
		return false, false
	}
	if nl.cancelStart != nil && nl.startUID == uid {
		nl.cancelStart(cause)
		return true, true
	}
	return false, true
}

// setStartUID records the UID of the pod the Start holding key's lock
// created or adopted.
func (l *nameLocks) setStartUID(key string, uid types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if nl := l.m[key]; nl != nil && nl.cancelStart != nil {
		nl.startUID = uid
	}
}

// tryLock acquires key's lock only if no operation holds or waits for it;
// it never waits. The returned function releases it.
func (l *nameLocks) tryLock(key string) (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m[key] != nil {
		return nil, false
	}
	nl := &nameLock{sem: make(chan struct{}, 1), refs: 1}
	nl.sem <- struct{}{}
	l.m[key] = nl
	return func() {
		<-nl.sem
		l.mu.Lock()
		nl.refs--
		if nl.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}, true
}

// busy reports whether an operation holds or waits for key's lock.
func (l *nameLocks) busy(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[key] != nil
}

func lockKey(namespace, name string) string { return namespace + "/" + name }
