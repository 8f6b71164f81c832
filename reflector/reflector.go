package reflector

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/pager"
	"k8s.io/klog/v2"
)

// Reflector is a shared, self-healing cache of one kind of object in one
// scope. Create it with [New] or [NewForConfig], or share one per process
// with a [Registry]. All methods are safe for concurrent use.
type Reflector[T Object] struct {
	client kubernetes.Interface
	kind   Kind[T]
	opts   Options
	logger klog.Logger
	// closeConns closes every connection of the Reflector's own transport;
	// nil when the client was given (see NewForConfig).
	closeConns func()

	labelSel labels.Selector
	fieldSel fields.Selector
	shards   []*shard[T]
	byNS     map[string]*shard[T]

	stats    *stats
	subs     subscribers
	handlers handlerSet
	metrics  *collector

	mu         sync.Mutex
	started    bool
	stopped    bool
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	state      State
	reason     string
	stateSince time.Time
}

// New returns a Reflector of kind over client. It does nothing until Start.
func New[T Object](client kubernetes.Interface, kind Kind[T], opts Options) (*Reflector[T], error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidOptions)
	}
	if kind.List == nil || kind.Watch == nil || kind.Get == nil || kind.NewObject == nil {
		return nil, fmt.Errorf("%w: incomplete Kind %q", ErrInvalidOptions, kind.Name)
	}
	opts, err := opts.withDefaults(kind.Name)
	if err != nil {
		return nil, err
	}
	r := &Reflector[T]{
		client:     client,
		kind:       kind,
		opts:       opts,
		logger:     klog.Background(),
		byNS:       map[string]*shard[T]{},
		stats:      newStats(),
		state:      StateStarting,
		reason:     "not started",
		stateSince: opts.Clock.Now(),
	}
	if opts.Logger != nil {
		r.logger = *opts.Logger
	}
	r.labelSel, _ = labels.Parse(opts.Scope.LabelSelector)
	r.fieldSel, _ = fields.ParseSelector(opts.Scope.FieldSelector)
	r.subs.init()
	transform := r.transform()
	for _, ns := range opts.Scope.namespaces() {
		s := &shard[T]{r: r, namespace: ns, probeNow: make(chan struct{}, 1), auditNow: make(chan struct{}, 1)}
		s.lw = &listWatcher[T]{s: s}
		s.informer = cache.NewSharedIndexInformerWithOptions(s.lw, kind.NewObject(), cache.SharedIndexInformerOptions{
			Indexers:          cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			ObjectDescription: kind.Name,
		})
		if err := s.informer.SetTransform(transform); err != nil {
			return nil, err
		}
		if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { r.subs.notifyObject(obj) },
			UpdateFunc: func(_, obj any) { r.subs.notifyObject(obj) },
			DeleteFunc: func(obj any) { r.subs.notifyObject(obj) },
		}); err != nil {
			return nil, err
		}
		r.shards = append(r.shards, s)
		r.byNS[ns] = s
	}
	r.metrics = newCollector(r)
	return r, nil
}

// transform composes the default managedFields stripping with the user's.
func (r *Reflector[T]) transform() cache.TransformFunc {
	user := r.opts.Transform
	keep := r.opts.KeepManagedFields
	return func(obj any) (any, error) {
		if !keep {
			var err error
			if obj, err = StripManagedFields(obj); err != nil {
				return nil, err
			}
		}
		if user != nil {
			return user(obj)
		}
		return obj, nil
	}
}

// StripManagedFields drops metadata.managedFields, which no spawner reads
// and which is about a quarter of a cached pod's memory. It is idempotent
// and leaves objects without metadata untouched.
func StripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Name is the Reflector's name (Options.Name or the default).
func (r *Reflector[T]) Name() string { return r.opts.Name }

// Scope is the normalized scope.
func (r *Reflector[T]) Scope() Scope { return r.opts.Scope }

