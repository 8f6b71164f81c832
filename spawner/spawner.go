package spawner

import (
	"context"
	"fmt"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/reflector"
)

// Spawner starts, stops and polls one pod per user/session key. It is safe
// for concurrent use; calls for the same pod name are serialised.
type Spawner struct {
	opts    Options
	metrics *metrics
	locks   nameLocks

	// life ends at Close; the sweepers (RunSweeper) run within it and
	// Close waits for them (wg).
	life      context.Context
	closeLife context.CancelFunc
	// forbidden holds the owned kinds the service was refused a LIST of
	// (logged once each).
	forbidden sync.Map
	mu        sync.Mutex // guards closed and wg.Add against Close's wg.Wait
	closed    bool
	wg        sync.WaitGroup
}

// New validates opts and returns a Spawner. It starts nothing: the pod cache
// and event source are owned (started, stopped) by the caller. Close
// releases what the Spawner holds: its metrics' registration and its
// sweepers.
func New(opts Options) (*Spawner, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	if o.Registerer != nil {
		if err := m.register(o.Registerer); err != nil {
			return nil, fmt.Errorf("%w: registering metrics: %v", ErrInvalidOptions, err)
		}
	}
	s := &Spawner{opts: o, metrics: m, locks: nameLocks{m: map[string]*nameLock{}}}
	s.life, s.closeLife = context.WithCancel(context.Background())
	return s, nil
}

// Close ends the Spawner's lifetime: it stops every RunSweeper (each
// returns nil, releasing its Lease), waits for them, and unregisters the
// Spawner's metrics from Options.Registerer, so that a new Spawner can
// register there. Starts and Stops in flight are the caller's calls, ended
// by their contexts. Afterwards RunSweeper returns ErrClosed. Idempotent.
func (s *Spawner) Close() {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	s.mu.Unlock()
	s.closeLife()
	s.wg.Wait()
	if first && s.opts.Registerer != nil {
		s.metrics.unregister(s.opts.Registerer)
	}
}

// run joins the Spawner's lifetime for a long-running call: ctx is
// cancelled at Close too, and Close waits for done. It returns ErrClosed
// after Close.
func (s *Spawner) run(ctx context.Context) (_ context.Context, done func(), _ error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, ErrClosed
	}
	s.wg.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.life, cancel)
	return ctx, func() {
		stop()
		cancel()
		s.wg.Done()
	}, nil
}

// logger prefers the caller's contextual logger.
func (s *Spawner) logger(ctx context.Context) klog.Logger {
	if l, err := logr.FromContext(ctx); err == nil {
		return l
	}
	return *s.opts.Logger
}

// metrics are the spawner's Prometheus collectors.
type metrics struct {
	starts        *prometheus.CounterVec
	stops         *prometheus.CounterVec
	startDuration *prometheus.HistogramVec
	deletedOnFail prometheus.Counter
	cleanupFailed prometheus.Counter
	swept         *prometheus.CounterVec
	sweeps        *prometheus.CounterVec
	absence       *prometheus.CounterVec
	claimsDeleted *prometheus.CounterVec
	ownedDeleted  *prometheus.CounterVec
	unknownClaims *prometheus.GaugeVec
}

func newMetrics() *metrics {
	const ns, sub = "kubespawn", "spawner"
	return &metrics{
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "starts_total",
			Help: "Starts by result (running, adopted, or the failure reason)."}, []string{"result"}),
		stops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "stops_total",
			Help: "Stops by result (deleted, already_gone, not_owned, timeout, error)."}, []string{"result"}),
		startDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "start_duration_seconds",
			Help:    "Duration of Start calls by outcome (success, failure).",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 12)}, []string{"outcome"}),
		deletedOnFail: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pods_deleted_on_failure_total",
			Help: "Pods a failed start deleted and confirmed gone."}),
		cleanupFailed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cleanup_failures_total",
			Help: "Failed starts whose pod could not be deleted or confirmed gone: left for the sweeper."}),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "swept_pods_total",
			Help: "Pods deleted (and confirmed gone) by the sweeper, by reason (max_age, orphan)."}, []string{"reason"}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sweeps_total",
			Help: "Sweep runs by mode (dry_run, delete) and result (ok, error)."}, []string{"mode", "result"}),
		absence: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "absence_decisions_total",
			Help: "Decisions that a pod does not exist (or is gone, or was replaced), by the source of the answer they rest on: always api (the cache never proves absence); any other value is a bug."}, []string{"source"}),
		claimsDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "claims_deleted_total",
			Help: "Claims deleted and confirmed gone (DeleteClaims, or the sweeper by an explicit policy), by result (deleted, error)."}, []string{"result"}),
		ownedDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "owned_objects_deleted_total",
			Help: "Owned objects (Services, Secrets, ConfigMaps) the spawner deleted itself and confirmed gone, by kind and by what deleted them (stop, failed_start, sweeper)."}, []string{"kind", "by"}),
		unknownClaims: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "unknown_claims",
			Help: "Claims of keys the service does not know (SweepPolicy.ClaimSelect), as found by the last sweep of the namespace; kept unless the policy deletes them."}, []string{"namespace"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.starts, m.stops, m.startDuration, m.deletedOnFail, m.cleanupFailed, m.swept, m.sweeps, m.absence, m.claimsDeleted, m.ownedDeleted, m.unknownClaims}
}

// register registers every collector, or none: a failure unregisters
// those registered before it.
func (m *metrics) register(r prometheus.Registerer) error {
	m.absence.WithLabelValues(string(reflector.SourceAPI)) // exported from the start, at 0
	for i, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				r.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	for _, c := range m.collectors() {
		r.Unregister(c)
	}
}

// decidedAbsent records a decision that a pod does not exist, is gone or
// was replaced, and the source of the answer it rests on: counted so that
// "absence decided without the API server" is a number, not an assumption.
func (s *Spawner) decidedAbsent(src reflector.Source) {
	s.metrics.absence.WithLabelValues(string(src)).Inc()
}

// The shared caches satisfy the consumer interfaces.
var (
	_ PodCache    = (*reflector.PodCache)(nil)
	_ EventSource = (*events.Index)(nil)
)
