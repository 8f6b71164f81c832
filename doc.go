// Package kubespawn is a library for services that start one Kubernetes pod
// per user, session or job: JupyterHub-style spawners, CI runners, sandboxes.
//
// It exists because of one failure mode. In July 2018 the pod cache of
// mybinder.org's spawner, fed by a watch, went silently stale; starts timed
// out because running pods never appeared in it, the abort path skipped the
// DELETE because the pod "was not in the cache", and about a thousand pods
// leaked. kubespawn is built so that this cannot happen:
//
//  1. Nothing decides that a pod does not exist from the cache alone. Only the
//     API server's NotFound proves absence, and deletes always reach the API
//     server.
//  2. A cache that is stalled, stopped or not yet synced never serves
//     silently: it says so, recovers by itself, and readers fall back to the
//     API server or get a clear error.
//  3. There is one watch per resource and scope per process, never one per pod.
//  4. Bad input gets a typed error that errors.Is recognises; nothing is lost
//     or leaked.
//
// The packages:
//
//   - [github.com/kubespawn/kubespawn/reflector]: the shared, self-healing pod
//     cache (client-go informer plus stall detection, drift audit, health,
//     metrics, API fallback).
//   - [github.com/kubespawn/kubespawn/events]: the shared event cache and
//     per-pod progress streams.
//   - [github.com/kubespawn/kubespawn/spawner]: the pod lifecycle (start, wait
//     ready with progress, stop, poll) and the sweeper for leaked pods.
//
// The examples directory holds a sidecar that serves the reflector over
// HTTP/JSON to spawners written in other languages, a demo spawner service,
// a sweeper command and a replay of the 2018 incident.
package kubespawn
