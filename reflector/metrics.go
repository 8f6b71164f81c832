package reflector

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// collector exports one Reflector's metrics, computed at scrape time from
// its counters and Status. Every series has the constant label
// reflector=<Name>, so several Reflectors can share a Registerer.
type collector struct {
	status func() Status
	stats  *stats
	clock  clock.PassiveClock

	events, relists, gaps, lookups, drift, restarts *prometheus.Desc
	sinceEvent, lag, objects, state, stuck          *prometheus.Desc
}

func newCollector[T Object](r *Reflector[T]) *collector {
	l := prometheus.Labels{"reflector": r.opts.Name}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("kubespawn_reflector_"+name, help, labels, l)
	}
	return &collector{
		status:     r.Status,
		stats:      r.stats,
		clock:      r.opts.Clock,
		events:     d("events_total", "Watch events received by the main watch, by type (bookmarks included).", "type"),
		relists:    d("relists_total", "Full lists (or WatchList relists), by reason.", "reason"),
		gaps:       d("gaps_detected_total", "Detected gaps between the cache and the server, by kind.", "kind"),
		lookups:    d("lookups_total", "Get lookups by source (cache, api) and result (found, not_found, error).", "source", "result"),
		drift:      d("drift_repaired_total", "Objects the audit found different from the server and repaired."),
		restarts:   d("restarts_total", "Watch restarts forced by the reflector (stall, idle, drift)."),
		sinceEvent: d("seconds_since_last_event", "Seconds since the main watch delivered an event or bookmark."),
		lag:        d("lag_seconds", "Seconds since a probe or audit last confirmed the cache held every change in scope."),
		objects:    d("objects", "Objects in the cache."),
		state:      d("state", "1 for the reflector's current state, 0 for the others.", "state"),
		stuck:      d("stuck_handlers", "Event handlers stuck in one call longer than the threshold."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.events, c.relists, c.gaps, c.lookups, c.drift, c.restarts, c.sinceEvent, c.lag, c.objects, c.state, c.stuck} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	events, relists, gaps, lookups, drift, restarts := c.stats.snapshot()
	counter := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, k := range sortedKeys(events) {
		counter(c.events, events[k], k)
	}
	for _, k := range sortedKeys(relists) {
		counter(c.relists, relists[k], k)
	}
	for _, k := range []string{GapStall, GapIdle, GapAPIOnly, GapDrift, GapExpired, GapWatchError, GapHandlerStall} {
		counter(c.gaps, gaps[k], k)
	}
	for k, v := range lookups {
		counter(c.lookups, v, k[0], k[1])
	}
	counter(c.drift, drift)
	counter(c.restarts, restarts)
	since := 0.0
	if !st.LastEventTime.IsZero() {
		since = c.clock.Since(st.LastEventTime).Seconds()
	}
	gauge(c.sinceEvent, since)
	gauge(c.lag, st.LagSeconds)
	gauge(c.objects, float64(st.Objects))
	for _, s := range []State{StateStarting, StateSynced, StateDegraded, StateFailed, StateStopped} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		gauge(c.state, v, string(s))
	}
	gauge(c.stuck, float64(st.StuckHandlers))
}
