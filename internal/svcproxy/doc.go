// Package svcproxy is a kube-proxy stand-in for tests and demos: it makes
// Services' ClusterIPs reachable on this machine, where nothing else routes
// them, by listening on each ClusterIP:port itself and forwarding every
// connection to an endpoint of the Service.
//
// It is a user-space proxy over two informers, as kube-proxy is over its
// own: it decides nothing about pods and computes no endpoints. The
// endpoints are the EndpointSlices that the real EndpointSlice controller
// of kube-controller-manager writes (testcluster.Options{ControllerManager:
// true, Controllers: [..., "endpointslice-controller"]}); without that
// controller, a Service has no endpoint and every connection is rejected.
//
// # Contract
//
//   - Start watches Services and EndpointSlices (discovery.k8s.io/v1) in
//     Options.Namespace ("" for all), one watch per resource for the
//     Proxy, and returns once both caches have synced (or with an error,
//     leaving nothing running, if ctx ends first). One Proxy per process
//     and scope: a second one would open the same listeners.
//   - Served: every Service with a ClusterIP (spec.clusterIPs, not "None":
//     types ClusterIP, NodePort and LoadBalancer, as kube-proxy; never
//     ExternalName or headless), each TCP port on each ClusterIP. UDP and
//     SCTP ports are ignored. NodePorts, externalIPs, session affinity and
//     traffic policies are not simulated.
//   - A served port gets a listener on ClusterIP:port soon after the
//     Service is seen; it is closed when the Service goes or no longer has
//     that port (connections already forwarded run on until either side
//     closes them, as conntrack keeps them on a real node, or until Stop).
//     A listen that fails (the address is not local: the API server's
//     --service-cluster-ip-range must be a loopback range such as
//     ReserveLoopbackCIDR's; or it is in use) is retried with back-off
//     (100 ms doubling to 30 s) until it succeeds or the port goes; Ports
//     reports the error meanwhile, and it is cleared by a listen that
//     succeeds.
//   - Each accepted connection is forwarded to one ready endpoint of the
//     port, chosen when the connection arrives from the EndpointSlices
//     labelled kubernetes.io/service-name=<Service> of the listener's
//     address family: an endpoint whose conditions.ready is true (or
//     unset), its first address, the slice port of the Service port's name
//     and protocol TCP. The ready endpoints (deduplicated, sorted by
//     address and port) are taken in turn, round robin, per port. A dial
//     that fails is not retried on another endpoint (as kube-proxy's
//     iptables mode): the connection is reset.
//   - No ready endpoint: the connection is reset at once (kube-proxy
//     REJECTs: the client sees its connection refused or reset, never a
//     hang).
//   - Every connection is counted, forwarded, rejected or failed, per port
//     (Ports) and per Service since Start (Served, which keeps the counts
//     of Services and ports gone since: tests assert after the fact).
//   - Every dial has a deadline (Options.DialTimeout, default 5 s). Data is
//     copied both ways; a half-close is passed on (CloseWrite).
//   - Stop closes every listener and every forwarded connection, stops the
//     informers and returns once every goroutine of the Proxy has ended.
//     It is idempotent.
//
// The caches are client-go informers without kubespawn's stall
// detection: this is the cluster's plumbing in tests, which kube-proxy's
// own informers are on a node, not the code under test.
//
// Endpoints in 127.0.0.0/8 never exist: the API server refuses loopback
// addresses in EndpointSlices ("may not be in the loopback range"), so the
// controller cannot publish a pod whose IP is loopback (internal/podsim's
// default range, 127.244.0.0/16) and the Service of such a pod has no
// endpoint. Pods must have a non-loopback IP local to this machine: the
// pod simulator's Options.PodCIDR = podsim.BenchmarkPodCIDR (198.18.0.0/16,
// which it makes local with a route on lo, as root), as the jupyterhub
// example's services test does; other backends listen at a non-loopback
// address of this machine (LocalAddress), as this package's tests do.
package svcproxy
