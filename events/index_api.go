package events

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/internal/cachehook"
	"github.com/kubespawn/kubespawn/internal/slim"
	"github.com/kubespawn/kubespawn/reflector"
)

// Index is the per-pod index of the factory's shared event watch for one
// scope, and the source of per-pod progress Streams. Get it with IndexFor.
// All methods are safe for concurrent use.
type Index struct {
	cache   *reflector.EventCache
	hooks   cachehook.Hooks
	client  kubernetes.Interface
	clock   clock.WithTicker
	opts    Options
	idx     *index
	handler reflector.HandlerRegistration
	metrics *collector
}

// companionKey is the Index's key among its EventCache's companions.
type companionKey struct{}

// IndexFor returns the Index of the factory's event watch for scope,
// creating both on first use: every caller in a process asking for the same scope
// shares one watch and one index. Asking again with different Options is
// an error (ErrInvalidOptions), never a silent first-caller-wins. The
// Index lives as long as the factory.
func IndexFor(f *reflector.Factory, scope reflector.Scope, opts Options) (*Index, error) {
	if f == nil {
		return nil, fmt.Errorf("%w: nil reflector.Factory", reflector.ErrInvalidArgument)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ec, err := f.Events(scope)
	if err != nil {
		return nil, err
	}
	v, err := cachehook.Of(ec).Companion(companionKey{}, func() (any, error) { return newIndex(f, ec, opts) })
	if err != nil {
		return nil, err
	}
	x := v.(*Index)
	if x.opts != opts {
		return nil, fmt.Errorf("%w: the events of %s are already indexed with %+v, not %+v", reflector.ErrInvalidOptions, ec.Scope(), x.opts, opts)
	}
	return x, nil
}

func newIndex(f *reflector.Factory, ec *reflector.EventCache, opts Options) (*Index, error) {
	fo := f.Options()
	x := &Index{
		cache:  ec,
		hooks:  cachehook.Of(ec),
		client: f.Client(),
		clock:  fo.Clock,
		opts:   opts,
		idx:    newIndexStore(fo.Clock, opts.PerPodLimit, opts.TTL),
	}
	reg, err := ec.AddEventHandler(x.idx.handler())
	if err != nil {
		return nil, err
	}
	x.handler = reg
	x.metrics = newCollector(x)
	if r := fo.Registerer; r != nil {
		if err := r.Register(x.metrics); err != nil {
			reg.Remove()
			return nil, fmt.Errorf("events: registering the metrics of %s: %w", ec.Name(), err)
		}
		// Unregistered when the factory stops, as the watch's own are.
		x.hooks.Go(context.Background(), func(ctx context.Context) {
			<-ctx.Done()
			r.Unregister(x.metrics)
		})
	}
	return x, nil
}

// Status is the event watch's status (see reflector.Status).
func (x *Index) Status() reflector.Status { return x.cache.Status() }

// State is the event watch's state.
func (x *Index) State() reflector.State { return x.cache.State() }

// WaitForSync blocks until the event watch has listed its scope and the
// index holds the result, the factory stops (reflector.ErrStopped) or ctx
// ends (reflector.ErrNotSynced).
func (x *Index) WaitForSync(ctx context.Context) error {
	if err := x.cache.WaitForSync(ctx); err != nil {
		return err
	}
	ch, cancel := x.cache.NotifyState()
	defer cancel()
	t := x.clock.NewTicker(pollInterval)
	defer t.Stop()
	for !x.handler.HasSynced() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", reflector.ErrNotSynced, context.Cause(ctx))
		case <-ch:
			if x.cache.State() == reflector.StateStopped {
				return reflector.ErrStopped
			}
		case <-t.C():
		}
	}
	return nil
}

// Scope is the event watch's scope (involvedObject.kind=Pod included).
func (x *Index) Scope() reflector.Scope { return x.cache.Scope() }

// Stats returns the index's size and counters.
func (x *Index) Stats() IndexStats { return x.idx.stats() }

// healthy reports whether Streams may read the index: the watch is synced
// and healthy and the index has its initial list.
func (x *Index) healthy() bool {
	return x.cache.State() == reflector.StateSynced && x.handler.HasSynced()
}

// checkPod validates pod against the arguments and the scope.
func (x *Index) checkPod(pod PodRef) error {
	if pod.Namespace == "" || pod.Name == "" || pod.UID == "" {
		return fmt.Errorf("%w: PodRef needs a namespace, a name and a UID (got %q/%q uid %q)", reflector.ErrInvalidArgument, pod.Namespace, pod.Name, pod.UID)
	}
	if !x.cache.Scope().Contains(pod.Namespace) {
		return fmt.Errorf("%w: %q is not in %s", reflector.ErrOutOfScope, pod.Namespace, x.cache.Scope())
	}
	return nil
}

// Events returns the events of pod held in the index (at most PerPodLimit,
// the newest), oldest first by last occurrence (kubectl's order), so a
// failure report can show the tail. The events are copies. It reads only
// the index: with a degraded watch it may lag; ListEvents falls back to
// the API server. It returns nil for an invalid PodRef.
func (x *Index) Events(pod PodRef) []*corev1.Event {
	if x.checkPod(pod) != nil {
		return nil
	}
	items := x.idx.list(pod.UID)
	out := make([]*corev1.Event, 0, len(items))
	for _, it := range items {
		out = append(out, it.ev.DeepCopy())
	}
	return out
}

// ListEvents is Events that never serves a stale index: while the event watch is
// not healthy it lists the pod's events from the API server instead. The
// Source says which answered.
func (x *Index) ListEvents(ctx context.Context, pod PodRef) ([]*corev1.Event, reflector.Source, error) {
	if err := x.checkPod(pod); err != nil {
		return nil, "", err
	}
	if x.healthy() {
		return x.Events(pod), reflector.SourceCache, nil
	}
	items, err := x.listAPI(ctx, pod)
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
func (x *Index) listAPI(ctx context.Context, pod PodRef) ([]*item, error) {
	// ResourceVersion "0": served from the apiserver's watch cache, not
	// etcd. Every open stream polls while the watch is degraded; the
	// apiserver's cache is unaffected by our watch's stall, and a full
	// consistent read per stream would turn one stalled watch into etcd
	// load (KubeSpawner's issue #753).
	list, err := x.client.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{
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
		out = append(out, newItem(slim.Event(e), uint64(i+1), 0))
	}
	return out, nil
}

// ForgetPod drops the pod's entry from the index at once. A spawner calls
// it once the pod is gone for good (its Stream closed, its deletion
// confirmed); otherwise the entry is evicted TTL after its last event.
// Events arriving later for that UID start a new entry.
func (x *Index) ForgetPod(uid types.UID) { x.idx.forget(uid) }
