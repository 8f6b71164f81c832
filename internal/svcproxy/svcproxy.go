package svcproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// DefaultDialTimeout is Options.DialTimeout unless set.
const DefaultDialTimeout = 5 * time.Second

// Back-off of a listen that failed.
const (
	retryBase = 100 * time.Millisecond
	retryMax  = 30 * time.Second
)

// byServiceIndex indexes EndpointSlices by the Service they belong to.
const byServiceIndex = "service"

// Options configures Start.
type Options struct {
	// Client reads Services and EndpointSlices (list and watch).
	Client kubernetes.Interface
	// Namespace limits the proxy to one namespace; "" for all.
	Namespace string
	// DialTimeout bounds each dial to an endpoint; default
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger; default klog.FromContext of Start's context.
	Logger *klog.Logger
}

// Proxy forwards Services' ClusterIP:port to their ready endpoints. Create
// it with Start; it is safe for concurrent use.
type Proxy struct {
	opts    Options
	logger  klog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	factory informers.SharedInformerFactory
	svcs    corelisters.ServiceLister
	slices  cache.Indexer
	queue   workqueue.TypedRateLimitingInterface[types.NamespacedName]
	dialer  net.Dialer

	wg       sync.WaitGroup // the worker, accept loops and connections
	stopOnce sync.Once

	mu     sync.Mutex
	ports  map[types.NamespacedName]map[netip.AddrPort]*port // by Service, the ports it should have
	totals map[types.NamespacedName]*counters                // by Service, since Start
	conns  map[net.Conn]struct{}                             // accepted and dialled, open
}

// counters count a port's connections, or a Service's.
type counters struct {
	forwarded, rejected, failed atomic.Uint64
}

func (c *counters) counts() Counts {
	return Counts{Forwarded: c.forwarded.Load(), Rejected: c.rejected.Load(), Failed: c.failed.Load()}
}

// Counts are connections served: Forwarded, dialled to an endpoint;
// Rejected, reset for want of a ready endpoint; Failed, reset because the
// dial to the endpoint failed.
type Counts struct {
	Forwarded, Rejected, Failed uint64
}

// port is one served Service port on one ClusterIP: its listener, or why
// it has none yet.
type port struct {
	svc  types.NamespacedName
	name string // the Service port's name ("" when it has one port)
	addr netip.AddrPort
	ln   net.Listener
	err  error // last listen error; nil once listening

	next  atomic.Uint64 // round robin
	count counters
	total *counters // the Service's
}

// PortStatus is one served Service port on one ClusterIP.
type PortStatus struct {
	Service types.NamespacedName
	// Port is the Service port's name; Address is ClusterIP:port.
	Port    string
	Address string
	// Listening: a listener is open. Err: why not (the last listen error).
	Listening bool
	Err       error
	// Counts of this port's listener.
	Counts
}

// Start starts the informers and the proxy and returns once the caches
// have synced. Stop stops it.
func Start(ctx context.Context, opts Options) (*Proxy, error) {
	if opts.Client == nil {
		return nil, errors.New("svcproxy: nil Client")
	}
	if opts.DialTimeout < 0 {
		return nil, fmt.Errorf("svcproxy: negative DialTimeout %v", opts.DialTimeout)
	}
	opts.DialTimeout = cmp.Or(opts.DialTimeout, DefaultDialTimeout)
	logger := klog.FromContext(ctx)
	if opts.Logger != nil {
		logger = *opts.Logger
	}
	logger = logger.WithName("svcproxy")
	// The proxy lives until Stop, not until the caller's ctx: Start's ctx
	// only bounds the initial sync.
	pctx, cancel := context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), logger))
	p := &Proxy{
		opts: opts, logger: logger, ctx: pctx, cancel: cancel,
		factory: informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithNamespace(opts.Namespace)),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](retryBase, retryMax),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "svcproxy"}),
		dialer: net.Dialer{Timeout: opts.DialTimeout},
		ports:  map[types.NamespacedName]map[netip.AddrPort]*port{},
		totals: map[types.NamespacedName]*counters{},
		conns:  map[net.Conn]struct{}{},
	}
	svcInformer := p.factory.Core().V1().Services()
	sliceInformer := p.factory.Discovery().V1().EndpointSlices().Informer()
	if err := sliceInformer.AddIndexers(cache.Indexers{byServiceIndex: sliceService}); err != nil {
		cancel()
		return nil, fmt.Errorf("svcproxy: %w", err)
	}
	p.svcs, p.slices = svcInformer.Lister(), sliceInformer.GetIndexer()
	enqueue := func(obj any) {
		if k, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			p.queue.Add(types.NamespacedName{Namespace: k.Namespace, Name: k.Name})
		}
	}
	if _, err := svcInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("svcproxy: %w", err)
	}
	p.factory.Start(pctx.Done())
	synced := p.factory.WaitForCacheSync(ctx.Done())
	for typ, ok := range synced {
		if !ok {
			p.Stop()
			return nil, fmt.Errorf("svcproxy: the %v cache did not sync: %w", typ, cmp.Or(context.Cause(ctx), errors.New("stopped")))
		}
	}
	p.wg.Add(1)
	go p.work()
	logger.V(1).Info("Proxying Services' ClusterIPs", "namespace", opts.Namespace)
	return p, nil
}

