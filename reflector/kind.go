package reflector

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Object is what a Reflector caches: a typed Kubernetes object pointer such
// as *corev1.Pod.
type Object interface {
	runtime.Object
	metav1.Object
}

// Kind tells a Reflector how to list, watch and get one resource through a
// kubernetes.Interface. [Pods] is provided; package events defines one for
// core/v1 Events.
type Kind[T Object] struct {
	// Name is the kind's name in logs and metrics, e.g. "pods".
	Name string
	// Resource is the REST resource, e.g. "pods".
	Resource string
	// NewObject returns an empty object (the informer's example object).
	NewObject func() T
	// List, Watch and Get call the typed client.
	List  func(ctx context.Context, c kubernetes.Interface, namespace string, opts metav1.ListOptions) (runtime.Object, error)
	Watch func(ctx context.Context, c kubernetes.Interface, namespace string, opts metav1.ListOptions) (watch.Interface, error)
	Get   func(ctx context.Context, c kubernetes.Interface, namespace, name string) (T, error)
	// RESTClient returns the REST client of the resource's API group, used
	// for metadata-only lists. It may return nil (fake clientsets): the
	// audit then uses List.
	RESTClient func(c kubernetes.Interface) rest.Interface
	// Fields returns the object's selectable fields, to tell whether an
	// object fetched from the API is inside a field-selected scope. Nil
	// means field selectors cannot be evaluated locally.
	Fields func(T) fields.Set
}

// Pods is the Kind for core/v1 Pods.
var Pods = Kind[*corev1.Pod]{
	Name:      "pods",
	Resource:  "pods",
	NewObject: func() *corev1.Pod { return &corev1.Pod{} },
	List: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (runtime.Object, error) {
		return c.CoreV1().Pods(ns).List(ctx, opts)
	},
	Watch: func(ctx context.Context, c kubernetes.Interface, ns string, opts metav1.ListOptions) (watch.Interface, error) {
		return c.CoreV1().Pods(ns).Watch(ctx, opts)
	},
	Get: func(ctx context.Context, c kubernetes.Interface, ns, name string) (*corev1.Pod, error) {
		return c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	},
	RESTClient: func(c kubernetes.Interface) rest.Interface { return c.CoreV1().RESTClient() },
	Fields: func(p *corev1.Pod) fields.Set {
		// The fields the apiserver lets pods be selected by (the common ones).
		return fields.Set{
			"metadata.name":      p.Name,
			"metadata.namespace": p.Namespace,
			"spec.nodeName":      p.Spec.NodeName,
			"spec.restartPolicy": string(p.Spec.RestartPolicy),
			"spec.schedulerName": p.Spec.SchedulerName,
			"status.phase":       string(p.Status.Phase),
			"status.podIP":       p.Status.PodIP,
		}
	},
}
