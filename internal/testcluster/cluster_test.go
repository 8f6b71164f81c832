//go:build integration

package testcluster

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

var cluster *Cluster

func TestMain(m *testing.M) {
	cluster = MustStart(Options{})
	os.Exit(cluster.Run(m))
}

func TestServerVersionIsStamped(t *testing.T) {
	t.Parallel()
	client := kubernetes.NewForConfigOrDie(cluster.Config())
	v, err := client.Discovery().ServerVersion()
	require.NoError(t, err)
	require.Equal(t, "v1.37.2", v.GitVersion, "kube-apiserver must be built with version ldflags (make tools)")
}

func TestServiceAccountHasOnlyItsRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	ns := cluster.Namespace(t, "sa")
	admin := kubernetes.NewForConfigOrDie(cluster.Config())
	cfg, err := cluster.ServiceAccountConfig(ctx, ns, "reader")
	require.NoError(t, err)
	sa := kubernetes.NewForConfigOrDie(cfg)

	_, err = sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "no role yet: want Forbidden, got %v", err)

	_, err = admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		_, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil
	}, 10*time.Second, 100*time.Millisecond, "role grants list")
	_, err = sa.CoreV1().Pods(ns).Get(ctx, "x", metav1.GetOptions{})
	require.True(t, apierrors.IsForbidden(err), "role grants no get: want Forbidden, got %v", err)
	_, err = sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "role is namespaced: want Forbidden, got %v", err)
}

func TestRestartAPIServerKeepsData(t *testing.T) {
	// Serial: it restarts the package's one apiserver under every other test.
	ctx := t.Context()
	ns := cluster.Namespace(t, "restart")
	client := kubernetes.NewForConfigOrDie(cluster.Config())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor"}, Data: map[string]string{"k": "v"}}
	_, err := client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
	require.NoError(t, err)

	require.NoError(t, cluster.RestartAPIServer(ctx))

	got, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "survivor", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "v", got.Data["k"])
}

func TestStartFailsLoudlyWithoutBinaries(t *testing.T) {
	t.Parallel()
	_, err := Start(t.Context(), Options{BinDir: t.TempDir()})
	require.ErrorContains(t, err, "make tools")
}
