//go:build integration

package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// TestDeployRBACIsEnough: the service runs as the ServiceAccount of
// deploy/rbac.yaml, bound to exactly its Role: start (with the user's
// claim and a Service), poll, progress, stop, the sweeper's Lease, a sweep
// that finds a claim of a user without a server and deletes an ownerless
// Service, a start that grows the claim, and delete_forever all work. On the control plane
// with the claim protection controller (a deleted claim goes) and no
// garbage collector (the service deletes the Service itself).
func TestDeployRBACIsEnough(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, claimCluster(t))
	rbac := read(t, "deploy/rbac.yaml")
	sa, role, binding := rbac[0].(*corev1.ServiceAccount), rbac[1].(*rbacv1.Role).DeepCopy(), rbac[2].(*rbacv1.RoleBinding).DeepCopy()
	saCfg, err := e.c.ServiceAccountConfig(t.Context(), e.ns, sa.Name)
	require.NoError(t, err)
	role.Namespace, binding.Namespace, binding.Subjects[0].Namespace = e.ns, e.ns, e.ns
	_, err = e.direct.RbacV1().Roles(e.ns).Create(t.Context(), role, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.direct.RbacV1().RoleBindings(e.ns).Create(t.Context(), binding, metav1.CreateOptions{})
	require.NoError(t, err)

	metrics := prometheus.NewRegistry()
	f, err := reflector.NewFactory(saCfg, reflector.Options{StallTimeout: 5 * time.Second, Registerer: metrics})
	require.NoError(t, err)
	t.Cleanup(f.Shutdown)
	f.Start(context.Background())
	cfg := e.config(f)
	cfg.Metrics = metrics
	cfg.Storage, cfg.ServicesEnabled = &Storage{Capacity: resource.MustParse("1Gi")}, true
	cfg.SweepInterval, cfg.OrphanMinAge, cfg.Identity, cfg.RetryPeriod = 200*time.Millisecond, time.Millisecond, "rbac-test", 200*time.Millisecond
	d := e.start(cfg)
	res := d.startUser("alice")
	pod := e.podName("alice")
	claim := claimNameOf(t, "alice")
	require.NotNil(t, e.claim(claim), "the claim, created as the ServiceAccount")
	require.NotNil(t, e.service(pod), "the Service, created as the ServiceAccount")
	assert.Len(t, res["claims"], 1)
	assert.Len(t, res["objects"], 1)
	assert.Equal(t, "running", d.do("GET", "/users/alice/server", nil).json(t)["state"])
	evs := d.sse("GET", "/users/alice/server/progress", nil)
	require.NotEmpty(t, evs)
	assert.Equal(t, "result", evs[len(evs)-1].name)
	require.Eventually(t, func() bool {
		l, err := e.direct.CoordinationV1().Leases(e.ns).Get(t.Context(), "kubespawn-sweeper-default", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "rbac-test"
	}, time.Minute, 50*time.Millisecond, "the sweeper leads with the Role's lease permissions")

	r := d.do(http.MethodDelete, "/users/alice/claims", nil)
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	d.stopUser("alice")
	assert.Nil(t, e.pod(pod))
	assert.Nil(t, e.service(pod), "deleted by the stop, as the ServiceAccount (no garbage collector here)")
	require.NotNil(t, e.claim(claim), "kept across the stop")

	// A Service whose pod is gone (a garbage collector that lags or does
	// not run): the sweeper deletes it, as the ServiceAccount. Its LISTs
	// of Secrets and ConfigMaps, which the Role does not grant, are
	// "none of that kind": the sweeps succeed.
	ownerless := "kubespawn-default-gone"
	_, err = e.direct.CoreV1().Services(e.ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: ownerless,
			Labels: map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: "default",
				spawner.LabelKeyHash: spawner.KeyHash("gone"), spawner.LabelPodUID: "0b5e55ed-0000-4000-8000-000000000000"},
			Annotations:     map[string]string{spawner.AnnotationKey: "gone"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: e.podName("gone"), UID: types.UID("0b5e55ed-0000-4000-8000-000000000000"), Controller: ptr.To(true)}},
		},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8888}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.service(ownerless) == nil }, time.Minute, 50*time.Millisecond, "the sweeper deleted the ownerless Service")
	require.Eventually(t, func() bool {
		return strings.Contains(metric(t, d, "kubespawn_spawner_owned_objects_deleted_total"), `kubespawn_spawner_owned_objects_deleted_total{by="sweeper",kind="Service",spawner="default"} 1`)
	}, 30*time.Second, 50*time.Millisecond, "%s", metric(t, d, "kubespawn_spawner_owned_objects_deleted_total"))
	require.Eventually(t, func() bool {
		return strings.Contains(metric(t, d, "kubespawn_spawner_unknown_claims"), `kubespawn_spawner_unknown_claims{namespace="`+e.ns+`",spawner="default"} 1`)
	}, 30*time.Second, 50*time.Millisecond, "alice's claim is reported, she has no server: %s", metric(t, d, "kubespawn_spawner_unknown_claims"))
	assert.NotContains(t, metric(t, d, "kubespawn_spawner_sweeps_total"), `result="error"`)
	require.NotNil(t, e.claim(claim), "reported, never deleted without --max-claim-age")

	// A start that asks for more storage than the claim has patches it:
	// the Role allows that; the API server refuses to expand a claim no
	// volume is bound to (here none is), which is the answer.
	d.close()
	cfg.Storage = &Storage{Capacity: resource.MustParse("2Gi")}
	d = e.start(cfg)
	r = d.do(http.MethodPost, "/users/alice/server", nil)
	require.Equal(t, http.StatusUnprocessableEntity, r.code, "%s", r.body)
	assert.Equal(t, "claim_incompatible", r.json(t)["reason"])
	assert.Contains(t, r.json(t)["error"], "refused to expand")
	assert.NotContains(t, r.json(t)["error"], "cannot patch", "the Role grants patch on claims")
	assert.Nil(t, e.pod(pod))

	r = d.do(http.MethodDelete, "/users/alice/claims", nil)
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	got := r.json(t)
	assert.Equal(t, "deleted", got["state"])
	require.Len(t, got["claims"], 1)
	assert.Equal(t, claim, got["claims"].([]any)[0].(map[string]any)["name"])
	assert.Nil(t, e.claim(claim), "confirmed gone by the API server when the answer comes")
}

// claimNameOf is user's claim's name with the default template.
func claimNameOf(t *testing.T, user string) string {
	t.Helper()
	name, err := (&Storage{NameTemplate: DefaultClaimNameTemplate}).claimName(user)
	require.NoError(t, err)
	return name
}

// claim reads a claim from the API server; nil if NotFound.
func (e *env) claim(name string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	c, err := e.direct.CoreV1().PersistentVolumeClaims(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	return orNil(e.t, c, err)
}

// service reads a Service from the API server; nil if NotFound.
func (e *env) service(name string) *corev1.Service {
	e.t.Helper()
	s, err := e.direct.CoreV1().Services(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	return orNil(e.t, s, err)
}
