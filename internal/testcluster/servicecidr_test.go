//go:build integration

package testcluster

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/internal/svcproxy"
)

// TestServiceCIDR: Options.ServiceCIDR is the range ClusterIPs come from;
// kube-apiserver accepts a loopback range, whose ClusterIPs this machine
// can listen on without any setup (what internal/svcproxy needs). The
// default stays DefaultServiceCIDR.
func TestServiceCIDR(t *testing.T) {
	t.Parallel() // a control plane of its own
	cidr, release, err := svcproxy.ReserveLoopbackCIDR()
	require.NoError(t, err)
	defer release()
	c, err := Start(t.Context(), Options{ServiceCIDR: cidr})
	require.NoError(t, err)
	t.Cleanup(c.Stop)

	clusterIP := func(c *Cluster) netip.Addr {
		t.Helper()
		ns := c.Namespace(t, "cidr")
		svc, err := c.Client(t).CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		return netip.MustParseAddr(svc.Spec.ClusterIP)
	}
	ip := clusterIP(c)
	assert.True(t, netip.MustParsePrefix(cidr).Contains(ip), "%s in %s", ip, cidr)
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 80).String())
	require.NoError(t, err, "a loopback ClusterIP is bindable")
	ln.Close()

	def := clusterIP(cluster)
	assert.True(t, netip.MustParsePrefix(DefaultServiceCIDR).Contains(def), "the default range: %s", def)
}
