// Package legacy is a Go replica of the Python KubeSpawner's pod reflector
// and stop logic, for comparison only: the benchmarks measure its API cost
// against kubespawn's, and the incident replay runs the 2018 failure with
// it. Do not use it for anything else; it reproduces the bugs on purpose.
//
// What it replicates (kubespawner/reflector.py and spawner.py):
//
//   - A loop: full LIST (JSON, resourceVersion=0), then WATCH from the
//     list's resourceVersion with timeoutSeconds, handling events into a
//     map; when the watch ends, or RestartEvery has passed, LIST again. In
//     practice a relist every TimeoutSeconds.
//   - On errors, a backoff from 0.1s doubling; once the delay exceeds
//     30s it logs "never recovered, giving up" and the loop ends. Nothing
//     notices: the cache keeps being served.
//   - RequestTimeout bounds each request on the client side. The 2018 code
//     had none (zero here), so a watch stream that went silent with its
//     TCP connection open blocked the loop forever: the cache froze.
//   - Reads come from the cache only.
package legacy
