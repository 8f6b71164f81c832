// Command jupyterhub is `make demo-jupyterhub`: the 2018 mybinder.org
// incident replayed with a real, unmodified JupyterHub 3.0 (Debian's) whose
// spawner is KubespawnSpawner (kubespawn_spawner.py beside this file),
// driving the demo spawner service (examples/spawner) on a local control
// plane. It prints a table of what the hub and the API server ended with.
//
// Real: JupyterHub and its configurable-http-proxy, the Python spawner
// class, the kubespawn spawner service (a child process), kube-apiserver
// and etcd, and the notebook servers: each pod's process is Debian's
// jupyterhub-singleuser, run by the pod simulator's process runtime at the
// pod's own loopback IP. Simulated: the kubelet and scheduler
// (internal/podsim), including image pulls and their failures. With
// -standin the pods are simulated too (every one reports 127.0.0.1) and
// one stand-in HTTP server there answers for a user while the API server
// has the user's pod Running and Ready. After the audit the command opens
// a running user's notebook page in headless chromium and saves a
// screenshot (out/demo-jupyterhub.png).
//
// The rig is internal/: hub (the JupyterHub process and its REST API),
// spawnersvc (the spawner service as a child process), hubtest (both
// with the stand-in and the API server's view to audit them) and
// httpwait; incident.go here is the replay the command and a test run.
//
// The package's tests drive the same hub: through its REST API
// (jupyterhub_test.go: 20 concurrent users, the incident with the hub's
// own start timeout, a hub restart in the middle of starts, an evicted pod
// reported with its container's exit status, a stop while the API server
// fails), with real single-user servers (real_servers_test.go: Debian's
// jupyterhub-singleuser as each pod's process, reached through the hub's
// proxy with the user's token, a named server too), with the
// configuration's profiles and per-user storage (profiles_test.go,
// storage_test.go: the pod and claim as the API server stores them, the
// claim kept across stops and deleted with the user), and in chromium
// (browser_test.go: log in, pick a profile, watch the progress, reach the
// notebook). TestSpawnerModule runs every test_*.py of the class (the
// manifest from KubeSpawner's traits, JupyterHub 3-6 behaviours with
// fakes, poll()'s exit statuses, one HTTP client per event loop) against
// a stand-in service, with Debian's interpreter.
//
// With -bench-starts N the command measures, instead of the incident, N
// real servers started one after another: hub POST to the server
// answering through the proxy, against the pod's own start.
package main
