// Package spawner starts, stops, polls and sweeps one Kubernetes pod per
// user or session, for services in the style of JupyterHub's KubeSpawner.
//
// It exists because of the mybinder.org incident of July 2018: a pod cache
// fed by a watch went silently stale, starts timed out because running pods
// never appeared in it, and the abort path skipped the DELETE because the pod
// "wasn't in the cache". About 1,000 pods leaked. This package is written so
// that a stale, stalled or empty cache can make it slower, never wrong.
//
// # Contract
//
//  1. Every pod Start creates is either returned running and ready, or
//     deleted with a UID precondition and confirmed gone by the API server
//     before Start returns: on fail-fast reasons, on timeout, on
//     cancellation of the caller's context (cleanup runs on a fresh context
//     bounded by StopTimeout) and when Stop interrupts it. The caller never
//     has to call Stop after a failed Start. If the cleanup itself fails,
//     the error says so (errors.Is(err, ErrCleanupFailed)), the pod is
//     logged and counted (kubespawn_spawner_cleanup_failures_total), and the
//     sweeper will find it by its labels.
//  2. Absence is only ever proven by the API server. The cache may say "the
//     pod is still there, in this state"; "the pod does not exist", "the pod
//     was replaced" and "the pod is gone" are decided by a NotFound or a
//     different UID from a live GET or DELETE. Stop always sends DELETE.
//     Poll reports a pod stopped for absence only on the API server's
//     NotFound.
//  3. A stalled or unsynced cache never makes a decision. While waiting
//     (for readiness or for deletion), the spawner is woken by the cache's
//     notifications and, whenever none arrived for FallbackInterval, asks
//     the API server directly; a running pod is never reported stuck, a
//     deleted pod never reported present, because of a silent watch.
//  4. One watch per resource and scope per process: the spawner never opens
//     watches of its own. It consumes a shared pod cache ([PodCache], e.g.
//     a reflector.Factory's reflector.PodCache) and optionally an event
//     source ([EventSource]).
//  5. A pod is deleted only by UID: the DELETE of a failed start, of the
//     sweeper and of Stop with StopOptions.UID carry a UID precondition, so
//     a successor pod with the same name is never deleted. A pod that
//     someone else owns (other labels) is never deleted by Start
//     (ErrNameConflict).
//  6. Operations on one pod name are serialised within a process; Stop
//     cancels a Start in progress for the same name, which cleans up, then
//     Stop deletes.
//  7. Bad input gets a typed error (ErrInvalidOptions, ErrInvalidArgument,
//     the same values as package reflector's) before anything is sent to the
//     API server. Every
//     failed Start is a *StartError whose Reason is one of the sentinel
//     errors (ErrImagePull, ErrUnschedulable, ErrStartTimeout, ...), usable
//     with errors.Is, carrying the pod name and its last Warning events.
//  8. Creates are retried only on transient errors (429 honouring
//     Retry-After, 5xx, timeouts, connection errors), with CreateBackoff;
//     Invalid, BadRequest, Forbidden and other permanent refusals fail at
//     once (ErrRejected). A create that failed ambiguously (a timeout, or a
//     201 whose body was lost, can hide a success) is recognised by the
//     pod's start-ID annotation, so it is neither mistaken for a conflict
//     nor leaked: if the start fails, its cleanup keeps looking for the pod
//     for a settle window (min(StopTimeout/2, 30s)), deletes it if it
//     appears, and otherwise reports ErrCleanupFailed (outcome unconfirmed)
//     rather than a clean failure.
//
// Pods are named deterministically from the key ([PodName]) and labelled
// ([LabelManagedBy], [LabelInstance], [LabelKeyHash], with the raw key in
// [AnnotationKey]) so they can always be found again, after a restart of the
// service too.
//
// # Sweeper
//
// [Spawner.Sweep] is mybinder's delete-pods.py done right: it lists the
// spawner's pods page by page, selects those older than MaxAge (from
// status.startTime, or creationTimestamp for pods never scheduled) and/or
// those the service no longer knows (IsKnown), is a dry run unless Delete is
// set, and deletes with UID preconditions, confirming each deletion. Before
// each delete the pod is read again from the API server under its name lock
// and the policy re-applied, so a pod a Start just adopted, or the service
// just learned about, is left alone; pods in use are skipped, not waited for.
// [Spawner.RunSweeper] runs it periodically under leader election on a
// coordination.k8s.io Lease, so replicas never sweep at once.
//
// Not guaranteed: an upper bound on how long a start takes to notice a
// change when the cache is stalled (up to FallbackInterval), or that a pod
// whose deletion the kubelet never completes goes away (Stop then returns
// ErrStopTimeout).
package spawner
