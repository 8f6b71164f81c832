//go:build integration

package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubespawn/kubespawn/spawner"
)

// storageConfig is the tests' Config with a 1Gi claim per user and a
// Service per pod.
func (e *env) storageConfig() Config {
	cfg := e.config(nil)
	cfg.Storage, cfg.ServicesEnabled = &Storage{Capacity: resource.MustParse("1Gi")}, true
	return cfg
}

func objects(t *testing.T, m map[string]any, field string) []map[string]any {
	t.Helper()
	list, _ := m[field].([]any)
	out := make([]map[string]any, len(list))
	for i, o := range list {
		out[i] = o.(map[string]any)
	}
	return out
}

// TestStartWithStorageAndService: the user's claim is created before the
// pod and mounted in it, the pod's Service is created with it; the answer
// names both. A stop deletes the pod and its Service (no garbage collector
// here: the service did), never the claim; the next start of the user
// mounts the same claim (KubeSpawner #937: never a new, empty one).
func TestStartWithStorageAndService(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.start(e.storageConfig())
	user := "Alice@Example.com"
	name, claim := e.podName(user), claimNameOf(t, user)

	res := d.startUser(user)
	cl := objects(t, res, "claims")
	require.Len(t, cl, 1, "%v", res)
	assert.Equal(t, map[string]any{"kind": "PersistentVolumeClaim", "name": claim, "uid": cl[0]["uid"], "created": true}, cl[0])
	obj := objects(t, res, "objects")
	require.Len(t, obj, 1, "%v", res)
	assert.Equal(t, "Service", obj[0]["kind"])
	assert.Equal(t, name, obj[0]["name"], "the Service is named as the pod")

	pod := e.pod(name)
	require.NotNil(t, pod)
	require.Len(t, pod.Spec.Volumes, 1)
	assert.Equal(t, claim, pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName)
	c := pod.Spec.Containers[0]
	assert.Equal(t, []corev1.VolumeMount{{Name: pod.Spec.Volumes[0].Name, MountPath: "/home/jovyan"}}, c.VolumeMounts)
	assert.Equal(t, int32(8888), c.Ports[0].ContainerPort)

	pvc := e.claim(claim)
	require.NotNil(t, pvc)
	assert.Equal(t, types.UID(cl[0]["uid"].(string)), pvc.UID)
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, pvc.Spec.AccessModes)
	assert.Equal(t, "1Gi", pvc.Spec.Resources.Requests.Storage().String())
	assert.Nil(t, pvc.Spec.StorageClassName, "no --storage-class: the cluster's default")
	assert.Equal(t, "default", pvc.Labels[spawner.LabelInstance])
	assert.Equal(t, spawner.KeyHash(user), pvc.Labels[spawner.LabelKeyHash])
	assert.Equal(t, user, pvc.Annotations[spawner.AnnotationKey])
	assert.Empty(t, pvc.OwnerReferences, "the user's, not the pod's")

	svc := e.service(name)
	require.NotNil(t, svc)
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, "http", svc.Spec.Ports[0].Name)
	assert.Equal(t, int32(8888), svc.Spec.Ports[0].Port)
	assert.Equal(t, 8888, svc.Spec.Ports[0].TargetPort.IntValue())
	assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)), "the Service selects the pod")
	require.Len(t, svc.OwnerReferences, 1)
	assert.Equal(t, pod.UID, svc.OwnerReferences[0].UID, "it goes with the pod")

	d.stopUser(user)
	assert.Nil(t, e.pod(name))
	assert.Nil(t, e.service(name), "the stop deleted the Service")
	pvc = e.claim(claim)
	require.NotNil(t, pvc, "a stop never deletes the claim")
	assert.Nil(t, pvc.DeletionTimestamp)

	res = d.startUser(user)
	again := objects(t, res, "claims")
	require.Len(t, again, 1)
	assert.Equal(t, cl[0]["uid"], again[0]["uid"], "the same claim")
	assert.Nil(t, again[0]["created"], "adopted, not created")
	assert.NotNil(t, e.service(name))
	d.stopUser(user)
	assert.Nil(t, e.service(name))
}

