package spawner

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubespawn/kubespawn/events"
)

// Request describes the pod Start should run for one user/session.
type Request struct {
	// Key identifies the user or session; the pod name is
	// PodName(Options.NamePrefix, Key). Required.
	Key string
	// Namespace of the pod. Required.
	Namespace string
	// Labels and Annotations are added to the pod. The spawner's own labels
	// (LabelManagedBy, LabelInstance, LabelKeyHash) and annotations
	// (AnnotationKey, AnnotationStartID) cannot be overridden.
	Labels      map[string]string
	Annotations map[string]string
	// Spec is the pod spec; it is copied, never modified. Required, with at
	// least one container.
	Spec *corev1.PodSpec
	// StartTimeout overrides Options.StartTimeout when positive. It must not
	// exceed Options.MaxStartTimeout.
	StartTimeout time.Duration
	// Progress, if set, is called with the pod's progress updates, in order,
	// from one goroutine, and never after Start returns. It must not block
	// for long: a failed start cleans up without waiting for it, and a
	// callback still blocked 2s after the start ended is abandoned (Start
	// returns while that call runs on; it gets no further updates).
	Progress func(events.Update)

	// Claims are PersistentVolumeClaims of the key (a user's home
	// directory): they outlive pods. Before the pod is created, Start
	// ensures each one: it creates the claim if the API server has none of
	// that name, adopts the one there if it carries this instance's labels
	// for the same key (growing its storage request if this one asks for
	// more), and otherwise fails (ErrClaimConflict, ErrClaimIncompatible,
	// ErrClaimTerminating, ErrClaimFailed) without creating the pod. Stop
	// never deletes claims; DeleteClaims does. Each needs a name, access
	// modes and a positive storage request; the namespace is Namespace.
	Claims []*corev1.PersistentVolumeClaim
	// Services, Secrets and ConfigMaps belong to the pod: created as soon as
	// the pod exists, with an ownerReference to it (the garbage collector
	// deletes them with it) and LabelPodUID, and deleted by the spawner
	// itself on a failed start and on Stop. One that cannot be created fails
	// the start (ErrOwnedObjectFailed, ErrOwnedObjectConflict), which deletes
	// the pod and what it created. A Service without a selector gets one
	// that selects the pod; a Service's selector must select the pod.
	Services   []*corev1.Service
	Secrets    []*corev1.Secret
	ConfigMaps []*corev1.ConfigMap
}

// Result describes a pod Start left running and ready.
type Result struct {
	Namespace string
	Name      string
	UID       types.UID
	PodIP     string
	// Pod is the ready pod as last read.
	Pod *corev1.Pod
	// Adopted is true when the pod already existed and was adopted
	// (Options.AdoptRunning).
	Adopted bool
	// Duration of the Start call.
	Duration time.Duration
	// Claims are the request's claims, as ensured (Created: by this Start).
	Claims []ObjectRef
	// Owned are the pod's owned objects (Services, Secrets, ConfigMaps).
	Owned []ObjectRef
}

var reservedLabels = []string{LabelManagedBy, LabelInstance, LabelKeyHash}
var reservedAnnotations = []string{AnnotationKey, AnnotationStartID}

// buildPod validates req and returns the pod to create and the start
// timeout. Client-side validation only catches what is certainly wrong; the
// API server validates the rest (and its refusal is not retried).
func (s *Spawner) buildPod(req Request) (*corev1.Pod, time.Duration, error) {
	if req.Key == "" {
		return nil, 0, invalidRequest("empty key")
	}
	if req.Namespace == "" {
		return nil, 0, invalidRequest("empty namespace")
	}
	if errs := validation.IsDNS1123Label(req.Namespace); len(errs) > 0 {
		return nil, 0, invalidRequest("namespace %q: %s", req.Namespace, strings.Join(errs, "; "))
	}
	if req.Spec == nil {
		return nil, 0, invalidRequest("nil pod spec")
	}
	if req.StartTimeout < 0 {
		return nil, 0, invalidRequest("negative StartTimeout %s", req.StartTimeout)
	}
	if req.StartTimeout > s.opts.MaxStartTimeout {
		return nil, 0, invalidRequest("StartTimeout %s exceeds MaxStartTimeout %s", req.StartTimeout, s.opts.MaxStartTimeout)
	}
	if err := validateSpec(req.Spec); err != nil {
		return nil, 0, err
	}
	for k, v := range req.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, 0, invalidRequest("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, 0, invalidRequest("label %q value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	for k := range req.Annotations {
		if errs := validation.IsQualifiedName(strings.ToLower(k)); len(errs) > 0 {
			return nil, 0, invalidRequest("annotation key %q: %s", k, strings.Join(errs, "; "))
		}
	}
	for _, k := range reservedLabels {
		if _, ok := req.Labels[k]; ok {
			return nil, 0, invalidRequest("label %q is set by the spawner", k)
		}
	}
	for _, k := range reservedAnnotations {
		if _, ok := req.Annotations[k]; ok {
			return nil, 0, invalidRequest("annotation %q is set by the spawner", k)
		}
	}
	name, err := PodName(s.opts.NamePrefix, req.Key)
	if err != nil {
		return nil, 0, err
	}
	startID, err := newStartID()
	if err != nil {
		return nil, 0, fmt.Errorf("spawner: start id: %w", err)
	}

	labels := maps.Clone(req.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedByValue
	labels[LabelInstance] = s.opts.Instance
	labels[LabelKeyHash] = KeyHash(req.Key)
	annotations := maps.Clone(req.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationKey] = req.Key
	annotations[AnnotationStartID] = startID

	timeout := s.opts.StartTimeout
	if req.StartTimeout > 0 {
		timeout = req.StartTimeout
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: req.Namespace, Labels: labels, Annotations: annotations},
		Spec:       *req.Spec.DeepCopy(),
	}, timeout, nil
}

func validateSpec(spec *corev1.PodSpec) error {
	if len(spec.Containers) == 0 {
		return invalidRequest("pod spec has no containers")
	}
	seen := map[string]bool{}
	check := func(kind string, cs []corev1.Container) error {
		for i, c := range cs {
			if c.Name == "" {
				return invalidRequest("%s %d has no name", kind, i)
			}
			if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
				return invalidRequest("%s name %q: %s", kind, c.Name, strings.Join(errs, "; "))
			}
			if seen[c.Name] {
				return invalidRequest("duplicate container name %q", c.Name)
			}
			seen[c.Name] = true
			if strings.TrimSpace(c.Image) == "" {
				return invalidRequest("%s %q has no image", kind, c.Name)
			}
		}
		return nil
	}
	if err := check("init container", spec.InitContainers); err != nil {
		return err
	}
	return check("container", spec.Containers)
}

func newStartID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
