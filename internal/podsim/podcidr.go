package podsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// Pod IP ranges for Options.PodCIDR.
const (
	// DefaultPodCIDR is Options.PodCIDR unless set: loopback, bindable
	// without any setup (Linux routes all of 127/8 to lo), but refused by
	// the API server in EndpointSlices.
	DefaultPodCIDR = "127.244.0.0/16"
	// BenchmarkPodCIDR is the conventional routable range: RFC 2544's
	// network benchmarking range (198.18.0.0/15's first half), which is
	// never routed on the internet, so a route for it on lo takes no
	// address anything else could use. Pods there can be endpoints of a
	// Service (the real EndpointSlice controller publishes them).
	BenchmarkPodCIDR = "198.18.0.0/16"
)

// ErrInvalidOptions is wrapped by the errors of Start for options it
// refuses.
var ErrInvalidOptions = errors.New("podsim: invalid options")

// ErrPodCIDRNotLocal is wrapped by the error of Start when the addresses of
// a non-loopback Options.PodCIDR cannot be bound on this machine and the
// simulator could not make them local.
var ErrPodCIDRNotLocal = errors.New("podsim: pod IP range not local")

// maxPodCIDRBits is the longest prefix accepted: a /28 still has 14
// addresses to hand out.
const maxPodCIDRBits = 28

// routeTimeout bounds the ip command that adds the local route.
const routeTimeout = 10 * time.Second

// parsePodCIDR validates Options.PodCIDR ("" is DefaultPodCIDR).
func parsePodCIDR(cidr string) (netip.Prefix, error) {
	if cidr == "" {
		cidr = DefaultPodCIDR
	}
	p, err := netip.ParsePrefix(cidr)
	switch {
	case err != nil:
		return netip.Prefix{}, fmt.Errorf("%w: PodCIDR %q: %v", ErrInvalidOptions, cidr, err)
	case !p.Addr().Is4():
		return netip.Prefix{}, fmt.Errorf("%w: PodCIDR %q is not an IPv4 range", ErrInvalidOptions, cidr)
	case p.Bits() > maxPodCIDRBits:
		return netip.Prefix{}, fmt.Errorf("%w: PodCIDR %q is longer than /%d", ErrInvalidOptions, cidr, maxPodCIDRBits)
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("%w: PodCIDR %q is not a network address (%s?)", ErrInvalidOptions, cidr, p.Masked())
	case p.Contains(netip.MustParseAddr(nodeIP)):
		return netip.Prefix{}, fmt.Errorf("%w: PodCIDR %q contains the node's address %s", ErrInvalidOptions, cidr, nodeIP)
	}
	first, last := p.Addr(), lastAddr(p)
	for _, a := range []netip.Addr{first, last} {
		if !a.IsLoopback() && !a.IsGlobalUnicast() {
			return netip.Prefix{}, fmt.Errorf("%w: PodCIDR %q is not a loopback or unicast range", ErrInvalidOptions, cidr)
		}
	}
	return p, nil
}

// lastAddr is the last address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	return addrAt(p, prefixSize(p)-1)
}

// prefixSize is the number of addresses of an IPv4 prefix.
func prefixSize(p netip.Prefix) uint32 { return 1 << (32 - p.Bits()) }

// addrAt is the address at offset n of an IPv4 prefix.
func addrAt(p netip.Prefix, n uint32) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// routeCommand is how ensureLocal adds the route: the ip binary.
func routeCommand() string {
	const ip = "/usr/sbin/ip"
	if _, err := os.Stat(ip); err == nil {
		return ip
	}
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	return ip // the error names it
}

// routeHint is what to run, as root, to make p local.
func routeHint(p netip.Prefix) string { return "ip route replace local " + p.String() + " dev lo" }

// ensureLocal makes every address of p deliverable on this machine before
// a pod gets one: processes listen there, and clients (svcproxy, a hub)
// dial them. A range whose first and last pod addresses can be bound
// already (loopback, or routed earlier) is left alone. Otherwise a local
// route for the whole range goes on lo (Linux "AnyIP": ipCmd route replace
// local p dev lo), which needs CAP_NET_ADMIN, and the bind is checked again.
// The route is left in place: it is idempotent, and other simulators (other
// test binaries) may share the range.
func ensureLocal(ctx context.Context, p netip.Prefix, ipCmd string) error {
	logger := klog.FromContext(ctx)
	err := bindable(p)
	if err == nil {
		return nil
	}
	logger.V(2).Info("Pod IP range not local, adding a local route", "podCIDR", p, "err", err)
	rctx, cancel := context.WithTimeout(ctx, routeTimeout)
	defer cancel()
	out, err := exec.CommandContext(rctx, ipCmd, "route", "replace", "local", p.String(), "dev", "lo").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s cannot be bound and adding a local route for it failed (%s route replace local %s dev lo: %v: %s); run as root (CAP_NET_ADMIN): %s",
			ErrPodCIDRNotLocal, p, ipCmd, p, err, strings.TrimSpace(string(out)), routeHint(p))
	}
	if err := bindable(p); err != nil {
		return fmt.Errorf("%w: %s still cannot be bound after %s route replace local %s dev lo: %v; check the local routing table (ip route show table local), or run as root: %s",
			ErrPodCIDRNotLocal, p, ipCmd, p, err, routeHint(p))
	}
	logger.Info("Added a local route for the pod IP range (left in place)", "podCIDR", p, "route", routeHint(p))
	return nil
}

// bindable checks, with a listen on an ephemeral port, that the first and
// the last pod address of p are local.
func bindable(p netip.Prefix) error {
	for _, a := range []netip.Addr{addrAt(p, 1), addrAt(p, prefixSize(p)-2)} {
		l, err := net.Listen("tcp4", netip.AddrPortFrom(a, 0).String())
		if err != nil {
			return err
		}
		l.Close()
	}
	return nil
}
