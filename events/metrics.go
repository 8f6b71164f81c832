package events

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the index's and Streams' metrics (prefix
// kubespawn_events_, constant label reflector=<Name>), computed at scrape
// time. The event watch's own metrics are the reflector's
// (kubespawn_reflector_*).
type collector struct {
	x *Index

	polls, pollErrors, updatesLive, updatesFallback atomic.Int64
	// polling is the number of Streams fed by fallback lists now.
	polling atomic.Int64

	pods, events, streams, pollingD, evicted, ignored, pollsD, pollErrorsD, updates *prometheus.Desc
}

func newCollector(x *Index) *collector {
	l := prometheus.Labels{"reflector": x.cache.Name()}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("kubespawn_events_"+name, help, labels, l)
	}
	return &collector{
		x:           x,
		pods:        d("index_pods", "Pods with an entry in the event index."),
		events:      d("index_events", "Events held in the event index."),
		streams:     d("streams", "Open progress Streams."),
		pollingD:    d("streams_polling", "Open progress Streams fed by fallback lists (the event watch not healthy) rather than by the index."),
		evicted:     d("evictions_total", "Evictions from the event index: events by the per-pod cap (cap), pod entries by the TTL or ForgetPod (pod).", "reason"),
		ignored:     d("ignored_total", "Events without an involvedObject.uid, not indexed."),
		pollsD:      d("fallback_lists_total", "Fallback lists of a pod's events made by Streams while the event watch was unhealthy."),
		pollErrorsD: d("fallback_list_errors_total", "Fallback lists that failed."),
		updates:     d("updates_total", "Updates sent to Streams, by mode (live from the index, fallback from lists).", "mode"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pods, c.events, c.streams, c.pollingD, c.evicted, c.ignored, c.pollsD, c.pollErrorsD, c.updates} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.x.idx.stats()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.pods, st.Pods)
	gauge(c.events, st.Events)
	gauge(c.streams, st.Streams)
	gauge(c.pollingD, int(c.polling.Load()))
	counter(c.evicted, st.EvictedEvents, "cap")
	counter(c.evicted, st.EvictedPods, "pod")
	counter(c.ignored, st.Ignored)
	counter(c.pollsD, c.polls.Load())
	counter(c.pollErrorsD, c.pollErrors.Load())
	counter(c.updates, c.updatesLive.Load(), "live")
	counter(c.updates, c.updatesFallback.Load(), "fallback")
}