// TestStartFailsClearlyOnClaimsAndServices: a claim of the user's name
// that is not this service's, an existing claim that cannot take the
// configured spec, a Service of the pod's name that is not ours: each
// start fails with its reason and a 4xx, and leaves no pod.
func TestStartFailsClearlyOnClaimsAndServices(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.storageConfig()
	d := e.start(cfg)

	// A claim made by hand under carol's claim name.
	_, err := e.direct.CoreV1().PersistentVolumeClaims(e.ns).Create(t.Context(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claimNameOf(t, "carol")},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	r := d.do(http.MethodPost, "/users/carol/server", nil)
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	m := r.json(t)
	assert.Equal(t, "claim_conflict", m["reason"])
	assert.Contains(t, m["error"], claimNameOf(t, "carol"))
	assert.Nil(t, e.pod(e.podName("carol")), "no pod for a start that failed on its claim")
	assert.Empty(t, d.known().Pods)

	// A Service of dave's pod's name, not ours: the pod it created is
	// deleted.
	_, err = e.direct.CoreV1().Services(e.ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: e.podName("dave")},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	r = d.do(http.MethodPost, "/users/dave/server", nil)
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	m = r.json(t)
	assert.Equal(t, "owned_object_conflict", m["reason"])
	assert.Equal(t, true, m["podDeleted"])
	assert.Nil(t, e.pod(e.podName("dave")))
	require.NotNil(t, e.service(e.podName("dave")), "a Service that is not ours is never touched")

	// erin's claim made with ReadWriteOnce; the service now asks for
	// ReadWriteMany (a configuration change): 422, naming the field.
	d.startStopUser("erin")
	d.close()
	cfg = e.storageConfig()
	cfg.Storage.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	d = e.start(cfg)
	r = d.do(http.MethodPost, "/users/erin/server", nil)
	require.Equal(t, http.StatusUnprocessableEntity, r.code, "%s", r.body)
	m = r.json(t)
	assert.Equal(t, "claim_incompatible", m["reason"])
	assert.Contains(t, m["error"], "spec.accessModes")
	assert.Nil(t, e.pod(e.podName("erin")))
	assert.Contains(t, metric(t, d, "kubespawn_spawner_starts_total"), `kubespawn_spawner_starts_total{result="claim_incompatible",spawner="default"} 1`)
}

// TestDeleteClaimsRoute (JupyterHub's delete_forever): 409 while the user
// has a server; 200 with the claims deleted, once the API server confirmed
// them gone; 200 with none for a user without claims; 400 for a bad user.
// Here no controller removes the kubernetes.io/pvc-protection finalizer:
// the claim stays Terminating, the answer is 503 (retry), and a start of
// the user meanwhile is a 409 claim_terminating that creates no pod.
func TestDeleteClaimsRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.storageConfig()
	cfg.StopTimeout = 2 * time.Second
	d := e.start(cfg)

	r := d.do(http.MethodDelete, "/users/nobody/claims", nil)
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.JSONEq(t, `{"user":"nobody","state":"deleted","claims":[]}`, string(r.body))
	r = d.do(http.MethodDelete, "/users/%00/claims", nil)
	assert.Equal(t, http.StatusBadRequest, r.code, "%s", r.body)

	d.startUser("frank")
	r = d.do(http.MethodDelete, "/users/frank/claims", nil)
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	m := r.json(t)
	assert.Equal(t, "claim_in_use", m["reason"])
	assert.Equal(t, stateRunning, m["serviceState"])
	require.NotNil(t, e.claim(claimNameOf(t, "frank")))
	assert.Nil(t, e.claim(claimNameOf(t, "frank")).DeletionTimestamp, "refused: nothing deleted")
	d.stopUser("frank")

	r = d.do(http.MethodDelete, "/users/frank/claims", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.code, "%s", r.body)
	m = r.json(t)
	assert.Equal(t, "timeout", m["reason"])
	assert.Contains(t, m["error"], claimNameOf(t, "frank"))
	pvc := e.claim(claimNameOf(t, "frank"))
	require.NotNil(t, pvc)
	require.NotNil(t, pvc.DeletionTimestamp, "the DELETE reached the API server")
	assert.Contains(t, pvc.Finalizers, "kubernetes.io/pvc-protection")

	r = d.do(http.MethodPost, "/users/frank/server", nil)
	require.Equal(t, http.StatusConflict, r.code, "%s", r.body)
	assert.Equal(t, "claim_terminating", r.json(t)["reason"])
	assert.Nil(t, e.pod(e.podName("frank")))

	// The finalizer goes (the claim protection controller's part, played
	// by the test): the claim is gone, and the next start gets a new one.
	pvc.Finalizers = nil
	_, err := e.direct.CoreV1().PersistentVolumeClaims(e.ns).Update(t.Context(), pvc, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.claim(claimNameOf(t, "frank")) == nil }, time.Minute, 20*time.Millisecond)
	r = d.do(http.MethodDelete, "/users/frank/claims", nil)
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Empty(t, r.json(t)["claims"])
	res := d.startUser("frank")
	assert.Equal(t, true, objects(t, res, "claims")[0]["created"], "a new claim")
	d.stopUser("frank")
}

