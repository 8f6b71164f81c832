package spawner

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func unitClaim(name string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
	}}
}

// Invalid claims and owned objects are refused before anything is sent to
// the API server, with ErrInvalidArgument and the field named.
func TestBadClaimsAndObjectsAreRefusedBeforeAnything(t *testing.T) {
	t.Parallel()
	svc := func(name string, sel map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Port: 80}}}}
	}
	cases := map[string]struct {
		mod  func(*Request)
		want string
	}{
		"claim without name": {func(r *Request) { r.Claims = []*corev1.PersistentVolumeClaim{unitClaim("")} }, "Claims[0]: PersistentVolumeClaim has no name"},
		"claim bad name":     {func(r *Request) { r.Claims = []*corev1.PersistentVolumeClaim{unitClaim("Home_Dir")} }, `Claims[0]: PersistentVolumeClaim name "Home_Dir"`},
		"claim nil":          {func(r *Request) { r.Claims = []*corev1.PersistentVolumeClaim{nil} }, "Claims[0] is nil"},
		"claim without size": {func(r *Request) {
			c := unitClaim("home")
			c.Spec.Resources.Requests = nil
			r.Claims = []*corev1.PersistentVolumeClaim{c}
		}, "spec.resources.requests.storage must be a positive size"},
		"claim of size zero": {func(r *Request) {
			c := unitClaim("home")
			c.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("0")
			r.Claims = []*corev1.PersistentVolumeClaim{c}
		}, "spec.resources.requests.storage must be a positive size"},
		"claim without access modes": {func(r *Request) {
			c := unitClaim("home")
			c.Spec.AccessModes = nil
			r.Claims = []*corev1.PersistentVolumeClaim{c}
		}, "spec.accessModes is empty"},
		"claim in another namespace": {func(r *Request) {
			c := unitClaim("home")
			c.Namespace = "elsewhere"
			r.Claims = []*corev1.PersistentVolumeClaim{c}
		}, `is in namespace "elsewhere"`},
		"claim with a reserved label": {func(r *Request) {
			c := unitClaim("home")
			c.Labels = map[string]string{LabelKeyHash: "x"}
			r.Claims = []*corev1.PersistentVolumeClaim{c}
		}, "is set by the spawner"},
		"duplicate claims": {func(r *Request) { r.Claims = []*corev1.PersistentVolumeClaim{unitClaim("home"), unitClaim("home")} }, `duplicate claim name "home"`},
		"service selecting another pod": {func(r *Request) {
			r.Services = []*corev1.Service{svc("web", map[string]string{"app": "other"})}
		}, "Services[0]: Service \"web\": spec.selector map[app:other] does not select the pod"},
		"service name not a DNS-1035 label": {func(r *Request) { r.Services = []*corev1.Service{svc("1web", nil)} }, `Services[0]: Service name "1web"`},
		"secret without name":               {func(r *Request) { r.Secrets = []*corev1.Secret{{}} }, "Secrets[0]: Secret has no name"},
		"configmap with owner": {func(r *Request) {
			r.ConfigMaps = []*corev1.ConfigMap{{ObjectMeta: metav1.ObjectMeta{Name: "env", OwnerReferences: []metav1.OwnerReference{{Name: "x"}}}}}
		}, "ownerReferences are set by the spawner"},
		"pod uid label": {func(r *Request) {
			r.Secrets = []*corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: "tls", Labels: map[string]string{LabelPodUID: "u"}}}}
		}, "is set by the spawner"},
		"duplicate secrets": {func(r *Request) {
			r.Secrets = []*corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: "tls"}}, {ObjectMeta: metav1.ObjectMeta{Name: "tls"}}}
		}, `duplicate Secret name "tls"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			req := Request{Key: "alice", Namespace: testNS, Spec: testSpec()}
			tc.mod(&req)
			_, err := f.sp.Start(t.Context(), req)
			require.ErrorIs(t, err, ErrInvalidArgument)
			assert.Contains(t, err.Error(), tc.want)
			for _, a := range f.client.Actions() {
				// The fake pod cache's own watch is not the Start's.
				assert.Contains(t, []string{"list", "watch"}, a.GetVerb(), "nothing was sent to the API server: %v", a)
			}
		})
	}
}

// A Service that selects the pod by labels of the request, or by the
// spawner's own, is accepted; one without a selector gets the spawner's.
func TestServiceSelectorDefaultsToThePod(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	req := Request{Key: "alice", Namespace: testNS, Spec: testSpec(), Labels: map[string]string{"app": "nb"},
		Services: []*corev1.Service{
			{ObjectMeta: metav1.ObjectMeta{Name: "a"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "nb"}}},
		}}
	pod, _, err := f.sp.buildPod(req)
	require.NoError(t, err)
	owned, err := f.sp.buildOwned(req, pod)
	require.NoError(t, err)
	require.Len(t, owned, 2)
	a := owned[0].obj.(*corev1.Service)
	assert.Equal(t, map[string]string{LabelManagedBy: ManagedByValue, LabelInstance: "default", LabelKeyHash: KeyHash("alice")}, a.Spec.Selector)
	assert.Equal(t, "alice", a.Annotations[AnnotationKey])
	assert.Nil(t, req.Services[0].Spec.Selector, "the request is never modified")
}

func TestClaimIncompatibleNamesTheField(t *testing.T) {
	t.Parallel()
	base := unitClaim("home")
	cases := map[string]struct {
		got  func(*corev1.PersistentVolumeClaim)
		want func(*corev1.PersistentVolumeClaim)
		diff string
	}{
		"same":                   {func(*corev1.PersistentVolumeClaim) {}, func(*corev1.PersistentVolumeClaim) {}, ""},
		"class chosen by server": {func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = new("standard") }, func(*corev1.PersistentVolumeClaim) {}, ""},
		"bigger on the server": {func(c *corev1.PersistentVolumeClaim) {
			c.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("5Gi")
		}, func(*corev1.PersistentVolumeClaim) {}, ""},
		"modes": {func(*corev1.PersistentVolumeClaim) {}, func(c *corev1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
		}, "spec.accessModes"},
		"modes in another order": {func(c *corev1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany, corev1.ReadWriteOnce}
		}, func(c *corev1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadOnlyMany}
		}, ""},
		"class": {func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = new("standard") }, func(c *corev1.PersistentVolumeClaim) {
			c.Spec.StorageClassName = new("fast")
		}, "spec.storageClassName"},
		"volume mode": {func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeMode = new(corev1.PersistentVolumeFilesystem) }, func(c *corev1.PersistentVolumeClaim) {
			c.Spec.VolumeMode = new(corev1.PersistentVolumeBlock)
		}, "spec.volumeMode"},
		"selector": {func(*corev1.PersistentVolumeClaim) {}, func(c *corev1.PersistentVolumeClaim) {
			c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"disk": "ssd"}}
		}, "spec.selector"},
	}
	for name, tc := range cases {
		got, want := base.DeepCopy(), base.DeepCopy()
		tc.got(got)
		tc.want(want)
		diff := claimIncompatible(got, want)
		if tc.diff == "" {
			assert.Empty(t, diff, name)
		} else {
			assert.Contains(t, diff, tc.diff, name)
		}
	}
}

// A start whose time runs out while its claim's create is in flight fails
// for that reason (ErrStartTimeout), not as a refusal of the API server:
// client-go's error for a cancelled request is not an answer.
func TestClaimCreateCutByTheStartTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options) { o.StartTimeout = 100 * time.Millisecond })
	f.client.PrependReactor("create", "persistentvolumeclaims", func(k8stesting.Action) (bool, runtime.Object, error) {
		time.Sleep(300 * time.Millisecond) // past the start timeout
		return true, nil, fmt.Errorf("Post \"https://api/persistentvolumeclaims\": %w", context.Canceled)
	})
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec(), Claims: []*corev1.PersistentVolumeClaim{unitClaim("home")}})
	require.ErrorIs(t, err, ErrStartTimeout)
	assert.NotErrorIs(t, err, ErrClaimFailed, "a cancelled request is not the API server's refusal")
	name, err := f.sp.PodName("alice")
	require.NoError(t, err)
	assert.False(t, f.podExists(t, name), "no pod")
}
