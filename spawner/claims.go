package spawner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/reflector"
)

// Claims are per key: a Start ensures them before it creates the pod, Stop
// never deletes them, and only DeleteClaims does. Absence and ownership are
// decided from the API server's answers, as for pods.

// buildClaims validates req.Claims and returns the claims to ensure, with
// the spawner's labels and annotation.
func (s *Spawner) buildClaims(req Request) ([]*corev1.PersistentVolumeClaim, error) {
	out := make([]*corev1.PersistentVolumeClaim, 0, len(req.Claims))
	seen := map[string]bool{}
	for i, c := range req.Claims {
		if c == nil {
			return nil, invalidRequest("Claims[%d] is nil", i)
		}
		field := fmt.Sprintf("Claims[%d]", i)
		if err := checkObjectMeta(field, KindClaim, &c.ObjectMeta, req.Namespace, validation.IsDNS1123Subdomain); err != nil {
			return nil, err
		}
		if seen[c.Name] {
			return nil, invalidRequest("%s: duplicate claim name %q", field, c.Name)
		}
		seen[c.Name] = true
		if len(c.Spec.AccessModes) == 0 {
			return nil, invalidRequest("%s (%s): spec.accessModes is empty", field, c.Name)
		}
		size, ok := c.Spec.Resources.Requests[corev1.ResourceStorage]
		if !ok || size.Sign() <= 0 {
			return nil, invalidRequest("%s (%s): spec.resources.requests.storage must be a positive size", field, c.Name)
		}
		want := c.DeepCopy()
		want.Namespace = req.Namespace
		want.ResourceVersion, want.UID = "", ""
		want.Labels = s.ownLabels(want.Labels, req.Key)
		want.Annotations = ownAnnotations(want.Annotations, req.Key)
		want.Status = corev1.PersistentVolumeClaimStatus{}
		out = append(out, want)
	}
	return out, nil
}

