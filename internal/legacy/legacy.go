package legacy

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// Options are KubeSpawner's reflector knobs.
type Options struct {
	Namespace     string
	LabelSelector string
	// TimeoutSeconds is the watch's server-side timeout (KubeSpawner: 10).
	TimeoutSeconds int64
	// RestartEvery restarts the loop unconditionally (KubeSpawner: 30s).
	RestartEvery time.Duration
	// RequestTimeout is the client-side timeout of each request
	// (KubeSpawner today: 60s; in 2018: none, which is zero here).
	RequestTimeout time.Duration
}

// Modern returns today's KubeSpawner defaults.
func Modern(namespace, selector string) Options {
	return Options{Namespace: namespace, LabelSelector: selector, TimeoutSeconds: 10, RestartEvery: 30 * time.Second, RequestTimeout: 60 * time.Second}
}

// Of2018 returns the 2018 behaviour: no client-side request timeout and
// no unconditional restart (today's Python loop checks its restart time
// only when an event arrives, so a silent stream is never restarted
// either).
func Of2018(namespace, selector string) Options {
	o := Modern(namespace, selector)
	o.RequestTimeout = 0
	o.RestartEvery = 0
	return o
}

// Reflector is the replica. Create with New, run with Run.
type Reflector struct {
	client kubernetes.Interface
	opts   Options

	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	synced  bool
	stopped bool
}

// JSONConfig returns a copy of cfg that speaks JSON, as the Python client
// does.
func JSONConfig(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.ContentType = "application/json"
	c.AcceptContentTypes = "application/json"
	return c
}

// New returns a replica reading through client (use JSONConfig for a
// faithful byte count).
func New(client kubernetes.Interface, opts Options) *Reflector {
	return &Reflector{client: client, opts: opts, pods: map[string]*corev1.Pod{}}
}

// Run runs the loop until ctx ends or it gives up.
func (r *Reflector) Run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.listAndWatch(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			delay = 100 * time.Millisecond
			continue
		}
		logger.Info("Error when watching resources, retrying", "delay", delay, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay *= 2
		if delay > 30*time.Second {
			logger.Info("Watching resources never recovered, giving up")
			r.mu.Lock()
			r.stopped = true
			r.mu.Unlock()
			return
		}
	}
}

func (r *Reflector) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.opts.RequestTimeout > 0 {
		return context.WithTimeout(ctx, r.opts.RequestTimeout)
	}
	return context.WithCancel(ctx)
}

func (r *Reflector) listAndWatch(ctx context.Context) error {
	lctx, cancel := r.reqCtx(ctx)
	list, err := r.client.CoreV1().Pods(r.opts.Namespace).List(lctx, metav1.ListOptions{LabelSelector: r.opts.LabelSelector, ResourceVersion: "0"})
	cancel()
	if err != nil {
		return err
	}
	pods := make(map[string]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pods[list.Items[i].Name] = &list.Items[i]
	}
	r.mu.Lock()
	r.pods, r.synced = pods, true
	r.mu.Unlock()

	wctx, cancel := r.reqCtx(ctx)
	defer cancel()
	if r.opts.RestartEvery > 0 {
		var c2 context.CancelFunc
		wctx, c2 = context.WithTimeout(wctx, r.opts.RestartEvery)
		defer c2()
	}
	timeout := r.opts.TimeoutSeconds
	w, err := r.client.CoreV1().Pods(r.opts.Namespace).Watch(wctx, metav1.ListOptions{
		LabelSelector: r.opts.LabelSelector, ResourceVersion: list.ResourceVersion, TimeoutSeconds: &timeout,
	})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok {
			if ev.Type == watch.Error {
				return errors.New("watch error event")
			}
			continue
		}
		r.mu.Lock()
		if ev.Type == watch.Deleted {
			delete(r.pods, pod.Name)
		} else {
			r.pods[pod.Name] = pod
		}
		r.mu.Unlock()
	}
	// The watch ended (server timeout, restart, request timeout): relist.
	return nil
}

// Get reads the cache only, as KubeSpawner does.
func (r *Reflector) Get(name string) (*corev1.Pod, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pods[name]
	return p, ok
}

// Names lists the cached pod names, sorted.
func (r *Reflector) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.pods))
}

// Synced reports whether a first list has completed. KubeSpawner's users
// read the cache whether or not it has.
func (r *Reflector) Synced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

// GaveUp reports whether the loop ended after too many errors.
func (r *Reflector) GaveUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}
