package spawner

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/reflector"
)

// The sweep of what a pod needs beside it: owned objects whose pod is gone
// (the garbage collector lags, or does not run), and claims of keys the
// service does not know (reported; deleted only by an explicit policy).

// SweptObject is an owned object or a claim a sweep found.
type SweptObject struct {
	Kind      string
	Namespace string
	Name      string
	UID       types.UID
	// Key is the object's user/session key (AnnotationKey).
	Key string
	// Age, on the API server's clock.
	Age time.Duration
	// Reason: SweepReasonOwnerGone for an owned object; ClaimSelect's
	// reason for a claim; a skip reason ("busy", "in_use", "gone",
	// "no_longer_selected", ...) for a claim selected and then left alone.
	Reason SweepReason
	// Selected: to be deleted (an owned object whose pod is gone, a
	// reported claim older than MaxClaimAge). In a dry run, what a sweep
	// with Delete would delete.
	Selected bool
	// Deleted: deleted and confirmed gone by the API server.
	Deleted bool
	// Err is set when the deletion failed.
	Err error
}

// SweepReasonOwnerGone: an owned object whose pod the API server no longer
// has (NotFound, or another pod of the name).
const SweepReasonOwnerGone SweepReason = "owner_gone"

// Reasons a selected claim is left alone.
const (
	skipInUse SweepReason = "in_use"
)

