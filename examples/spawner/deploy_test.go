//go:build integration

package main

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/reflector"
)

// TestDeployRBACIsEnough: the service runs as the ServiceAccount of
// deploy/rbac.yaml, bound to exactly its Role: start, poll, progress,
// stop, and the sweeper's Lease all work.
func TestDeployRBACIsEnough(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rbac := read(t, "deploy/rbac.yaml")
	sa, role, binding := rbac[0].(*corev1.ServiceAccount), rbac[1].(*rbacv1.Role).DeepCopy(), rbac[2].(*rbacv1.RoleBinding).DeepCopy()
	saCfg, err := cluster.ServiceAccountConfig(t.Context(), e.ns, sa.Name)
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
	cfg.SweepInterval, cfg.Identity, cfg.RetryPeriod = time.Second, "rbac-test", 200*time.Millisecond
	d := e.start(cfg)
	d.startUser("alice")
	assert.Equal(t, "running", d.do("GET", "/users/alice/server", nil).json(t)["state"])
	evs := d.sse("GET", "/users/alice/server/progress", nil)
	require.NotEmpty(t, evs)
	assert.Equal(t, "result", evs[len(evs)-1].name)
	require.Eventually(t, func() bool {
		l, err := e.direct.CoordinationV1().Leases(e.ns).Get(t.Context(), "kubespawn-sweeper-default", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "rbac-test"
	}, time.Minute, 50*time.Millisecond, "the sweeper leads with the Role's lease permissions")
	d.stopUser("alice")
	assert.Nil(t, e.pod(e.podName("alice")))
}
