package spawner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// Owned objects are per pod: created once the pod exists, with an
// ownerReference to it (so the garbage collector deletes them with it) and
// LabelPodUID (so the spawner deletes them itself, on a failed start, on
// Stop and in the sweeper, whether or not the garbage collector runs).

// ownedObject is one object of the request to create beside the pod.
type ownedObject struct {
	kind string
	obj  runtime.Object
	meta metav1.Object
}

// buildOwned validates the request's owned objects against the pod they
// will belong to (its final labels) and returns them with the spawner's
// labels, in the order they are created: Secrets and ConfigMaps (which
// the pod may mount), then Services. A Service without a selector gets one
// that selects the pod.
func (s *Spawner) buildOwned(req Request, pod *corev1.Pod) ([]ownedObject, error) {
	var out []ownedObject
	seen := map[string]bool{}
	add := func(field, kind string, obj runtime.Object, m *metav1.ObjectMeta, validName func(string) []string) error {
		if err := checkObjectMeta(field, kind, m, req.Namespace, validName); err != nil {
			return err
		}
		if seen[kind+"/"+m.Name] {
			return invalidRequest("%s: duplicate %s name %q", field, kind, m.Name)
		}
		seen[kind+"/"+m.Name] = true
		m.Namespace = req.Namespace
		m.Labels = s.ownLabels(m.Labels, req.Key)
		m.Annotations = ownAnnotations(m.Annotations, req.Key)
		out = append(out, ownedObject{kind: kind, obj: obj, meta: m})
		return nil
	}
	for i, sec := range req.Secrets {
		field := fmt.Sprintf("Secrets[%d]", i)
		if sec == nil {
			return nil, invalidRequest("%s is nil", field)
		}
		sec = sec.DeepCopy()
		sec.ResourceVersion, sec.UID = "", ""
		if err := add(field, KindSecret, sec, &sec.ObjectMeta, validation.IsDNS1123Subdomain); err != nil {
			return nil, err
		}
	}
	for i, cm := range req.ConfigMaps {
		field := fmt.Sprintf("ConfigMaps[%d]", i)
		if cm == nil {
			return nil, invalidRequest("%s is nil", field)
		}
		cm = cm.DeepCopy()
		cm.ResourceVersion, cm.UID = "", ""
		if err := add(field, KindConfigMap, cm, &cm.ObjectMeta, validation.IsDNS1123Subdomain); err != nil {
			return nil, err
		}
	}
	for i, svc := range req.Services {
		field := fmt.Sprintf("Services[%d]", i)
		if svc == nil {
			return nil, invalidRequest("%s is nil", field)
		}
		svc = svc.DeepCopy()
		svc.ResourceVersion, svc.UID, svc.Status = "", "", corev1.ServiceStatus{}
		if len(svc.Spec.Selector) == 0 && svc.Spec.Type != corev1.ServiceTypeExternalName {
			svc.Spec.Selector = map[string]string{
				LabelManagedBy: ManagedByValue, LabelInstance: s.opts.Instance, LabelKeyHash: pod.Labels[LabelKeyHash]}
		}
		if sel := labels.SelectorFromSet(svc.Spec.Selector); svc.Spec.Type != corev1.ServiceTypeExternalName && !sel.Matches(labels.Set(pod.Labels)) {
			return nil, invalidRequest("%s: Service %q: spec.selector %v does not select the pod (labels %v)", field, svc.Name, svc.Spec.Selector, pod.Labels)
		}
		if err := add(field, KindService, svc, &svc.ObjectMeta, validation.IsDNS1035Label); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ensureOwned creates the request's owned objects for pod, in order. An
// object of the name that already belongs to this pod (a retried or
// adopted start) is kept; one of an earlier pod of this key (the garbage
// collector has not run yet) is deleted, confirmed gone and created anew;
// one that is not this instance's for the key fails the start
// (ErrOwnedObjectConflict), as does a create the API server refuses
// (ErrOwnedObjectFailed). The failed start's cleanup then deletes the pod
// and whatever objects it created.
func (a *attempt) ensureOwned(ctx context.Context, pod *corev1.Pod) ([]ObjectRef, error) {
	var refs []ObjectRef
	for _, o := range a.owned {
		ref, err := a.ensureOne(ctx, pod, o)
		if err != nil {
			return refs, err
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

func (a *attempt) ensureOne(ctx context.Context, pod *corev1.Pod, o ownedObject) (ObjectRef, error) {
	s := a.s
	logger := klog.FromContext(ctx)
	api := kindAPI(s.opts.Client, o.kind)
	name := o.meta.GetName()
	ref := ObjectRef{Kind: o.kind, Namespace: pod.Namespace, Name: name}
	want := o.obj.DeepCopyObject()
	m := want.(metav1.Object)
	l := m.GetLabels()
	l[LabelPodUID] = string(pod.UID)
	m.SetLabels(l)
	m.SetOwnerReferences([]metav1.OwnerReference{{
		APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr.To(true),
	}})
	b := s.retryBackoff()
	for {
		created, err := api.create(ctx, pod.Namespace, want.DeepCopyObject())
		if err == nil {
			ref.UID, ref.Created = created.GetUID(), true
			logger.V(2).Info("Owned object created", "kind", o.kind, "name", name, "uid", ref.UID)
			return ref, nil
		}
		if apierrors.IsAlreadyExists(err) {
			got, gerr := api.get(ctx, pod.Namespace, name)
			switch {
			case apierrors.IsNotFound(gerr):
				continue // gone in between: create again
			case gerr != nil:
				err = gerr
			case got.GetLabels()[LabelPodUID] == string(pod.UID) && s.ownsFor(got, a.req.Key):
				ref.UID = got.GetUID()
				logger.V(2).Info("Owned object already there", "kind", o.kind, "name", name, "uid", ref.UID)
				return ref, nil
			case s.ownsFor(got, a.req.Key) && got.GetLabels()[LabelPodUID] != "":
				// An earlier pod's object, not yet collected.
				logger.Info("Owned object of an earlier pod still there; replacing it", "kind", o.kind, "name", name, "oldPodUID", got.GetLabels()[LabelPodUID])
				if _, derr := s.deleteObject(ctx, api, pod.Namespace, name, got.GetUID()); derr != nil {
					return ref, &StartError{Reason: ErrOwnedObjectFailed, Message: fmt.Sprintf("%s %s: deleting the earlier pod's object", o.kind, name), Err: derr}
				}
				continue
			default:
				return ref, &StartError{Reason: ErrOwnedObjectConflict,
					Message: fmt.Sprintf("%s %s exists with labels %v; it is not this spawner's for key %q", o.kind, name, got.GetLabels(), a.req.Key)}
			}
		}
		if ctx.Err() != nil {
			return ref, context.Cause(ctx)
		}
		if !isTransient(err) {
			return ref, &StartError{Reason: ErrOwnedObjectFailed, Message: fmt.Sprintf("%s %s: the API server refused the create", o.kind, name), Err: err}
		}
		logger.V(2).Info("Transient error creating an owned object; retrying", "kind", o.kind, "name", name, "err", err)
		if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
			return ref, serr
		}
	}
}
