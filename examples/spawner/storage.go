package main

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubespawn/kubespawn/spawner"
)

// Storage is a claim per user, as Zero to JupyterHub's
// singleuser.storage (type dynamic) and KubeSpawner's storage_* traits
// make it: created on the user's first start, mounted in every pod of the
// user, kept across stops (spawner.Request.Claims: Stop never deletes it)
// and deleted only by DELETE /users/{user}/claims (JupyterHub's
// delete_forever).
type Storage struct {
	// Capacity is the claim's storage request (storage_capacity). Required:
	// a positive quantity.
	Capacity resource.Quantity
	// Class is the claim's spec.storageClassName (storage_class): nil for
	// the cluster's default class, "" for no class.
	Class *string
	// AccessModes (storage_access_modes). Default [ReadWriteOnce].
	AccessModes []corev1.PersistentVolumeAccessMode
	// NameTemplate names the claim (pvc_name_template): {username} (or
	// {user_server}) is the user's escaped form, as in pod names;
	// {servername} is empty. Default DefaultClaimNameTemplate.
	NameTemplate string
	// MountPath in the notebook container (homeMountPath). Default
	// /home/jovyan.
	MountPath string
	// Force makes the claim every start's, whatever the body asks: without
	// it the claim is a default, for a start whose body has no "claims"
	// (a hub that decides its storage itself replaces it); with it the
	// claim is added to the body's (replacing one of its name) and
	// mounted at MountPath in the pod's first container, which must not
	// mount anything else there (403, policy).
	Force bool
}

// Defaults of Storage, Zero to JupyterHub's.
const (
	DefaultClaimNameTemplate = "claim-{username}"
	DefaultMountPath         = "/home/jovyan"
	// DefaultPort is KubeSpawner's port: the notebook server's.
	DefaultPort = 8888
)

// homeVolume names the claim's volume in the pod.
const homeVolume = "home"

// templateFields are the fields a claim name template may use.
var templateFields = regexp.MustCompile(`\{[^{}]*\}`)

// knownAccessModes are the access modes of the core API.
var knownAccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadOnlyMany, corev1.ReadWriteMany, corev1.ReadWriteOncePod}

// withDefaults checks st and fills in its defaults. Every rule here is the
// service's own: the library checks a claim when a start asks for it (a
// positive size, access modes), which would be each user's first start;
// the service refuses a configuration that would fail every start before
// it serves any.
func (st Storage) withDefaults() (Storage, error) {
	var problems []string
	if st.Capacity.Sign() <= 0 {
		problems = append(problems, fmt.Sprintf("--storage-capacity must be a positive quantity (e.g. 10Gi), got %s", st.Capacity.String()))
	}
	if len(st.AccessModes) == 0 {
		st.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	for _, m := range st.AccessModes {
		if !slices.Contains(knownAccessModes, m) {
			problems = append(problems, fmt.Sprintf("--storage-access-modes: unknown access mode %q (known: %v)", m, knownAccessModes))
		}
	}
	if st.Class != nil && *st.Class != "" {
		if errs := validation.IsDNS1123Subdomain(*st.Class); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("--storage-class %q: %s", *st.Class, strings.Join(errs, "; ")))
		}
	}
	if st.NameTemplate == "" {
		st.NameTemplate = DefaultClaimNameTemplate
	}
	if err := checkTemplate(st.NameTemplate); err != nil {
		problems = append(problems, err.Error())
	}
	if st.MountPath == "" {
		st.MountPath = DefaultMountPath
	}
	if !path.IsAbs(st.MountPath) || path.Clean(st.MountPath) != st.MountPath {
		problems = append(problems, fmt.Sprintf("--storage-mount-path must be a clean absolute path, got %q", st.MountPath))
	}
	if len(problems) > 0 {
		return st, errors.New(strings.Join(problems, "; "))
	}
	return st, nil
}

// checkTemplate: the template names each user's claim apart ({username}),
// uses no field the demo does not have, and makes valid claim names, the
// longest included.
func checkTemplate(tmpl string) error {
	hasUser := false
	for _, f := range templateFields.FindAllString(tmpl, -1) {
		switch f {
		case "{username}", "{user_server}":
			hasUser = true
		case "{servername}":
		default:
			return fmt.Errorf("--storage-name-template %q: unknown field %s (known: {username}, {user_server}, {servername})", tmpl, f)
		}
	}
	if !hasUser {
		return fmt.Errorf("--storage-name-template %q must contain {username}: without it every user would get the same claim", tmpl)
	}
	for _, user := range []string{"a", strings.Repeat("x", maxUserLen)} {
		name, err := expandTemplate(tmpl, user)
		if err != nil {
			return err
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return fmt.Errorf("--storage-name-template %q makes claim names like %q: %s", tmpl, name, strings.Join(errs, "; "))
		}
	}
	return nil
}

// expandTemplate: {username} and {user_server} are spawner.PodName("",
// user), the readable form of the user (lower-case letters and digits,
// other runs '-') and a hash of the raw name, as in pod names, so that two
// users never share a claim; {servername} is empty (the demo runs default
// servers). Trailing '-' are trimmed, as KubeSpawner does.
func expandTemplate(tmpl, user string) (string, error) {
	escaped, err := spawner.PodName("", user)
	if err != nil {
		return "", err
	}
	name := strings.NewReplacer("{username}", escaped, "{user_server}", escaped, "{servername}", "").Replace(tmpl)
	return strings.TrimRight(name, "-"), nil
}

// claimName is user's claim's name.
func (st *Storage) claimName(user string) (string, error) {
	return expandTemplate(st.NameTemplate, user)
}

// claim is user's claim as the start requests it. The spawner adds its
// labels and the user's key annotation.
func (st *Storage) claim(user string) (*corev1.PersistentVolumeClaim, error) {
	name, err := st.claimName(user)
	if err != nil {
		return nil, err
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"component": "singleuser-storage"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      slices.Clone(st.AccessModes),
			StorageClassName: st.Class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: st.Capacity.DeepCopy()}},
		},
	}, nil
}

// podService is the Service of a user's pod (KubeSpawner's services_enabled):
// named as the pod, port "http" to the notebook's port. Its selector is the
// spawner's (the pod's labels), its ownerReference the pod: it goes with
// the pod.
func podService(pod string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Labels: map[string]string{"component": "singleuser-server"}},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}
}
