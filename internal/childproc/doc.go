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
//   - With Options.KillGroupOnExit (a container's semantics, for podproc),
//     the rest of the group is killed as soon as the child exits, and Done
//     waits until no member is alive; GroupPIDs and ProcessGroups (read from
//     /proc, zombies excluded) say who is. Options.Append keeps a restarted
//     child's earlier output; Options.Credential runs it as another user.
package childproc
