package svcproxy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func TestDesiredPorts(t *testing.T) {
	svc := func(typ corev1.ServiceType, ips []string, ports ...corev1.ServicePort) *corev1.Service {
		s := &corev1.Service{Spec: corev1.ServiceSpec{Type: typ, ClusterIPs: ips, Ports: ports}}
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
		return s
	}
	web := corev1.ServicePort{Name: "web", Port: 80}
	dns := corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}
	https := corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		name string
		svc  *corev1.Service
		want []wanted
	}{
		{"gone", nil, nil},
		{"ClusterIP, TCP only", svc(corev1.ServiceTypeClusterIP, []string{"127.96.0.5"}, web, dns, https),
			[]wanted{{"web", ap("127.96.0.5:80")}, {"https", ap("127.96.0.5:443")}}},
		{"type defaulted", svc("", []string{"127.96.0.5"}, web), []wanted{{"web", ap("127.96.0.5:80")}}},
		{"NodePort has a ClusterIP too", svc(corev1.ServiceTypeNodePort, []string{"127.96.0.5"}, web), []wanted{{"web", ap("127.96.0.5:80")}}},
		{"headless", svc(corev1.ServiceTypeClusterIP, []string{"None"}, web), nil},
		{"ExternalName", svc(corev1.ServiceTypeExternalName, nil, web), nil},
		{"no ClusterIP yet", svc(corev1.ServiceTypeClusterIP, nil, web), nil},
		{"dual stack", svc(corev1.ServiceTypeClusterIP, []string{"127.96.0.5", "fd00:96::5"}, web),
			[]wanted{{"web", ap("127.96.0.5:80")}, {"web", ap("[fd00:96::5]:80")}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, desired(c.svc))
		})
	}
}

func TestReadyEndpoints(t *testing.T) {
	port := func(name string, n int32) discoveryv1.EndpointPort {
		return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(n), Protocol: ptr.To(corev1.ProtocolTCP)}
	}
	ep := func(ready *bool, addrs ...string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	}
	slices := []*discoveryv1.EndpointSlice{
		{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{port("web", 8080), port("metrics", 9090)},
			Endpoints: []discoveryv1.Endpoint{
				ep(ptr.To(true), "192.0.2.9"),
				ep(nil, "192.0.2.3", "192.0.2.4"), // unset: ready; first address only
				ep(ptr.To(false), "192.0.2.5"),    // not ready (terminating, failing its probe)
			}},
		// The controller moving an endpoint: in two slices for a moment.
		{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{port("web", 8080)},
			Endpoints: []discoveryv1.Endpoint{ep(ptr.To(true), "192.0.2.9")}},
		// Another target port for the same Service port (named targetPort).
		{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{port("web", 8081)},
			Endpoints: []discoveryv1.Endpoint{ep(ptr.To(true), "192.0.2.9")}},
		{AddressType: discoveryv1.AddressTypeIPv6, Ports: []discoveryv1.EndpointPort{port("web", 8080)},
			Endpoints: []discoveryv1.Endpoint{ep(ptr.To(true), "fd00::9")}},
		{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr.To("web"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)}},
			Endpoints: []discoveryv1.Endpoint{ep(ptr.To(true), "192.0.2.7")}},
	}
	ap := netip.MustParseAddrPort
	assert.Equal(t, []netip.AddrPort{ap("192.0.2.3:8080"), ap("192.0.2.9:8080"), ap("192.0.2.9:8081")},
		readyEndpoints(slices, "web", discoveryv1.AddressTypeIPv4))
	assert.Equal(t, []netip.AddrPort{ap("192.0.2.3:9090"), ap("192.0.2.9:9090")}, readyEndpoints(slices, "metrics", discoveryv1.AddressTypeIPv4))
	assert.Equal(t, []netip.AddrPort{ap("[fd00::9]:8080")}, readyEndpoints(slices, "web", discoveryv1.AddressTypeIPv6))
	assert.Empty(t, readyEndpoints(slices, "other", discoveryv1.AddressTypeIPv4))
}

// TestReserveLoopbackCIDR: a range held (by this or another process) is
// not handed out again until released; none is the pod simulator's.
func TestReserveLoopbackCIDR(t *testing.T) {
	a, releaseA, err := ReserveLoopbackCIDR()
	require.NoError(t, err)
	b, releaseB, err := ReserveLoopbackCIDR()
	require.NoError(t, err)
	defer releaseB()
	assert.NotEqual(t, a, b)
	for _, c := range []string{a, b} {
		p := netip.MustParsePrefix(c)
		assert.Equal(t, 24, p.Bits())
		assert.True(t, netip.MustParsePrefix("127.96.0.0/16").Contains(p.Addr()), c)
		assert.True(t, strings.HasSuffix(c, ".0/24"), c)
	}
	var n int
	_, err = fmt.Sscanf(a, "127.96.%d.0/24", &n)
	require.NoError(t, err)
	_, err = lockCIDR(n)
	require.ErrorIs(t, err, syscall.EWOULDBLOCK, "held: nobody else gets %s", a)
	releaseA()
	f, err := lockCIDR(n)
	require.NoError(t, err, "released: %s can be had again", a)
	f.Close()
}

func TestStartRefusesBadOptions(t *testing.T) {
	_, err := Start(context.Background(), Options{})
	assert.ErrorContains(t, err, "nil Client")
}

func TestLocalAddress(t *testing.T) {
	ip, err := LocalAddress()
	require.NoError(t, err, "the integration tests' backends need one")
	assert.True(t, ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast(), ip)
}
