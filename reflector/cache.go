package reflector

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/pager"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/signal"
)

// cache is the engine behind PodCache and EventCache: a shared,
// self-healing cache of one kind in one scope. Each namespace of the scope
// is a shard with its own informer, main watch and monitor. All methods
// are safe for concurrent use.
type cache[T object] struct {
	kind  kind[T]
	opts  Options
	scope Scope
	name  string
	// client is the cache's own client; closeConns closes every connection
	// of its transport (nil when the factory was given a client).
	client     kubernetes.Interface
	closeConns func()

	labelSel labels.Selector
	fieldSel fields.Selector
	shards   []*shard[T]
	byNS     map[string]*shard[T]

	stats     *stats
	objSubs   signal.Mux[string]
	stateSubs signal.Mux[struct{}]
	handlers  handlerSet
	metrics   *collector

	// life ends when the factory's lifetime does; every goroutine of the
	// cache (informers, monitors, Go) runs under it and is counted in wg.
	life     context.Context
	lifeStop context.CancelFunc
	wg       sync.WaitGroup

	stateMu sync.Mutex // serialises updateState
	// servable mirrors state == StateSynced for the read path, which must
	// not take mu on every Get (P6 in BENCHMARKS.md).
	servable    atomic.Bool
	companionMu sync.Mutex // guards companions

	mu         sync.Mutex
	logger     klog.Logger
	started    bool
	closing    bool // no new goroutines: wg is being waited for
	stopped    bool
	startedAt  time.Time
	state      State
	reason     string
	stateSince time.Time
	// problems are the shards' problems as last published with state
	// (updateState).
	problems   []ProblemStatus
	companions map[any]any
}

func newCache[T object](k kind[T], opts Options, scope Scope, client kubernetes.Interface, closeConns func(), logger klog.Logger) (*cache[T], error) {
	c := &cache[T]{
		kind:       k,
		opts:       opts,
		scope:      scope,
		name:       k.name + " " + scope.String(),
		client:     client,
		closeConns: closeConns,
		byNS:       map[string]*shard[T]{},
		stats:      newStats(),
		state:      StateStarting,
		reason:     "not started",
		stateSince: opts.Clock.Now(),
		companions: map[any]any{},
	}
	c.logger = logger.WithValues("reflector", c.name)
	c.life, c.lifeStop = context.WithCancel(context.Background())
	c.labelSel, _ = labels.Parse(scope.LabelSelector)
	c.fieldSel, _ = fields.ParseSelector(scope.FieldSelector)
	for _, ns := range scope.namespaces() {
		s, err := newShard(c, ns)
		if err != nil {
			return nil, err
		}
		c.shards = append(c.shards, s)
		c.byNS[ns] = s
	}
	c.metrics = newCollector(c)
	return c, nil
}

// start runs the informers and monitors until ctx ends (or stop). The
// cache's goroutines are counted in fwg, the factory's WaitGroup.
func (c *cache[T]) start(ctx context.Context, logger klog.Logger, fwg *sync.WaitGroup) {
	c.mu.Lock()
	if c.started || c.stopped || c.closing {
		c.mu.Unlock()
		return
	}
	c.started = true
	c.startedAt = c.opts.Clock.Now()
	c.logger = logger.WithValues("reflector", c.name)
	c.reason = "waiting for the initial list"
	runCtx := klog.NewContext(c.life, c.logger)
	for _, s := range c.shards {
		c.wg.Add(2)
		go func() { defer c.wg.Done(); s.informer.RunWithContext(runCtx) }()
		go func() { defer c.wg.Done(); s.monitor(runCtx) }()
	}
	c.mu.Unlock()
	unhook := context.AfterFunc(ctx, c.lifeStop)
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		<-c.life.Done()
		unhook()
		c.finish()
	}()
	c.updateState()
}

// stop ends the cache's lifetime; finish (run by start's goroutine, or by
// the factory for a cache never started) completes it.
func (c *cache[T]) stop() { c.lifeStop() }

