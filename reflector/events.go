package reflector

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/cachehook"
)

// EventCache is the factory's shared cache of the core/v1 Events about
// pods in one scope, slimmed to what progress reports read: metadata
// name, namespace, uid, resourceVersion and creationTimestamp,
// involvedObject, reason, message, type, count, firstTimestamp,
// lastTimestamp, eventTime, series, source, reportingController and
// reportingInstance. Package events builds its per-pod index and progress
// Streams on it; most programs use package events rather than this type.
type EventCache struct{ c *cache[*corev1.Event] }

// podEventsSelector is ANDed with every event scope's field selector: only
// events about pods are listed and watched.
const podEventsSelector = "involvedObject.kind=Pod"

// Events returns the factory's EventCache for scope, creating it on first
// use. The scope's field selector is ANDed with involvedObject.kind=Pod; a
// selector asking for another involvedObject.kind is rejected with
// ErrInvalidOptions.
func (f *Factory) Events(scope Scope) (*EventCache, error) {
	sel, err := podEventsScopeSelector(scope.FieldSelector)
	if err != nil {
		return nil, err
	}
	scope.FieldSelector = sel
	scope, err = scope.normalize()
	if err != nil {
		return nil, err
	}
	v, err := f.getOrCreate("events "+scope.String(), func(client kubernetes.Interface, closeConns func(), logger klog.Logger) (*factoryEntry, error) {
		c, err := newCache(eventKind, f.opts, scope, client, closeConns, logger)
		if err != nil {
			return nil, err
		}
		return &factoryEntry{entry: c, public: &EventCache{c: c}}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*EventCache), nil
}

// podEventsScopeSelector ANDs user with podEventsSelector, in a canonical
// order (ours first, the user's terms sorted) so that equal scopes are
// shared.
func podEventsScopeSelector(user string) (string, error) {
	sel, err := fields.ParseSelector(user)
	if err != nil {
		return "", fmt.Errorf("%w: field selector %q: %v", ErrInvalidOptions, user, err)
	}
	var terms []string
	for _, r := range sel.Requirements() {
		if r.Field == "involvedObject.kind" {
			if (r.Operator == selection.Equals || r.Operator == selection.DoubleEquals) && r.Value == "Pod" {
				continue // already ours
			}
			return "", fmt.Errorf("%w: field selector %q: event caches only watch events about pods (%s)", ErrInvalidOptions, user, podEventsSelector)
		}
		t := fields.OneTermEqualSelector(r.Field, r.Value)
		if r.Operator == selection.NotEquals {
			t = fields.OneTermNotEqualSelector(r.Field, r.Value)
		}
		terms = append(terms, t.String())
	}
	slices.Sort(terms)
	terms = slices.Compact(terms)
	return strings.Join(append([]string{podEventsSelector}, terms...), ","), nil
}

// AddEventHandler registers handler on the cache (see
// PodCache.AddEventHandler).
func (e *EventCache) AddEventHandler(handler toolscache.ResourceEventHandler) (HandlerRegistration, error) {
	return e.c.addEventHandler(handler)
}

// NotifyState returns a channel that receives a coalesced signal whenever
// the cache's state changes. cancel unsubscribes.
func (e *EventCache) NotifyState() (<-chan struct{}, func()) {
	return e.c.stateSubs.Subscribe(struct{}{})
}

// Package events builds its index and Streams on the cache through
// internal/cachehook, not through this package's API.
func init() {
	cachehook.Register(func(v any) (cachehook.Hooks, bool) {
		e, ok := v.(*EventCache)
		if !ok || e == nil {
			return cachehook.Hooks{}, false
		}
		return cachehook.Hooks{Companion: e.c.companion, Go: e.c.goFor}, true
	})
}

// WaitForSync: see PodCache.WaitForSync.
func (e *EventCache) WaitForSync(ctx context.Context) error { return e.c.waitForSync(ctx) }

// State is the current state, cheaper than Status.
func (e *EventCache) State() State { return e.c.currentState() }

// Status returns a snapshot of the cache's state and counters.
func (e *EventCache) Status() Status { return e.c.status() }

// Healthz: see PodCache.Healthz.
func (e *EventCache) Healthz(req *http.Request) error { return e.c.healthz(req) }

// Readyz: see PodCache.Readyz.
func (e *EventCache) Readyz(req *http.Request) error { return e.c.readyz(req) }

// Scope is the cache's normalized scope (involvedObject.kind=Pod included).
func (e *EventCache) Scope() Scope { return e.c.scope }

// Name is the cache's name in logs and metrics ("events <scope>").
func (e *EventCache) Name() string { return e.c.name }