// Start runs the informers and the monitors until Stop or ctx ends. The
// logger in ctx is used unless Options.Logger is set. Start returns at
// once; use WaitForSync to wait for the initial list. It returns
// ErrStopped after Stop, and is a no-op when already started.
func (r *Reflector[T]) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	if r.started {
		return nil
	}
	r.started = true
	if r.opts.Logger == nil {
		r.logger = klog.FromContext(ctx)
	}
	r.logger = r.logger.WithValues("reflector", r.opts.Name)
	ctx, r.cancel = context.WithCancel(klog.NewContext(ctx, r.logger))
	if r.opts.Registerer != nil {
		if err := r.opts.Registerer.Register(r.metrics); err != nil {
			r.logger.Error(err, "Cannot register metrics")
		}
	}
	r.reason = "waiting for the initial list"
	for _, s := range r.shards {
		r.wg.Add(3)
		go func() { defer r.wg.Done(); s.informer.RunWithContext(ctx) }()
		go func() {
			defer r.wg.Done()
			if cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
				s.mu.Lock()
				s.lastConfirmed = s.now() // a fresh list is as confirmed as it gets
				s.mu.Unlock()
				r.updateState()
			}
		}()
		go func() { defer r.wg.Done(); s.monitor(ctx) }()
	}
	go func() {
		<-ctx.Done()
		r.Stop()
	}()
	return nil
}

// Stop stops the watches and monitors and waits for them. Readers then go
// to the API server. Idempotent.
func (r *Reflector[T]) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
	if r.opts.Registerer != nil {
		r.opts.Registerer.Unregister(r.metrics)
	}
	r.updateState()
}

// WaitForSync blocks until every namespace in scope has been listed, the
// Reflector stops (ErrStopped) or ctx ends (ErrNotSynced).
func (r *Reflector[T]) WaitForSync(ctx context.Context) error {
	// Polling, not timing: the real clock, so fake clocks need no stepping.
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		if r.isStopped() {
			return ErrStopped
		}
		if r.synced() {
			r.updateState() // so that Status and Readyz agree at once
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNotSynced, context.Cause(ctx))
		case <-ticker.C:
		}
	}
}

// State is the current state, cheaper than Status.
func (r *Reflector[T]) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// healthy is Status().Healthy() without building a Status: the read path
// is hot.
func (r *Reflector[T]) healthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state == StateSynced
}

func (r *Reflector[T]) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

func (r *Reflector[T]) synced() bool {
	for _, s := range r.shards {
		if !s.informer.HasSynced() {
			return false
		}
	}
	return true
}

// shardFor returns the shard serving namespace.
func (r *Reflector[T]) shardFor(namespace string) (*shard[T], error) {
	if s, ok := r.byNS[""]; ok {
		return s, nil
	}
	if s, ok := r.byNS[namespace]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w: %q is not in %s", ErrOutOfScope, namespace, r.opts.Scope)
}

// Get returns the object namespace/name. It answers from the cache only
// when the Reflector is synced and healthy and has the object; otherwise
// it asks the API server. Absence is only ever reported by the API server:
// the error then satisfies apierrors.IsNotFound and the Source is
// SourceAPI. An object the API server has but a healthy cache lacks is
// evidence of a gap: it is counted and triggers a probe.
func (r *Reflector[T]) Get(ctx context.Context, namespace, name string) (T, Source, error) {
	var zero T
	if namespace == "" || name == "" {
		return zero, "", fmt.Errorf("%w: Get needs a namespace and a name (got %q/%q)", ErrInvalidArgument, namespace, name)
	}
	s, err := r.shardFor(namespace)
	if err != nil {
		return zero, "", err
	}
	key := namespace + "/" + name
	healthy := r.healthy()
	if healthy {
		if obj, ok, _ := s.informer.GetIndexer().GetByKey(key); ok {
			if t, ok := obj.(T); ok {
				r.stats.lookup(SourceCache, "found")
				return t, SourceCache, nil
			}
		}
	}
	obj, err := r.kind.Get(ctx, r.client, namespace, name)
	switch {
	case apierrors.IsNotFound(err):
		r.stats.lookup(SourceAPI, "not_found")
		return zero, SourceAPI, err
	case err != nil:
		r.stats.lookup(SourceAPI, "error")
		return zero, SourceAPI, fmt.Errorf("reflector: get %s %s from the API server: %w", r.kind.Name, key, err)
	}
	r.stats.lookup(SourceAPI, "found")
	if healthy && r.inScope(obj) {
		s.checkAPIOnly(key, obj)
	}
	return obj, SourceAPI, nil
}

