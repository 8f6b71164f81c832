// Package events gives spawners per-pod progress from Kubernetes Events:
// one shared event watch per scope, a bounded per-pod index fed by it, and
// an [Index.Stream] of [Update]s for each pod being started.
//
// It is built on package reflector: the watch is the factory's
// reflector.EventCache for the scope ([reflector.Factory.Events]), which
// brings the list+watch, stall detection and recovery, drift audit,
// health and metrics. This package adds the index, the Streams and their
// fallback. [IndexFor] returns a factory's Index for a scope.
//
// # Why core/v1 Events
//
// The apiserver stores one kind of Event and serves it through two APIs,
// core/v1 and events.k8s.io/v1; both are views of the same storage, so
// neither sees more. The event cache uses core/v1 because it is what the kubelet and
// scheduler write through client-go's tools/record (and what podsim
// writes), what `kubectl describe` and KubeSpawner read, and because its
// field selectors (involvedObject.kind, involvedObject.uid...) are the ones
// that select the events about one pod; in events.k8s.io/v1 the same fields
// are named regarding.*, with no gain for a reader.
//
// # Contract
//
//  1. One event watch and one index per scope per factory: [IndexFor] returns
//     the same Index to every caller asking for the same scope, for the
//     factory's lifetime; asking with other Options is an error, never a
//     silent first-caller-wins. The scope's field selector always includes
//     involvedObject.kind=Pod; the caller's is ANDed.
//  2. A pod's Stream carries that pod's events only: events are matched by
//     involvedObject.uid == PodRef.UID, so a pod recreated under the same
//     name never sees its predecessor's events. Events without a UID are
//     ignored.
//  3. Push, not poll, while healthy: the index is fed by an informer event
//     handler, which only updates a map and pokes coalesced signals. Each
//     Stream has its own goroutine that reads the index when signalled and
//     sends on the Stream's channel; a slow consumer delays only its own
//     Stream, never the handler, the index or other Streams.
//  4. Replay, then live: a Stream first delivers the events the index holds
//     for the pod (ordered by first occurrence: eventTime, firstTimestamp or
//     creationTimestamp, then the order the watch delivered them, since the
//     API's timestamps have second resolution), then each new event as it
//     arrives, in the same order within each batch read.
//  5. Deduplication: a Stream delivers one Update per distinct
//     (reason, message). A count, lastTimestamp or series update of an event
//     already delivered is suppressed, and so is the same reason and message
//     reported again as another Event object. An event whose message
//     changes is delivered again with its new message. (The set of
//     delivered pairs is bounded, at max(4×PerPodLimit, 256), oldest first
//     forgotten.)
//  6. Progress: each Update's Progress is the highest step reached so far
//     in the Stream, so it never decreases: Scheduled 20,
//     SuccessfulAttachVolume 30, Pulling 40, Pulled 60, Created 70,
//     Started 90. Warning events and other reasons do not
//     advance it. 100 (Running and Ready) is never sent: whether the pod is
//     ready is read from the pod, which is the spawner's job.
//  7. Messages: [Message] gives one line: the event's message for Normal
//     events (`Pulling image "x"`), "[Warning] <reason>: <message>" for
//     Warning events.
//  8. Fallback: while the event watch is not healthy (reflector state other
//     than synced, or the index not yet holding the initial list), a Stream
//     lists its pod's events from the API server (field selector
//     involvedObject.uid=<uid>, in the pod's namespace) every
//     FallbackInterval, and delivers new ones with Degraded=true. When the
//     watch turns degraded or failed the Stream first sends
//     Update{Degraded: true, Message: [MessageDegraded]}; when it is
//     healthy again it sends Update{Message: [MessageRecovered]} and goes
//     back to the index (Degraded=false). While the watch is only starting
//     the Stream polls without those two messages. State changes are
//     noticed through reflector's NotifyState, not by polling.
//  9. Bounded memory. The informer mirrors the server's events in scope
//     (so it is bounded by the apiserver's --event-ttl, default 1h), slimmed
//     (reflector.EventCache says how) to what Streams and reports read. The
//     per-pod index holds at most PerPodLimit events per pod (the newest by last
//     occurrence), drops events the server deletes, and drops a pod's entry
//     TTL after its last event (or its last Stream closing) while no Stream
//     is open for it, or at once on [Index.ForgetPod]. Events do not say
//     when their pod is gone: the spawner, which owns the pod, closes its
//     Stream and calls ForgetPod once the pod's deletion is confirmed; the
//     TTL catches everything else. A Stream that falls behind by more than
//     PerPodLimit events of its pod skips the oldest.
//  10. Bad input gets a typed error: reflector.ErrInvalidArgument for an
//     incomplete PodRef, reflector.ErrOutOfScope, reflector.ErrStopped and
//     reflector.ErrInvalidOptions, all usable with errors.Is.
//  11. A Stream's channel closes when its context ends or the factory's
//     lifetime does; the factory's Shutdown waits for every Stream's
//     goroutine. The index has no goroutine of its own.
//
// [Index.Events] returns the index's events of a pod, for failure reports
// (the last Warning events are at the end); [Index.ListEvents] is the same
// but asks the API server while the watch is unhealthy.
package events
