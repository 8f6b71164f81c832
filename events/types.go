package events

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// PodRef identifies one pod: one incarnation of a name. Events of an
// earlier pod with the same namespace and name have another UID and are
// never part of this pod's stream.
type PodRef struct {
	Namespace string
	Name      string
	UID       types.UID
}

// Update is one step of a pod's progress, pushed to a Stream.
type Update struct {
	// Event is the Kubernetes Event behind this update (nil for a
	// synthetic update, such as the stream saying it is degraded). It is
	// the receiver's own copy, slimmed as reflector.EventCache says.
	Event *corev1.Event
	// Time is when the step happened: the event's first occurrence
	// (eventTime, firstTimestamp or creationTimestamp, the first that is
	// set), or when the stream noticed the change for a synthetic update.
	Time time.Time
	// Message is a one-line, human-readable description (see Message), or
	// MessageDegraded / MessageRecovered for synthetic updates.
	Message string
	// Progress is an estimate from 0 to 100 of how far the pod is from
	// running; it never decreases within a stream.
	Progress int
	// Warning is true for Warning events.
	Warning bool
	// Degraded is true while the event watch is unhealthy and the stream is
	// fed by the slower fallback (a live list of the pod's events).
	Degraded bool
}