// checkAPIOnly looks at an object the API server returned while the
// healthy cache lacked it. If the cache has already seen a newer
// resourceVersion, the watch skipped the object's change: a gap for sure.
// Otherwise the change may simply be in flight: a probe will tell.
func (s *shard[T]) checkAPIOnly(key string, obj T) {
	if _, ok, _ := s.informer.GetIndexer().GetByKey(key); ok {
		return // arrived meanwhile
	}
	if rvAtLeast(s.informer.LastSyncResourceVersion(), obj.GetResourceVersion()) {
		s.r.stats.gap(GapAPIOnly)
		s.requestAudit()
	}
	s.requestProbe()
}

// inScope reports whether obj matches the scope's selectors.
func (r *Reflector[T]) inScope(obj T) bool {
	if !r.labelSel.Matches(labels.Set(obj.GetLabels())) {
		return false
	}
	if r.fieldSel.Empty() {
		return true
	}
	if r.kind.Fields == nil {
		return false
	}
	return r.fieldSel.Matches(r.kind.Fields(obj))
}

// List returns the objects in namespace ("" for the whole scope) that match
// selector (nil for all), from the cache when it is healthy, else from the
// API server (paginated). The order is unspecified.
func (r *Reflector[T]) List(ctx context.Context, namespace string, selector labels.Selector) ([]T, Source, error) {
	if selector == nil {
		selector = labels.Everything()
	}
	shards := r.shards
	if namespace != "" {
		s, err := r.shardFor(namespace)
		if err != nil {
			return nil, "", err
		}
		shards = []*shard[T]{s}
	}
	var out []T
	if r.healthy() {
		for _, s := range shards {
			var objs []any
			if namespace != "" {
				objs, _ = s.informer.GetIndexer().ByIndex(cache.NamespaceIndex, namespace)
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
	if r.opts.Scope.LabelSelector != "" {
		sel = joinSelectors(r.opts.Scope.LabelSelector, sel)
	}
	for _, s := range shards {
		ns := s.namespace
		if namespace != "" {
			ns = namespace
		}
		p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return r.kind.List(ctx, r.client, ns, opts)
		})
		err := p.EachListItem(ctx, metav1.ListOptions{LabelSelector: sel, FieldSelector: r.opts.Scope.FieldSelector}, func(obj runtime.Object) error {
			if t, ok := obj.(T); ok {
				out = append(out, t)
			}
			return nil
		})
		if err != nil {
			return nil, SourceAPI, fmt.Errorf("reflector: list %s from the API server: %w", r.kind.Name, err)
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

// Notify returns a channel that receives a signal whenever namespace/name
// is added, updated or deleted in the cache, and whenever the Reflector's
// state changes. Signals are coalesced (capacity one) and never block the
// cache: after a signal, read the current state with Get. cancel
// unsubscribes; it is idempotent.
func (r *Reflector[T]) Notify(namespace, name string) (<-chan struct{}, func()) {
	return r.subs.subscribe(namespace + "/" + name)
}

// stateKey is the subscription key for state changes only: no object key
// can contain a NUL byte.
const stateKey = "\x00state"

// NotifyState returns a channel that receives a signal whenever the
// Reflector's state changes (coalesced, capacity one). cancel unsubscribes.
func (r *Reflector[T]) NotifyState() (<-chan struct{}, func()) {
	return r.subs.subscribe(stateKey)
}

// updateState recomputes the state from the shards, and on a change logs
// it, wakes every subscriber and, on entering failed, calls OnFailure.
func (r *Reflector[T]) updateState() {
	now := r.opts.Clock.Now()
	state, reason := StateSynced, ""
	var earliest time.Time
	r.mu.Lock()
	stopped := r.stopped
	started := r.started
	r.mu.Unlock()
	switch {
	case stopped:
		state, reason = StateStopped, "stopped"
	case !started:
		state, reason = StateStarting, "not started"
	default:
		for _, s := range r.shards {
			s.mu.Lock()
			if s.problem != "" && (earliest.IsZero() || s.problemSince.Before(earliest)) {
				earliest, reason = s.problemSince, s.problem
			}
			s.mu.Unlock()
		}
		problem := reason
		for _, s := range r.shards {
			if !s.informer.HasSynced() {
				state, reason = StateStarting, fmt.Sprintf("waiting for the initial list of namespace %q", s.namespace)
				if problem != "" {
					reason += ": " + problem
				}
				break
			}
		}
		if !earliest.IsZero() {
			if state == StateSynced {
				state = StateDegraded
			}
			if now.Sub(earliest) >= r.opts.FailureTimeout {
				state = StateFailed
				reason = fmt.Sprintf("not recovered for %s: %s", now.Sub(earliest).Round(time.Second), problem)
			}
		}
	}
	r.mu.Lock()
	changed := state != r.state
	if changed {
		r.state, r.stateSince = state, now
	}
	r.reason = reason
	r.mu.Unlock()
	if !changed {
		return
	}
	r.logger.Info("Reflector state changed", "state", state, "reason", reason)
	r.subs.notifyAll()
	if state == StateFailed && r.opts.OnFailure != nil {
		st := r.Status()
		go r.opts.OnFailure(st)
	}
}

// Status returns a snapshot of the Reflector's state and counters.
func (r *Reflector[T]) Status() Status {
	now := r.opts.Clock.Now()
	st := Status{Name: r.opts.Name, Kind: r.kind.Name, Scope: r.opts.Scope, Synced: r.synced()}
	r.mu.Lock()
	st.State, st.Reason, st.StateSince = r.state, r.reason, r.stateSince
	r.mu.Unlock()
	var confirmed time.Time
	for i, s := range r.shards {
		st.Objects += len(s.informer.GetStore().ListKeys())
		rv := s.informer.LastSyncResourceVersion()
		s.mu.Lock()
		if s.lastEvent.After(st.LastEventTime) {
			st.LastEventTime = s.lastEvent
		}
		if s.lastProbe.After(st.LastProbeTime) {
			st.LastProbeTime = s.lastProbe
		}
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
	r.stats.fill(&st)
	st.StuckHandlers = r.handlers.stuck(now, r.opts.HandlerStallThreshold)
	return st
}

// Healthz is a liveness check with controller-runtime's healthz.Checker
// signature: it fails only when the Reflector has failed or stopped, so a
// process restart can help.
func (r *Reflector[T]) Healthz(_ *http.Request) error {
	st := r.Status()
	if st.State == StateFailed || st.State == StateStopped {
		return fmt.Errorf("reflector %s %s: %s", st.Name, st.State, st.Reason)
	}
	return nil
}

// Readyz is a readiness check: it passes only while the Reflector is
// synced and healthy.
func (r *Reflector[T]) Readyz(_ *http.Request) error {
	st := r.Status()
	if !st.Healthy() {
		return fmt.Errorf("reflector %s %s: %s", st.Name, st.State, st.Reason)
	}
	return nil
}

// sortedKeys is a helper for deterministic output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