// finish waits for every goroutine of the cache and marks it stopped.
func (c *cache[T]) finish() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	if c.opts.Registerer != nil {
		c.opts.Registerer.Unregister(c.metrics)
	}
	c.updateState()
}

// goFor runs fn in a goroutine for the cache's lifetime: fn's ctx ends when
// ctx or the cache's lifetime ends, and the factory's Shutdown waits for
// fn. It reports false (and runs nothing) once the cache is stopping.
func (c *cache[T]) goFor(ctx context.Context, fn func(ctx context.Context)) bool {
	c.mu.Lock()
	if c.closing || c.stopped {
		c.mu.Unlock()
		return false
	}
	c.wg.Add(1)
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(c.life, cancel)
	go func() {
		defer c.wg.Done()
		defer cancel()
		defer unhook()
		fn(ctx)
	}()
	return true
}

func (c *cache[T]) log() klog.Logger {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logger
}

// companion returns the value kept under key, created by create on first
// use.
func (c *cache[T]) companion(key any, create func() (any, error)) (any, error) {
	// A lock of its own: create may use the cache (goFor, handlers).
	c.companionMu.Lock()
	defer c.companionMu.Unlock()
	if v, ok := c.companions[key]; ok {
		return v, nil
	}
	v, err := create()
	if err != nil {
		return nil, err
	}
	c.companions[key] = v
	return v, nil
}

func (c *cache[T]) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped || c.closing
}

func (c *cache[T]) synced() bool {
	for _, s := range c.shards {
		if !s.informer.HasSynced() {
			return false
		}
	}
	return true
}

// healthy is State() == StateSynced; the read path is hot.
func (c *cache[T]) healthy() bool { return c.servable.Load() }

func (c *cache[T]) currentState() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// shardFor returns the shard serving namespace.
func (c *cache[T]) shardFor(namespace string) (*shard[T], error) {
	if s, ok := c.byNS[""]; ok {
		return s, nil
	}
	if s, ok := c.byNS[namespace]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w: %q is not in %s", ErrOutOfScope, namespace, c.scope)
}

// inScope reports whether obj matches the scope's selectors.
func (c *cache[T]) inScope(obj T) bool {
	if !c.scope.Contains(obj.GetNamespace()) || !c.labelSel.Matches(labels.Set(obj.GetLabels())) {
		return false
	}
	return c.fieldSel.Empty() || c.fieldSel.Matches(c.kind.fields(obj))
}

// slim applies the kind's transform to an object from the API server, so
// a reader never sees two shapes of one object.
func (c *cache[T]) slim(obj T) T {
	out, err := c.kind.transform(obj)
	if err != nil {
		return obj
	}
	if t, ok := out.(T); ok {
		return t
	}
	return obj
}

// get returns namespace/name from the cache when it is synced, healthy
// and has the object, and otherwise from the API server (see PodCache.Get).
func (c *cache[T]) get(ctx context.Context, namespace, name string) (T, Source, error) {
	var zero T
	if namespace == "" || name == "" {
		return zero, "", fmt.Errorf("%w: Get needs a namespace and a name (got %q/%q)", ErrInvalidArgument, namespace, name)
	}
	s, err := c.shardFor(namespace)
	if err != nil {
		return zero, "", err
	}
	key := namespace + "/" + name
	healthy := c.healthy()
	if healthy {
		if obj, ok, _ := s.informer.GetIndexer().GetByKey(key); ok {
			if t, ok := obj.(T); ok {
				c.stats.hit()
				return t, SourceCache, nil
			}
		}
	}
	gctx, cancel := withDeadline(ctx, c.opts.Clock, c.opts.getDeadline())
	obj, err := c.kind.get(gctx, c.client, namespace, name)
	cancel()
	switch {
	case apierrors.IsNotFound(err):
		c.stats.lookup(SourceAPI, "not_found")
		return zero, SourceAPI, err
	case err != nil:
		c.stats.lookup(SourceAPI, "error")
		return zero, SourceAPI, fmt.Errorf("reflector: get %s %s from the API server: %w", c.kind.name, key, err)
	}
	c.stats.lookup(SourceAPI, "found")
	if healthy && c.inScope(obj) {
		s.apiOnly(key, obj)
	}
	return c.slim(obj), SourceAPI, nil
}

