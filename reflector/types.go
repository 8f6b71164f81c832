package reflector

import (
	"errors"
	"time"
)

// Source says where an answer came from.
type Source string

const (
	// SourceCache means the answer came from the cache while it was synced
	// and healthy.
	SourceCache Source = "cache"
	// SourceAPI means the API server answered (a live GET or LIST).
	SourceAPI Source = "api"
)

// State is the health of a cache. See the package documentation for the
// rules that move a cache between states.
type State string

const (
	// StateStarting: not synced yet, for less than StallTimeout; readers go
	// to the API server.
	StateStarting State = "starting"
	// StateSynced: synced and no problem; readers may use the cache.
	StateSynced State = "synced"
	// StateDegraded: at least one problem; readers go to the API server
	// while the cache recovers by itself.
	StateDegraded State = "degraded"
	// StateFailed: a problem other than ProblemProbesFailing has lasted
	// FailureTimeout. Recovery goes on, but the factory's
	// Failed channel has closed (see [Factory.Failed]).
	StateFailed State = "failed"
	// StateStopped: the factory's lifetime has ended.
	StateStopped State = "stopped"
)

// Problem is a kind of trouble a cache can be in. Each has one rule that
// sets it and one that clears it (the table in the package documentation).
type Problem string

const (
	// ProblemNotSynced: the initial list has not been stored StallTimeout
	// after the start.
	ProblemNotSynced Problem = "not_synced"
	// ProblemStall: a probe proved that the server holds changes in scope
	// that the watch did not deliver, or the watch path hangs.
	ProblemStall Problem = "stall"
	// ProblemIdle: the main watch delivered nothing, not even a bookmark,
	// for IdleTimeout.
	ProblemIdle Problem = "idle"
	// ProblemDrift: the audit found the cache different from the server.
	ProblemDrift Problem = "drift"
	// ProblemProbesFailing: probes have failed for StallTimeout (429s, 5xx,
	// errors) while nothing proved the watch stalled. It degrades the
	// cache but, alone, never makes it failed.
	ProblemProbesFailing Problem = "probes_failing"
	// ProblemListWatchError: the main list or watch request failed and no
	// watch has been opened since.
	ProblemListWatchError Problem = "list_watch_error"
	// ProblemHungRequest: a list, watch open or WatchList passed its
	// deadline and was cut; no request of that kind has succeeded since.
	ProblemHungRequest Problem = "hung_request"
)

// problems lists every Problem in a fixed order (metrics, tests).
var problems = []Problem{ProblemNotSynced, ProblemStall, ProblemIdle, ProblemDrift, ProblemProbesFailing, ProblemListWatchError, ProblemHungRequest}

// Gap is a kind of evidence that the cache and the server differed, as
// counted in Status.Gaps and the gaps metric.
type Gap string

const (
	GapStall        Gap = "stall"         // the server held changes the watch did not deliver, or the watch path hung
	GapIdle         Gap = "idle"          // no event or bookmark for IdleTimeout
	GapAPIOnly      Gap = "api_only"      // the API server returned an object the healthy cache lacked although it had passed its version
	GapDrift        Gap = "drift"         // the audit found the cache different from the server
	GapExpired      Gap = "expired"       // the server answered 410 Gone / Expired
	GapWatchError   Gap = "watch_error"   // the main list or watch failed
	GapHungRequest  Gap = "hung_request"  // a request passed its deadline
	GapHandlerStall Gap = "handler_stall" // an event handler was stuck in one call
)

var gaps = []Gap{GapStall, GapIdle, GapAPIOnly, GapDrift, GapExpired, GapWatchError, GapHungRequest, GapHandlerStall}

// RelistReason is why the cache listed its scope, as counted in
// Status.Relists and the relists metric.
type RelistReason string

const (
	RelistInitial RelistReason = "initial"
	RelistStall   RelistReason = "stall"
	RelistIdle    RelistReason = "idle"
	RelistDrift   RelistReason = "drift"
	RelistExpired RelistReason = "expired"
	RelistError   RelistReason = "error"
)

var (
	// ErrInvalidOptions is returned for unusable Options or Scope.
	ErrInvalidOptions = errors.New("reflector: invalid options")
	// ErrInvalidArgument is returned for bad arguments (an empty name...).
	ErrInvalidArgument = errors.New("reflector: invalid argument")
	// ErrOutOfScope is returned when asked for a namespace the cache does
	// not watch.
	ErrOutOfScope = errors.New("reflector: namespace out of scope")
	// ErrStopped is returned once the factory's lifetime has ended.
	ErrStopped = errors.New("reflector: stopped")
	// ErrFailed: a cache of the factory has entered StateFailed
	// ([Factory.Err]).
	ErrFailed = errors.New("reflector: cache failed")
	// ErrNotSynced is returned by WaitForSync when its context ends first.
	ErrNotSynced = errors.New("reflector: not synced")
)

// Status is a snapshot of a cache for humans, probes and the sidecar.
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
	// Problems are the problems active now, oldest first.
	Problems []ProblemStatus `json:"problems,omitempty"`
	// LastEventTime is when the main watch last delivered anything,
	// bookmarks included.
	LastEventTime time.Time `json:"lastEventTime,omitzero"`
	// LastResourceVersion is the newest resourceVersion the cache has seen.
	LastResourceVersion string `json:"lastResourceVersion,omitempty"`
	// ServerResourceVersion is the newest resourceVersion in scope that a
	// probe or a write saw on the server.
	ServerResourceVersion string `json:"serverResourceVersion,omitempty"`
	// LastProbeTime is when the last probe completed.
	LastProbeTime time.Time `json:"lastProbeTime,omitzero"`
	// LagSeconds is how long ago a probe or audit last confirmed that the
	// cache held every change the server had in scope (0 when never).
	LagSeconds float64 `json:"lagSeconds"`
	// Restarts counts watch restarts forced by the cache (stall, idle,
	// drift), not client-go's routine re-watches.
	Restarts int `json:"restarts"`
	// Relists counts lists by reason.
	Relists map[RelistReason]int `json:"relists"`
	// Gaps counts detected gaps by kind.
	Gaps map[Gap]int `json:"gaps"`
	// DriftRepaired counts objects found different by the audit and repaired.
	DriftRepaired int `json:"driftRepaired"`
	// Objects is the number of cached objects.
	Objects int `json:"objects"`
	// StuckHandlers is the number of event handlers currently stuck in one
	// call for longer than HandlerStallThreshold.
	StuckHandlers int `json:"stuckHandlers"`
}

// ProblemStatus is one active problem.
type ProblemStatus struct {
	Problem   Problem   `json:"problem"`
	Namespace string    `json:"namespace,omitempty"`
	Since     time.Time `json:"since"`
	Reason    string    `json:"reason"`
}

// Healthy reports whether readers may trust the cache.
func (s Status) Healthy() bool { return s.State == StateSynced }