// checkObjectMeta checks the name and namespace of an object of the
// request and that it sets none of the spawner's labels and annotations.
func checkObjectMeta(field, kind string, m *metav1.ObjectMeta, namespace string, validName func(string) []string) error {
	if m.Name == "" {
		return invalidRequest("%s: %s has no name (metadata.generateName is not supported: the name must be known to find the object again)", field, kind)
	}
	if errs := validName(m.Name); len(errs) > 0 {
		return invalidRequest("%s: %s name %q: %s", field, kind, m.Name, strings.Join(errs, "; "))
	}
	if m.Namespace != "" && m.Namespace != namespace {
		return invalidRequest("%s: %s %q is in namespace %q, the pod in %q", field, kind, m.Name, m.Namespace, namespace)
	}
	for k, v := range m.Labels {
		if slices.Contains(reservedLabels, k) || k == LabelPodUID {
			return invalidRequest("%s: %s %q: label %q is set by the spawner", field, kind, m.Name, k)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return invalidRequest("%s: %s %q: label key %q: %s", field, kind, m.Name, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return invalidRequest("%s: %s %q: label %q value %q: %s", field, kind, m.Name, k, v, strings.Join(errs, "; "))
		}
	}
	for k := range m.Annotations {
		if slices.Contains(reservedAnnotations, k) {
			return invalidRequest("%s: %s %q: annotation %q is set by the spawner", field, kind, m.Name, k)
		}
	}
	if len(m.OwnerReferences) > 0 {
		return invalidRequest("%s: %s %q: ownerReferences are set by the spawner", field, kind, m.Name)
	}
	return nil
}

// ownLabels returns l plus the labels that make an object this instance's
// for key.
func (s *Spawner) ownLabels(l map[string]string, key string) map[string]string {
	out := maps.Clone(l)
	if out == nil {
		out = map[string]string{}
	}
	out[LabelManagedBy] = ManagedByValue
	out[LabelInstance] = s.opts.Instance
	out[LabelKeyHash] = KeyHash(key)
	return out
}

func ownAnnotations(a map[string]string, key string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	out[AnnotationKey] = key
	return out
}

// ownsFor: an object of this spawner instance for key.
func (s *Spawner) ownsFor(m metav1.Object, key string) bool {
	l := m.GetLabels()
	return l[LabelManagedBy] == ManagedByValue && l[LabelInstance] == s.opts.Instance &&
		l[LabelKeyHash] == KeyHash(key) && m.GetAnnotations()[AnnotationKey] == key
}

// ensureClaims ensures every claim of the request, in order, before the pod
// exists. An error is a *StartError (no pod was created).
func (a *attempt) ensureClaims(ctx context.Context) ([]ObjectRef, error) {
	var refs []ObjectRef
	for _, want := range a.claims {
		ref, err := a.ensureClaim(ctx, want)
		if err != nil {
			return refs, err
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// ensureClaim creates the claim if the API server says NotFound, or adopts
// the one there if it is this instance's for the key and compatible. Two
// Starts racing for one claim both end with the same claim: the loser of
// the create gets AlreadyExists and adopts the winner's.
func (a *attempt) ensureClaim(ctx context.Context, want *corev1.PersistentVolumeClaim) (ObjectRef, error) {
	s := a.s
	logger := klog.FromContext(ctx)
	claims := s.opts.Client.CoreV1().PersistentVolumeClaims(want.Namespace)
	ref := ObjectRef{Kind: KindClaim, Namespace: want.Namespace, Name: want.Name}
	fail := func(reason error, format string, args ...any) (ObjectRef, error) {
		return ref, &StartError{Reason: reason, Message: fmt.Sprintf("claim %s: ", want.Name) + fmt.Sprintf(format, args...)}
	}
	b := s.retryBackoff()
	for {
		got, err := claims.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if aerr := a.admitPod(ctx); aerr != nil {
				return ref, aerr
			}
			created, cerr := claims.Create(ctx, want.DeepCopy(), metav1.CreateOptions{})
			switch {
			case cerr == nil:
				logger.V(2).Info("Claim created", "claim", want.Name, "uid", created.UID)
				ref.UID, ref.Created = created.UID, true
				return ref, nil
			case apierrors.IsAlreadyExists(cerr):
				continue // another Start won the race: adopt its claim
			case ctx.Err() != nil:
				// Cut by the start's end (timeout, Stop, the caller): not
				// an answer of the API server.
				return ref, context.Cause(ctx)
			case !isTransient(cerr):
				// Quota, admission, validation: the API server's answer.
				return ref, &StartError{Reason: ErrClaimFailed, Message: fmt.Sprintf("claim %s: the API server refused the create", want.Name), Err: cerr}
			}
			err = cerr
		}
		if err != nil {
			if ctx.Err() != nil {
				return ref, context.Cause(ctx)
			}
			if !isTransient(err) {
				return ref, &StartError{Reason: ErrClaimFailed, Message: fmt.Sprintf("claim %s: reading it", want.Name), Err: err}
			}
			logger.V(2).Info("Transient error ensuring a claim; retrying", "claim", want.Name, "err", err)
			if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
				return ref, serr
			}
			continue
		}
		ref.UID = got.UID
		switch {
		case !s.ownsFor(got, a.req.Key):
			return fail(ErrClaimConflict, "it has labels %v and annotation %s=%q; this spawner's claim for key %q would have %s=%s, %s=%s",
				got.Labels, AnnotationKey, got.Annotations[AnnotationKey], a.req.Key, LabelInstance, s.opts.Instance, LabelKeyHash, KeyHash(a.req.Key))
		case got.DeletionTimestamp != nil:
			return fail(ErrClaimTerminating, "it is being deleted (since %s, finalizers %v); retry once it is gone", got.DeletionTimestamp.UTC().Format("15:04:05"), got.Finalizers)
		}
		if field := claimIncompatible(got, want); field != "" {
			return fail(ErrClaimIncompatible, "%s; these fields of an existing claim cannot be changed: delete the claim (DeleteClaims) to get a new one", field)
		}
		if wantSize, gotSize := want.Spec.Resources.Requests[corev1.ResourceStorage], got.Spec.Resources.Requests[corev1.ResourceStorage]; wantSize.Cmp(gotSize) > 0 {
			// The one change an existing claim takes: expansion (if its
			// storage class allows it; the API server decides).
			patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":%q}}}}`, wantSize.String())
			if _, perr := claims.Patch(ctx, want.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); perr != nil {
				if ctx.Err() != nil {
					return ref, context.Cause(ctx)
				}
				if isTransient(perr) {
					if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
						return ref, serr
					}
					continue
				}
				return ref, &StartError{Reason: ErrClaimIncompatible, Message: fmt.Sprintf("claim %s: it requests %s, the request %s, and the API server refused to expand it", want.Name, gotSize.String(), wantSize.String()), Err: perr}
			}
			logger.Info("Claim expanded", "claim", want.Name, "from", gotSize.String(), "to", wantSize.String())
		}
		logger.V(2).Info("Claim adopted", "claim", want.Name, "uid", got.UID)
		return ref, nil
	}
}

// admitPod sends the pod as a dry-run create, once per start, before the
// start creates its first claim: a pod the API server's admission refuses
// (Pod Security Admission, a webhook, a quota on pods, validation) then
// fails the start with nothing created, instead of leaving a new, empty
// claim behind. AlreadyExists passes (a pod of the key exists: ensure
// resolves it); a transient error is retried; the real create still
// decides, as admission may change its mind in between.
func (a *attempt) admitPod(ctx context.Context) error {
	if a.admitted {
		return nil
	}
	pods := a.s.opts.Client.CoreV1().Pods(a.want.Namespace)
	b := a.s.retryBackoff()
	for {
		_, err := pods.Create(ctx, a.want.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case err == nil, apierrors.IsAlreadyExists(err):
			a.admitted = true
			return nil
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case !isTransient(err):
			return &StartError{Reason: ErrRejected, Message: "the API server refused the pod (a dry run, before any claim was created)", Err: err}
		}
		klog.FromContext(ctx).V(2).Info("Transient error in the pod's dry run; retrying", "err", err)
		if serr := a.s.sleep(ctx, b.NextBackOff()); serr != nil {
			return serr
		}
	}
}

// claimIncompatible names the first field of the existing claim that
// differs from the request's and cannot be changed (empty if none). Fields
// the request leaves unset (storage class, volume mode, volume name) take
// whatever the API server or the binder chose. A larger size on the
// existing claim is fine: claims never shrink.
func claimIncompatible(got, want *corev1.PersistentVolumeClaim) string {
	g, w := got.Spec, want.Spec
	if !sameModes(g.AccessModes, w.AccessModes) {
		return fmt.Sprintf("spec.accessModes is %v, the request %v", g.AccessModes, w.AccessModes)
	}
	if w.StorageClassName != nil && (g.StorageClassName == nil || *g.StorageClassName != *w.StorageClassName) {
		return fmt.Sprintf("spec.storageClassName is %s, the request %q", strPtr(g.StorageClassName), *w.StorageClassName)
	}
	if w.VolumeMode != nil && g.VolumeMode != nil && *g.VolumeMode != *w.VolumeMode {
		return fmt.Sprintf("spec.volumeMode is %s, the request %s", *g.VolumeMode, *w.VolumeMode)
	}
	if w.VolumeName != "" && g.VolumeName != w.VolumeName {
		return fmt.Sprintf("spec.volumeName is %q, the request %q", g.VolumeName, w.VolumeName)
	}
	if w.Selector != nil && !apiequality.Semantic.DeepEqual(g.Selector, w.Selector) {
		return fmt.Sprintf("spec.selector is %v, the request %v", metav1.FormatLabelSelector(g.Selector), metav1.FormatLabelSelector(w.Selector))
	}
	return ""
}

func sameModes(a, b []corev1.PersistentVolumeAccessMode) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func strPtr(p *string) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprintf("%q", *p)
}

