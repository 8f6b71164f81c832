package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"

	"github.com/kubespawn/kubespawn/spawner"
)

// The start's body: the wire contract of POST /users/{user}/server (see
// README.md, "The hub decides the pod").
//
//	{"pod": {"metadata": {"labels": {…}, "annotations": {…}}, "spec": <core/v1 PodSpec>},
//	 "claims": [<core/v1 PersistentVolumeClaim>], "services": [<core/v1 Service>]}
//
// or the old {"image", "annotations"}, for which the service builds the
// pod. Decoded strictly, as the API server decodes: keys match the API's
// names exactly, an unknown or duplicate key is a 400 naming it.
type startBody struct {
	// Image of the service-built pod (old body); not with Pod.
	Image string `json:"image,omitempty"`
	// Annotations are added to the pod (with Pod: merged with its
	// metadata's, which must agree).
	Annotations map[string]string `json:"annotations,omitempty"`
	// Pod is the hub's pod: its labels, annotations and spec, as is.
	Pod *podManifest `json:"pod,omitempty"`
	// Claims and Services, when the key is present (even empty), are the
	// body's: the service's --storage-* and --services-enabled then do not
	// apply (but --storage-force does). Absent or null: the flags decide.
	Claims   *[]*corev1.PersistentVolumeClaim `json:"claims,omitempty"`
	Services *[]*corev1.Service               `json:"services,omitempty"`
}

// podManifest is the pod of a start body: what the hub decides.
type podManifest struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     *corev1.PodSpec   `json:"spec"`
}

// refusal is a start refused before anything was created: a malformed
// body (400, invalid_request) or one the pod policy forbids (403, policy).
type refusal struct {
	status int
	reason string
	// errs: every problem found, the first is the answer's error and field.
	errs []Violation
}

// Reasons of a refusal (the "reason" of the answer).
const (
	reasonInvalid = "invalid_request"
	reasonPolicy  = "policy"
)

func invalid(field, format string, args ...any) *refusal {
	return &refusal{status: http.StatusBadRequest, reason: reasonInvalid, errs: []Violation{{Field: field, Error: fmt.Sprintf(format, args...)}}}
}

func (r *refusal) Error() string { return r.errs[0].Error }

// write answers the refusal as a start's failure:
// {"user","pod","state":"failed","reason","error","field","fieldErrors","status"}.
func (r *refusal) write(w http.ResponseWriter, user, pod string) {
	writeJSON(w, r.status, map[string]any{"user": user, "pod": pod, "state": "failed", "reason": r.reason,
		"error": r.errs[0].Error, "field": r.errs[0].Field, "fieldErrors": r.errs, "status": r.status})
}

// decodeStartBody decodes raw strictly. The fields of the pod are named
// relative to the pod ("spec.containers[0].imagePullPolice"), the others
// relative to the body ("claims[0].spec.foo", "image").
func decodeStartBody(raw []byte) (startBody, *refusal) {
	var body startBody
	if len(strings.TrimSpace(string(raw))) == 0 {
		return body, nil
	}
	strict, err := kjson.UnmarshalStrict(raw, &body)
	if err != nil {
		// The strict decoder's type errors are of a type of its own; the
		// standard library's, on the same input, name the field.
		field := ""
		var ute *json.UnmarshalTypeError
		if errors.As(json.Unmarshal(raw, &startBody{}), &ute) {
			field = bodyField(ute.Field)
		}
		return body, invalid(field, "bad JSON body: %s", err.Error())
	}
	if len(strict) > 0 {
		r := &refusal{status: http.StatusBadRequest, reason: reasonInvalid}
		for _, e := range strict {
			v := Violation{Error: "bad JSON body: " + e.Error()}
			var fe kjson.FieldError
			if errors.As(e, &fe) {
				v.Field = bodyField(fe.FieldPath())
				v.Error = fmt.Sprintf("bad JSON body: %s field %q (the API's names, exactly)", strings.SplitN(e.Error(), " ", 2)[0], v.Field)
			}
			r.errs = append(r.errs, v)
		}
		return body, r
	}
	return body, nil
}

// bodyField names a field of the pod relative to the pod.
func bodyField(path string) string {
	if p, ok := strings.CutPrefix(path, "pod."); ok {
		return p
	}
	return path
}

// reserved: the spawner's labels and annotations (the library's and any
// other kubespawn.io/ key): only the service sets them.
func reserved(key string) bool {
	return key == spawner.LabelManagedBy || strings.HasPrefix(key, "kubespawn.io/")
}

