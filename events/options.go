package events

import (
	"cmp"
	"fmt"
	"time"

	"github.com/kubespawn/kubespawn/reflector"
)

// Defaults for Options.
const (
	defaultPerPodLimit      = 100
	defaultTTL              = 10 * time.Minute
	defaultFallbackInterval = 5 * time.Second
)

// Options configure an Index. The zero value is usable. The event watch
// itself (stall detection, health, metrics, clock) is configured once for
// the process, by the reflector.Factory's Options.
type Options struct {
	// PerPodLimit is the number of events kept per pod in the index: the
	// newest ones (by last occurrence). Default 100.
	PerPodLimit int
	// TTL is how long a pod's entry stays in the index after its last event
	// arrived (or its last Stream closed, whichever is later) while no
	// Stream is open for it. Default 10m. ForgetPod drops an
	// entry at once.
	TTL time.Duration
	// FallbackInterval is how often a Stream lists its pod's events from
	// the API server while the event watch is not healthy. Default 5s.
	FallbackInterval time.Duration
}

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults() (Options, error) {
	if o.PerPodLimit < 0 || o.TTL < 0 || o.FallbackInterval < 0 {
		return o, fmt.Errorf("%w: negative PerPodLimit, TTL or FallbackInterval", reflector.ErrInvalidOptions)
	}
	o.PerPodLimit = cmp.Or(o.PerPodLimit, defaultPerPodLimit)
	o.TTL = cmp.Or(o.TTL, defaultTTL)
	o.FallbackInterval = cmp.Or(o.FallbackInterval, defaultFallbackInterval)
	return o, nil
}
