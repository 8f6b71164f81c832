// Command jupyterhub is `make demo-jupyterhub`: the 2018 mybinder.org
// incident replayed with a real, unmodified JupyterHub 3.0 (Debian's) whose
// spawner is KubespawnSpawner (kubespawn_spawner.py beside this file),
// driving the demo spawner service (examples/spawner) on a local control
// plane. It prints a table of what the hub and the API server ended with.
//
// Real: JupyterHub and its configurable-http-proxy, the Python spawner
// class, the kubespawn spawner service (a child process), kube-apiserver
// and etcd. Simulated: the kubelet and scheduler (internal/podsim, every
// pod reports the loopback IP 127.0.0.1) and the notebook servers (one
// stand-in HTTP server on loopback that answers for a user while the API
// server has the user's pod Running and Ready).
//
// The rig is internal/: hub (the JupyterHub process and its REST API),
// spawnersvc (the spawner service as a child process), hubtest (both
// with the stand-in and the API server's view to audit them) and
// httpwait; incident.go here is the replay the command and a test run.
//
// The package's tests (jupyterhub_test.go) drive the same hub only
// through its REST API: 20 concurrent users, the incident with the hub's
// own start timeout, a hub restart in the middle of starts, an evicted pod
// (reported to the hub with its container's exit status), and a stop while
// the API server fails (stop() waits for the service to finish it, never
// letting the hub forget a server whose pod exists). TestSpawnerModule
// runs the Python tests of the class (test_kubespawn_spawner.py: poll()'s
// exit statuses, one HTTP client per event loop closed with it, the state
// it keeps) against a stand-in service, with Debian's interpreter.
package main
