package reflector

import (
	"context"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/slim"
)

// PodCache is the factory's shared, self-healing cache of the pods in one
// scope. Get one with [Factory.Pods]; every user of the factory asking for
// the same scope gets the same PodCache, and its lifetime is the
// factory's. All methods are safe for concurrent use.
//
// Its pods are the slim view unless Options.FullPods is set: exactly what
// the packages of this repository read of a pod and every field the API
// server lets pods be selected by. It keeps
//
//   - metadata: name, generateName, namespace, uid, resourceVersion,
//     generation, creationTimestamp, deletionTimestamp,
//     deletionGracePeriodSeconds, labels, annotations (all but
//     kubectl.kubernetes.io/last-applied-configuration) and
//     ownerReferences;
//   - spec: nodeName, restartPolicy, schedulerName, serviceAccountName,
//     hostNetwork, terminationGracePeriodSeconds, and of each container
//     and init container its name, image and ports;
//   - status: phase, conditions, reason, message, nominatedNodeName,
//     hostIP, hostIPs, podIP, podIPs, startTime, and of each container and
//     init container status its name, state, lastState, ready, started,
//     restartCount, image, imageID and containerID;
//
// and drops the rest (managedFields, finalizers, the environment, command,
// resources, volumes, probes, security contexts, affinity, the QoS class,
// …): about a fifth of a full pod's memory (BENCHMARKS.md, P3). Answers
// from the API server are slimmed alike, so a pod looks the same whichever
// source answered; the full object is one explicit API read away, through
// [Factory.Client]. Which read needs each kept field is written beside the
// slimming code (internal/slim).
type PodCache struct{ c *cache[*corev1.Pod] }

// Pods returns the factory's PodCache for scope, creating it on first use
// (and starting it if the factory has started). Scopes that normalize to
// the same namespaces and selectors share one cache. Its pods are the slim
// view that [PodCache] describes unless Options.FullPods is set. It returns ErrInvalidOptions for a bad scope,
// ErrStopped after the factory's lifetime, or the metrics registration
// error.
func (f *Factory) Pods(scope Scope) (*PodCache, error) {
	scope, err := scope.normalize()
	if err != nil {
		return nil, err
	}
	v, err := f.getOrCreate("pods "+scope.String(), func(client kubernetes.Interface, closeConns func(), logger klog.Logger) (*factoryEntry, error) {
		k := podKind
		if !f.opts.FullPods {
			k.transform = slim.PodTransform
		}
		c, err := newCache(k, f.opts, scope, client, closeConns, logger)
		if err != nil {
			return nil, err
		}
		return &factoryEntry{entry: c, public: &PodCache{c: c}}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*PodCache), nil
}

// Get returns the pod namespace/name. It answers from the cache only when
// the cache is synced and healthy and has the pod; otherwise it asks the
// API server (with a deadline of 3×StallTimeout within ctx). Absence is
// only ever reported by the API server: the error then satisfies
// apierrors.IsNotFound and the Source is SourceAPI. A pod the API server
// has but a healthy cache lacks is evidence of a gap: it is counted and
// makes the cache check itself at once. A pod from the cache is shared
// (with the cache, and parts of it with other cached pods), as
// an informer's are: DeepCopy it before changing it.
func (p *PodCache) Get(ctx context.Context, namespace, name string) (*corev1.Pod, Source, error) {
	return p.c.get(ctx, namespace, name)
}

// List returns the pods in namespace ("" for the whole scope) that match
// selector (nil for all), from the cache when it is healthy, else from the
// API server (paginated). The order is unspecified. An error is never an
// empty list: a cache that cannot answer says so. Pods from the cache are
// shared, as Get's are.
func (p *PodCache) List(ctx context.Context, namespace string, selector labels.Selector) ([]*corev1.Pod, Source, error) {
	return p.c.list(ctx, namespace, selector)
}

// Notify returns a channel that receives a signal whenever namespace/name
// is added, updated or deleted in the cache, and whenever the cache's
// state changes. Signals are coalesced (at most one pending) and never
// block the cache: after a signal, read the current state with Get.
// cancel unsubscribes; it is idempotent.
func (p *PodCache) Notify(namespace, name string) (<-chan struct{}, func()) {
	return p.c.objSubs.Subscribe(namespace + "/" + name)
}

// NotifyState returns a channel that receives a coalesced signal whenever
// the cache's state changes. cancel unsubscribes.
func (p *PodCache) NotifyState() (<-chan struct{}, func()) {
	return p.c.stateSubs.Subscribe(struct{}{})
}

// AddEventHandler registers handler on the cache. client-go buffers events
// per handler, so a slow handler delays only itself; one stuck inside a
// call for longer than HandlerStallThreshold is reported in
// Status.StuckHandlers.
func (p *PodCache) AddEventHandler(handler toolscache.ResourceEventHandler) (HandlerRegistration, error) {
	return p.c.addEventHandler(handler)
}

// ExpectWrite tells the cache that the API server just returned pod for a
// write (create, update, patch) or a read, so the server has reached
// pod's resourceVersion. If pod is in scope and the cache has not reached
// that version within CanaryWindow, the cache probes the server at once
// instead of at its next interval: a write that the watch misses is found
// about CanaryWindow plus a second later. Out-of-scope pods are ignored.
// It never blocks.
func (p *PodCache) ExpectWrite(pod *corev1.Pod) { p.c.expectWrite(pod) }

// WaitForSync blocks until the cache has stored its initial list (of every
// namespace in scope) and its State says so, the factory stops
// (ErrStopped) or ctx ends (ErrNotSynced).
func (p *PodCache) WaitForSync(ctx context.Context) error { return p.c.waitForSync(ctx) }

// State is the current state, cheaper than Status.
func (p *PodCache) State() State { return p.c.currentState() }

// Status returns a snapshot of the cache's state and counters.
func (p *PodCache) Status() Status { return p.c.status() }

// Healthz is a liveness check with controller-runtime's healthz.Checker
// signature: it fails only when the cache has failed or stopped.
func (p *PodCache) Healthz(req *http.Request) error { return p.c.healthz(req) }

// Readyz is a readiness check: it passes only while the cache is synced
// and healthy.
func (p *PodCache) Readyz(req *http.Request) error { return p.c.readyz(req) }

// Scope is the cache's normalized scope.
func (p *PodCache) Scope() Scope { return p.c.scope }

// Name is the cache's name in logs and metrics ("pods <scope>").
func (p *PodCache) Name() string { return p.c.name }

func (p *PodCache) String() string { return fmt.Sprintf("PodCache(%s)", p.c.scope) }