// checkMeta refuses what only the service (or the API server) sets on an
// object of the body: field is the object's path ("metadata" for the pod,
// "claims[0].metadata"), nameOK whether the body names it (claims and
// Services do; the pod's name is the service's).
func checkMeta(field string, m *metav1.ObjectMeta, nameOK bool) *refusal {
	for _, f := range []struct {
		name string
		set  bool
		why  string
	}{
		{"name", !nameOK && m.Name != "", "the service names the pod from the user"},
		{"generateName", m.GenerateName != "", "names must be known to find the objects again"},
		{"namespace", m.Namespace != "", "the service decides the namespace"},
		{"ownerReferences", len(m.OwnerReferences) > 0, "the service decides the owners"},
		{"finalizers", len(m.Finalizers) > 0, "only the service and the cluster may hold an object back"},
		{"uid", m.UID != "", "set by the API server"},
		{"resourceVersion", m.ResourceVersion != "", "set by the API server"},
		{"generation", m.Generation != 0, "set by the API server"},
		{"selfLink", m.SelfLink != "", "set by the API server"},
		{"creationTimestamp", !m.CreationTimestamp.IsZero(), "set by the API server"},
		{"deletionTimestamp", m.DeletionTimestamp != nil, "set by the API server"},
		{"deletionGracePeriodSeconds", m.DeletionGracePeriodSeconds != nil, "set by the API server"},
		{"managedFields", len(m.ManagedFields) > 0, "set by the API server"},
	} {
		if f.set {
			return invalid(field+"."+f.name, "%s.%s must not be set: %s", field, f.name, f.why)
		}
	}
	for _, kind := range []struct {
		name string
		m    map[string]string
	}{{"labels", m.Labels}, {"annotations", m.Annotations}} {
		for _, k := range slices.Sorted(maps.Keys(kind.m)) {
			if reserved(k) {
				return invalid(fmt.Sprintf("%s.%s[%s]", field, kind.name, k), "%s %q is set by the service (app.kubernetes.io/managed-by and kubespawn.io/* are its own)", strings.TrimSuffix(kind.name, "s"), k)
			}
		}
	}
	return nil
}

// checkTypeMeta: an object of the body may say what it is, rightly.
func checkTypeMeta(field string, tm metav1.TypeMeta, kind string) *refusal {
	if tm.APIVersion != "" && tm.APIVersion != "v1" {
		return invalid(field+".apiVersion", "%s.apiVersion %q: a %s is v1", field, tm.APIVersion, kind)
	}
	if tm.Kind != "" && tm.Kind != kind {
		return invalid(field+".kind", "%s.kind %q: expected %s", field, tm.Kind, kind)
	}
	return nil
}

