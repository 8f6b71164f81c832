// Package testcluster runs a real Kubernetes control plane, etcd and
// kube-apiserver, as child processes on loopback, for kubespawn's tests and
// demo.
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
//   - [Cluster.Stop] stops both processes (SIGTERM, then SIGKILL after a
//     short grace) and removes every file. It is idempotent.
//   - [Cluster.RestartAPIServer] restarts kube-apiserver on the same port
//     against the same etcd: data survives, open connections break.
//
// There is no scheduler, controller-manager or kubelet: pods stay Pending
// unless something binds and runs them; internal/podsim does that.
package testcluster
