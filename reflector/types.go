package reflector

import (
	"errors"
	"time"
)

// Source says where an answer came from.
type Source string

const (
	// SourceCache means the answer came from the Reflector's cache while it
	// was synced and healthy.
	SourceCache Source = "cache"
	// SourceAPI means the API server answered (a live GET or LIST).
	SourceAPI Source = "api"
)

// State is the health of a Reflector.
type State string

const (
	// StateStarting: not yet synced; readers go to the API server.
	StateStarting State = "starting"
	// StateSynced: synced and healthy; readers may use the cache.
	StateSynced State = "synced"
	// StateDegraded: a stall, a watch error or a failed probe is being
	// recovered from; readers go to the API server.
	StateDegraded State = "degraded"
	// StateFailed: recovery has failed for longer than FailureTimeout.
	// Recovery continues, but OnFailure has been called.
	StateFailed State = "failed"
	// StateStopped: Stop was called (or the last Registry user released it).
	StateStopped State = "stopped"
)

// Gap kinds, as counted in Status.GapsDetected and the gaps metric.
const (
	GapStall        = "stall"         // the server held changes the watch did not deliver
	GapIdle         = "idle"          // no event or bookmark for IdleTimeout
	GapAPIOnly      = "api_only"      // a Get found on the server an object the cache lacked
	GapDrift        = "drift"         // the audit found the cache different from the server
	GapExpired      = "expired"       // the server answered 410 Gone / Expired
	GapWatchError   = "watch_error"   // the watch or list failed
	GapHandlerStall = "handler_stall" // an event handler was stuck in one call
)

// Relist reasons, as counted in Status.Relists and the relists metric.
const (
	RelistInitial = "initial"
	RelistStall   = "stall"
	RelistIdle    = "idle"
	RelistDrift   = "drift"
	RelistExpired = "expired"
	RelistError   = "error"
)

var (
	// ErrInvalidOptions is returned by constructors for unusable options.
	ErrInvalidOptions = errors.New("reflector: invalid options")
	// ErrInvalidArgument is returned for bad arguments (an empty name...).
	ErrInvalidArgument = errors.New("reflector: invalid argument")
	// ErrOutOfScope is returned when asked for a namespace the Reflector
	// does not watch.
	ErrOutOfScope = errors.New("reflector: namespace out of scope")
	// ErrStopped is returned by a stopped Reflector.
	ErrStopped = errors.New("reflector: stopped")
	// ErrNotSynced is returned by WaitForSync when its context ends first.
	ErrNotSynced = errors.New("reflector: not synced")
)

// Status is a snapshot of a Reflector for humans, probes and the sidecar.
type Status struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Scope  Scope  `json:"scope"`
	State  State  `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Synced is true once the initial list has been stored.
	Synced bool `json:"synced"`
	// StateSince is when State was entered.
	StateSince time.Time `json:"stateSince"`
	// LastEventTime is when the main watch last delivered anything,
	// bookmarks included.
	LastEventTime time.Time `json:"lastEventTime,omitzero"`
	// LastResourceVersion is the newest resourceVersion the cache has seen.
	LastResourceVersion string `json:"lastResourceVersion,omitempty"`
	// ServerResourceVersion is the newest resourceVersion in scope that the
	// last probe saw on the server (equal to LastResourceVersion when the
	// server had nothing newer).
	ServerResourceVersion string `json:"serverResourceVersion,omitempty"`
	// LastProbeTime is when the last probe completed.
	LastProbeTime time.Time `json:"lastProbeTime,omitzero"`
	// LagSeconds is how long ago a probe last confirmed that the cache held
	// every change the server had in scope (0 when never confirmed).
	LagSeconds float64 `json:"lagSeconds"`
	// Restarts counts watch restarts forced by the Reflector (stall, idle,
	// drift), not client-go's routine re-watches.
	Restarts int `json:"restarts"`
	// Relists counts lists by reason.
	Relists map[string]int `json:"relists"`
	// GapsDetected counts detected gaps by kind.
	GapsDetected map[string]int `json:"gapsDetected"`
	// DriftRepaired counts objects found different by the audit and repaired.
	DriftRepaired int `json:"driftRepaired"`
	// Objects is the number of cached objects.
	Objects int `json:"objects"`
	// StuckHandlers is the number of event handlers currently stuck in one
	// call for longer than the handler stall threshold.
	StuckHandlers int `json:"stuckHandlers"`
}

// Healthy reports whether readers may trust the cache.
func (s Status) Healthy() bool { return s.State == StateSynced }
