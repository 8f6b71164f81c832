// Package signal is kubespawn's one coalescing notification mechanism: a
// level-triggered "something changed, look again" signal that never blocks
// the sender and never queues more than one pending wake-up per receiver.
//
// It is used wherever a producer that must not block (an informer event
// handler, a listwatch callback) wakes a consumer that re-reads the current
// state itself: the reflector's Notify channels, the monitor's wake-ups, the
// events index's per-pod Streams. In the spirit of client-go's workqueue
// ("stingy": an item added several times before it is processed is
// processed once) a burst of notifications costs the receiver one wake-up,
// and the receiver always reads state newer than every notification it has
// absorbed.
package signal

import "sync"

// Flag is a one-slot coalescing signal. Raise never blocks; C receives at
// most one pending signal however many Raises happened since the last
// receive. The zero value is not usable; use NewFlag.
type Flag struct{ c chan struct{} }

// NewFlag returns a Flag with nothing pending.
func NewFlag() Flag { return Flag{c: make(chan struct{}, 1)} }

// Raise makes one signal pending unless one already is.
func (f Flag) Raise() {
	select {
	case f.c <- struct{}{}:
	default:
	}
}

// C is the channel to receive the signal from.
func (f Flag) C() <-chan struct{} { return f.c }

// Mux fans coalescing signals out to subscribers by key: Notify(k) raises
// the Flag of every subscriber of k, NotifyAll every subscriber's. It is
// safe for concurrent use, and its methods never block on a subscriber.
// The zero value is ready to use.
type Mux[K comparable] struct {
	mu    sync.Mutex
	byKey map[K]map[*Flag]struct{}
	n     int
}

// Subscribe returns a channel that receives a coalesced signal on every
// Notify of key and every NotifyAll, and a cancel function (idempotent)
// that unsubscribes.
func (m *Mux[K]) Subscribe(key K) (<-chan struct{}, func()) {
	f := NewFlag()
	m.mu.Lock()
	if m.byKey == nil {
		m.byKey = map[K]map[*Flag]struct{}{}
	}
	if m.byKey[key] == nil {
		m.byKey[key] = map[*Flag]struct{}{}
	}
	m.byKey[key][&f] = struct{}{}
	m.n++
	m.mu.Unlock()
	var once sync.Once
	return f.C(), func() {
		once.Do(func() {
			m.mu.Lock()
			delete(m.byKey[key], &f)
			if len(m.byKey[key]) == 0 {
				delete(m.byKey, key)
			}
			m.n--
			m.mu.Unlock()
		})
	}
}

// Notify signals every subscriber of key.
func (m *Mux[K]) Notify(key K) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for f := range m.byKey[key] {
		f.Raise()
	}
}

// NotifyAll signals every subscriber.
func (m *Mux[K]) NotifyAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, fs := range m.byKey {
		for f := range fs {
			f.Raise()
		}
	}
}

// Subscribed reports whether key has at least one subscriber.
func (m *Mux[K]) Subscribed(key K) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byKey[key]) > 0
}

// Len is the number of subscriptions.
func (m *Mux[K]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}
