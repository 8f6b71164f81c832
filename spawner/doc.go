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
//
//  2. Absence is only ever proven by the API server. The cache may say "the
//     pod is still there, in this state"; "the pod does not exist", "the pod
//     was replaced" and "the pod is gone" are decided by a NotFound or a
//     different UID from a live GET or DELETE. Stop always asks the API
//     server: it sends DELETE for the UID it was given, or reads the pod
//     live first when given none. Poll reports a pod stopped for absence
//     only on the API server's NotFound.
//
//  3. A stalled or unsynced cache never makes a decision. While waiting
//     (for readiness or for deletion), the spawner is woken by the cache's
//     notifications and, whenever none arrived for FallbackInterval, asks
//     the API server directly; a running pod is never reported stuck, a
//     deleted pod never reported present, because of a silent watch.
//
//  4. One watch per resource and scope per process: the spawner never opens
//     watches of its own. It consumes a shared pod cache ([PodCache], e.g.
//     a reflector.Factory's reflector.PodCache) and optionally an event
//     source ([EventSource]).
//
//  5. A pod is deleted only by UID, and only once its UID or its labels
//     were checked: every DELETE (of a failed start, of the sweeper, of
//     Stop) carries a UID precondition, so a successor pod with the same
//     name is never deleted; the spawner never sends a DELETE by name
//     alone. Stop without StopOptions.UID reads the pod live from the API
//     server and deletes it (by the UID read) only if it carries this
//     spawner's LabelManagedBy and LabelInstance; a pod of another
//     instance, or of no spawner, gets ErrNotOwned and is left alone, as
//     Start leaves it alone with ErrNameConflict.
//
//  6. Operations on one pod name are serialised within a process; Stop
//     cancels a Start in progress for the same name, which cleans up, then
//     Stop deletes.
//
//  7. Bad input gets a typed error (ErrInvalidOptions, ErrInvalidArgument,
//     the same values as package reflector's) before anything is sent to the
//     API server. Every
//     failed Start is a *StartError whose Reason is one of the sentinel
//     errors (ErrImagePull, ErrUnschedulable, ErrStartTimeout, ...), usable
//     with errors.Is, carrying the pod name and its last Warning events.
//
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
//  9. Claims (Request.Claims) are the key's and outlive pods. Start
//     ensures them before it creates the pod: it creates a claim only on
//     the API server's NotFound, adopts one only if it carries this
//     instance's labels and the key's annotation, and otherwise fails
//     (ErrClaimConflict, ErrClaimIncompatible naming the field,
//     ErrClaimTerminating, ErrClaimFailed with the API server's answer)
//     with no pod created. Before it creates a claim, Start sends the pod
//     as a dry-run create: a pod the API server's admission refuses
//     (ErrRejected) fails a first start with nothing created, not even
//     the new claim. Two Starts racing for one key (in one process or
//     in two replicas) end with one claim and neither fails because of it:
//     the loser of the create adopts the winner's claim. Stop never
//     deletes a claim; only [Spawner.DeleteClaims] does (refusing while
//     the key's pod exists), with UID preconditions, returning once the
//     API server confirms each gone.
//
//  10. Owned objects (Request.Services, Secrets, ConfigMaps) are the pod's.
//     They are created once the pod exists, with an ownerReference to its
//     UID (the garbage collector deletes them with it) and [LabelPodUID];
//     the spawner deletes them itself as well, by that label, with UID
//     preconditions, confirmed gone: on every failed start (one that
//     cannot be created fails the start, ErrOwnedObjectFailed or
//     ErrOwnedObjectConflict, and the pod is deleted) and on Stop. A
//     cluster whose garbage collector lags or does not run accumulates
//     none: the sweeper deletes those whose pod the API server no longer
//     has. A foreign object of the same name is never touched.
//
// Pods are named deterministically from the key ([PodName],
// [Spawner.PodName]) and labelled ([LabelManagedBy], [LabelInstance],
// [LabelKeyHash], with the raw key in [AnnotationKey]) so they can always be
// found again, after a restart of the service too. Names do not name the
// instance unless Options.NamePrefix does: instances sharing a namespace
// should each take [InstancePrefix] as NamePrefix, so their names never
// collide (the label checks above keep them safe either way).
//
// A failed Start forgets the events (EventSource.ForgetPod) only of a pod it
// created or adopted and confirmed gone, never those of the pod that made it
// fail with ErrAlreadyRunning or ErrNameConflict.
//
// # Sweeper
//
// [Spawner.Sweep] is mybinder's delete-pods.py done right: it lists the
// spawner's pods page by page, selects those older than MaxAge and/or those
// the service no longer knows (Select, for pods at least MinAge old), is a
// dry run unless Delete is set, and deletes with UID preconditions,
// confirming each deletion. Ages run from metadata.creationTimestamp on the
// API server's clock: no local clock, and no node's clock (status.startTime
// is the kubelet's), can make a young pod look old. Every request has a
// deadline: SweepPolicy.RequestTimeout for the read of the server's clock
// and for each page of the list (a stalled LIST fails that sweep, the next
// one lists again), StopTimeout per deleted pod, RenewDeadline for each
// Lease request of RunSweeper. Before
// each delete the pod is read again from the API server under its name lock
// and the policy re-applied, so a pod a Start just adopted, or the service
// just learned about, is left alone; pods in use are skipped, not waited for.
// After the pods, a sweep looks at what pods leave behind: owned objects
// whose pod the API server no longer has are selected (and, with Delete,
// deleted) whatever their age; claims that SweepPolicy.ClaimSelect says
// belong to keys the service does not know are reported
// (SweepResult.Claims, kubespawn_spawner_unknown_claims) and deleted only
// with an explicit MaxClaimAge, never while the key has a pod, never by
// default. A dry run shows all of it.
//
// [Spawner.RunSweeper] runs it periodically under leader election on a
// coordination.k8s.io Lease, so replicas never sweep at once.
//
// # Lifetime
//
// [Spawner.Close] releases what a Spawner holds: it stops its sweepers
// (each releases its Lease, and Close waits for them) and unregisters its
// metrics, so that a new Spawner can register with the same Registerer.
// The pod cache and event index are the factory's, not the Spawner's.
//
// Not guaranteed: an upper bound on how long a start takes to notice a
// change when the cache is stalled (up to FallbackInterval), or that a pod
// whose deletion the kubelet never completes goes away (Stop then returns
// ErrStopTimeout).
package spawner
