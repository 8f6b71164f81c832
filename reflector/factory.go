package reflector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/connrotation"
	"k8s.io/klog/v2"
)

// Factory is the one entry point of package reflector: configured once
// per process, it owns the API transport of its caches and their lifetime,
// and hands out one shared cache per kind and scope (get-or-create), so a
// process has one watch per resource and scope however many users ask.
//
// Use it like client-go's SharedInformerFactory: create it, ask for
// caches, Start it with the context that is its lifetime, wait for sync,
// and when done cancel that context (or call Shutdown) and let Shutdown
// wait for every goroutine. Caches asked for after Start start at once.
// There is no way to stop one cache: it is shared.
type Factory struct {
	opts Options
	// cfg, when set, builds each cache's own client and transport;
	// otherwise every cache uses client.
	cfg    *rest.Config
	client kubernetes.Interface

	mu      sync.Mutex
	logger  klog.Logger
	entries map[string]*factoryEntry
	order   []*factoryEntry
	started bool
	stopped bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// failMu guards the failure signal apart from mu: a cache reports its
	// entry into failed from its monitor, which mu's holders may wait on.
	failMu   sync.Mutex
	failed   chan struct{} // closed on the first entry of a cache into failed
	failErr  error
	failures int // entries into failed, of every cache
}

// entry is what the factory needs of a cache, whatever its kind.
type entry interface {
	start(ctx context.Context, logger klog.Logger, wg *sync.WaitGroup)
	stop()
	finish()
	status() Status
	healthz(*http.Request) error
	readyz(*http.Request) error
	waitForSync(ctx context.Context) error
	collector() prometheus.Collector
}

type factoryEntry struct {
	entry
	public any // *PodCache or *EventCache
}

func (c *cache[T]) collector() prometheus.Collector { return c.metrics }

// NewFactory returns a Factory whose caches talk to the API server of cfg.
// Each cache gets its own transport, with client-go's connection rotation:
// when a cache recovers from a stalled or hung request it closes every
// connection of its transport, HTTP/1.1 and HTTP/2 alike, so that a dead
// TCP connection is never reused, without touching other caches or the
// client returned by Client. cfg is copied; it is not modified.
//
// Client-side rate limiting: when cfg sets none (QPS 0 and no
// RateLimiter), the factory's clients have none, and the API server's
// priority and fairness (429 with Retry-After, which client-go honours) is
// the limit. client-go's own default, 5 requests a second with bursts of
// 10, would hold a class of 1,000 users starting at once to about 200
// seconds of creates. Set cfg.QPS and cfg.Burst to choose a limit.
func NewFactory(cfg *rest.Config, opts Options) (*Factory, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil rest.Config", ErrInvalidOptions)
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		cfg.QPS = -1 // no client-side limit: the server's priority and fairness decides
	}
	client, err := kubernetes.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	return newFactory(cfg, client, opts)
}

// NewFactoryForClient returns a Factory whose caches all use client: for
// unit tests with a fake clientset, and for callers who must bring their
// own client. Such a factory cannot cut connections: when a watch stalls,
// its request is cancelled (which closes an HTTP/1.1 connection) but a
// dead HTTP/2 connection stays in client's pool until client-go's HTTP/2
// health check (about 45 s) closes it; nor can its probes tell a cut
// connection from the server's close of their watch. Prefer NewFactory.
func NewFactoryForClient(client kubernetes.Interface, opts Options) (*Factory, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidOptions)
	}
	return newFactory(nil, client, opts)
}

func newFactory(cfg *rest.Config, client kubernetes.Interface, opts Options) (*Factory, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &Factory{opts: opts, cfg: cfg, client: client, entries: map[string]*factoryEntry{}, logger: klog.Background(), failed: make(chan struct{})}
	f.opts.onFailure = f.cacheFailed
	if opts.Logger != nil {
		f.logger = *opts.Logger
	}
	return f, nil
}

// Client is a client for the API server the factory's caches watch, for
// the caller's own requests (a spawner's creates and deletes). It has its
// own transport, which the caches' recoveries never close.
func (f *Factory) Client() kubernetes.Interface { return f.client }

// Options are the factory's options with defaults filled in.
func (f *Factory) Options() Options { return f.opts }

// cacheClient returns the client of a new cache and the function that
// closes its connections (nil when the factory was given a client).
func (f *Factory) cacheClient() (kubernetes.Interface, func(), error) {
	if f.cfg == nil {
		return f.client, nil, nil
	}
	cfg := rest.CopyConfig(f.cfg)
	dialer := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	cfg.Dial = dialer.DialContext
	// Probes need to tell a server's close of their watch from a cut.
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return streamEndTransport{rt} })
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	return client, dialer.CloseAll, nil
}

