package events

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/internal/signal"
)

// IndexStats is a snapshot of the per-pod index's size and churn.
type IndexStats struct {
	// Pods is the number of pods with an entry.
	Pods int
	// Events is the number of events held, over all pods (at most
	// Pods × PerPodLimit).
	Events int
	// MaxPerPod is the largest number of events held for one pod.
	MaxPerPod int
	// Streams is the number of open Streams.
	Streams int
	// EvictedEvents counts events dropped by the per-pod cap.
	EvictedEvents int64
	// EvictedPods counts entries dropped by the TTL or ForgetPod.
	EvictedPods int64
	// Ignored counts events without an involvedObject.uid, which no
	// Stream can match and the index does not keep.
	Ignored int64
}

// podEntry is the index's entry for one pod (one UID).
type podEntry struct {
	items map[string]*item // by namespace/name of the Event
	// lastActivity is when the last event arrived or the last Stream
	// closed; the TTL counts from it.
	lastActivity time.Time
}

// index keeps the newest events of each pod, keyed by the pod's UID, fed
// by the event handler. Its methods never block on a reader: Streams are
// told about changes by coalesced signals and read the entry themselves.
// Entries idle for the TTL are evicted as the index is used (every
// expirePeriod at most), so an index that receives nothing holds nothing
// new, and no goroutine of its own is needed.
type index struct {
	clock clock.PassiveClock
	limit int
	ttl   time.Duration
	subs  signal.Mux[types.UID]

	mu         sync.Mutex
	seq        uint64 // index-wide, so a recreated entry never reuses versions
	pods       map[types.UID]*podEntry
	events     int
	lastExpire time.Time

	evictedEvents atomic.Int64
	evictedPods   atomic.Int64
	ignored       atomic.Int64
}

func newIndexStore(clk clock.PassiveClock, limit int, ttl time.Duration) *index {
	return &index{
		clock:      clk,
		limit:      limit,
		ttl:        ttl,
		pods:       map[types.UID]*podEntry{},
		lastExpire: clk.Now(),
	}
}

// expirePeriod is how often, at most, the index scans for idle entries: a
// scan of the pod map, cheap next to the TTL's precision.
func (x *index) expirePeriod() time.Duration {
	return min(max(x.ttl/10, 100*time.Millisecond), 5*time.Second)
}

// maybeExpireLocked evicts idle entries if a period has passed.
func (x *index) maybeExpireLocked(now time.Time) {
	if now.Sub(x.lastExpire) >= x.expirePeriod() {
		x.lastExpire = now
		x.expireLocked(now)
	}
}

// handler is the index's informer event handler. It only takes the
// index's lock for a map update and pokes coalesced signals: it never
// blocks on a Stream.
func (x *index) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { x.upsert(obj) },
		UpdateFunc: func(oldObj, obj any) {
			// A relist or resync replaying an unchanged object is not
			// activity: it must neither refresh nor recreate an entry.
			if o, n := asEvent(oldObj), asEvent(obj); o != nil && n != nil && o.ResourceVersion != "" && o.ResourceVersion == n.ResourceVersion {
				return
			}
			x.upsert(obj)
		},
		DeleteFunc: x.remove,
	}
}

func asEvent(obj any) *corev1.Event {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	e, _ := obj.(*corev1.Event)
	return e
}

// upsert adds or updates one event. An update with the resourceVersion
// already held (a relist replaying an unchanged object) changes nothing.
func (x *index) upsert(obj any) {
	e := asEvent(obj)
	if e == nil {
		return
	}
	uid := e.InvolvedObject.UID
	if uid == "" {
		x.ignored.Add(1)
		return
	}
	key := e.Namespace + "/" + e.Name
	now := x.clock.Now()
	x.mu.Lock()
	x.maybeExpireLocked(now)
	entry := x.pods[uid]
	if entry == nil {
		entry = &podEntry{items: map[string]*item{}}
		x.pods[uid] = entry
	}
	old := entry.items[key]
	if old != nil && old.ev.ResourceVersion == e.ResourceVersion && old.ev.ResourceVersion != "" {
		x.mu.Unlock()
		return
	}
	entry.lastActivity = now
	x.seq++
	if old != nil {
		it := newItem(e, old.arrival, x.seq)
		entry.items[key] = it
	} else {
		entry.items[key] = newItem(e, x.seq, x.seq)
		x.events++
		if len(entry.items) > x.limit {
			x.evictOldestLocked(entry)
		}
	}
	x.mu.Unlock()
	x.subs.Notify(uid)
}

