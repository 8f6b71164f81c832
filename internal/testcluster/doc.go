// Package testcluster runs a real Kubernetes control plane, etcd and
// kube-apiserver (and, if asked, kube-controller-manager), as child
// processes on loopback, for kubespawn's tests and demo.
//
// The binaries are built from the Go module proxy by `make tools` into the
// repository's bin/ directory (see internal/tools/go.mod); nothing is
// downloaded at run time. Start fails with an error naming the missing
// binary if they are absent: tests never skip for want of a control plane.
//
// Contract:
//
//   - Start returns once /readyz of the apiserver answers ok, typically 3 to 5
//     seconds after the processes start on a 2-core machine.
//   - The apiserver authorises with RBAC (--authorization-mode=RBAC) and
//     authenticates a static admin token (group system:masters) and
//     ServiceAccount tokens, so RBAC tests are real: see
//     [Cluster.ServiceAccountConfig].
//   - Child processes are started with Pdeathsig=SIGKILL, so they die with
//     the test binary even when it panics or is killed. Working directories
//     left by such a death are removed by the next Start.
//   - With [Options.ControllerManager], Start also runs
//     kube-controller-manager with [Options.Controllers] (default
//     [DefaultControllers]: the garbage collector and the namespace
//     controller) and returns once its /healthz lists each of them, some
//     0.2 s later. It authenticates with a static token of its own as user
//     system:kube-controller-manager, and each controller acts with a
//     ServiceAccount token of its own (--use-service-account-credentials),
//     under its bootstrap RBAC role, as on a kubeadm cluster. No leader
//     election, no cloud provider, no service-account signing key (the
//     legacy token controller stays off). Owned objects are then collected
//     once their owner is deleted (within about a second) and a deleted
//     namespace goes away with its content (within about 5 s). Without the
//     option nothing collects garbage and a deleted namespace stays
//     Terminating. Against an existing cluster the option is ignored: it
//     runs a controller-manager of its own.
//   - ClusterIPs come from [Options.ServiceCIDR] (default
//     [DefaultServiceCIDR], 10.96.0.0/24, which nothing here routes).
//     kube-apiserver accepts a loopback range (127.96.N.0/24 from
//     svcproxy.ReserveLoopbackCIDR, say): its ClusterIPs are then bindable
//     on lo without setup, for the kube-proxy stand-in internal/svcproxy.
//     (EndpointSlices still refuse loopback endpoint addresses: that is the
//     API server's validation, whatever the range.)
//   - [Cluster.Stop] stops every process (SIGTERM, then SIGKILL after a
//     short grace; the controller-manager first, etcd last) and removes
//     every file. It is idempotent.
//   - [Cluster.RestartAPIServer] restarts kube-apiserver on the same port
//     against the same etcd: data survives, open connections break. The
//     controller-manager keeps running and reconnects.
//
// There is no scheduler or kubelet: pods stay Pending unless something
// binds and runs them; internal/podsim does that.
package testcluster
