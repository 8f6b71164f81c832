// Package reflector is kubespawn's shared, self-healing cache of pods (and
// of events about pods, for package events), built on client-go's
// SharedIndexInformer.
//
// A plain informer trusts its watch. If the watch goes silent while its TCP
// connection stays open, which is what happened to mybinder.org in July
// 2018, the informer keeps serving a frozen cache and nothing notices. The
// caches of this package find that out, say so, and recover by themselves.
//
// # Use
//
// One [Factory] per process, built from a *rest.Config with options set
// once, hands out one cache per kind and scope ([Factory.Pods],
// [Factory.Events]); every user asking for the same scope shares it, so a
// process has one watch per resource and scope. The context given to
// [Factory.Start] is the lifetime of every cache; [Factory.Shutdown] waits
// for them:
//
//	f, err := reflector.NewFactory(cfg, reflector.Options{Registerer: reg})
//	pods, err := f.Pods(reflector.Scope{Namespaces: []string{"users"}})
//	f.Start(ctx)
//	defer f.Shutdown()
//	err = f.WaitForCacheSync(ctx)
//	pod, src, err := pods.Get(ctx, "users", "jupyter-alice")
//	...
//	<-f.Failed() // exit non-zero with f.Err(), to be restarted
//
// # Contract
//
//  1. The cache never proves absence. [PodCache.Get] answers from the
//     cache only when the cache is synced and healthy and has the object;
//     on a miss, or whenever it is not healthy, it asks the API server, and
//     only the API server's NotFound (apierrors.IsNotFound) means the
//     object does not exist. The [Source] of every answer is returned.
//     Answers from the API server go through the same slimming transform as
//     cached objects, so a reader never sees two shapes of one object.
//  2. A cache that is starting, degraded, failed or stopped says so
//     (State, Status, Healthz, Readyz, metrics) and readers fall back to the
//     API server ([PodCache.List] too: an error is never an empty list).
//  3. One main watch per kind and scope per factory. Probe watches are
//     short (one second) and per scope, never per object.
//  4. Bad input gets a typed error: [ErrInvalidOptions],
//     [ErrInvalidArgument], [ErrOutOfScope], [ErrStopped], [ErrNotSynced]
//     work with errors.Is.
//  5. Subscribers never block the cache or each other: Notify signals are
//     coalesced, and handlers added with AddEventHandler are buffered per
//     handler by client-go; a handler stuck in one call is reported.
//  6. The monitor never waits on the network, and every request a cache
//     makes has a deadline (below). A request that passes its deadline is
//     cut, with every connection of the cache's transport, and is itself
//     evidence of trouble.
//
// # How a stall is found
//
//   - Probes. Every ProbeInterval a short watch (timeoutSeconds=1) from
//     the cache's resourceVersion, with the scope's selectors, asks the
//     server for the changes in scope since then: nothing at all when
//     nothing changed. A change the server has and the cache lacks a grace
//     later (ProbeInterval/2, between 1s and 2s) means the main watch is
//     stalled. A probe the server does not close by the probe deadline
//     while the main watch is silent means every watch hangs. A probe
//     whose connection is cut before the server closes it (a reset, an
//     API server restart) proves nothing and counts as failed (with
//     [NewFactory]'s transports; a client given to [NewFactoryForClient]
//     cannot tell a cut from the server's close).
//   - Canaries. [PodCache.ExpectWrite] tells the cache that the server has
//     reached a version of an object in scope (the spawner reports each of
//     its creates and deletes). A cache that has not reached it within
//     CanaryWindow probes at once, and that probe knows what the server's
//     replay must contain, so it needs no grace: a write the watch misses
//     is found about CanaryWindow plus a second after it. A canary is
//     satisfied only by the cache reaching its version: a replay that
//     reaches it while the cache lacks it, or that the server ends without
//     it (a watch cache lagging behind the write), is a stall; a probe
//     that fails leaves it pending, and every later probe expects it.
//   - An idle watch: no event, not even a bookmark, for IdleTimeout.
//   - The drift audit: every AuditInterval, a metadata-only, paginated
//     list of the scope is compared with the cache by UID and
//     resourceVersion; differences that persist while the server's copy is
//     unchanged are drift.
//
// With default options (StallTimeout 10s, ProbeInterval 5s, probe deadline
// 3s) a silent stall of the main watch, or of every watch, is found within
// StallTimeout, in practice in 6 to 8 seconds; after a write reported with
// ExpectWrite, within about 2 seconds. Recovery from a stall, an idle
// watch or drift is a forced relist through client-go's own 410 path,
// after closing the cache's connections: a plain LIST (a WatchList would
// go through the suspect watch path) and a consistent read
// (resourceVersion "", not the last synced version, which the API server
// may answer from the same watch cache that lags). A paginated relist is
// one relist, counted once with its reason.
//
// # Deadlines
//
// Derived from StallTimeout (S): probe 1s + S/5 (between 2s and 3s); the
// response headers of a watch, the same; one LIST request or page, and
// the initial events of a WatchList, 6×S; one page of the audit, S; a GET
// on a reader's behalf, 3×S (within the reader's context).
//
// # Health
//
// A cache's health is a set of problems, each with one rule that sets it
// and one that clears it, evaluated by the monitor of each namespace's
// shard. The state follows from them: starting until the initial list is
// stored (for at most StallTimeout); synced with no problem; degraded with
// any; failed once the oldest active problem other than probes_failing
// has lasted FailureTimeout (recovery goes on, and a cache that recovers
// is synced again without a restart of the process); stopped after the
// factory's lifetime. probes_failing alone degrades the cache, however
// long it lasts, and never makes it failed.
//
// A program learns of a failure from the factory, as it would from
// manager.Start's error: [Factory.Failed] is a channel closed when a
// cache first enters failed, and [Factory.Err] then says which and why
// (wrapping [ErrFailed]). The signal is sticky: it stays set after the
// cache recovers, so that a waiter cannot miss it; liveness
// ([Factory.Healthz]) follows the current state instead. The factory's
// end (stopped) never sets it.
//
//	problem           set when                                          cleared when
//	not_synced        the initial list is not stored StallTimeout       the initial list is stored
//	                  after Start
//	stall             a probe finds changes the cache lacks past the    the forced relist has completed, a
//	                  grace (a canary's probe: at once); a canary's     main watch has opened since, and a
//	                  probe ends without the canary's version while     probe begun after it opened (or a
//	                  the cache lacks it; or a probe passes its         clean audit begun after it)
//	                  deadline while the main watch is silent           confirms the cache fresh
//	idle              the open main watch delivers nothing for          as for stall
//	                  IdleTimeout
//	drift             the audit finds differences twice, a settle       as for stall
//	                  apart, with the server's copy unchanged
//	probes_failing    probes have failed (errors, 429, 5xx, deadline    a probe is answered (fresh, or 410
//	                  passed while the main watch is active) for        Expired), or a restart (stall,
//	                  StallTimeout; never makes the cache failed        idle, drift) begins
//	list_watch_error  the main list or watch request fails, or the      a main watch opens
//	                  watch reports an error
//	hung_request      a LIST, a watch's response headers or a           a request of the same kind succeeds
//	                  WatchList's initial events pass their deadline
//
// Stall, idle and drift restart the watch; the others only report:
// client-go retries a failed list or watch by itself, and failing probes
// while the main watch delivers are no reason to distrust the cache (API
// priority and fairness answering 429 to new requests, say), so they
// degrade it but never call for a restart, of the watch or of the
// process. What failing probes cannot see is left to the rules that can:
// a main watch dead behind them is idle after IdleTimeout; a stall a
// canary found, or an idle watch, is not cleared while neither a probe
// nor a clean audit confirms the recovery; a hung or failing list fails
// too. Each of those reaches
// failed FailureTimeout after it was set, whatever the probes did before.
// Without probing (ProbeInterval < 0) stall, idle and drift clear once the
// relist's watch has opened.
//
// Not guaranteed: that the cache is never behind. It can lag by up to
// StallTimeout before a stall is found; that is why absence and health are
// decided as above. Stall detection needs a real API server: with a fake
// clientset, probes and audits use the fake's typed watch and list.
package reflector
