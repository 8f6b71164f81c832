package reflector

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Scope is what a cache watches: the namespaces and selectors of its list
// and watch. Each namespace gets its own watch, so RBAC can stay
// namespaced; an empty Namespaces means all namespaces (one cluster-wide
// watch, which needs cluster-wide list and watch permission).
type Scope struct {
	Namespaces    []string `json:"namespaces,omitempty"`
	LabelSelector string   `json:"labelSelector,omitempty"`
	FieldSelector string   `json:"fieldSelector,omitempty"`
}

// normalize validates the scope and returns its canonical form: sorted,
// de-duplicated namespaces and selectors in their parsed string form, so
// that equal scopes share one cache.
func (s Scope) normalize() (Scope, error) {
	out := Scope{}
	for _, ns := range s.Namespaces {
		if ns == "" {
			return Scope{}, fmt.Errorf("%w: empty namespace in Scope.Namespaces (leave Namespaces empty for all namespaces)", ErrInvalidOptions)
		}
		out.Namespaces = append(out.Namespaces, ns)
	}
	slices.Sort(out.Namespaces)
	out.Namespaces = slices.Compact(out.Namespaces)
	ls, err := labels.Parse(s.LabelSelector)
	if err != nil {
		return Scope{}, fmt.Errorf("%w: label selector %q: %v", ErrInvalidOptions, s.LabelSelector, err)
	}
	out.LabelSelector = ls.String()
	fs, err := fields.ParseSelector(s.FieldSelector)
	if err != nil {
		return Scope{}, fmt.Errorf("%w: field selector %q: %v", ErrInvalidOptions, s.FieldSelector, err)
	}
	out.FieldSelector = fs.String()
	return out, nil
}

// String is a stable, human-readable form of a normalized scope.
func (s Scope) String() string {
	ns := "*"
	if len(s.Namespaces) > 0 {
		ns = strings.Join(s.Namespaces, ",")
	}
	return fmt.Sprintf("ns=%s;labels=%s;fields=%s", ns, s.LabelSelector, s.FieldSelector)
}

// namespaces returns the namespaces to watch, "" meaning all.
func (s Scope) namespaces() []string {
	if len(s.Namespaces) == 0 {
		return []string{""}
	}
	return s.Namespaces
}

// Contains reports whether namespace is watched by the scope.
func (s Scope) Contains(namespace string) bool {
	return len(s.Namespaces) == 0 || slices.Contains(s.Namespaces, namespace)
}

// Options configure a Factory and every cache it hands out. They are set
// once per process; the zero value is usable.
type Options struct {
	// StallTimeout is the bound, with default options, on how long a
	// stalled watch path can go unnoticed: a silent stall of the main
	// watch, or of every watch, is found within it. Default 10s; at least
	// 4s. Every other timing derives from it (see the package
	// documentation).
	StallTimeout time.Duration
	// ProbeInterval is how often the probe watch runs. Default
	// StallTimeout/2. ProbeInterval plus the probe's deadline (1s plus
	// StallTimeout/5, between 1s and 2s) must not exceed StallTimeout.
	// Negative disables probing: stalls are then found only by IdleTimeout
	// and the audit, so the bound becomes IdleTimeout (or AuditInterval if
	// shorter).
	ProbeInterval time.Duration
	// CanaryWindow is how long a cache may take to reach the
	// resourceVersion of a write reported with ExpectWrite before it probes
	// the server at once. Default 1s.
	CanaryWindow time.Duration
	// IdleTimeout: a main watch with no event and no bookmark for this long
	// is considered dead and restarted. The apiserver sends a bookmark about
	// once a minute, so it must be at least a minute. Default 150s.
	// Negative disables.
	IdleTimeout time.Duration
	// AuditInterval is how often the cache is compared with a
	// metadata-only list of the server. Default 5m. Negative disables.
	AuditInterval time.Duration
	// FailureTimeout is how long a problem may last before the state
	// becomes failed (and the factory's Failed channel closes, see
	// [Factory.Failed]). Failing probes alone never make it failed, however long they last. Default 2m; at least
	// StallTimeout.
	FailureTimeout time.Duration
	// HandlerStallThreshold: an event handler inside one call for longer is
	// reported as stuck. Default 10s.
	HandlerStallThreshold time.Duration

	// FullPods makes pod caches hold full pod objects (managedFields
	// still dropped) instead of the slim view ([PodCache] says what it
	// keeps), which keeps what a spawner reads at about a fifth of the
	// memory. Answers from the API server go through the same
	// transform either way.
	FullPods bool

	// NoWatchList makes every cache load its state with a LIST (client-go's
	// pager, then a watch) instead of a WatchList (the state streamed as
	// the first events of a watch with sendInitialEvents, client-go
	// v0.37's default). Measured on 2 cores (BENCHMARKS.md, P4/P8): at
	// 100,000 pods the LIST synced in 30.2 s against 38.0 s, at a higher
	// peak heap during the sync (about 4.3 GiB against 1.2 GiB); a
	// WatchList spares the API server the list's memory. Take it for a
	// large scope where the sync's time matters more than its peak. A
	// relist forced after a stall is a plain LIST either way.
	NoWatchList bool

	// Clock drives probes, audits, deadlines and health. Default: the real
	// clock.
	Clock clock.WithTickerAndDelayedExecution
	// Logger is used when the context given to Start carries no logger.
	// Default klog.Background().
	Logger *klog.Logger
	// Registerer, if set, gets every cache's metrics (prefix
	// kubespawn_reflector_, constant label reflector=<name>), registered
	// when the cache is created and unregistered when the factory stops.
	// A registration failure is returned by the call that creates the
	// cache.
	Registerer prometheus.Registerer

	// onFailure is set by the factory: each cache reports its entries
	// into failed to it (Factory.Failed, Factory.Err).
	onFailure func(Status)
}

