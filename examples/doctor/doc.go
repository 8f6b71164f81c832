// Command doctor checks the watch path of a spawner before an incident:
// run where the spawner runs, with the same kubeconfig or in-cluster
// credentials, it reports within a minute (--timeout) what decides how
// long a silent watch stall (the 2018 mybinder.org failure) would go
// unnoticed, and says what to change.
//
//	doctor --namespace users                                   # read-only
//	doctor --namespace users --canary-namespace users          # with a canary write
//	doctor --namespace users --canary-namespace users --json   # for programs
//	doctor --namespace users --stall-timeout 4s                # the spawner's options
//
// What it checks, every request with a deadline (--request-timeout):
//
//   - The API server's version (GET /version, also the connection check
//     and the request latency), and whether it serves WatchList (a watch
//     with sendInitialEvents=true and resourceVersionMatch=NotOlderThan
//     ends its initial events with the k8s.io/initial-events-end bookmark)
//     and bookmarks (a watch with allowWatchBookmarks=true from a list's
//     resourceVersion gets the bookmark the server sends 2s before its
//     timeout). Both watch the spawner's pods in --namespace, with a label
//     selector of the run's own that matches nothing: the path, not the
//     content.
//   - The protocol of those watches, as negotiated on the config's own
//     transport (rest.TransportFor): HTTP/2 lets client-go's ping notice a
//     dead connection, HTTP/1.1 does not. Proxies: response headers an API
//     server never sets (Via, Forwarded, X-Forwarded-*, Server, X-Envoy-*),
//     and the client's own proxy ($HTTPS_PROXY, proxy-url).
//   - Short watches answered 429 or 5xx: kubespawn's probes are such
//     watches, and refused probes leave only its idle rule and audit.
//   - With --canary-namespace, a canary: a ConfigMap (or a Lease,
//     --canary-kind) created with generateName, timed until a watch opened
//     before the create, from the list's resourceVersion, delivers it, and
//     deleted with its UID as precondition (even past the run's bound).
//     The verbs it needs (create, delete, list, watch) are asked of the
//     API server first (SelfSubjectAccessReview): a missing one is named
//     and the run stays read-only, so nothing is created that could not
//     be deleted. Without --canary-namespace it is read-only.
//   - API priority and fairness: the flow schema and priority level the
//     watch was classified into (X-Kubernetes-PF-* headers; names and
//     type when the credentials may list them).
//   - The config's client-side rate limit (QPS, Burst, RateLimiter).
//
// Then the verdict: how long a silent stall goes unnoticed
//
//   - by kubespawn with the given options (--stall-timeout,
//     --probe-interval, --canary-window, --idle-timeout, --audit-interval;
//     defaults filled in by reflector itself): the rules of
//     reflector/doc.go, naming the one that catches each kind of stall
//     first. With probes working: ProbeInterval plus the grace for a
//     stream that dies, ProbeInterval plus the probe deadline when every
//     watch hangs, CanaryWindow plus a second after a spawner write. With
//     probes off, refused or too slow here: IdleTimeout or the audit;
//   - by a plain client-go informer: client-go's HTTP/2 health check
//     (ReadIdleTimeout 30s + PingTimeout 15s, $HTTP2_READ_IDLE_TIMEOUT_SECONDS
//     and $HTTP2_PING_TIMEOUT_SECONDS) for a dead connection over HTTP/2
//     without a proxy, rest.Config.Timeout if set, else never;
//   - by the KubeSpawner loop with its defaults (timeout_seconds 10,
//     request_timeout 60, restart_seconds 30): masked by its restart after
//     30s and never reported; never if every request hangs.
//
// Each finding is fail, warn or info, with what to change; -json prints
// the whole report (every field always present).
//
// Exit status: 0 healthy (no failed check), 1 unhealthy (a failed check:
// the canary not delivered in --canary-timeout, a stalled or refused
// watch, latency kubespawn's probes cannot live with, no bookmarks, no
// permission for the canary or the watch), 2 bad flags or nothing to
// examine (no configuration, no API server, refused credentials, a
// namespace that does not exist). Errors are one line on stderr. See
// ../RUNBOOK.md, "Before an incident: the doctor".
package main
