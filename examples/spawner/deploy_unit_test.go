package main

import (
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kubespawn/kubespawn/examples/internal/manifest"
	"github.com/kubespawn/kubespawn/examples/internal/service"
)

func read(t *testing.T, path string) []any {
	t.Helper()
	objs, err := manifest.Read(path)
	require.NoError(t, err)
	out := make([]any, len(objs))
	for i, o := range objs {
		out[i] = o
	}
	return out
}

// TestDeployManifests: deploy/ decodes; the Deployment's args are valid
// flags that listen beyond loopback only with a token from a Secret; the
// NetworkPolicy admits the hub and Prometheus, never a user pod; the
// Role grants exactly what the service uses.
func TestDeployManifests(t *testing.T) {
	var dep *appsv1.Deployment
	var svc *corev1.Service
	for _, o := range read(t, "deploy/deployment.yaml") {
		switch o := o.(type) {
		case *appsv1.Deployment:
			dep = o
		case *corev1.Service:
			svc = o
		}
	}
	require.NotNil(t, dep)
	require.NotNil(t, svc)
	spec := dep.Spec.Template.Spec
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	o, err := parseFlags(c.Args, io.Discard)
	require.NoError(t, err, "the Deployment's args are valid flags")
	require.NotEmpty(t, o.tokenFile)
	require.NotNil(t, o.storage, "a claim per user, as Zero to JupyterHub's default")
	assert.Equal(t, "10Gi", o.storage.Capacity.String())
	require.ErrorIs(t, service.CheckListen(o.listen, service.Auth{}), service.ErrInsecureListen, "it listens beyond loopback...")
	require.NoError(t, service.CheckListen(o.listen, service.NewAuth("x")), "...which the token allows")
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && strings.HasPrefix(o.tokenFile, m.MountPath+"/") {
				mounted = v.Secret != nil
			}
		}
	}
	assert.True(t, mounted, "--token-file is in a mounted Secret")
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, dep.Spec.Template.Labels, svc.Spec.Selector)
	_, portStr, err := net.SplitHostPort(o.listen)
	require.NoError(t, err)
	port, err := strconv.Atoi(portStr)
	require.NoError(t, err)

	np := read(t, "deploy/networkpolicy.yaml")[0].(*networkingv1.NetworkPolicy)
	sel, err := manifest.Selects(&np.Spec.PodSelector, dep.Spec.Template.Labels)
	require.NoError(t, err)
	assert.True(t, sel, "the policy selects the service's pods")
	ns := map[string]string{"kubernetes.io/metadata.name": "default"}
	for _, c := range []struct {
		name string
		peer manifest.Peer
		want bool
	}{
		{"the hub", manifest.Peer{Pod: map[string]string{"component": "hub", "app": "jupyterhub"}, Namespace: ns, SameNamespace: true}, true},
		{"Prometheus", manifest.Peer{Pod: map[string]string{"app.kubernetes.io/name": "prometheus"}, Namespace: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}, true},
		{"a user pod", manifest.Peer{Pod: map[string]string{"component": "singleuser-server"}, Namespace: ns, SameNamespace: true}, false},
		{"an unlabelled pod", manifest.Peer{Pod: map[string]string{}, Namespace: ns, SameNamespace: true}, false},
		{"a hub-labelled pod of another namespace", manifest.Peer{Pod: map[string]string{"component": "hub"}, Namespace: map[string]string{"kubernetes.io/metadata.name": "other"}}, false},
	} {
		got, err := manifest.Admits(np, port, c.peer)
		require.NoError(t, err)
		assert.Equal(t, c.want, got, c.name)
	}

	rbac := read(t, "deploy/rbac.yaml")
	require.Len(t, rbac, 3)
	role := rbac[1].(*rbacv1.Role)
	verbs := map[string][]string{}
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			verbs[res] = append(verbs[res], r.Verbs...)
			slices.Sort(verbs[res])
		}
	}
	assert.Equal(t, map[string][]string{
		"pods": {"create", "delete", "get", "list", "watch"}, "events": {"get", "list", "watch"}, "leases": {"create", "get", "update"},
		"persistentvolumeclaims": {"create", "delete", "get", "list", "patch"},
		"services":               {"create", "delete", "get", "list"},
	}, verbs, "least privilege: no update/patch of pods, no watch of claims or Services, no deletecollection, no secrets or configmaps")
}
