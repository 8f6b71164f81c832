package reflector

import (
	"maps"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/watch"
)

// stats are a cache's counters; Status and metrics read them.
type stats struct {
	hits          atomic.Int64 // cache/found lookups: the hot path takes no lock
	mu            sync.Mutex
	events        map[watch.EventType]int
	relists       map[RelistReason]int
	gaps          map[Gap]int
	lookups       map[[2]string]int
	probes        map[string]int // by outcome
	audits        map[string]int // by result
	canaries      map[string]int // by result
	driftRepaired int
	restarts      int
}

func newStats() *stats {
	return &stats{
		events: map[watch.EventType]int{}, relists: map[RelistReason]int{}, gaps: map[Gap]int{},
		lookups: map[[2]string]int{}, probes: map[string]int{}, audits: map[string]int{}, canaries: map[string]int{},
	}
}

func (s *stats) event(t watch.EventType) { s.mu.Lock(); s.events[t]++; s.mu.Unlock() }
func (s *stats) relist(r RelistReason)   { s.mu.Lock(); s.relists[r]++; s.mu.Unlock() }
func (s *stats) gap(g Gap)               { s.mu.Lock(); s.gaps[g]++; s.mu.Unlock() }
func (s *stats) drift(n int)             { s.mu.Lock(); s.driftRepaired += n; s.mu.Unlock() }
func (s *stats) restart()                { s.mu.Lock(); s.restarts++; s.mu.Unlock() }
func (s *stats) probe(outcome string)    { s.mu.Lock(); s.probes[outcome]++; s.mu.Unlock() }
func (s *stats) audit(result string)     { s.mu.Lock(); s.audits[result]++; s.mu.Unlock() }
func (s *stats) canary(result string)    { s.mu.Lock(); s.canaries[result]++; s.mu.Unlock() }
func (s *stats) hit()                    { s.hits.Add(1) }
func (s *stats) lookup(src Source, result string) {
	s.mu.Lock()
	s.lookups[[2]string{string(src), result}]++
	s.mu.Unlock()
}

func (s *stats) fill(st *Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Relists = maps.Clone(s.relists)
	st.Gaps = maps.Clone(s.gaps)
	st.DriftRepaired = s.driftRepaired
	st.Restarts = s.restarts
}

// counters is a copy of the counters for the metrics collector.
type counters struct {
	events                   map[watch.EventType]int
	relists                  map[RelistReason]int
	gaps                     map[Gap]int
	lookups                  map[[2]string]int
	probes, audits, canaries map[string]int
	drift, restarts          int
}

func (s *stats) snapshot() counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	lookups := maps.Clone(s.lookups)
	if n := s.hits.Load(); n > 0 {
		lookups[[2]string{string(SourceCache), "found"}] += int(n)
	}
	return counters{
		events: maps.Clone(s.events), relists: maps.Clone(s.relists), gaps: maps.Clone(s.gaps),
		lookups: lookups, probes: maps.Clone(s.probes), audits: maps.Clone(s.audits),
		canaries: maps.Clone(s.canaries), drift: s.driftRepaired, restarts: s.restarts,
	}
}