// evictOldestLocked drops the entry's events that occurred first until it
// holds limit events.
func (x *index) evictOldestLocked(entry *podEntry) {
	for len(entry.items) > x.limit {
		var oldest *item
		for _, it := range entry.items {
			if oldest == nil || byLast(it, oldest) < 0 {
				oldest = it
			}
		}
		delete(entry.items, oldest.key)
		x.events--
		x.evictedEvents.Add(1)
	}
}

// remove drops an event the server deleted (its --event-ttl expired), so
// the index never holds an event that the informer no longer has. The
// pod's entry goes once empty and without Streams.
func (x *index) remove(obj any) {
	e := asEvent(obj)
	if e == nil || e.InvolvedObject.UID == "" {
		return
	}
	uid := e.InvolvedObject.UID
	key := e.Namespace + "/" + e.Name
	x.mu.Lock()
	defer x.mu.Unlock()
	entry := x.pods[uid]
	if entry == nil || entry.items[key] == nil {
		return
	}
	delete(entry.items, key)
	x.events--
	if len(entry.items) == 0 && !x.subs.Subscribed(uid) {
		delete(x.pods, uid)
	}
}

// subscribe returns a signal channel for uid's changes. While subscribed,
// uid's entry is never evicted by the TTL. cancel restarts the TTL.
func (x *index) subscribe(uid types.UID) (<-chan struct{}, func()) {
	ch, cancel := x.subs.Subscribe(uid)
	return ch, func() {
		cancel()
		x.mu.Lock()
		if entry := x.pods[uid]; entry != nil {
			entry.lastActivity = x.clock.Now()
		}
		x.mu.Unlock()
	}
}

// since returns uid's events changed after version, in Stream order
// (byFirst), and the newest version of the entry (version when nothing
// changed).
func (x *index) since(uid types.UID, version uint64) ([]*item, uint64) {
	x.mu.Lock()
	entry := x.pods[uid]
	var out []*item
	newest := version
	if entry != nil {
		for _, it := range entry.items {
			if it.version > version {
				out = append(out, it)
				newest = max(newest, it.version)
			}
		}
	}
	x.mu.Unlock()
	slices.SortFunc(out, byFirst)
	return out, newest
}

// list returns uid's events ordered by last occurrence.
func (x *index) list(uid types.UID) []*item {
	x.mu.Lock()
	entry := x.pods[uid]
	var out []*item
	if entry != nil {
		out = make([]*item, 0, len(entry.items))
		for _, it := range entry.items {
			out = append(out, it)
		}
	}
	x.mu.Unlock()
	slices.SortFunc(out, byLast)
	return out
}

// forget drops uid's entry now.
func (x *index) forget(uid types.UID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if entry := x.pods[uid]; entry != nil {
		x.events -= len(entry.items)
		delete(x.pods, uid)
		x.evictedPods.Add(1)
	}
}

// expire drops the entries idle for the TTL that no Stream reads, and
// returns how many it dropped.
func (x *index) expire() int {
	now := x.clock.Now()
	x.mu.Lock()
	defer x.mu.Unlock()
	x.lastExpire = now
	return x.expireLocked(now)
}

func (x *index) expireLocked(now time.Time) int {
	n := 0
	for uid, entry := range x.pods {
		if now.Sub(entry.lastActivity) >= x.ttl && !x.subs.Subscribed(uid) {
			x.events -= len(entry.items)
			delete(x.pods, uid)
			n++
		}
	}
	x.evictedPods.Add(int64(n))
	return n
}

func (x *index) stats() IndexStats {
	now := x.clock.Now()
	x.mu.Lock()
	x.maybeExpireLocked(now)
	st := IndexStats{Pods: len(x.pods), Events: x.events, Streams: x.subs.Len()}
	for _, entry := range x.pods {
		st.MaxPerPod = max(st.MaxPerPod, len(entry.items))
	}
	x.mu.Unlock()
	st.EvictedEvents = x.evictedEvents.Load()
	st.EvictedPods = x.evictedPods.Load()
	st.Ignored = x.ignored.Load()
	return st
}
