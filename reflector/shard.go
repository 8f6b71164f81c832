package reflector

import (
	"slices"
	"sync"
	"time"

	toolscache "k8s.io/client-go/tools/cache"

	"github.com/kubespawn/kubespawn/internal/signal"
)

// shard is the part of a cache that watches one namespace (or all): one
// informer, one main watch, and its monitor. Facts about requests are
// written by the list/watch callbacks and the workers, under mu, and the
// monitor is woken; the monitor alone turns facts into problems and state.
type shard[T object] struct {
	c         *cache[T]
	namespace string
	informer  toolscache.SharedIndexInformer
	lw        *listWatcher[T]

	// wake wakes the monitor; results carries the workers' findings.
	wake    signal.Flag
	results chan result

	mu sync.Mutex

	// Facts, written by callbacks and workers.

	// lastEvent is when the main watch last delivered anything.
	lastEvent time.Time
	// watchOpen: a main watch is open now (for a WatchList: past its
	// initial events); watchOpenedAt is when the last one opened.
	watchOpen     bool
	watchOpenedAt time.Time
	// relistedAt is when a list (or a WatchList's initial events) last
	// completed.
	relistedAt time.Time
	// listErr is the last failure of the main list or watch, cleared by
	// the next watch opened; listErrSince is the first of the streak.
	listErr      error
	listErrAt    time.Time
	listErrSince time.Time
	// hung holds, per kind of request, when one was cut at its deadline.
	hung map[requestKind]time.Time
	// canaries are writes the server acknowledged that the cache must
	// reach (see expect).
	canaries []canary
	// probeWanted, auditWanted: run one as soon as possible.
	probeWanted, auditWanted bool

	// Health, written by the monitor.

	problems map[Problem]condition
	// problemsGen counts changes of problems (set, reason, cleared);
	// publishedGen is the count the cache last published (updateState).
	problemsGen, publishedGen int
	state                     State
	reason                    string
	lastProbe                 time.Time
	lastConfirmed             time.Time
	serverRV                  string
	probeFailingSince         time.Time
	probeFailure              error

	// Monitor-only scheduling state (no lock needed).

	probeRunning, auditRunning bool
	lastProbeStart             time.Time
	lastAuditStart             time.Time
	lastHandlerCheck           time.Time
}

// condition is one active problem: since when, and why.
type condition struct {
	since  time.Time
	reason string
}

// requestKind is a kind of request with a deadline of the main
// list/watch.
type requestKind string

const (
	requestList      requestKind = "list"
	requestWatchOpen requestKind = "watch open"
	requestWatchList requestKind = "watch-list initial events"
)

// canary is a write the cache must see: the server reached rv (for key)
// and the cache should have too by due. probed: a probe has been started
// for it; later ones carry it without being started for it.
type canary struct {
	key    string
	rv     string
	due    time.Time
	probed bool
}

// maxCanaries bounds the pending canaries; beyond it, the newest are
// merged (the highest version, the latest due), which only delays a probe.
const maxCanaries = 64

func newShard[T object](c *cache[T], ns string) (*shard[T], error) {
	s := &shard[T]{
		c:         c,
		namespace: ns,
		wake:      signal.NewFlag(),
		results:   make(chan result, 4),
		hung:      map[requestKind]time.Time{},
		problems:  map[Problem]condition{},
		state:     StateStarting,
		reason:    "not started",
	}
	s.lw = &listWatcher[T]{s: s}
	s.informer = toolscache.NewSharedIndexInformerWithOptions(s.lw, c.kind.newObj(), toolscache.SharedIndexInformerOptions{
		Indexers:          toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc},
		ObjectDescription: c.kind.name,
	})
	if err := s.informer.SetTransform(c.kind.transform); err != nil {
		return nil, err
	}
	if _, err := s.informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    c.notifyObject,
		UpdateFunc: func(_, obj any) { c.notifyObject(obj) },
		DeleteFunc: c.notifyObject,
	}); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *shard[T]) now() time.Time { return s.c.opts.Clock.Now() }

// health is the shard's state and reason, as the monitor last computed.
func (s *shard[T]) health() (State, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.reason
}