// TestSweeperReportsAndDeletesClaimsOfUsersWithoutServer: the sweeper
// reports the claims of users the table has no server for
// (kubespawn_spawner_unknown_claims) and, by default, deletes none; with
// MaxClaimAge it deletes those older than it, never one whose user has a
// server. On the control plane with the claim protection controller, so
// that a deleted claim goes.
func TestSweeperReportsAndDeletesClaimsOfUsersWithoutServer(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, claimCluster(t))
	cfg := e.storageConfig()
	cfg.SweepInterval, cfg.OrphanMinAge, cfg.RetryPeriod, cfg.Identity = 100*time.Millisecond, time.Millisecond, 100*time.Millisecond, "claims-1"
	d := e.start(cfg)
	d.startUser("gus")
	d.startUser("hana")
	d.stopUser("gus")
	unknown := `kubespawn_spawner_unknown_claims{namespace="` + e.ns + `",spawner="default"} 1`
	require.Eventually(t, func() bool { return strings.Contains(metric(t, d, "kubespawn_spawner_unknown_claims"), unknown) },
		time.Minute, 50*time.Millisecond, "gus's claim is reported: %s", metric(t, d, "kubespawn_spawner_unknown_claims"))
	n := sweeps(t, d)
	require.Eventually(t, func() bool { return sweeps(t, d) >= n+3 }, time.Minute, 50*time.Millisecond)
	require.NotNil(t, e.claim(claimNameOf(t, "gus")), "reported, not deleted: no MaxClaimAge")
	assert.NotContains(t, metric(t, d, "kubespawn_spawner_claims_deleted_total"), `result="deleted"`)
	d.close()

	cfg = e.storageConfig()
	cfg.SweepInterval, cfg.OrphanMinAge, cfg.RetryPeriod, cfg.Identity = 100*time.Millisecond, time.Millisecond, 100*time.Millisecond, "claims-2"
	cfg.MaxClaimAge = time.Second
	d = e.start(cfg)
	require.Eventually(t, func() bool { return e.claim(claimNameOf(t, "gus")) == nil }, time.Minute, 50*time.Millisecond, "gus's claim, older than MaxClaimAge, deleted")
	require.Eventually(t, func() bool {
		return strings.Contains(metric(t, d, "kubespawn_spawner_claims_deleted_total"), `kubespawn_spawner_claims_deleted_total{result="deleted",spawner="default"} 1`)
	}, 30*time.Second, 50*time.Millisecond, "%s", metric(t, d, "kubespawn_spawner_claims_deleted_total"))
	n = sweeps(t, d)
	require.Eventually(t, func() bool { return sweeps(t, d) >= n+3 }, time.Minute, 50*time.Millisecond)
	pvc := e.claim(claimNameOf(t, "hana"))
	require.NotNil(t, pvc, "hana has a server: her claim is never deleted")
	assert.Nil(t, pvc.DeletionTimestamp)
	d.stopUser("hana")
	r := d.do(http.MethodDelete, "/users/hana/claims", nil)
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
}
