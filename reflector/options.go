package reflector

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Scope is what a Reflector watches: the namespaces and selectors of its
// list and watch. Each namespace gets its own watch, so RBAC can stay
// namespaced; an empty Namespaces means all namespaces (one cluster-wide
// watch, which needs cluster-wide list and watch permission).
type Scope struct {
	Namespaces    []string `json:"namespaces,omitempty"`
	LabelSelector string   `json:"labelSelector,omitempty"`
	FieldSelector string   `json:"fieldSelector,omitempty"`
}

// normalize validates the scope and returns its canonical form: sorted,
// de-duplicated namespaces and selectors in their parsed string form, so
// that equal scopes share one Reflector.
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

// Options configures a Reflector. The zero value, with a Scope, is usable.
type Options struct {
	// Name labels metrics and logs. Default: "<kind> <scope>".
	Name string
	// Scope is what to watch.
	Scope Scope

	// StallTimeout bounds how long a stalled watch can go unnoticed while
	// the server holds changes in scope. Default 30s; at least 1s (5s or
	// more in production).
	StallTimeout time.Duration
	// ProbeInterval is how often the probe watch runs. Default StallTimeout/3.
	// Negative disables probing (stall detection then relies on IdleTimeout
	// and the audit).
	ProbeInterval time.Duration
	// IdleTimeout: a main watch with no event and no bookmark for this long
	// is considered dead. The apiserver sends bookmarks about once a minute,
	// so the default, 150s, never flags a healthy idle watch. Negative
	// disables.
	IdleTimeout time.Duration
	// AuditInterval is how often the cache is compared with the server.
	// Default 5m. Negative disables the periodic audit.
	AuditInterval time.Duration
	// FailureTimeout is how long recovery may fail before the state becomes
	// failed and OnFailure is called. Default 2m.
	FailureTimeout time.Duration
	// HandlerStallThreshold: an event handler inside one call for longer is
	// reported as stuck. Default 10s.
	HandlerStallThreshold time.Duration

	// Transform is applied to every object after the default transform,
	// which drops metadata.managedFields. It must be idempotent (client-go
	// may apply it more than once).
	Transform cache.TransformFunc
	// KeepManagedFields disables the default transform.
	KeepManagedFields bool

	// OnFailure is called (in its own goroutine) each time the Reflector
	// enters the failed state.
	OnFailure func(Status)

	// Clock drives probes, audits and health. Default: the real clock.
	Clock clock.WithTicker
	// Logger is used for all logging. Default: klog.Background(), or the
	// logger in the context given to Start.
	Logger *klog.Logger
	// Registerer, if set, gets the Reflector's metrics (prefix
	// kubespawn_reflector_, constant label reflector=<Name>). They are
	// unregistered when the Reflector stops.
	Registerer prometheus.Registerer
}

const (
	defaultStallTimeout          = 30 * time.Second
	defaultIdleTimeout           = 150 * time.Second
	defaultAuditInterval         = 5 * time.Minute
	defaultFailureTimeout        = 2 * time.Minute
	defaultHandlerStallThreshold = 10 * time.Second
)

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults(kind string) (Options, error) {
	scope, err := o.Scope.normalize()
	if err != nil {
		return o, err
	}
	o.Scope = scope
	for name, d := range map[string]time.Duration{"StallTimeout": o.StallTimeout, "FailureTimeout": o.FailureTimeout, "HandlerStallThreshold": o.HandlerStallThreshold} {
		if d < 0 {
			return o, fmt.Errorf("%w: %s must not be negative, got %s", ErrInvalidOptions, name, d)
		}
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = defaultStallTimeout
	}
	if o.StallTimeout < time.Second {
		return o, fmt.Errorf("%w: StallTimeout must be at least 1s, got %s", ErrInvalidOptions, o.StallTimeout)
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = o.StallTimeout / 3
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = defaultIdleTimeout
	}
	if o.AuditInterval == 0 {
		o.AuditInterval = defaultAuditInterval
	}
	if o.FailureTimeout == 0 {
		o.FailureTimeout = defaultFailureTimeout
	}
	if o.HandlerStallThreshold == 0 {
		o.HandlerStallThreshold = defaultHandlerStallThreshold
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Name == "" {
		o.Name = kind + " " + o.Scope.String()
	}
	return o, nil
}
