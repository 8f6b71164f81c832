// Package soak proves the library's central promise with numbers: under a
// seeded random schedule of the faults real clusters produce and of a
// spawner workload, no pod is leaked, none is wrongly deleted, and no
// absence is decided without the API server; and the same schedule run
// against the 2018 KubeSpawner replica (internal/legacy) leaks.
//
// # What runs
//
// On one control plane (etcd, kube-apiserver) with the pod simulator, each
// run gets a namespace and a fault proxy of its own:
//
//   - kubespawn: two instances of a spawner service (hub-a and hub-b, the
//     shape of examples/spawner: a reflector.Factory, the spawner, an
//     in-memory user table, a leader-elected sweeper whose orphans are the
//     pods the table does not know), each a process of its own (this very
//     binary, re-executed with internal/childproc; see IsInstance), talking
//     to the API server through the proxy. Mid-run hub-a is killed with
//     SIGKILL and a new hub-a is started: its sweeper must remove what the
//     dead one left. Each start asks for the user's claim (claim-<user>,
//     spawner.Request.Claims, mounted as its home) and for a Service and a
//     Secret of the pod (Request.Services and Secrets: KubeSpawner's
//     services_enabled and internal_ssl). The sweeper deletes owned objects
//     whose pod is gone, and reports the claims of users its table does not
//     have without deleting them (ClaimSelect, no MaxClaimAge).
//   - the 2018 replica: the same users and schedule, through KubeSpawner's
//     cache-only logic (no sweeper; a crash restarts its reflector), and
//     what KubeSpawner creates beside the pod (legacy.Extras): the claim
//     before the pod (a 409 is "it exists"), the Secret and the Service
//     once the pod has a UID in its cache, owned by that UID; its stop
//     deletes the pod only and leaves the rest to the garbage collector.
//
// The control plane runs no kube-controller-manager: no garbage collector
// deletes an owned object whose pod is gone, and no claim protection
// controller lets a deleted claim go (it stays Terminating). A Service
// left over is left over unless the service or its sweeper deletes it.
//
// The simulated hub drives users concurrently: starts with random podsim
// scenarios (slow pods, image pull failures, crash loops, unschedulable
// and never-ready pods that hit the start timeout), callers giving up at
// random points, Stops racing Starts, late Stops carrying an earlier pod's
// UID, and a Stop after every failed start, as JupyterHub does. Faults, at
// random times and for random durations: silent watch stalls (every
// stream, and only the open ones), connection resets, refused
// connections, 410 Gone and ERROR events in watches, held LIST responses,
// new watches answered 429 with Retry-After or 500, latency, a stalled
// event watch, one apiserver restart, one instance crash; always one long
// stall of every watch, and, once it is over, the reflectors' probes
// throttled (answered 429 with Retry-After; in a long run once more, held
// past their deadline) for longer than the services' FailureTimeout while
// the main watches deliver.
//
// # What is checked
//
// At the end, faults off, stops of unknown outcome retried and the
// sweepers given time, with a client that bypasses the proxy: every pod of
// the service belongs to a user the hub believes running (leaks); no pod
// of a user believed running was deleted but by that user's Stop (wrong
// deletions, from a watch of the pods' UIDs for the whole run); and the
// services' own counter of absence decisions by source
// (kubespawn_spawner_absence_decisions_total) has nothing but "api".
// Services and Secrets: none is left that belongs to no pod believed
// running (its pod gone, leaked, or none). Claims, from a watch of them
// for the whole run and a read at the end: none was lost (the soak never
// calls DeleteClaims, so a claim deleted, Terminating included, or gone
// is lost) and no user ever had two at once (duplicated). For kubespawn
// all are zero. The replica's figures stand beside them: its Services and
// Secrets of gone pods are what a garbage collector would have had to
// delete (the report says how many, and how many are of leaked pods,
// which none would); its claims, one fixed name per user that nothing
// deletes, are neither lost nor duplicated by construction. The
// caches' entries into failed are recorded and reported with their
// problems; none may have failing probes as its only problem (the demo
// spawner exits on the factory's Failed, and a restarted service has lost
// its table).
//
// A crash loses the instance's table: the hub takes the servers of its
// users for ended, as it would for any in-memory service.
package soak