const (
	defaultStallTimeout          = 10 * time.Second
	minStallTimeout              = 4 * time.Second
	defaultCanaryWindow          = time.Second
	defaultIdleTimeout           = 150 * time.Second
	minIdleTimeout               = time.Minute // the apiserver's bookmark period
	defaultAuditInterval         = 5 * time.Minute
	defaultFailureTimeout        = 2 * time.Minute
	defaultHandlerStallThreshold = 10 * time.Second
	// probeServerTimeout is the probe watch's timeoutSeconds: the server
	// replays the changes since the given resourceVersion at once and
	// closes the watch after this long.
	probeServerTimeout = time.Second
)

// withDefaults validates o and fills in defaults.
// Validate returns the error NewFactory would return for o (wrapping
// ErrInvalidOptions), building nothing: a program checks its flags with
// it before it connects, so that the library's rules are the only copy.
func (o Options) Validate() error {
	_, err := o.withDefaults()
	return err
}

func (o Options) withDefaults() (Options, error) {
	for name, d := range map[string]time.Duration{"StallTimeout": o.StallTimeout, "CanaryWindow": o.CanaryWindow, "FailureTimeout": o.FailureTimeout, "HandlerStallThreshold": o.HandlerStallThreshold} {
		if d < 0 {
			return o, fmt.Errorf("%w: %s must not be negative, got %s", ErrInvalidOptions, name, d)
		}
	}
	o.StallTimeout = cmp.Or(o.StallTimeout, defaultStallTimeout)
	if o.StallTimeout < minStallTimeout {
		return o, fmt.Errorf("%w: StallTimeout must be at least %s, got %s", ErrInvalidOptions, minStallTimeout, o.StallTimeout)
	}
	o.ProbeInterval = cmp.Or(o.ProbeInterval, o.StallTimeout/2)
	if o.ProbeInterval > 0 && o.ProbeInterval+o.probeDeadline() > o.StallTimeout {
		return o, fmt.Errorf("%w: ProbeInterval %s plus the probe deadline %s exceeds StallTimeout %s: a stall could go unnoticed for longer", ErrInvalidOptions, o.ProbeInterval, o.probeDeadline(), o.StallTimeout)
	}
	o.CanaryWindow = cmp.Or(o.CanaryWindow, defaultCanaryWindow)
	o.IdleTimeout = cmp.Or(o.IdleTimeout, defaultIdleTimeout)
	if o.IdleTimeout > 0 && o.IdleTimeout < minIdleTimeout {
		return o, fmt.Errorf("%w: IdleTimeout %s is below the apiserver's bookmark period (%s): healthy idle watches would be restarted", ErrInvalidOptions, o.IdleTimeout, minIdleTimeout)
	}
	o.AuditInterval = cmp.Or(o.AuditInterval, defaultAuditInterval)
	o.FailureTimeout = cmp.Or(o.FailureTimeout, defaultFailureTimeout)
	if o.FailureTimeout < o.StallTimeout {
		return o, fmt.Errorf("%w: FailureTimeout %s is below StallTimeout %s", ErrInvalidOptions, o.FailureTimeout, o.StallTimeout)
	}
	o.HandlerStallThreshold = cmp.Or(o.HandlerStallThreshold, defaultHandlerStallThreshold)
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o, nil
}

// The deadlines below are derived from StallTimeout; the package
// documentation lists them.

// probeDeadline is how long a probe watch may stay open: the server closes
// it after probeServerTimeout.
func (o Options) probeDeadline() time.Duration {
	return probeServerTimeout + min(max(o.StallTimeout/5, time.Second), 2*time.Second)
}

// probeGrace is how long a change a probe saw may take to reach the cache
// through a healthy watch before the watch counts as stalled.
func (o Options) probeGrace() time.Duration {
	return min(max(o.ProbeInterval/2, time.Second), 2*time.Second)
}

// canaryReplayTimeout: a probe started for a canary knows that the server
// holds a change in scope newer than the cache; the server replays it at
// once after the response headers, so a replay missing it this long after
// the headers means the watch path hangs.
const canaryReplayTimeout = time.Second

// openDeadline bounds the wait for a watch's response headers.
func (o Options) openDeadline() time.Duration { return o.probeDeadline() }

// listDeadline bounds one LIST request (a page, or an unpaginated list
// from the watch cache) and the initial events of a WatchList, which earn
// another for every 10,000 objects (initialEventsPerDeadline).
func (o Options) listDeadline() time.Duration { return 6 * o.StallTimeout }

// getDeadline bounds one GET the cache sends on a reader's behalf.
func (o Options) getDeadline() time.Duration { return 3 * o.StallTimeout }

// auditPageDeadline bounds one page of the audit's metadata-only list.
func (o Options) auditPageDeadline() time.Duration { return o.StallTimeout }
