// Package service is what the example programs share: one way to load the
// API server configuration, to serve HTTP with a graceful shutdown, to
// answer health checks and to write JSON. The programs' main functions
// stay short and alike because of it.
//
// # Contract
//
//   - RESTConfig loads the configuration in the order controller-runtime's
//     config.GetConfig documents: the --kubeconfig flag, the $KUBECONFIG
//     environment variable (a list of files, merged), the in-cluster
//     configuration, then ~/.kube/config. The first that is set is used;
//     a set one that cannot be loaded is an error, never a fall-through.
//   - Run serves until its context ends (nil) or a failure is reported (the
//     failure, so that the process exits non-zero and is restarted), then
//     shuts the HTTP server down within the grace period, closing what is
//     left after it.
//   - Readyz and Livez answer 200 {"status":"ok"} or 503 with the
//     checker's errors, as JSON.
package service