// sweepObjects finds the owned objects whose pod is gone and, with Delete,
// deletes them. Each page of each list has RequestTimeout; each pod's
// check and deletes, StopTimeout. A kind the service may not list
// (Forbidden) is one it does not manage.
func (s *Spawner) sweepObjects(ctx context.Context, p SweepPolicy, now time.Time) ([]SweptObject, error) {
	sel := s.ownSelector(p, false)
	has, err := labels.NewRequirement(LabelPodUID, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	sel = sel.Add(*has)
	type owner struct {
		name string
		uid  types.UID
	}
	var out []SweptObject
	for _, kind := range ownedKinds {
		api := kindAPI(s.opts.Client, kind)
		items, err := s.listPaged(ctx, p, api, sel.String())
		if apierrors.IsForbidden(err) {
			s.forbiddenKind(ctx, kind, err)
			continue
		}
		if err != nil {
			return out, fmt.Errorf("listing %ss in %s: %w", kind, p.Namespace, err)
		}
		// One live read per pod, however many objects it owns.
		checked := map[owner]bool{} // owner -> gone
		for _, it := range items {
			o := owner{uid: types.UID(it.GetLabels()[LabelPodUID])}
			for _, ref := range it.GetOwnerReferences() {
				if ref.Kind == "Pod" && ref.UID == o.uid {
					o.name = ref.Name
				}
			}
			if o.name == "" || it.GetDeletionTimestamp() != nil {
				continue // not an owned object of ours as Start makes them, or going
			}
			gone, seen := checked[o]
			if !seen {
				if s.locks.busy(lockKey(p.Namespace, o.name)) {
					continue // a Start or Stop of the pod is at it
				}
				gone, err = s.podGone(ctx, p, o.name, o.uid)
				if err != nil {
					klog.FromContext(ctx).V(2).Info("Cannot tell whether the owner is gone; left alone", "kind", kind, "name", it.GetName(), "err", err)
					continue
				}
				checked[o] = gone
			}
			if !gone {
				continue
			}
			so := SweptObject{Kind: kind, Namespace: p.Namespace, Name: it.GetName(), UID: it.GetUID(), Key: it.GetAnnotations()[AnnotationKey],
				Age: now.Sub(it.GetCreationTimestamp().Time), Reason: SweepReasonOwnerGone, Selected: true}
			if p.Delete {
				dctx, cancel := s.withTimeout(ctx, s.opts.StopTimeout, ErrStopTimeout)
				_, so.Err = s.deleteObject(dctx, api, p.Namespace, so.Name, so.UID)
				cancel()
				if so.Err == nil {
					so.Deleted = true
					s.metrics.ownedDeleted.WithLabelValues(kind, "sweeper").Inc()
					klog.FromContext(ctx).Info("Swept owned object", "kind", kind, "name", so.Name, "uid", so.UID, "podUID", o.uid)
				}
			}
			out = append(out, so)
		}
	}
	return out, nil
}

// podGone asks the API server whether pod uid is gone: NotFound, or
// another pod holds the name.
func (s *Spawner) podGone(ctx context.Context, p SweepPolicy, name string, uid types.UID) (bool, error) {
	rctx, cancel := s.withTimeout(ctx, p.RequestTimeout, requestDeadline("the owner's read", p.RequestTimeout))
	defer cancel()
	pod, err := s.liveGet(rctx, p.Namespace, name)
	switch {
	case apierrors.IsNotFound(err):
		s.decidedAbsent(reflector.SourceAPI)
		return true, nil
	case err != nil:
		return false, err
	case pod.UID != uid:
		s.decidedAbsent(reflector.SourceAPI)
		return true, nil
	}
	return false, nil
}

// sweepClaims reports the claims ClaimSelect gives a reason for and, with
// Delete and MaxClaimAge, deletes those older than it whose key has no pod.
func (s *Spawner) sweepClaims(ctx context.Context, p SweepPolicy, clk clock.PassiveClock) ([]SweptObject, error) {
	if p.ClaimSelect == nil {
		return nil, nil
	}
	api := kindAPI(s.opts.Client, KindClaim)
	items, err := s.listPaged(ctx, p, api, s.ownSelector(p, false).String())
	if err != nil {
		return nil, fmt.Errorf("listing claims in %s: %w", p.Namespace, err)
	}
	var out []SweptObject
	for _, it := range items {
		claim := it.(*corev1.PersistentVolumeClaim)
		age := clk.Now().Sub(claim.CreationTimestamp.Time)
		if claim.DeletionTimestamp != nil || age < p.MinAge {
			continue
		}
		sctx, cancel := s.withTimeout(ctx, p.RequestTimeout, requestDeadline("ClaimSelect", p.RequestTimeout))
		reason, err := p.ClaimSelect(sctx, claim)
		cancel()
		if err != nil || reason == "" {
			continue
		}
		so := SweptObject{Kind: KindClaim, Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID, Key: claim.Annotations[AnnotationKey], Age: age, Reason: reason,
			// Only this instance's claims: another instance's pod names
			// (its NamePrefix) are not known here.
			Selected: p.MaxClaimAge > 0 && age > p.MaxClaimAge && claim.Labels[LabelInstance] == s.opts.Instance && claim.Annotations[AnnotationKey] != ""}
		if so.Selected && p.Delete {
			var skip SweepReason
			skip, so.Err = s.sweepClaim(ctx, p, clk, claim)
			switch {
			case skip != "":
				so.Reason, so.Selected = skip, false
			case so.Err == nil:
				so.Deleted = true
			}
		}
		out = append(out, so)
	}
	return out, nil
}

// sweepClaim deletes one selected claim under its key's name lock (no
// Start of the key can adopt it meanwhile) once the API server says the
// key has no pod and ClaimSelect, asked again, still reports it.
func (s *Spawner) sweepClaim(ctx context.Context, p SweepPolicy, clk clock.PassiveClock, claim *corev1.PersistentVolumeClaim) (SweepReason, error) {
	key := claim.Annotations[AnnotationKey]
	name, err := s.PodName(key)
	if err != nil {
		return "", err
	}
	unlock, ok := s.locks.tryLock(lockKey(claim.Namespace, name))
	if !ok {
		return skipBusy, nil
	}
	defer unlock()
	tctx, cancel := s.withTimeout(ctx, s.opts.StopTimeout, ErrStopTimeout)
	defer cancel()
	// The key's pods by label, not by name: a pod of this instance made
	// under another NamePrefix uses the claim as much.
	pods, err := s.listRetry(tctx, kindAPI(s.opts.Client, kindPod), claim.Namespace, fmt.Sprintf("%s=%s,%s=%s,%s=%s",
		LabelManagedBy, ManagedByValue, LabelInstance, s.opts.Instance, LabelKeyHash, KeyHash(key)))
	if err != nil {
		return "", fmt.Errorf("listing the key's pods: %w", err)
	}
	for _, p := range pods {
		if p.GetAnnotations()[AnnotationKey] == key {
			return skipInUse, nil
		}
	}
	s.decidedAbsent(reflector.SourceAPI)
	api := kindAPI(s.opts.Client, KindClaim)
	got, err := api.get(tctx, claim.Namespace, claim.Name)
	switch {
	case apierrors.IsNotFound(err):
		return skipGone, nil
	case err != nil:
		return "", fmt.Errorf("re-reading the claim: %w", err)
	case got.GetUID() != claim.UID:
		return skipReplaced, nil
	}
	fresh := got.(*corev1.PersistentVolumeClaim)
	if reason, err := p.ClaimSelect(tctx, fresh); err != nil || reason == "" {
		if err != nil {
			return skipSelectFailed, nil
		}
		return skipNotSelected, nil
	}
	if _, err := s.deleteObject(tctx, api, claim.Namespace, claim.Name, claim.UID); err != nil {
		s.metrics.claimsDeleted.WithLabelValues("error").Inc()
		return "", err
	}
	s.metrics.claimsDeleted.WithLabelValues("deleted").Inc()
	klog.FromContext(ctx).Info("Swept claim", "claim", klog.KObj(claim), "uid", claim.UID, "key", key, "age", clk.Now().Sub(claim.CreationTimestamp.Time).Round(time.Second))
	return "", nil
}

// ownSelector selects the spawner's objects the policy considers: this
// instance's (or every instance's); for pods, narrowed by Selector (a
// selector of pods, whose labels the objects beside them need not carry).
func (s *Spawner) ownSelector(p SweepPolicy, pods bool) labels.Selector {
	own := labels.Set{LabelManagedBy: ManagedByValue}
	if !p.AllInstances {
		own[LabelInstance] = s.opts.Instance
	}
	sel := labels.SelectorFromSet(own)
	if reqs, ok := p.Selector.Requirements(); ok && pods {
		sel = sel.Add(reqs...)
	}
	return sel
}

// listPaged lists every page of kind matching selector, each page bounded
// by RequestTimeout.
func (s *Spawner) listPaged(ctx context.Context, p SweepPolicy, api objectAPI, selector string) ([]metav1.Object, error) {
	return listItems(ctx, s.boundedPages(p.RequestTimeout, api.pages(p.Namespace)), selector, p.PageSize)
}
