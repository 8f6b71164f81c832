// Package faultproxy is an HTTP proxy, started in-process by tests and
// demos, that sits between client-go clients and a kube-apiserver and
// injects faults on command, per kind of request.
//
// It exists to reproduce the 2018 mybinder.org incident on demand: a pod
// watch whose TCP connection stays open while it silently stops delivering
// events (Stall), and the failures around it: dropped connections
// (ResetConnections), an unreachable API server (Refuse), slow requests
// (SetLatency), error responses (InjectStatus) and errors reported inside a
// watch stream such as 410 Expired (InjectWatchError).
//
// # Contract
//
//   - New starts the proxy on 127.0.0.1 (random port) in front of the API
//     server of a rest.Config; ClientConfig turns any client config into one
//     that goes through the proxy, keeping its identity: the client's
//     credentials travel as headers that the proxy forwards unchanged, and
//     the proxy adds none of its own. Close stops it and every connection.
//   - Requests are classified like the apiserver does (Classify): verb
//     (get, list, watch, create, update, patch, delete, deletecollection),
//     group, version, resource, subresource, namespace and name. A Match
//     selects requests by verb, resource, namespace and timeoutSeconds
//     (MinTimeout: main watches; MaxTimeout: probes); its zero value
//     selects every request.
//   - Faults can be switched on and off at any time from any goroutine and
//     take effect at once: a stall applies to responses already streaming as
//     well as to new ones, a reset to every open connection; latency and
//     injections apply to requests that arrive afterwards. No fault needs a
//     sleep to take hold: what a test wants to wait for is observable
//     (StalledStreams, OpenWatches, Records).
//   - Without faults the proxy is transparent: paths, queries, Accept and
//     Content-Type (JSON, protobuf, CBOR), Accept-Encoding and compressed
//     bodies, streaming watches (flushed as each event arrives) and
//     protocol upgrades pass through untouched.
//   - Every request is accounted (Stats per verb and resource, Records per
//     request) with the response body bytes actually written to its client,
//     so benchmarks can read the API cost of the code under test.
//
// By default clients talk plain HTTP/1.1 to the proxy, so nothing below the
// application (no HTTP/2 PING) notices a stalled stream, as in 2018;
// Options.HTTP2 serves TLS with HTTP/2 instead. The proxy talks HTTP/1.1 to
// the upstream, one connection per in-flight request.
//
// The proxy is a test tool: it keeps a record of every request in memory
// until ResetStats, and trusts its clients.
package faultproxy