// list returns the objects in namespace ("" for the whole scope) matching
// selector, from the cache when it is healthy, else from the API server.
func (c *cache[T]) list(ctx context.Context, namespace string, selector labels.Selector) ([]T, Source, error) {
	if selector == nil {
		selector = labels.Everything()
	}
	shards := c.shards
	if namespace != "" {
		s, err := c.shardFor(namespace)
		if err != nil {
			return nil, "", err
		}
		shards = []*shard[T]{s}
	}
	var out []T
	if c.healthy() {
		for _, s := range shards {
			var objs []any
			if namespace != "" {
				objs, _ = s.informer.GetIndexer().ByIndex(toolscache.NamespaceIndex, namespace)
			} else {
				objs = s.informer.GetIndexer().List()
			}
			for _, o := range objs {
				if t, ok := o.(T); ok && selector.Matches(labels.Set(t.GetLabels())) {
					out = append(out, t)
				}
			}
		}
		return out, SourceCache, nil
	}
	sel := selector.String()
	if c.scope.LabelSelector != "" {
		sel = joinSelectors(c.scope.LabelSelector, sel)
	}
	for _, s := range shards {
		ns := s.namespace
		if namespace != "" {
			ns = namespace
		}
		p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			pctx, cancel := withDeadline(ctx, c.opts.Clock, c.opts.listDeadline())
			defer cancel()
			return c.kind.list(pctx, c.client, ns, opts)
		})
		err := p.EachListItem(ctx, metav1.ListOptions{LabelSelector: sel, FieldSelector: c.scope.FieldSelector}, func(obj runtime.Object) error {
			if t, ok := obj.(T); ok {
				out = append(out, c.slim(t))
			}
			return nil
		})
		if err != nil {
			return nil, SourceAPI, fmt.Errorf("reflector: list %s from the API server: %w", c.kind.name, err)
		}
	}
	return out, SourceAPI, nil
}

func joinSelectors(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "," + b
}

// notifyObject signals the subscribers of an object's key.
func (c *cache[T]) notifyObject(obj any) {
	if key, err := toolscache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.objSubs.Notify(key)
	}
}

// expectWrite registers a canary for obj (see PodCache.ExpectWrite).
func (c *cache[T]) expectWrite(obj T) {
	if any(obj) == nil || reflect.ValueOf(obj).IsNil() || obj.GetResourceVersion() == "" || !c.inScope(obj) {
		return
	}
	s, err := c.shardFor(obj.GetNamespace())
	if err != nil {
		return
	}
	s.expect(obj.GetNamespace()+"/"+obj.GetName(), obj.GetResourceVersion())
}