// healthProblems is health with the problems it rests on, read together.
func (s *shard[T]) healthProblems() (State, string, []ProblemStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []ProblemStatus
	for _, p := range problems {
		if cond, ok := s.problems[p]; ok {
			ps = append(ps, ProblemStatus{Problem: p, Namespace: s.namespace, Since: cond.since, Reason: cond.reason})
		}
	}
	return s.state, s.reason, ps
}

// The callbacks below record facts and wake the monitor; they never block.

func (s *shard[T]) onEvent() {
	s.mu.Lock()
	s.lastEvent = s.now()
	s.mu.Unlock()
}

func (s *shard[T]) onWatchOpened() {
	now := s.now()
	s.mu.Lock()
	s.watchOpen, s.watchOpenedAt, s.lastEvent = true, now, now
	s.listErr = nil
	s.mu.Unlock()
	s.wake.Raise()
}

func (s *shard[T]) onWatchClosed() {
	s.mu.Lock()
	s.watchOpen = false
	s.mu.Unlock()
	s.wake.Raise()
}

// onRelisted records a completed list; fromWatchList: the initial events
// of a WatchList, whose watch goes on as the main watch.
func (s *shard[T]) onRelisted(fromWatchList bool) {
	now := s.now()
	s.mu.Lock()
	s.relistedAt = now
	s.mu.Unlock()
	if fromWatchList {
		s.onWatchOpened()
		return
	}
	s.wake.Raise()
}

func (s *shard[T]) onListWatchError(err error) {
	now := s.now()
	gap := GapWatchError
	if isExpired(err) {
		gap = GapExpired
	}
	s.c.stats.gap(gap)
	s.mu.Lock()
	if s.listErr == nil {
		s.listErrSince = now
	}
	s.listErr, s.listErrAt = err, now
	s.mu.Unlock()
	s.wake.Raise()
}

// onHung records a request cut at its deadline. Its connection is closed
// with every other of the cache's transport: a connection that hangs one
// request (an HTTP/2 connection gone dead, say) must not carry the next.
func (s *shard[T]) onHung(kind requestKind) {
	now := s.now()
	s.c.stats.gap(GapHungRequest)
	s.mu.Lock()
	s.hung[kind] = now
	s.mu.Unlock()
	if s.c.closeConns != nil {
		s.c.closeConns()
	}
	s.c.log().Info("Request cut at its deadline", "namespace", s.namespace, "request", string(kind))
	s.wake.Raise()
}

// expect registers a canary: the server has reached rv for key.
func (s *shard[T]) expect(key, rv string) {
	if s.c.opts.ProbeInterval < 0 || rvAtLeast(s.informer.LastSyncResourceVersion(), rv) {
		return
	}
	due := s.now().Add(s.c.opts.CanaryWindow)
	s.mu.Lock()
	s.serverRV = maxRV(s.serverRV, rv)
	if n := len(s.canaries); n >= maxCanaries {
		last := &s.canaries[n-1]
		last.rv, last.due, last.key, last.probed = maxRV(last.rv, rv), due, key, false
	} else {
		s.canaries = append(s.canaries, canary{key: key, rv: rv, due: due})
	}
	s.mu.Unlock()
	s.wake.Raise()
}

// apiOnly looks at an object the API server returned while the healthy
// cache lacked it. If the cache has already passed the object's version,
// the watch skipped it: a gap for sure, which the audit confirms and
// repairs. Otherwise it may be in flight: a canary tells.
func (s *shard[T]) apiOnly(key string, obj T) {
	if _, ok, _ := s.informer.GetIndexer().GetByKey(key); ok {
		return // arrived meanwhile
	}
	if rvAtLeast(s.informer.LastSyncResourceVersion(), obj.GetResourceVersion()) {
		s.c.stats.gap(GapAPIOnly)
		s.mu.Lock()
		s.auditWanted = true
		s.mu.Unlock()
		s.wake.Raise()
		return
	}
	s.expect(key, obj.GetResourceVersion())
}

// sortProblems orders problems oldest first, then by kind.
func sortProblems(ps []ProblemStatus) {
	slices.SortStableFunc(ps, func(a, b ProblemStatus) int { return a.Since.Compare(b.Since) })
}