// sliceService is the namespace/name of an EndpointSlice's Service.
func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

// Stop closes every listener and connection, stops the informers and
// waits until every goroutine of the proxy has ended.
func (p *Proxy) Stop() {
	p.stopOnce.Do(func() {
		p.cancel()
		p.queue.ShutDown()
		p.mu.Lock()
		for _, ports := range p.ports {
			for _, pt := range ports {
				if pt.ln != nil {
					_ = pt.ln.Close()
				}
			}
		}
		p.ports = map[types.NamespacedName]map[netip.AddrPort]*port{}
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
		p.factory.Shutdown()
	})
}

// Ports reports every served Service port, sorted by Service, port and
// address.
func (p *Proxy) Ports() []PortStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []PortStatus
	for _, ports := range p.ports {
		for _, pt := range ports {
			out = append(out, PortStatus{
				Service: pt.svc, Port: pt.name, Address: pt.addr.String(), Listening: pt.ln != nil, Err: pt.err, Counts: pt.count.counts(),
			})
		}
	}
	slices.SortFunc(out, func(a, b PortStatus) int {
		return cmp.Or(cmp.Compare(a.Service.String(), b.Service.String()), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Address, b.Address))
	})
	return out
}

// Served counts the connections to svc's ports since Start, those of
// ports and Services gone since included: what a test asserts after the
// fact.
func (p *Proxy) Served(svc types.NamespacedName) Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.totals[svc]; c != nil {
		return c.counts()
	}
	return Counts{}
}

// Endpoints are the ready endpoints a new connection to svc's port of
// that name would be forwarded to now, from the proxy's cache, in turn
// order (empty if the proxy serves no such port). The EndpointSlices on
// the API server may be ahead of them: a test waits for both.
func (p *Proxy) Endpoints(svc types.NamespacedName, portName string) []netip.AddrPort {
	p.mu.Lock()
	var pt *port
	for _, x := range p.ports[svc] {
		if x.name == portName && (pt == nil || x.addr.Compare(pt.addr) < 0) {
			pt = x
		}
	}
	p.mu.Unlock()
	if pt == nil {
		return nil
	}
	return p.endpoints(pt)
}

func (p *Proxy) work() {
	defer p.wg.Done()
	for {
		key, shutdown := p.queue.Get()
		if shutdown {
			return
		}
		if err := p.sync(key); err != nil {
			p.logger.V(2).Info("Listen failed, retrying", "service", key, "err", err, "retries", p.queue.NumRequeues(key))
			p.queue.AddRateLimited(key)
		} else {
			p.queue.Forget(key)
		}
		p.queue.Done(key)
	}
}

// wanted is one port a Service should have.
type wanted struct {
	name string
	addr netip.AddrPort
}

// desired lists the ports svc should be served on (none for nil).
func desired(svc *corev1.Service) []wanted {
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []wanted
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil { // "None" (headless) and anything else that is no IP
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if cmp.Or(sp.Protocol, corev1.ProtocolTCP) != corev1.ProtocolTCP || sp.Port <= 0 || sp.Port > 65535 {
				continue
			}
			out = append(out, wanted{name: sp.Name, addr: netip.AddrPortFrom(ip, uint16(sp.Port))})
		}
	}
	return out
}

// sync makes key's listeners match the Service in the cache: opens the
// missing ones, closes those it no longer has. It returns the listen
// errors, for a retry with back-off.
func (p *Proxy) sync(key types.NamespacedName) error {
	svc, err := p.svcs.Services(key.Namespace).Get(key.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	want := map[netip.AddrPort]wanted{}
	for _, w := range desired(svc) {
		want[w.addr] = w
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return nil // stopped: Stop closes what is left
	}
	have := p.ports[key]
	if have == nil {
		have = map[netip.AddrPort]*port{}
	}
	for k, pt := range have {
		if w, ok := want[k]; !ok || w.name != pt.name {
			if pt.ln != nil {
				_ = pt.ln.Close()
				p.logger.V(1).Info("Closed a Service's listener", "service", key, "port", pt.name, "address", pt.addr)
			}
			delete(have, k)
		}
	}
	var errs []error
	for k, w := range want {
		pt := have[k]
		if pt == nil {
			if p.totals[key] == nil {
				p.totals[key] = &counters{}
			}
			pt = &port{svc: key, name: w.name, addr: w.addr, total: p.totals[key]}
			have[k] = pt
		}
		if pt.ln != nil {
			continue
		}
		ln, err := net.Listen("tcp", w.addr.String())
		if err != nil {
			pt.err = err
			errs = append(errs, err)
			continue
		}
		pt.ln, pt.err = ln, nil
		p.logger.V(1).Info("Listening for a Service", "service", key, "port", w.name, "address", w.addr)
		p.wg.Add(1)
		go p.accept(pt, ln)
	}
	if len(have) == 0 {
		delete(p.ports, key)
	} else {
		p.ports[key] = have
	}
	return errors.Join(errs...)
}

// accept serves one listener until it is closed.
func (p *Proxy) accept(pt *port, ln net.Listener) {
	defer p.wg.Done()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: pause, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.logger.Error(err, "Accept failed", "service", pt.svc, "address", pt.addr, "retryIn", delay)
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		if !p.track(c) {
			reset(c)
			return
		}
		p.wg.Add(1)
		go p.forward(pt, c)
	}
}

