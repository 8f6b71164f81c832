package slim

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Event returns the slim copy of e that reflector's event caches hold:
// metadata name, namespace, uid, resourceVersion and creationTimestamp,
// involvedObject, reason, message, type, count, firstTimestamp,
// lastTimestamp, eventTime, series, source, reportingController and
// reportingInstance, what progress streams and failure reports read.
// It shares nothing with e but strings.
func Event(e *corev1.Event) *corev1.Event {
	out := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:              e.Name,
			Namespace:         e.Namespace,
			UID:               e.UID,
			ResourceVersion:   e.ResourceVersion,
			CreationTimestamp: e.CreationTimestamp,
		},
		InvolvedObject:      e.InvolvedObject,
		Reason:              e.Reason,
		Message:             e.Message,
		Type:                e.Type,
		Count:               e.Count,
		FirstTimestamp:      e.FirstTimestamp,
		LastTimestamp:       e.LastTimestamp,
		EventTime:           e.EventTime,
		Source:              e.Source,
		ReportingController: e.ReportingController,
		ReportingInstance:   e.ReportingInstance,
	}
	if e.Series != nil {
		s := *e.Series
		out.Series = &s
	}
	return out
}

// EventTransform is the transform of reflector's event caches, a
// client-go TransformFunc: [Event] for events; other objects (tombstones)
// are returned untouched. It is idempotent.
func EventTransform(obj any) (any, error) {
	e, ok := obj.(*corev1.Event)
	if !ok || e == nil {
		return obj, nil
	}
	return Event(e), nil
}

// StripManagedFields drops metadata.managedFields, which no spawner reads
// and which is about a quarter of a cached pod's memory: the transform of
// pod caches with reflector.Options.FullPods. It is idempotent and leaves
// objects without metadata untouched.
func StripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
