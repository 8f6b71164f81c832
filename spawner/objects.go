package spawner

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"
	"k8s.io/klog/v2"
)

// ObjectRef names an object a Start ensured beside its pod: a claim
// (Request.Claims) or an owned object (Request.Services, Secrets,
// ConfigMaps).
type ObjectRef struct {
	// Kind is "PersistentVolumeClaim", "Service", "Secret" or "ConfigMap".
	Kind      string
	Namespace string
	Name      string
	UID       types.UID
	// Created is true when this call created the object; false when it
	// existed already and was adopted.
	Created bool
}

func (r ObjectRef) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Kinds of the objects beside a pod.
const (
	KindClaim     = "PersistentVolumeClaim"
	KindService   = "Service"
	KindSecret    = "Secret"
	KindConfigMap = "ConfigMap"
)

// objectAPI is what the spawner does with one kind of object, through the
// typed client of that kind: one set of delete-and-confirm, adopt and list
// rules for claims, Services, Secrets and ConfigMaps.
type objectAPI struct {
	kind   string
	get    func(ctx context.Context, ns, name string) (metav1.Object, error)
	create func(ctx context.Context, ns string, obj runtime.Object) (metav1.Object, error)
	delete func(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error
	// list returns one page: the kind's typed list.
	list func(ctx context.Context, ns string, opts metav1.ListOptions) (runtime.Object, error)
}

// kindAPI returns the objectAPI of kind.
func kindAPI(c kubernetes.Interface, kind string) objectAPI {
	core := c.CoreV1()
	switch kind {
	case KindClaim:
		return newObjectAPI(kind, func(ns string) typedClient[*corev1.PersistentVolumeClaim, *corev1.PersistentVolumeClaimList] {
			return core.PersistentVolumeClaims(ns)
		})
	case KindService:
		return newObjectAPI(kind, func(ns string) typedClient[*corev1.Service, *corev1.ServiceList] { return core.Services(ns) })
	case KindSecret:
		return newObjectAPI(kind, func(ns string) typedClient[*corev1.Secret, *corev1.SecretList] { return core.Secrets(ns) })
	case KindConfigMap:
		return newObjectAPI(kind, func(ns string) typedClient[*corev1.ConfigMap, *corev1.ConfigMapList] { return core.ConfigMaps(ns) })
	case kindPod:
		return newObjectAPI(kind, func(ns string) typedClient[*corev1.Pod, *corev1.PodList] { return core.Pods(ns) })
	}
	panic("spawner: unknown kind " + kind)
}

// kindPod: pods through objectAPI (the claims' "does the key have a pod"
// list); the pod lifecycle has its own code.
const kindPod = "Pod"

// typedClient is what objectAPI uses of a client-go typed client.
type typedClient[PT metav1.Object, L runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (PT, error)
	Create(ctx context.Context, obj PT, opts metav1.CreateOptions) (PT, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
}

// newObjectAPI adapts the typed client of one kind.
func newObjectAPI[PT metav1.Object, L runtime.Object](kind string, client func(ns string) typedClient[PT, L]) objectAPI {
	return objectAPI{kind: kind,
		get: func(ctx context.Context, ns, name string) (metav1.Object, error) {
			return client(ns).Get(ctx, name, metav1.GetOptions{})
		},
		create: func(ctx context.Context, ns string, obj runtime.Object) (metav1.Object, error) {
			return client(ns).Create(ctx, obj.(PT), metav1.CreateOptions{})
		},
		delete: func(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error {
			return client(ns).Delete(ctx, name, opts)
		},
		list: func(ctx context.Context, ns string, opts metav1.ListOptions) (runtime.Object, error) {
			return client(ns).List(ctx, opts)
		},
	}
}

// ownedKinds are the kinds that belong to one pod.
var ownedKinds = []string{KindService, KindSecret, KindConfigMap}

// pages is o's list in ns, as client-go's pager takes it.
func (o objectAPI) pages(ns string) pager.ListPageFunc {
	return func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		return o.list(ctx, ns, opts)
	}
}

// listItems lists every page with client-go's pager (which falls back to
// one full list if a continue token expires) and collects the items.
func listItems(ctx context.Context, pages pager.ListPageFunc, selector string, pageSize int64) ([]metav1.Object, error) {
	lp := pager.New(pages)
	lp.PageSize = pageSize
	var out []metav1.Object
	err := lp.EachListItem(ctx, metav1.ListOptions{LabelSelector: selector}, func(obj runtime.Object) error {
		m, err := meta.Accessor(obj)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// listAll lists every page of kind in ns matching selector; each page is
// bounded by the caller's ctx.
func (o objectAPI) listAll(ctx context.Context, ns, selector string) ([]metav1.Object, error) {
	return listItems(ctx, o.pages(ns), selector, defaultPageSize)
}

// deleteObject deletes the object uid of kind and waits until the API
// server confirms it gone (NotFound, or another UID under the name), like
// deleteAndConfirm for pods: a UID precondition on every DELETE, transient
// errors retried until ctx ends. alreadyGone reports there was nothing to
// delete.
func (s *Spawner) deleteObject(ctx context.Context, o objectAPI, ns, name string, uid types.UID) (alreadyGone bool, err error) {
	if uid == "" {
		return false, fmt.Errorf("spawner: internal error: DELETE of %s %s/%s without a UID precondition refused", o.kind, ns, name)
	}
	logger := klog.FromContext(ctx)
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
	b := s.retryBackoff()
	sent, conflict := false, false
	for {
		if !sent {
			err := o.delete(ctx, ns, name, opts)
			switch {
			case err == nil:
				sent = true
			case apierrors.IsNotFound(err):
				return true, nil
			case apierrors.IsConflict(err):
				sent, conflict = true, true // the precondition failed: is it another object now?
			case !isTransient(err):
				return false, s.ctxErr(ctx, err)
			default:
				logger.V(2).Info("Delete failed; retrying", "kind", o.kind, "name", name, "err", err)
			}
		}
		if sent {
			got, err := o.get(ctx, ns, name)
			switch {
			case apierrors.IsNotFound(err):
				return false, nil
			case err == nil && got.GetUID() != uid:
				return conflict, nil
			case err == nil && got.GetDeletionTimestamp() == nil:
				sent = false // a conflict that was not a successor: delete again
			case err != nil && !isTransient(err):
				return false, s.ctxErr(ctx, err)
			}
		}
		if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
			return false, fmt.Errorf("%s %s/%s (UID %s) not confirmed gone: %w", o.kind, ns, name, uid, serr)
		}
	}
}

// deleteOwned deletes the objects of every owned kind that carry
// LabelPodUID = uid, and confirms each gone: what Stop and a failed Start
// do besides relying on the garbage collector, which may lag or not run.
// A kind the service may not list (Forbidden) is taken as one it does not
// manage. The objects deleted are returned.
func (s *Spawner) deleteOwned(ctx context.Context, ns string, uid types.UID) ([]ObjectRef, error) {
	if uid == "" {
		return nil, nil
	}
	sel := ownedSelector(s.opts.Instance, uid)
	var deleted []ObjectRef
	var errs []error
	for _, kind := range ownedKinds {
		o := kindAPI(s.opts.Client, kind)
		items, err := s.listRetry(ctx, o, ns, sel)
		if apierrors.IsForbidden(err) {
			s.forbiddenKind(ctx, kind, err)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("listing %ss of pod UID %s: %w", kind, uid, err))
			continue
		}
		for _, it := range items {
			gone, err := s.deleteObject(ctx, o, ns, it.GetName(), it.GetUID())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !gone {
				deleted = append(deleted, ObjectRef{Kind: kind, Namespace: ns, Name: it.GetName(), UID: it.GetUID()})
			}
		}
	}
	return deleted, errors.Join(errs...)
}

// listRetry lists with retries of transient errors until ctx ends.
func (s *Spawner) listRetry(ctx context.Context, o objectAPI, ns, selector string) ([]metav1.Object, error) {
	b := s.retryBackoff()
	var last error
	for {
		items, err := o.listAll(ctx, ns, selector)
		if err == nil || !isTransient(err) {
			return items, withLast(ctx, s.ctxErr(ctx, err), last)
		}
		if ctx.Err() == nil {
			last = err
		}
		if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
			return nil, withLast(ctx, serr, last)
		}
	}
}

// ownedSelector selects the owned objects of pod uid of this instance.
func ownedSelector(instance string, uid types.UID) string {
	return fmt.Sprintf("%s=%s,%s=%s,%s=%s", LabelManagedBy, ManagedByValue, LabelInstance, instance, LabelPodUID, uid)
}

// forbiddenKind notes that the service may not list kind: taken as a kind
// it does not manage, which is right for a service that creates none and
// an RBAC mistake for one that does (its objects would be left to the
// garbage collector). Said once per kind at the default level, then at
// V(4).
func (s *Spawner) forbiddenKind(ctx context.Context, kind string, err error) {
	logger := klog.FromContext(ctx)
	if _, seen := s.forbidden.LoadOrStore(kind, true); seen {
		logger.V(4).Info("Not allowed to list; assuming no owned objects of this kind", "kind", kind)
		return
	}
	logger.Info("Not allowed to list this kind: assuming the service creates none; if it does (Request.Services, Secrets, ConfigMaps), grant get, list, create and delete on it, or Stop and the sweeper leave them to the garbage collector",
		"kind", kind, "err", err)
}
