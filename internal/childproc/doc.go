// Package childproc runs the child processes of kubespawn's tests and
// demos (etcd, kube-apiserver, kube-controller-manager, JupyterHub, the
// spawner service) and picks free loopback ports for them: the one way the
// repository does either.
//
// Contract:
//
//   - A child's output goes to a log file; Tail and Count read it.
//   - A child runs in a process group of its own and dies with its parent
//     (SIGKILL as parent-death signal), even if the parent panics or is
//     killed.
//   - Stop sends SIGTERM, waits a grace period, then kills the whole group
//     and returns only once the child has exited: nothing it started is
//     left running.
package childproc