// request is the start's request for user's pod name, from the body and
// the service's configuration; nil refusal: the start may go on. What the
// service decides (namespace, name, its own labels, annotations and
// instance, the owners of companions) is the library's to set; the body
// may not (400). What the pod policy refuses is a 403.
func (s *Server) request(user, name string, body startBody) (spawner.Request, *refusal) {
	req := spawner.Request{Key: user, Namespace: s.cfg.Namespace}
	for _, k := range slices.Sorted(maps.Keys(body.Annotations)) {
		if reserved(k) {
			return req, invalid("annotations["+k+"]", "annotation %q is set by the service (app.kubernetes.io/managed-by and kubespawn.io/* are its own)", k)
		}
	}
	if body.Pod == nil {
		// The old body: the service's pod, its --image by default.
		req.Annotations = body.Annotations
		req.Spec = &corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: cmp.Or(body.Image, s.cfg.Image),
			Ports: []corev1.ContainerPort{{Name: "notebook-port", ContainerPort: s.cfg.Port}}}}}
	} else {
		if body.Image != "" {
			return req, invalid("image", "image must not be set with pod: the pod's containers name their images")
		}
		p := body.Pod
		if p.Spec == nil {
			return req, invalid("spec", "the pod has no spec")
		}
		if len(p.Spec.Containers) == 0 {
			return req, invalid("spec.containers", "the pod has no containers")
		}
		if r := checkMeta("metadata", &p.Metadata, false); r != nil {
			return req, r
		}
		req.Labels, req.Spec = p.Metadata.Labels, p.Spec.DeepCopy()
		req.Annotations = maps.Clone(p.Metadata.Annotations)
		for _, k := range slices.Sorted(maps.Keys(body.Annotations)) {
			v := body.Annotations[k]
			if have, ok := req.Annotations[k]; ok && have != v {
				return req, invalid("annotations["+k+"]", "annotation %q is %q here and %q in pod.metadata.annotations", k, v, have)
			}
			if req.Annotations == nil {
				req.Annotations = map[string]string{}
			}
			req.Annotations[k] = v
		}
	}

	if body.Claims != nil {
		for i, cl := range *body.Claims {
			field := fmt.Sprintf("claims[%d]", i)
			if cl == nil {
				return req, invalid(field, "%s is null", field)
			}
			if r := checkTypeMeta(field, cl.TypeMeta, "PersistentVolumeClaim"); r != nil {
				return req, r
			}
			if r := checkMeta(field+".metadata", &cl.ObjectMeta, true); r != nil {
				return req, r
			}
			if !reflect.DeepEqual(cl.Status, corev1.PersistentVolumeClaimStatus{}) {
				return req, invalid(field+".status", "%s.status is the API server's", field)
			}
			req.Claims = append(req.Claims, cl.DeepCopy())
		}
	}
	if st := s.cfg.Storage; st != nil && (body.Claims == nil || st.Force) {
		if r := s.addStorage(&req, user, body.Claims != nil); r != nil {
			return req, r
		}
	}

	if body.Services != nil {
		for i, svc := range *body.Services {
			field := fmt.Sprintf("services[%d]", i)
			if svc == nil {
				return req, invalid(field, "%s is null", field)
			}
			if r := checkTypeMeta(field, svc.TypeMeta, "Service"); r != nil {
				return req, r
			}
			if r := checkMeta(field+".metadata", &svc.ObjectMeta, true); r != nil {
				return req, r
			}
			if len(svc.Spec.Selector) > 0 {
				return req, invalid(field+".spec.selector", "%s.spec.selector must not be set: the service selects the user's pod", field)
			}
			if !reflect.DeepEqual(svc.Status, corev1.ServiceStatus{}) {
				return req, invalid(field+".status", "%s.status is the API server's", field)
			}
			req.Services = append(req.Services, svc.DeepCopy())
		}
	} else if s.cfg.ServicesEnabled {
		req.Services = []*corev1.Service{podService(name, s.cfg.Port)}
	}

	if v := s.cfg.PodPolicy.Check(req); len(v) > 0 {
		return req, &refusal{status: http.StatusForbidden, reason: reasonPolicy, errs: v}
	}
	return req, nil
}

// addStorage adds the service's claim (--storage-*) to req: the claim
// (replacing one of the body of the same name: with --storage-force the
// operator's size, class and modes win), a volume of it (unless the pod
// has one) and its mount at MountPath in the first container (unless it
// is there). A first container that mounts something else there is
// refused: the user's home is the operator's claim (forced: 403, policy)
// or the hub must say which it wants ("claims" in the body: 400).
func (s *Server) addStorage(req *spawner.Request, user string, forced bool) *refusal {
	st := s.cfg.Storage
	claim, err := st.claim(user)
	if err != nil {
		return invalid("", "%s", err.Error())
	}
	// In place: the body's claims keep their indices (the fields named).
	if i := slices.IndexFunc(req.Claims, func(c *corev1.PersistentVolumeClaim) bool { return c.Name == claim.Name }); i >= 0 {
		req.Claims[i] = claim
	} else {
		req.Claims = append(req.Claims, claim)
	}
	spec := req.Spec
	volume := ""
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim.Name {
			volume = v.Name
			break
		}
	}
	if volume == "" {
		for _, n := range []string{homeVolume, "kubespawn-" + homeVolume} {
			if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == n }) {
				volume = n
				break
			}
		}
		if volume == "" {
			return invalid("spec.volumes", "the pod's volumes take both names of the service's claim volume (%s, kubespawn-%s)", homeVolume, homeVolume)
		}
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: volume,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name}}})
	}
	if len(spec.Containers) == 0 {
		return invalid("spec.containers", "the pod has no containers")
	}
	c := &spec.Containers[0]
	for i, m := range c.VolumeMounts {
		if m.MountPath != st.MountPath {
			continue
		}
		if m.Name == volume {
			return nil // the hub mounts the service's claim there itself
		}
		field := fmt.Sprintf("spec.containers[0].volumeMounts[%d].mountPath", i)
		if forced {
			return &refusal{status: http.StatusForbidden, reason: reasonPolicy, errs: []Violation{{Field: field,
				Error: fmt.Sprintf("%s is where the service mounts each user's claim (--storage-force): the pod mounts volume %q there", st.MountPath, m.Name)}}}
		}
		return invalid(field, "%s is where the service mounts each user's claim (--storage-capacity): the pod mounts volume %q there; send \"claims\" to decide the storage in the hub", st.MountPath, m.Name)
	}
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volume, MountPath: st.MountPath})
	return nil
}
