package reflector

import (
	"maps"
	"sync"

	"k8s.io/apimachinery/pkg/watch"
)

// stats are a Reflector's counters; Status and metrics read them.
type stats struct {
	mu            sync.Mutex
	events        map[string]int
	relists       map[string]int
	gaps          map[string]int
	lookups       map[[2]string]int
	driftRepaired int
	restarts      int
	probes        int
	audits        int
}

func newStats() *stats {
	return &stats{events: map[string]int{}, relists: map[string]int{}, gaps: map[string]int{}, lookups: map[[2]string]int{}}
}

func (s *stats) event(t watch.EventType) { s.mu.Lock(); s.events[string(t)]++; s.mu.Unlock() }
func (s *stats) relist(reason string)    { s.mu.Lock(); s.relists[reason]++; s.mu.Unlock() }
func (s *stats) gap(kind string)         { s.mu.Lock(); s.gaps[kind]++; s.mu.Unlock() }
func (s *stats) drift(n int)             { s.mu.Lock(); s.driftRepaired += n; s.mu.Unlock() }
func (s *stats) restart()                { s.mu.Lock(); s.restarts++; s.mu.Unlock() }
func (s *stats) probe()                  { s.mu.Lock(); s.probes++; s.mu.Unlock() }
func (s *stats) audit()                  { s.mu.Lock(); s.audits++; s.mu.Unlock() }
func (s *stats) lookup(src Source, result string) {
	s.mu.Lock()
	s.lookups[[2]string{string(src), result}]++
	s.mu.Unlock()
}

func (s *stats) fill(st *Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Relists = maps.Clone(s.relists)
	st.GapsDetected = maps.Clone(s.gaps)
	st.DriftRepaired = s.driftRepaired
	st.Restarts = s.restarts
}

// snapshot copies the counters for the metrics collector.
func (s *stats) snapshot() (events, relists, gaps map[string]int, lookups map[[2]string]int, drift, restarts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.events), maps.Clone(s.relists), maps.Clone(s.gaps), maps.Clone(s.lookups), s.driftRepaired, s.restarts
}
