package events

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/tools/cache"

	"github.com/kubespawn/kubespawn/reflector"
)

// Defaults for Options.
const (
	DefaultPerPodLimit      = 100
	DefaultTTL              = 10 * time.Minute
	DefaultFallbackInterval = 5 * time.Second
)

// Options configures an events Reflector. The zero value is usable.
//
// The embedded reflector.Options configure the shared event watch (scope,
// stall detection, metrics...). Its Clock and Logger are also the events
// Reflector's: the clock drives TTL eviction and the fallback polling.
// Scope.FieldSelector is ANDed with [PodFieldSelector]; a selector that
// requires another involvedObject.kind is rejected. Transform runs after
// [Slim].
type Options struct {
	reflector.Options

	// PerPodLimit is the number of events kept per pod in the index: the
	// newest ones (by last occurrence). Default DefaultPerPodLimit (100).
	PerPodLimit int
	// TTL is how long a pod's entry stays in the index after its last event
	// arrived (or its last Stream closed, whichever is later) while no
	// Stream is open for it. Default DefaultTTL (10m). Call ForgetPod to
	// drop an entry at once when the pod is gone for good.
	TTL time.Duration
	// FallbackInterval is how often a Stream lists its pod's events from
	// the API server while the event watch is not healthy. Default
	// DefaultFallbackInterval (5s).
	FallbackInterval time.Duration
}

// withDefaults validates o and returns it with defaults filled in, and the
// options of the underlying reflector.
func (o Options) withDefaults() (Options, reflector.Options, error) {
	if o.PerPodLimit < 0 || o.TTL < 0 || o.FallbackInterval < 0 {
		return o, reflector.Options{}, fmt.Errorf("%w: negative PerPodLimit, TTL or FallbackInterval", reflector.ErrInvalidOptions)
	}
	if o.PerPodLimit == 0 {
		o.PerPodLimit = DefaultPerPodLimit
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.FallbackInterval == 0 {
		o.FallbackInterval = DefaultFallbackInterval
	}
	ro := o.Options
	sel, err := podScopeSelector(ro.Scope.FieldSelector)
	if err != nil {
		return o, ro, err
	}
	ro.Scope.FieldSelector = sel
	user := ro.Transform
	ro.Transform = func(obj any) (any, error) {
		obj, err := Slim(obj)
		if err != nil || user == nil {
			return obj, err
		}
		return user(obj)
	}
	return o, ro, nil
}

// podScopeSelector ANDs user with PodFieldSelector, in a canonical order
// (ours first, the user's terms sorted) so that equal scopes are shared.
func podScopeSelector(user string) (string, error) {
	sel, err := fields.ParseSelector(user)
	if err != nil {
		return "", fmt.Errorf("%w: field selector %q: %v", reflector.ErrInvalidOptions, user, err)
	}
	var terms []string
	for _, r := range sel.Requirements() {
		if r.Field == "involvedObject.kind" {
			if (r.Operator == selection.Equals || r.Operator == selection.DoubleEquals) && r.Value == "Pod" {
				continue // already ours
			}
			return "", fmt.Errorf("%w: field selector %q: events Reflectors only watch events about pods (%s)", reflector.ErrInvalidOptions, user, PodFieldSelector)
		}
		var t fields.Selector
		switch r.Operator {
		case selection.NotEquals:
			t = fields.OneTermNotEqualSelector(r.Field, r.Value)
		default:
			t = fields.OneTermEqualSelector(r.Field, r.Value)
		}
		terms = append(terms, t.String())
	}
	slices.Sort(terms)
	terms = slices.Compact(terms)
	return strings.Join(append([]string{PodFieldSelector}, terms...), ","), nil
}

var _ cache.TransformFunc = Slim
