package reflector

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// collector exports one cache's metrics, computed at scrape time from its
// counters and Status. Every series has the constant label
// reflector=<name>, so several caches share a Registerer.
type collector struct {
	status func() Status
	stats  *stats
	clock  clock.PassiveClock

	events, relists, gaps, lookups, probes, audits, canaries, drift, restarts *prometheus.Desc
	sinceEvent, lag, objects, state, problem, stuck                           *prometheus.Desc
}

func newCollector[T object](c *cache[T]) *collector {
	l := prometheus.Labels{"reflector": c.name}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("kubespawn_reflector_"+name, help, labels, l)
	}
	return &collector{
		status:     c.status,
		stats:      c.stats,
		clock:      c.opts.Clock,
		events:     d("events_total", "Watch events received by the main watch, by type (bookmarks included).", "type"),
		relists:    d("relists_total", "Full lists (or WatchList relists), by reason.", "reason"),
		gaps:       d("gaps_detected_total", "Detected gaps between the cache and the server, by kind.", "kind"),
		lookups:    d("lookups_total", "Get lookups by source (cache, api) and result (found, not_found, error).", "source", "result"),
		probes:     d("probes_total", "Probe watches by outcome (ok, stale, hung, expired, failed).", "outcome"),
		audits:     d("audits_total", "Audits by result (clean, drift, error).", "result"),
		canaries:   d("canaries_total", "Writes reported with ExpectWrite, by result (met: the cache reached them; probed: a probe was run).", "result"),
		drift:      d("drift_repaired_total", "Objects the audit found different from the server and repaired."),
		restarts:   d("restarts_total", "Watch restarts forced by the reflector (stall, idle, drift)."),
		sinceEvent: d("seconds_since_last_event", "Seconds since the main watch delivered an event or bookmark."),
		lag:        d("lag_seconds", "Seconds since a probe or audit last confirmed the cache held every change in scope."),
		objects:    d("objects", "Objects in the cache."),
		state:      d("state", "1 for the reflector's current state, 0 for the others.", "state"),
		problem:    d("problem", "1 for each problem active now, 0 for the others.", "problem"),
		stuck:      d("stuck_handlers", "Event handlers stuck in one call longer than the threshold."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.events, c.relists, c.gaps, c.lookups, c.probes, c.audits, c.canaries, c.drift, c.restarts, c.sinceEvent, c.lag, c.objects, c.state, c.problem, c.stuck} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	n := c.stats.snapshot()
	counter := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, k := range slices.Sorted(maps.Keys(n.events)) {
		counter(c.events, n.events[k], string(k))
	}
	for _, k := range slices.Sorted(maps.Keys(n.relists)) {
		counter(c.relists, n.relists[k], string(k))
	}
	for _, g := range gaps {
		counter(c.gaps, n.gaps[g], string(g))
	}
	for k, v := range n.lookups {
		counter(c.lookups, v, k[0], k[1])
	}
	for _, k := range slices.Sorted(maps.Keys(n.probes)) {
		counter(c.probes, n.probes[k], k)
	}
	for _, k := range slices.Sorted(maps.Keys(n.audits)) {
		counter(c.audits, n.audits[k], k)
	}
	for _, k := range slices.Sorted(maps.Keys(n.canaries)) {
		counter(c.canaries, n.canaries[k], k)
	}
	counter(c.drift, n.drift)
	counter(c.restarts, n.restarts)
	since := 0.0
	if !st.LastEventTime.IsZero() {
		since = c.clock.Since(st.LastEventTime).Seconds()
	}
	gauge(c.sinceEvent, since)
	gauge(c.lag, st.LagSeconds)
	gauge(c.objects, float64(st.Objects))
	for _, s := range []State{StateStarting, StateSynced, StateDegraded, StateFailed, StateStopped} {
		gauge(c.state, boolValue(st.State == s), string(s))
	}
	active := map[Problem]bool{}
	for _, p := range st.Problems {
		active[p.Problem] = true
	}
	for _, p := range problems {
		gauge(c.problem, boolValue(active[p]), string(p))
	}
	gauge(c.stuck, float64(st.StuckHandlers))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
