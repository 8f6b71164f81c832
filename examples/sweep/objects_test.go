//go:build integration

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/spawner"
)

// claim creates user's claim as a spawner of instance would ("" for
// default). This package's control plane runs no claim protection
// controller: the kubernetes.io/pvc-protection finalizer the API server
// puts on every claim is removed here, as that controller does for a
// claim no pod uses, so that a deleted claim goes.
func (e *env) claim(user, instance string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	c, err := e.direct.CoreV1().PersistentVolumeClaims(e.ns).Create(e.t.Context(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "claim-" + user,
			Labels: map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: cmpOr(instance, "default"),
				spawner.LabelKeyHash: spawner.KeyHash(user)},
			Annotations: map[string]string{spawner.AnnotationKey: user}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	c.Finalizers = nil
	c, err = e.direct.CoreV1().PersistentVolumeClaims(e.ns).Update(e.t.Context(), c, metav1.UpdateOptions{})
	require.NoError(e.t, err)
	return c
}

func (e *env) claimPresent(c *corev1.PersistentVolumeClaim) bool {
	e.t.Helper()
	got, err := e.direct.CoreV1().PersistentVolumeClaims(e.ns).Get(context.Background(), c.Name, metav1.GetOptions{})
	return sameObject(e.t, got, err, c.UID)
}

// ownedService creates a Service as a spawner makes one for the pod name
// and uid (which need not exist).
func (e *env) ownedService(name, pod string, uid types.UID) *corev1.Service {
	e.t.Helper()
	s, err := e.direct.CoreV1().Services(e.ns).Create(e.t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:          map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: "default", spawner.LabelPodUID: string(uid)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod, UID: uid, Controller: ptr.To(true)}}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8888}}},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return s
}

func (e *env) servicePresent(s *corev1.Service) bool {
	e.t.Helper()
	got, err := e.direct.CoreV1().Services(e.ns).Get(context.Background(), s.Name, metav1.GetOptions{})
	return sameObject(e.t, got, err, s.UID)
}

// section returns the rows of the table under the header whose first
// field is first, by the field at index key.
func section(t *testing.T, out, first string, key int) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	in := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == first:
			in = true
		case in && len(f) > key && !strings.Contains(line, " matched") && !strings.Contains(line, "dry run"):
			rows[f[key]] = f
		default:
			in = false
		}
	}
	return rows
}

// TestOwnerlessObjectsShownAndDeletedWithDelete: a Service whose pod is
// gone (a garbage collector that lags or does not run) is listed, as
// would-delete in a dry run and deleted with --delete, whatever its age;
// the Service of a pod that exists is left alone.
func TestOwnerlessObjectsShownAndDeletedWithDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	live := e.leak("alice", leak{running: true})
	kept := e.ownedService(live.Name, live.Name, live.UID)
	gone := e.ownedService("kubespawn-bob-svc", "kubespawn-bob", "0b5e55ed-0000-4000-8000-000000000000")

	out, _, err := e.sweep("--older-than", "4h")
	require.NoError(t, err)
	rows := section(t, out, "KIND", 1)
	require.ElementsMatch(t, []string{gone.Name}, keys(rows), "%s", out)
	assert.Equal(t, []string{"Service", gone.Name}, rows[gone.Name][:2])
	assert.Equal(t, "would-delete", rows[gone.Name][len(rows[gone.Name])-1])
	assert.Contains(t, out, "1 objects whose pod is gone, 0 deleted, 0 failed")
	assert.True(t, e.servicePresent(gone), "a dry run deletes nothing")

	out, _, err = e.sweep("--older-than", "4h", "--delete")
	require.NoError(t, err)
	rows = section(t, out, "KIND", 1)
	assert.Equal(t, "deleted", rows[gone.Name][len(rows[gone.Name])-1])
	assert.Contains(t, out, "1 objects whose pod is gone, 1 deleted, 0 failed")
	assert.False(t, e.servicePresent(gone))
	assert.True(t, e.servicePresent(kept), "its pod exists")
	e.requirePresent(live)
}

// TestReportClaims: --report-claims lists the claims of keys that have no
// pod (the CLI knows no user table) and deletes none; --max-claim-age
// (with --delete) deletes those older than it, never a claim whose key
// has a pod, never another instance's. A dry run, by default.
func TestReportClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	var withPod, old, young, theirs *corev1.PersistentVolumeClaim
	e.ageTiers(
		tier{past(limit), func() {
			e.leak("alice", leak{running: true})
			withPod = e.claim("alice", "")
			old = e.claim("bob", "")
			theirs = e.claim("carol", "hub-2")
		}},
		// Reported (past --orphan-min-age), not old enough to delete.
		tier{2 * time.Second, func() { young = e.claim("dave", "") }},
	)
	minAge := "--orphan-min-age=1s"

	out, _, err := e.sweep("--report-claims", minAge)
	require.NoError(t, err)
	rows := section(t, out, "CLAIM", 0)
	require.ElementsMatch(t, []string{old.Name, young.Name}, keys(rows), "%s", out)
	assert.Equal(t, []string{"no_pod", "report", "bob"}, rows[old.Name][2:])
	assert.Contains(t, out, "2 claims of keys without a pod, 0 older than --max-claim-age, 0 deleted, 0 failed")
	assert.Contains(t, out, "no pods matched", "--report-claims alone selects no pod")

	out, _, err = e.sweep("--report-claims", minAge, "--max-claim-age", limit.String())
	require.NoError(t, err)
	rows = section(t, out, "CLAIM", 0)
	assert.Equal(t, "would-delete", rows[old.Name][3])
	assert.Equal(t, "report", rows[young.Name][3])
	assert.Contains(t, out, "2 claims of keys without a pod, 1 older than --max-claim-age, 0 deleted, 0 failed (dry run: yes)")
	for _, c := range []*corev1.PersistentVolumeClaim{withPod, old, young, theirs} {
		require.True(t, e.claimPresent(c), "a dry run deletes no claim: %s", c.Name)
	}

	out, _, err = e.sweep("--max-claim-age", limit.String(), minAge, "--delete")
	require.NoError(t, err)
	rows = section(t, out, "CLAIM", 0)
	assert.Equal(t, "deleted", rows[old.Name][3])
	assert.Contains(t, out, "1 deleted")
	require.Eventually(t, func() bool { return !e.claimPresent(old) }, time.Minute, 20*time.Millisecond)
	assert.True(t, e.claimPresent(withPod), "its key has a pod")
	assert.True(t, e.claimPresent(young), "younger than --max-claim-age")
	assert.True(t, e.claimPresent(theirs), "another instance's")

	// Every instance's claims are reported with --all-instances.
	out, _, err = e.sweep("--all-instances", "--report-claims", minAge)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{young.Name, theirs.Name}, keys(section(t, out, "CLAIM", 0)), "%s", out)
}
