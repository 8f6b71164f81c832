package events

import (
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// progressByReason is the progress rule: the estimate a Normal event with
// this reason stands for. These are the steps a scheduler and kubelet go
// through to start a pod; a Stream's Progress is the highest value reached
// so far, so repeated steps (init containers, several containers) never
// move it back. Warning events and other reasons leave it unchanged.
// Reaching 100 (Running and Ready) is decided from the pod, not from
// events: that is the spawner's job.
var progressByReason = map[string]int{
	"Scheduled":              20,
	"SuccessfulAttachVolume": 30,
	"Pulling":                40,
	"Pulled":                 60,
	"Created":                70,
	"Started":                90,
}

// progressOf returns the progress estimate of one event under the rule
// documented in the package documentation, and whether the event stands
// for a step at all (Warning events never do).
func progressOf(e *corev1.Event) (int, bool) {
	if e == nil || e.Type == corev1.EventTypeWarning {
		return 0, false
	}
	p, ok := progressByReason[e.Reason]
	return p, ok
}

// maxMessageLen bounds Message's output.
const maxMessageLen = 1024

// Message returns a one-line, human-readable description of an event: its
// message for Normal events (e.g. `Pulling image "x"`), and
// "[Warning] <reason>: <message>" for Warning events. Newlines are folded
// into spaces and very long messages are cut.
func Message(e *corev1.Event) string {
	if e == nil {
		return ""
	}
	msg := strings.Join(strings.Fields(e.Message), " ")
	if msg == "" {
		msg = e.Reason
	}
	if e.Type == corev1.EventTypeWarning {
		msg = "[Warning] " + e.Reason + ": " + msg
	}
	if len(msg) > maxMessageLen {
		msg = strings.ToValidUTF8(msg[:maxMessageLen], "") + "…"
	}
	return msg
}

// lastTime is when an event last occurred: series.lastObservedTime,
// lastTimestamp, eventTime, firstTimestamp, creationTimestamp, the first
// that is set.
func lastTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	}
	return firstTime(e)
}

// firstTime is when an event first occurred: eventTime, firstTimestamp,
// creationTimestamp, the first that is set.
func firstTime(e *corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// item is one event in the index (or in a fallback list).
type item struct {
	ev  *corev1.Event
	key string // namespace/name of the Event object
	// arrival orders events that occurred at the same time (the API's
	// timestamps have second resolution): the order in which the index
	// first saw them, which is the watch's (resourceVersion) order, or the
	// list's order after a relist.
	arrival uint64
	// version is the index-wide sequence number of the last change.
	version uint64
	last    time.Time
	first   time.Time
}

func newItem(ev *corev1.Event, arrival, version uint64) *item {
	return &item{ev: ev, key: ev.Namespace + "/" + ev.Name, arrival: arrival, version: version, last: lastTime(ev), first: firstTime(ev)}
}

// byLast orders events by last occurrence, then first occurrence, then
// arrival: kubectl's order, used by For and for the per-pod cap (the
// events that occurred last are the newest).
func byLast(a, b *item) int {
	if c := a.last.Compare(b.last); c != 0 {
		return c
	}
	return byFirst(a, b)
}

// byFirst orders events by first occurrence, then arrival: the order in
// which a Stream delivers them (each is delivered once, at its first
// occurrence).
func byFirst(a, b *item) int {
	if c := a.first.Compare(b.first); c != 0 {
		return c
	}
	switch {
	case a.arrival < b.arrival:
		return -1
	case a.arrival > b.arrival:
		return 1
	}
	return strings.Compare(a.key, b.key)
}

func sortByFirst(items []*item) { slices.SortFunc(items, byFirst) }
