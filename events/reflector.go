package events

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/reflector"
)

// Reflector is the shared event watch of one scope with its per-pod index
// of events, and the source of per-pod progress Streams. Create it with
// [New] or share one per process with [Acquire]. All methods are safe for
// concurrent use.
type Reflector struct {
	client kubernetes.Interface
	inner  *reflector.Reflector[*corev1.Event]
	opts   Options
	logger klog.Logger
	// owned: the inner reflector was created by New and is started and
	// stopped with this Reflector; false when it comes from a Registry.
	owned bool

	idx     *index
	metrics *collector

	indexSynced chan struct{}
	syncOnce    sync.Once

	mu         sync.Mutex
	started    bool
	stopped    bool
	ctx        context.Context // canceled by Stop: ends every Stream
	cancel     context.CancelFunc
	handler    reflector.HandlerRegistration
	unsubState func()
	stateCh    <-chan struct{}
	wg         sync.WaitGroup
	stopOnce   sync.Once
}

// New returns an events Reflector over client with a watch of its own. It
// does nothing until Start. Prefer [Acquire] in services: one event watch
// per scope per process.
func New(client kubernetes.Interface, opts Options) (*Reflector, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", reflector.ErrInvalidOptions)
	}
	opts, ropts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	inner, err := reflector.New(client, Kind, ropts)
	if err != nil {
		return nil, err
	}
	return newReflector(client, inner, opts, true)
}

func newReflector(client kubernetes.Interface, inner *reflector.Reflector[*corev1.Event], opts Options, owned bool) (*Reflector, error) {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	r := &Reflector{
		client:      client,
		inner:       inner,
		opts:        opts,
		logger:      klog.Background(),
		owned:       owned,
		idx:         newIndex(opts.Clock, opts.PerPodLimit, opts.TTL),
		indexSynced: make(chan struct{}),
	}
	if opts.Logger != nil {
		r.logger = *opts.Logger
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// Subscribe before anything can change the state.
	r.stateCh, r.unsubState = inner.NotifyState()
	reg, err := inner.AddEventHandler(r.idx.handler())
	if err != nil {
		r.unsubState()
		return nil, err
	}
	r.handler = reg
	r.metrics = newCollector(r)
	return r, nil
}

// shared tracks the events Reflectors handed out by Acquire, one per
// underlying (shared) event reflector.
var shared = struct {
	mu sync.Mutex
	m  map[*reflector.Reflector[*corev1.Event]]*sharedEntry
}{m: map[*reflector.Reflector[*corev1.Event]]*sharedEntry{}}

type sharedEntry struct {
	r    *Reflector
	refs int
}

// Acquire returns the running events Reflector for client and
// opts.Scope in reg, creating and starting it if needed, and a release
// function (idempotent) to call when done. Like reflector.Acquire, which
// it uses with [Kind], every caller in a process asking for the same
// client and scope shares one event watch and one index; options other
// than the scope are those of the first caller. The last release stops
// it. Do not call Stop on an acquired Reflector: it would end every
// user's Streams.
func Acquire(ctx context.Context, reg *reflector.Registry, client kubernetes.Interface, opts Options) (*Reflector, func(), error) {
	opts, ropts, err := opts.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	inner, releaseInner, err := reflector.Acquire(ctx, reg, client, Kind, ropts)
	if err != nil {
		return nil, nil, err
	}
	shared.mu.Lock()
	e := shared.m[inner]
	if e == nil {
		r, err := newReflector(client, inner, opts, false)
		if err != nil {
			shared.mu.Unlock()
			releaseInner()
			return nil, nil, err
		}
		r.startLoops(context.WithoutCancel(ctx))
		e = &sharedEntry{r: r}
		shared.m[inner] = e
	}
	e.refs++
	shared.mu.Unlock()
	var once sync.Once
	release := func() {
		once.Do(func() {
			shared.mu.Lock()
			e.refs--
			last := e.refs == 0
			if last {
				delete(shared.m, inner)
			}
			shared.mu.Unlock()
			if last {
				e.r.Stop()
			}
			releaseInner()
		})
	}
	return e.r, release, nil
}

// Start starts the event watch (for a Reflector from New) and the index's
// housekeeping, until Stop or ctx ends. It returns at once; use
// WaitForSync to wait for the initial list. It returns
// reflector.ErrStopped after Stop and is a no-op when already started
// (an acquired Reflector is started by Acquire).
func (r *Reflector) Start(ctx context.Context) error {
	r.mu.Lock()
	stopped, started := r.stopped, r.started
	r.mu.Unlock()
	if stopped {
		return reflector.ErrStopped
	}
	if started {
		return nil
	}
	if r.owned {
		if err := r.inner.Start(ctx); err != nil {
			return err
		}
	}
	r.startLoops(ctx)
	return nil
}

// startLoops starts the housekeeping goroutines once.
func (r *Reflector) startLoops(ctx context.Context) {
	r.mu.Lock()
	if r.started || r.stopped {
		r.mu.Unlock()
		return
	}
	r.started = true
	if r.opts.Logger == nil {
		r.logger = klog.FromContext(ctx)
	}
	r.logger = r.logger.WithValues("eventReflector", r.inner.Name())
	logger := r.logger
	if r.opts.Registerer != nil {
		if err := r.opts.Registerer.Register(r.metrics); err != nil {
			logger.Error(err, "Cannot register metrics")
		}
	}
	r.wg.Add(3)
	r.mu.Unlock()
	go func() { defer r.wg.Done(); r.watchState() }()
	go func() { defer r.wg.Done(); r.janitor() }()
	go func() { defer r.wg.Done(); r.waitIndexSynced() }()
	if r.owned {
		context.AfterFunc(ctx, r.Stop)
	}
}

// watchState wakes every Stream on a change of the inner reflector's
// state. A stopped inner reflector stops r.
func (r *Reflector) watchState() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.stateCh:
		}
		st := r.inner.State()
		r.idx.notifyAll()
		if st == reflector.StateStopped {
			go r.Stop()
			return
		}
	}
}