// getOrCreate returns the entry for key, creating it with create (and
// starting it if the factory runs).
func (f *Factory) getOrCreate(key string, create func(client kubernetes.Interface, closeConns func(), logger klog.Logger) (*factoryEntry, error)) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || (f.ctx != nil && f.ctx.Err() != nil) {
		return nil, ErrStopped
	}
	if e, ok := f.entries[key]; ok {
		return e.public, nil
	}
	client, closeConns, err := f.cacheClient()
	if err != nil {
		return nil, err
	}
	e, err := create(client, closeConns, f.logger)
	if err != nil {
		return nil, err
	}
	if f.opts.Registerer != nil {
		if err := f.opts.Registerer.Register(e.collector()); err != nil {
			return nil, fmt.Errorf("reflector: registering the metrics of %s: %w", key, err)
		}
	}
	f.entries[key] = e
	f.order = append(f.order, e)
	if f.started {
		e.start(f.ctx, f.logger, &f.wg)
	}
	return e.public, nil
}

// Start starts every cache asked for so far, and those asked for later as
// they are created, for the lifetime ctx: when ctx ends, every watch and
// goroutine of the factory stops. The factory logs with ctx's logger if it
// carries one, else with Options.Logger. Start returns at once; it is a
// no-op when called again or after Shutdown.
func (f *Factory) Start(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started || f.stopped {
		return
	}
	f.started = true
	if l, err := logr.FromContext(ctx); err == nil {
		f.logger = l
	}
	f.ctx, f.cancel = context.WithCancel(ctx)
	for _, e := range f.order {
		e.start(f.ctx, f.logger, &f.wg)
	}
}

// WaitForCacheSync blocks until every cache asked for so far has stored
// its initial list and says so in its State, ctx ends (ErrNotSynced) or
// the factory stops (ErrStopped).
func (f *Factory) WaitForCacheSync(ctx context.Context) error {
	f.mu.Lock()
	entries := append([]*factoryEntry(nil), f.order...)
	f.mu.Unlock()
	for _, e := range entries {
		if err := e.waitForSync(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Shutdown ends the factory's lifetime, as the end of the context given
// to Start does, and waits until every goroutine of the factory and its
// caches has returned (event streams included). Afterwards caches answer
// from the API server and report StateStopped. Idempotent; safe to defer.
func (f *Factory) Shutdown() {
	f.mu.Lock()
	first := !f.stopped
	f.stopped = true
	started, cancel := f.started, f.cancel
	entries := append([]*factoryEntry(nil), f.order...)
	f.mu.Unlock()
	if first {
		if cancel != nil {
			cancel()
		}
		for _, e := range entries {
			e.stop()
			if !started {
				e.finish() // never started: nothing else will
			}
		}
	}
	f.wg.Wait()
}

// Failed returns a channel that is closed when a cache of the factory
// first enters StateFailed: a problem has lasted FailureTimeout, and a
// process restart may help. It is sticky, as a context's Done is: the
// cache goes on recovering, and Healthz passes again once it has, but the
// channel stays closed, so that a program that waits for it (as
// manager.Start's error is waited for) cannot miss a failure that has
// since cleared. It never closes when the factory merely stops.
func (f *Factory) Failed() <-chan struct{} { return f.failed }

// Err returns nil until Failed is closed; then an error that wraps
// ErrFailed and names the first cache that failed and why.
func (f *Factory) Err() error {
	f.failMu.Lock()
	defer f.failMu.Unlock()
	return f.failErr
}

// cacheFailed records a cache's entry into failed; the first closes
// Failed.
func (f *Factory) cacheFailed(st Status) {
	f.failMu.Lock()
	defer f.failMu.Unlock()
	f.failures++
	if f.failErr != nil {
		return
	}
	f.failErr = fmt.Errorf("%w: %s: %s", ErrFailed, st.Name, st.Reason)
	close(f.failed)
}

// Status returns the Status of every cache, in creation order.
func (f *Factory) Status() []Status {
	f.mu.Lock()
	entries := append([]*factoryEntry(nil), f.order...)
	f.mu.Unlock()
	out := make([]Status, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.status())
	}
	return out
}

// Healthz is a liveness check with controller-runtime's healthz.Checker
// signature: it fails when any cache has failed or stopped, so that a
// process restart can help.
func (f *Factory) Healthz(req *http.Request) error { return f.check(req, entry.healthz) }

// Readyz is a readiness check: it passes only while every cache is synced
// and healthy.
func (f *Factory) Readyz(req *http.Request) error { return f.check(req, entry.readyz) }

func (f *Factory) check(req *http.Request, check func(entry, *http.Request) error) error {
	f.mu.Lock()
	entries := append([]*factoryEntry(nil), f.order...)
	f.mu.Unlock()
	var errs []error
	for _, e := range entries {
		if err := check(e.entry, req); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
