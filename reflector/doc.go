// Package reflector is kubespawn's shared, self-healing cache of Kubernetes
// objects (pods, and events for package events), built on client-go's
// SharedIndexInformer.
//
// A plain informer trusts its watch. If the watch goes silent while its TCP
// connection stays open, which is what happened to mybinder.org in July
// 2018, the informer keeps serving a frozen cache and nothing notices. A
// [Reflector] adds what client-go lacks:
//
//   - Stall detection. Every ProbeInterval it opens a short probe watch from
//     the cache's last resourceVersion with the same selectors; the server
//     answers with the changes in scope since then, which costs next to
//     nothing when there are none. If the server holds a change that the main
//     watch has not delivered one probe interval later, the watch is stalled.
//     A watch with no event or bookmark for IdleTimeout (about two of the
//     apiserver's one-minute bookmark periods) is treated as dead too. A
//     healthy idle watch is never flagged: the probe finds no changes and
//     bookmarks keep it active.
//   - Recovery. A stalled or dead watch is torn down (its connection closed
//     when the Reflector owns its transport, see [NewForConfig]) and the
//     informer relists through client-go's own 410 Gone path, with a plain
//     LIST (a WatchList would go through the suspect watch path). 410s,
//     watch errors and apiserver restarts are recovered by client-go's own
//     relist and counted.
//   - Drift audit. Every AuditInterval, a metadata-only, paginated list of
//     the scope (names, UIDs, resourceVersions) is compared with the cache;
//     differences that persist while the server's copy is unchanged (ghosts,
//     missing objects, stale versions) are repaired by a relist and counted.
//   - Health. A state machine (starting, synced, degraded, failed, stopped)
//     with a reason. OnFailure is called when recovery has failed for
//     FailureTimeout, so a process can exit and be restarted.
//
// # Contract
//
// These hold for every Reflector:
//
//  1. The cache never proves absence. [Reflector.Get] answers from the cache
//     only when the Reflector is synced and healthy and has the object. On a
//     miss, or whenever the Reflector is not healthy, it asks the API server;
//     only the API server's NotFound (apierrors.IsNotFound) means the object
//     does not exist. The [Source] of every answer is returned.
//  2. A Reflector that is starting, degraded, failed or stopped says so
//     ([Reflector.Status], Healthz, Readyz, metrics) and readers fall back to
//     the API server; [Reflector.List] does the same.
//  3. One main watch per scope. A [Registry] hands the same Reflector to
//     every user in a process that asks for the same client, kind and scope,
//     and stops it when the last user releases it. The probe watches are
//     short (seconds) and per scope, never per object.
//  4. Bad input gets a typed error: [ErrInvalidOptions], [ErrInvalidArgument],
//     [ErrOutOfScope], [ErrStopped], [ErrNotSynced] work with errors.Is.
//  5. Subscribers never block the cache or each other: [Reflector.Notify]
//     signals are coalesced, and handlers added with
//     [Reflector.AddEventHandler] are buffered per handler by client-go; a
//     handler stuck in one call is reported in Status and metrics.
//
// Not guaranteed: that the cache is never behind. It can lag by up to about
// StallTimeout before a stall is detected; that is why absence and health
// are decided as above. Stall detection needs a real API server: with a
// fake clientset the probe and audit degrade to plain typed lists.
package reflector
