package reflector

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// Registry shares Reflectors within a process: every Acquire for the same
// client, kind and scope gets the same running Reflector, so there is one
// watch per scope however many spawners ask. The Reflector stops when the
// last user releases it. Options other than the scope are taken from the
// first Acquire.
type Registry struct {
	mu      sync.Mutex
	entries map[registryKey]*registryEntry
}

type registryKey struct {
	client kubernetes.Interface
	kind   string
	scope  string
}

type registryEntry struct {
	reflector any
	refs      int
	stop      func()
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{entries: map[registryKey]*registryEntry{}} }

// DefaultRegistry is the process-wide Registry used by AcquirePods.
var DefaultRegistry = NewRegistry()

// Acquire returns the running Reflector for client, kind and opts.Scope in
// reg, creating and starting it if needed, and a release function
// (idempotent) to call when done. The Reflector outlives ctx: it runs
// until its last user releases it; ctx only supplies the logger.
func Acquire[T Object](ctx context.Context, reg *Registry, client kubernetes.Interface, kind Kind[T], opts Options) (*Reflector[T], func(), error) {
	if reg == nil {
		return nil, nil, fmt.Errorf("%w: nil Registry", ErrInvalidArgument)
	}
	if client == nil || !reflect.TypeOf(client).Comparable() {
		return nil, nil, fmt.Errorf("%w: the client must be a non-nil pointer type to be shared", ErrInvalidArgument)
	}
	normalized, err := opts.Scope.normalize()
	if err != nil {
		return nil, nil, err
	}
	key := registryKey{client: client, kind: kind.Name, scope: normalized.String()}

	reg.mu.Lock()
	defer reg.mu.Unlock()
	e, ok := reg.entries[key]
	if !ok {
		r, err := New(client, kind, opts)
		if err != nil {
			return nil, nil, err
		}
		if err := r.Start(context.WithoutCancel(ctx)); err != nil {
			return nil, nil, err
		}
		e = &registryEntry{reflector: r, stop: r.Stop}
		reg.entries[key] = e
	}
	r, ok := e.reflector.(*Reflector[T])
	if !ok {
		return nil, nil, fmt.Errorf("%w: kind %q registered with another object type", ErrInvalidArgument, kind.Name)
	}
	e.refs++
	var once sync.Once
	release := func() {
		once.Do(func() {
			reg.mu.Lock()
			e.refs--
			last := e.refs == 0
			if last {
				delete(reg.entries, key)
			}
			reg.mu.Unlock()
			if last {
				e.stop()
			}
		})
	}
	return r, release, nil
}

// AcquirePods is Acquire on DefaultRegistry for pods.
func AcquirePods(ctx context.Context, client kubernetes.Interface, opts Options) (*Reflector[*corev1.Pod], func(), error) {
	return Acquire(ctx, DefaultRegistry, client, Pods, opts)
}

// Len reports how many Reflectors are running in reg.
func (reg *Registry) Len() int {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return len(reg.entries)
}
