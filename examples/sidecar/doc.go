// Command sidecar runs next to a spawner written in any language (such as
// JupyterHub's hub) and gives it kubespawn's self-healing pod reflector
// over HTTP/JSON: pod reads that never report a pod missing unless the API
// server said so, health and metrics that tell when the cache cannot be
// trusted, a Server-Sent Events stream of a pod's progress and, with a
// bearer token, a DELETE that always reaches the API server. See README.md
// for the HTTP contract.
package main
