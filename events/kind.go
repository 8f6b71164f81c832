package events

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/reflector"
)

// PodFieldSelector is the field selector every events Reflector adds to its
// scope: only events about pods are listed and watched.
const PodFieldSelector = "involvedObject.kind=Pod"

// Kind is the reflector.Kind for core/v1 Events (see the package
// documentation for why core/v1 rather than events.k8s.io/v1).
var Kind = reflector.Kind[*corev1.Event]{
	Name:      "events",
	Resource:  "events",
	NewObject: func() *corev1.Event { return &corev1.Event{} },
	List: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (runtime.Object, error) {
		return c.CoreV1().Events(ns).List(ctx, opts)
	},
	Watch: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (watch.Interface, error) {
		return c.CoreV1().Events(ns).Watch(ctx, opts)
	},
	Get: func(ctx context.Context, c kubernetes.Interface, ns, name string) (*corev1.Event, error) {
		return c.CoreV1().Events(ns).Get(ctx, name, metav1.GetOptions{})
	},
	RESTClient: func(c kubernetes.Interface) rest.Interface { return c.CoreV1().RESTClient() },
	Fields:     Fields,
}

// Fields returns the fields the API server lets core/v1 Events be selected
// by, computed exactly as the apiserver does (pkg/registry/core/event
// ToSelectableFields), so a field-selected scope can be evaluated locally.
func Fields(e *corev1.Event) fields.Set {
	source := e.Source.Component
	if source == "" {
		source = e.ReportingController
	}
	return fields.Set{
		"metadata.name":                  e.Name,
		"metadata.namespace":             e.Namespace,
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         source,
		"type":                           e.Type,
	}
}

// Slim is the Transform every events Reflector applies (after the
// reflector's managedFields stripping and before Options.Transform): it
// keeps only what streams and failure reports read, namely metadata name,
// namespace, uid, resourceVersion and creationTimestamp, involvedObject,
// reason, message, type, count, firstTimestamp, lastTimestamp, eventTime,
// series, source, reportingController and reportingInstance. Labels,
// annotations, action, related and the rest are dropped. It is idempotent
// and leaves other objects (tombstones) untouched.
func Slim(obj any) (any, error) {
	e, ok := obj.(*corev1.Event)
	if !ok || e == nil {
		return obj, nil
	}
	return slimEvent(e), nil
}

func slimEvent(e *corev1.Event) *corev1.Event {
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
