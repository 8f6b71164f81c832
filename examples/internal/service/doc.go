// Package service is what the example programs share: one way to load the
// API server configuration, to serve HTTP with a graceful shutdown, to
// answer health checks and to write JSON. The programs' main functions
// stay short and alike because of it.
//
// # Contract
//
//   - Main, ServiceMain, ParseFlags, CacheFlags and Prepare are the one copy of
//     what every command does around its work: SIGTERM cancels its
//     context; -h is status 0, bad flags or a stray argument status 2;
//     --stall-timeout and --failure-timeout are checked by reflector's own
//     validation; a token file that was given and is empty or unreadable
//     is an error, never "no authentication".
//   - RESTConfig loads the configuration in the order controller-runtime's
//     config.GetConfig documents: the --kubeconfig flag, the $KUBECONFIG
//     environment variable (a list of files, merged), the in-cluster
//     configuration, then ~/.kube/config. The first that is set is used;
//     a set one that cannot be loaded is an error, never a fall-through.
//   - Run serves until its context ends (nil) or a failure is reported (the
//     failure, so that the process exits non-zero and is restarted), then
//     shuts the HTTP server down within the grace period, closing what is
//     left after it.
//   - NewHTTPServer bounds every connection's life: headers within
//     ReadHeaderTimeout, the whole request (a body the handler does not
//     read included: net/http drains it) within ReadTimeout, each write
//     within WriteTimeout unless a long answer extends it (ExtendWrite,
//     EventStream) or holds it while it waits for bounded work
//     (HoldWrite, released before the answer is written, so the answer's
//     writes get WriteTimeout again), an idle connection for IdleTimeout. A request once
//     read keeps its context as long as its client stays, whatever
//     ReadTimeout.
//   - NewHTTPServer answers programs, not web pages: before any handler,
//     on every method, a request whose Sec-Fetch-Site is not
//     "same-origin" or "none", or whose Origin is not the service's own
//     scheme://Host, is 403, and a non-empty body without Content-Type:
//     application/json is 415 (NoCrossSite). A request with neither
//     header and a JSON body (or none) passes. On loopback a Host that
//     is not loopback is 403 (LoopbackHosts).
//   - Readyz and Livez answer 200 {"status":"ok"} or 503 with the
//     checker's errors, as JSON.
package service
