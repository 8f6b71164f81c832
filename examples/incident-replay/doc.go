// Command incident-replay replays the mybinder.org incident of July 2018 on a
// local control plane, once with a replica of the 2018 KubeSpawner and once
// with kubespawn, and compares them. It is what `make demo` runs.
//
// Both runs replay the same seeded schedule, each in its own namespace and
// behind its own fault proxy (so API requests and bytes are counted per run):
// a steady stream of users launching servers, some slow to start, a few
// failing to pull their image, some stopping their server after a while. A
// third of the way in, the pod watch goes silent with its TCP connection
// open, and stays silent until the end, as it did for hours in 2018. Starts
// that fail are aborted by calling stop, exactly as JupyterHub does.
//
// The baseline's cache freezes; starts time out; its stop finds no pod in
// the cache and skips the DELETE; pods leak. kubespawn detects the stall,
// falls back to the API server, and every start either completes or has its
// pod deleted.
//
//	go run ./examples/incident-replay                 # the table, ~3 minutes
//	go run ./examples/incident-replay -json           # one JSON object on stdout
//	go run ./examples/incident-replay -users 50 -duration 20s
//
// It exits 0 only if kubespawn leaked nothing. The control plane binaries
// (etcd, kube-apiserver) come from `make tools`.
package main
