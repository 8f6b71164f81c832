// Package hubtest is the JupyterHub rig of examples/jupyterhub: a real
// JupyterHub 3.0 (package hub) whose KubespawnSpawner drives the demo
// spawner service (package spawnersvc) on a control plane, a stand-in for
// the users' notebook servers, and the API server's own view to audit what
// the hub believes. The example's demo and its tests use it.
//
// Contract:
//   - Start starts, in order, the fault proxy (Config.ThroughProxy: it
//     sits between the service and the API server, Env.Proxy), the
//     stand-in, the kube-proxy stand-in (Config.Services: internal/svcproxy
//     over the namespace, Env.SvcProxy), the service and the hub, each
//     ready before the next; if one fails, what was started is stopped.
//     Close stops them all, in the reverse order; it is safe on a partly
//     started Env.
//   - With Config.Services the hub's class sends a Service per server and
//     connects to its ClusterIP (dns_name_template "{cluster_ip}": nothing
//     resolves cluster DNS here); the ClusterIP reaches the pod only if the
//     control plane's Service range is loopback and its EndpointSlice
//     controller publishes the pod (see internal/svcproxy: it cannot for a
//     loopback pod IP).
//   - Routes reads the hub's proxy routes with a token that may do
//     nothing else.
//   - The stand-in answers the hub's readiness checks for every user on
//     127.0.0.1 (the pods' simulated IP, internal/podsim's PodIP): 200 for
//     /user/{name}/... only while the API server has that user's pod
//     Running and Ready, 503 otherwise, as the pod's own server would.
//   - Pods, UserPod and Check read straight from the API server with
//     Config.Client (no fault proxy, no cache): a pod the service did not
//     make is never counted, and a user's pod is found by the service's
//     labels (instance, key hash) and its key annotation.
//   - StopAll stops every server of the users through the hub and returns
//     only once the API server has none of the service's pods.
package hubtest