// waitForSync blocks until every shard has stored its initial list and
// the cache's state says so, the cache stops, or ctx ends.
func (c *cache[T]) waitForSync(ctx context.Context) error {
	ch, cancel := c.stateSubs.Subscribe(struct{}{})
	defer cancel()
	for {
		if c.isStopped() {
			return ErrStopped
		}
		if c.synced() {
			for _, s := range c.shards {
				s.wake.Raise() // the monitor records the sync at once
			}
			if st := c.currentState(); st != StateStarting {
				return nil
			}
		}
		// The informer's HasSynced changes without a notification: poll it
		// (real time, so that fake clocks need no stepping).
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %v", ErrNotSynced, context.Cause(ctx))
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// updateState recomputes the cache's state from its shards; on a change it
// logs it, signals every subscriber and, on entering failed, tells the
// factory.
func (c *cache[T]) updateState() {
	// Serialised: two shards' monitors computing at once must not commit a
	// stale aggregate over a fresh one.
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	now := c.opts.Clock.Now()
	c.mu.Lock()
	started, stopped := c.started, c.stopped
	c.mu.Unlock()
	var state State
	var reason string
	// published are the problems the state rests on: Status shows these,
	// so that a Status never shows a problem without its state.
	var published []ProblemStatus
	switch {
	case stopped:
		state, reason = StateStopped, "stopped"
	case !started:
		state, reason = StateStarting, "not started"
	default:
		state = StateSynced
		for _, s := range c.shards {
			st, why, ps := s.healthProblems()
			published = append(published, ps...)
			if stateRank(st) > stateRank(state) {
				state, reason = st, why
				if len(c.shards) > 1 {
					reason = fmt.Sprintf("namespace %q: %s", s.namespace, why)
				}
			}
		}
	}
	c.mu.Lock()
	changed := state != c.state
	if changed {
		c.state, c.stateSince = state, now
		c.servable.Store(state == StateSynced)
	}
	c.reason = reason
	c.problems = published
	logger := c.logger
	c.mu.Unlock()
	if !changed {
		return
	}
	logger.Info("Reflector state changed", "state", state, "reason", reason)
	c.stateSubs.NotifyAll()
	c.objSubs.NotifyAll()
	if state == StateFailed && c.opts.onFailure != nil {
		c.opts.onFailure(c.status()) // never blocks: it records and closes a channel
	}
}

// stateRank orders states from best to worst, for aggregating shards.
func stateRank(s State) int {
	switch s {
	case StateSynced:
		return 0
	case StateStarting:
		return 1
	case StateDegraded:
		return 2
	case StateFailed:
		return 3
	}
	return 4
}

// status returns a snapshot of the cache.
func (c *cache[T]) status() Status {
	now := c.opts.Clock.Now()
	st := Status{Name: c.name, Kind: c.kind.name, Scope: c.scope, Synced: c.synced()}
	// Counters before the state: a restart sets the state before it counts
	// its gap, so a Status that shows the gap also shows its state.
	c.stats.fill(&st)
	c.mu.Lock()
	st.State, st.Reason, st.StateSince = c.state, c.reason, c.stateSince
	st.Problems = slices.Clone(c.problems)
	c.mu.Unlock()
	var confirmed time.Time
	for i, s := range c.shards {
		st.Objects += len(s.informer.GetStore().ListKeys())
		rv := s.informer.LastSyncResourceVersion()
		s.mu.Lock()
		st.LastEventTime = later(st.LastEventTime, s.lastEvent)
		st.LastProbeTime = later(st.LastProbeTime, s.lastProbe)
		if i == 0 || s.lastConfirmed.Before(confirmed) {
			confirmed = s.lastConfirmed
		}
		st.LastResourceVersion = maxRV(st.LastResourceVersion, rv)
		st.ServerResourceVersion = maxRV(st.ServerResourceVersion, maxRV(s.serverRV, rv))
		s.mu.Unlock()
	}
	if !confirmed.IsZero() {
		st.LagSeconds = now.Sub(confirmed).Seconds()
	}
	sortProblems(st.Problems)
	st.StuckHandlers = c.handlers.stuck(now, c.opts.HandlerStallThreshold)
	return st
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// healthz fails only when the cache has failed or stopped, so that a
// process restart can help.
func (c *cache[T]) healthz(*http.Request) error {
	c.mu.Lock()
	state, reason := c.state, c.reason
	c.mu.Unlock()
	if state == StateFailed || state == StateStopped {
		return fmt.Errorf("reflector %s %s: %s", c.name, state, reason)
	}
	return nil
}

// readyz passes only while the cache is synced and healthy.
func (c *cache[T]) readyz(*http.Request) error {
	c.mu.Lock()
	state, reason := c.state, c.reason
	c.mu.Unlock()
	if state != StateSynced {
		return fmt.Errorf("reflector %s %s: %s", c.name, state, reason)
	}
	return nil
}
