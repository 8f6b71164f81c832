//go:build integration

package main

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type rbacManifests struct {
	sa       *corev1.ServiceAccount
	roles    []*rbacv1.Role
	bindings []*rbacv1.RoleBinding
}

func readRBAC(t *testing.T, path string) rbacManifests {
	t.Helper()
	var m rbacManifests
	for _, obj := range readManifests(t, path) {
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			m.sa = o
		case *rbacv1.Role:
			m.roles = append(m.roles, o)
		case *rbacv1.RoleBinding:
			m.bindings = append(m.bindings, o)
		default:
			t.Fatalf("%s: unexpected %T", path, obj)
		}
	}
	return m
}

// TestDeployRBAC applies the Roles of deploy/ to the real control plane and
// runs the sidecar with a ServiceAccount bound to exactly them: everything
// works. Taking one permission away (watch) makes the sidecar say so:
// not ready, with a reason that names the forbidden request.
func TestDeployRBAC(t *testing.T) {
	t.Parallel()
	read := readRBAC(t, "deploy/rbac.yaml")
	del := readRBAC(t, "deploy/rbac-delete.yaml")
	require.NotNil(t, read.sa)
	require.Len(t, read.roles, 1)
	require.Len(t, read.bindings, 1)
	require.Len(t, del.roles, 1)
	require.Len(t, del.bindings, 1)

	// Least privilege, as written in the files.
	verbs := map[string][]string{}
	for _, r := range read.roles[0].Rules {
		require.Equal(t, []string{""}, r.APIGroups)
		for _, res := range r.Resources {
			verbs[res] = append(verbs[res], r.Verbs...)
		}
	}
	for res := range verbs {
		slices.Sort(verbs[res])
	}
	assert.Equal(t, map[string][]string{"pods": {"get", "list", "watch"}, "events": {"get", "list", "watch"}}, verbs)
	require.Len(t, del.roles[0].Rules, 1)
	assert.Equal(t, []string{"pods"}, del.roles[0].Rules[0].Resources)
	assert.Equal(t, []string{"delete"}, del.roles[0].Rules[0].Verbs)
	for _, b := range append(read.bindings, del.bindings...) {
		require.Len(t, b.Subjects, 1)
		assert.Equal(t, "ServiceAccount", b.Subjects[0].Kind)
		assert.Equal(t, read.sa.Name, b.Subjects[0].Name)
	}
	assert.Equal(t, read.roles[0].Name, read.bindings[0].RoleRef.Name)
	assert.Equal(t, del.roles[0].Name, del.bindings[0].RoleRef.Name)

	// A namespace of our own, the ServiceAccount of the file, the Role and
	// RoleBinding moved into it.
	e := newEnv(t)
	saCfg, err := cluster.ServiceAccountConfig(t.Context(), e.ns, read.sa.Name)
	require.NoError(t, err)
	apply := func(m rbacManifests) {
		for _, r := range m.roles {
			r = r.DeepCopy()
			r.Namespace = e.ns
			_, err := e.direct.RbacV1().Roles(e.ns).Create(t.Context(), r, metav1.CreateOptions{})
			require.NoError(t, err)
		}
		for _, b := range m.bindings {
			b = b.DeepCopy()
			b.Namespace = e.ns
			for i := range b.Subjects {
				b.Subjects[i].Namespace = e.ns
			}
			_, err := e.direct.RbacV1().RoleBindings(e.ns).Create(t.Context(), b, metav1.CreateOptions{})
			require.NoError(t, err)
		}
	}
	apply(read)
	pod := e.pod("jupyter-alice", userLabels)

	const token = "rbac-test-token"
	s := startSidecar(t, saCfg, Config{Namespaces: []string{e.ns}, Selector: "component=singleuser-server", Token: token})
	s.waitReady()

	// Everything a read-only sidecar does works.
	r := s.get("/pods/" + e.ns + "/jupyter-alice")
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	r = s.get("/pods/" + e.ns + "/jupyter-nobody")
	require.Equal(t, http.StatusNotFound, r.code, "%s", r.body)
	r = s.get("/pods")
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, []string{"jupyter-alice"}, names(decode[listBody](t, r).Items))
	_, err = e.direct.CoreV1().Events(e.ns).Create(t.Context(), &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "alice-scheduled"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: e.ns, Name: pod.Name, UID: pod.UID, APIVersion: "v1"},
		Reason:         "Scheduled", Message: "Successfully assigned", Type: corev1.EventTypeNormal,
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	st := s.openSSE("/pods/" + e.ns + "/jupyter-alice/events")
	ev, ok := st.next()
	require.True(t, ok)
	assert.Equal(t, "progress", ev.name)
	assert.Contains(t, ev.data, `"reason":"Scheduled"`)
	st.close()

	// DELETE without the delete Role: the API server's refusal is reported,
	// never taken for success.
	bearer := http.Header{"Authorization": {"Bearer " + token}}
	r = s.do(http.MethodDelete, "/pods/"+e.ns+"/jupyter-alice", bearer)
	require.Equal(t, http.StatusServiceUnavailable, r.code, "%s", r.body)
	assert.Contains(t, r.json(t)["error"], "forbidden")
	// With it, DELETE works.
	apply(del)
	require.Eventually(t, func() bool {
		return s.do(http.MethodDelete, "/pods/"+e.ns+"/jupyter-alice?uid="+string(pod.UID), bearer).code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "DELETE allowed by rbac-delete.yaml")

	// Take "watch" away: the sidecar must notice and say why.
	role, err := e.direct.RbacV1().Roles(e.ns).Get(t.Context(), read.roles[0].Name, metav1.GetOptions{})
	require.NoError(t, err)
	for i, rule := range role.Rules {
		if slices.Contains(rule.Resources, "pods") {
			role.Rules[i].Verbs = []string{"get", "list"}
		}
	}
	_, err = e.direct.RbacV1().Roles(e.ns).Update(t.Context(), role, metav1.UpdateOptions{})
	require.NoError(t, err)
	e.pod("jupyter-bob", userLabels) // a change for the probes to look for

	var ready response
	require.Eventually(t, func() bool {
		ready = s.get("/readyz")
		return ready.code == http.StatusServiceUnavailable
	}, 60*time.Second, 50*time.Millisecond, "not ready without watch permission")
	assert.Contains(t, string(ready.body), "forbidden", "readyz says why: %s", ready.body)
	status := s.get("/status").json(t)
	assert.NotEqual(t, "synced", status["state"])
	assert.Contains(t, status["reason"], "forbidden")
	// Reads fall back to the API server, which still allows get and list.
	r = s.get("/pods/" + e.ns + "/jupyter-bob")
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, "api", decode[podBody](t, r).Source)
}