// track records an open connection for Stop; false once stopped.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

// forward dials a ready endpoint of pt for the accepted connection c and
// copies both ways until both are done.
func (p *Proxy) forward(pt *port, c net.Conn) {
	defer p.wg.Done()
	targets := p.endpoints(pt)
	if len(targets) == 0 {
		pt.count.rejected.Add(1)
		pt.total.rejected.Add(1)
		p.logger.V(2).Info("No ready endpoint: connection rejected", "service", pt.svc, "port", pt.name, "client", c.RemoteAddr())
		p.untrackReset(c)
		return
	}
	target := targets[(pt.next.Add(1)-1)%uint64(len(targets))]
	up, err := p.dialer.DialContext(p.ctx, "tcp", target.String())
	if err != nil {
		pt.count.failed.Add(1)
		pt.total.failed.Add(1)
		p.logger.V(1).Info("Dial to the endpoint failed: connection reset", "service", pt.svc, "port", pt.name, "endpoint", target, "err", err)
		p.untrackReset(c)
		return
	}
	if !p.track(up) {
		_ = up.Close()
		p.untrackReset(c)
		return
	}
	pt.count.forwarded.Add(1)
	pt.total.forwarded.Add(1)
	p.logger.V(3).Info("Forwarding", "service", pt.svc, "port", pt.name, "client", c.RemoteAddr(), "endpoint", target)
	var wg sync.WaitGroup
	wg.Go(func() { pipe(up, c) })
	pipe(c, up)
	wg.Wait()
	p.untrack(up)
	p.untrack(c)
}

func (p *Proxy) untrackReset(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	reset(c)
}

// pipe copies src to dst, then passes the end on as a half-close.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

// reset closes c with a TCP RST: the client's "connection reset", never
// a graceful end it could take for an empty answer.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// endpoints are pt's ready endpoints, from the cache.
func (p *Proxy) endpoints(pt *port) []netip.AddrPort {
	objs, err := p.slices.ByIndex(byServiceIndex, pt.svc.Namespace+"/"+pt.svc.Name)
	if err != nil {
		return nil
	}
	var sl []*discoveryv1.EndpointSlice
	for _, obj := range objs {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			sl = append(sl, s)
		}
	}
	family := discoveryv1.AddressTypeIPv4
	if pt.addr.Addr().Unmap().Is6() {
		family = discoveryv1.AddressTypeIPv6
	}
	return readyEndpoints(sl, pt.name, family)
}

// readyEndpoints are the ready endpoints of the Service port portName in
// the slices of family: each one's first address with the slice port of
// that name, deduplicated (an endpoint may be in two slices while the
// controller moves it) and sorted.
func readyEndpoints(sl []*discoveryv1.EndpointSlice, portName string, family discoveryv1.AddressType) []netip.AddrPort {
	seen := map[netip.AddrPort]bool{}
	var out []netip.AddrPort
	for _, s := range sl {
		if s.AddressType != family {
			continue
		}
		num := int32(0)
		for _, sp := range s.Ports {
			if ptrString(sp.Name) == portName && cmp.Or(ptrProtocol(sp.Protocol), corev1.ProtocolTCP) == corev1.ProtocolTCP && sp.Port != nil {
				num = *sp.Port
				break
			}
		}
		if num <= 0 || num > 65535 {
			continue
		}
		for _, ep := range s.Endpoints {
			if (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) || len(ep.Addresses) == 0 {
				continue
			}
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			ap := netip.AddrPortFrom(ip, uint16(num))
			if !seen[ap] {
				seen[ap] = true
				out = append(out, ap)
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return out
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func ptrProtocol(p *corev1.Protocol) corev1.Protocol {
	if p == nil {
		return ""
	}
	return *p
}

// LocalAddress is a non-loopback, non-link-local unicast IPv4 address of
// an interface of this machine that is up, for test backends that a
// Service's EndpointSlice must be able to name (the API server refuses
// loopback endpoints): traffic to it never leaves the machine. An error if
// the machine has none.
func LocalAddress() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("svcproxy: %w", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.Is4() && ip.IsGlobalUnicast() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, errors.New("svcproxy: this machine has no non-loopback IPv4 address on an interface that is up")
}