// janitor evicts idle entries from the index, every TTL/10 (between
// 100ms and 5s): a scan of the pod map, cheap next to the TTL's precision.
func (r *Reflector) janitor() {
	period := min(max(r.opts.TTL/10, 100*time.Millisecond), 5*time.Second)
	t := r.opts.Clock.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C():
			if n := r.idx.expire(); n > 0 {
				r.log().V(4).Info("Evicted idle pods from the event index", "pods", n, "ttl", r.opts.TTL)
			}
		}
	}
}

// waitIndexSynced closes indexSynced once the inner reflector has synced
// and the index's handler has been given its initial list.
func (r *Reflector) waitIndexSynced() {
	if err := r.inner.WaitForSync(r.ctx); err != nil {
		return
	}
	t := r.opts.Clock.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if r.inner.State() != reflector.StateStarting && r.handler.HasSynced() {
			r.syncOnce.Do(func() { close(r.indexSynced) })
			r.idx.notifyAll()
			return
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C():
		}
	}
}

// Stop stops the Reflector: every Stream's channel is closed, the index's
// handler is removed and, for a Reflector from New, the event watch stops.
// Idempotent.
func (r *Reflector) Stop() {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
		r.cancel()
		r.handler.Remove()
		r.unsubState()
		r.wg.Wait()
		if r.opts.Registerer != nil {
			r.opts.Registerer.Unregister(r.metrics)
		}
		if r.owned {
			r.inner.Stop()
		}
	})
}

// WaitForSync blocks until the event watch has listed its scope and the
// index holds the result, the Reflector stops (reflector.ErrStopped) or ctx
// ends (reflector.ErrNotSynced).
func (r *Reflector) WaitForSync(ctx context.Context) error {
	if err := r.inner.WaitForSync(ctx); err != nil {
		return err
	}
	select {
	case <-r.indexSynced:
		return nil
	case <-r.ctx.Done():
		return reflector.ErrStopped
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", reflector.ErrNotSynced, context.Cause(ctx))
	}
}

// Status is the event watch's status (see reflector.Status).
func (r *Reflector) Status() reflector.Status { return r.inner.Status() }

// Healthz is the event watch's liveness check (reflector.Reflector.Healthz).
func (r *Reflector) Healthz(req *http.Request) error { return r.inner.Healthz(req) }

// Readyz is the event watch's readiness check (reflector.Reflector.Readyz).
func (r *Reflector) Readyz(req *http.Request) error { return r.inner.Readyz(req) }