// DeleteClaims deletes the claims of key in namespace that this spawner
// instance created (LabelManagedBy, LabelInstance, LabelKeyHash and
// AnnotationKey), each with a UID precondition, and returns once the API
// server confirms every one gone: JupyterHub's delete_forever. It holds the
// key's name lock, so no Start of the key runs meanwhile, and refuses
// (ErrClaimInUse) while the API server still has the key's pod: stop it
// first. It is bounded by Options.StopTimeout (ErrStopTimeout: a claim can
// stay Terminating while a pod uses it, or with no controller to remove its
// kubernetes.io/pvc-protection finalizer). A key with no claims is not an
// error. The claims deleted are returned, also on error.
func (s *Spawner) DeleteClaims(ctx context.Context, namespace, key string) ([]ObjectRef, error) {
	if key == "" {
		return nil, invalidRequest("empty key")
	}
	if errs := validation.IsDNS1123Label(namespace); namespace == "" || len(errs) > 0 {
		return nil, invalidRequest("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	name, err := s.PodName(key)
	if err != nil {
		return nil, err
	}
	logger := s.logger(ctx).WithValues("namespace", namespace, "key", key)
	ctx = klog.NewContext(ctx, logger)
	tctx, cancel := s.withTimeout(ctx, s.opts.StopTimeout, ErrStopTimeout)
	defer cancel()
	unlock, err := s.locks.lock(tctx, lockKey(namespace, name), nil)
	if err != nil {
		return nil, fmt.Errorf("spawner: delete claims of %q: waiting for the operation in progress: %w", key, err)
	}
	defer unlock()

	pod, err := s.liveGet(tctx, namespace, name)
	switch {
	case err == nil:
		return nil, fmt.Errorf("spawner: delete claims of %q: %w: pod %s (UID %s) exists; stop it first", key, ErrClaimInUse, name, pod.UID)
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("spawner: delete claims of %q: reading the pod: %w", key, err)
	}
	s.decidedAbsent(reflector.SourceAPI)

	o := kindAPI(s.opts.Client, KindClaim)
	sel := fmt.Sprintf("%s=%s,%s=%s,%s=%s", LabelManagedBy, ManagedByValue, LabelInstance, s.opts.Instance, LabelKeyHash, KeyHash(key))
	items, err := s.listRetry(tctx, o, namespace, sel)
	if err != nil {
		return nil, fmt.Errorf("spawner: delete claims of %q: listing: %w", key, err)
	}
	var deleted []ObjectRef
	for _, it := range items {
		if it.GetAnnotations()[AnnotationKey] != key {
			continue // another key with the same hash prefix cannot be, but a hand-made label can
		}
		if _, err := s.deleteObject(tctx, o, namespace, it.GetName(), it.GetUID()); err != nil {
			s.metrics.claimsDeleted.WithLabelValues("error").Inc()
			return deleted, fmt.Errorf("spawner: delete claims of %q: %w", key, err)
		}
		s.metrics.claimsDeleted.WithLabelValues("deleted").Inc()
		deleted = append(deleted, ObjectRef{Kind: KindClaim, Namespace: namespace, Name: it.GetName(), UID: it.GetUID()})
		logger.Info("Claim deleted", "claim", it.GetName(), "uid", it.GetUID())
	}
	return deleted, nil
}
