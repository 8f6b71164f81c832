package reflector

import (
	"context"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/kubespawn/kubespawn/internal/slim"
)

// object is what a cache holds: a typed Kubernetes object pointer.
type object interface {
	runtime.Object
	metav1.Object
}

// kind tells the engine how to list, watch and get one resource through a
// kubernetes.Interface, and how to slim what it caches.
type kind[T object] struct {
	name     string
	resource string
	newObj   func() T
	list     func(ctx context.Context, c kubernetes.Interface, namespace string, opts metav1.ListOptions) (runtime.Object, error)
	watch    func(ctx context.Context, c kubernetes.Interface, namespace string, opts metav1.ListOptions) (watch.Interface, error)
	get      func(ctx context.Context, c kubernetes.Interface, namespace, name string) (T, error)
	// restClient is the REST client of the resource's API group, for
	// metadata-only lists; nil (fake clientsets) makes the audit use list.
	restClient func(c kubernetes.Interface) rest.Interface
	// fields returns the object's selectable fields, exactly as the
	// apiserver computes them, so that a field-selected scope can be
	// evaluated locally.
	fields func(T) fields.Set
	// transform slims every cached object and every object answered from
	// the API; it must be idempotent (client-go may apply it twice).
	transform toolscache.TransformFunc
}

var podKind = kind[*corev1.Pod]{
	name:     "pods",
	resource: "pods",
	newObj:   func() *corev1.Pod { return &corev1.Pod{} },
	list: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (runtime.Object, error) {
		return c.CoreV1().Pods(ns).List(ctx, opts)
	},
	watch: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (watch.Interface, error) {
		return c.CoreV1().Pods(ns).Watch(ctx, opts)
	},
	get: func(ctx context.Context, c kubernetes.Interface, ns, name string) (*corev1.Pod, error) {
		return c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	},
	restClient: func(c kubernetes.Interface) rest.Interface { return c.CoreV1().RESTClient() },
	fields:     podFields,
	transform:  slim.StripManagedFields,
}

// podFields are the fields the apiserver lets pods be selected by
// (pkg/registry/core/pod PodToSelectableFields). A test compares them with
// the apiserver's answers.
func podFields(p *corev1.Pod) fields.Set {
	podIP := ""
	if len(p.Status.PodIPs) > 0 {
		podIP = p.Status.PodIPs[0].IP
	}
	return fields.Set{
		"metadata.name":            p.Name,
		"metadata.namespace":       p.Namespace,
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             podIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

// eventKind is core/v1 Events (see package events for why core/v1 rather
// than events.k8s.io/v1).
var eventKind = kind[*corev1.Event]{
	name:     "events",
	resource: "events",
	newObj:   func() *corev1.Event { return &corev1.Event{} },
	list: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (runtime.Object, error) {
		return c.CoreV1().Events(ns).List(ctx, opts)
	},
	watch: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (watch.Interface, error) {
		return c.CoreV1().Events(ns).Watch(ctx, opts)
	},
	get: func(ctx context.Context, c kubernetes.Interface, ns, name string) (*corev1.Event, error) {
		return c.CoreV1().Events(ns).Get(ctx, name, metav1.GetOptions{})
	},
	restClient: func(c kubernetes.Interface) rest.Interface { return c.CoreV1().RESTClient() },
	fields:     eventFields,
	transform:  slim.EventTransform,
}

// eventFields are the fields the apiserver lets core/v1 Events be selected
// by (pkg/registry/core/event ToSelectableFields). A test compares them
// with the apiserver's answers.
func eventFields(e *corev1.Event) fields.Set {
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