// Name is the event watch's name in logs and metrics.
func (r *Reflector) Name() string { return r.inner.Name() }

// IndexStats returns the per-pod index's size and counters.
func (r *Reflector) IndexStats() IndexStats { return r.idx.stats() }

// healthy reports whether Streams may read the index: the watch is synced
// and healthy and the index has its initial list.
func (r *Reflector) healthy() bool {
	if r.inner.State() != reflector.StateSynced {
		return false
	}
	select {
	case <-r.indexSynced:
		return true
	default:
		return false
	}
}

// log returns the logger (set by Start; Streams may run before).
func (r *Reflector) log() klog.Logger {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logger
}

// checkPod validates pod against the arguments and the scope.
func (r *Reflector) checkPod(pod PodRef) error {
	if pod.Namespace == "" || pod.Name == "" || pod.UID == "" {
		return fmt.Errorf("%w: PodRef needs a namespace, a name and a UID (got %q/%q uid %q)", ErrInvalidArgument, pod.Namespace, pod.Name, pod.UID)
	}
	if ns := r.inner.Scope().Namespaces; len(ns) > 0 && !slices.Contains(ns, pod.Namespace) {
		return fmt.Errorf("%w: %q is not in %s", reflector.ErrOutOfScope, pod.Namespace, r.inner.Scope())
	}
	return nil
}

// For returns the events of pod held in the index (at most PerPodLimit,
// the newest), oldest first by last occurrence (kubectl's order), so a
// failure report can show the tail. The events are copies, slimmed as
// described for [Slim]. It reads only the index: with a degraded watch it
// may lag; [Reflector.ListFor] falls back to the API server. It returns
// nil for an invalid PodRef.
func (r *Reflector) For(pod PodRef) []*corev1.Event {
	if r.checkPod(pod) != nil {
		return nil
	}
	items := r.idx.list(pod.UID)
	out := make([]*corev1.Event, 0, len(items))
	for _, it := range items {
		out = append(out, it.ev.DeepCopy())
	}
	return out
}

// ListFor is For that never serves a stale index: while the event watch is
// not healthy it lists the pod's events from the API server (field
// selector involvedObject.uid) instead. The Source says which answered.
func (r *Reflector) ListFor(ctx context.Context, pod PodRef) ([]*corev1.Event, reflector.Source, error) {
	if err := r.checkPod(pod); err != nil {
		return nil, "", err
	}
	if r.healthy() {
		return r.For(pod), reflector.SourceCache, nil
	}
	items, err := r.listAPI(ctx, pod)
	if err != nil {
		return nil, reflector.SourceAPI, err
	}
	slices.SortFunc(items, byLast)
	out := make([]*corev1.Event, 0, len(items))
	for _, it := range items {
		out = append(out, it.ev)
	}
	return out, reflector.SourceAPI, nil
}

// listAPI lists pod's events from the API server, slimmed, in list order
// (arrival = position).
func (r *Reflector) listAPI(ctx context.Context, pod PodRef) ([]*item, error) {
	// ResourceVersion "0": served from the apiserver's watch cache, not
	// etcd. Every open stream polls while the watch is degraded; the
	// apiserver's cache is unaffected by our watch's stall, and a full
	// consistent read per stream would turn one stalled watch into etcd
	// load (KubeSpawner's issue #753).
	list, err := r.client.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("involvedObject.uid", string(pod.UID)).String(),
		ResourceVersion: "0",
	})
	if err != nil {
		return nil, fmt.Errorf("events: list the events of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	var out []*item
	for i := range list.Items {
		e := &list.Items[i]
		if e.InvolvedObject.UID != pod.UID { // a server (or fake) ignoring the selector
			continue
		}
		out = append(out, newItem(slimEvent(e), uint64(i+1), 0))
	}
	return out, nil
}

// ForgetPod drops the pod's entry from the index at once. Call it when the
// pod is gone for good and nothing will ask for its events again (a
// spawner does after deleting the pod and closing its Stream); otherwise
// the entry is evicted TTL after its last event. Events arriving later for
// that UID start a new entry.
func (r *Reflector) ForgetPod(uid types.UID) { r.idx.forget(uid) }
