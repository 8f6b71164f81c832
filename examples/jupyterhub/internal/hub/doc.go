// Package hub runs a real, unmodified JupyterHub 3.0 (Debian's, with its
// configurable-http-proxy) whose spawner is KubespawnSpawner, configured by
// examples/jupyterhub/jupyterhub_config.py, and drives it only through its
// REST API with an admin service token, as the rig's tests and demo do.
//
// Contract:
//   - Check says whether the hub can run here: /usr/bin/jupyterhub exists
//     and Python, Debian's /usr/bin/python3, imports jupyterhub 3.x;
//     otherwise its error says how to install it (`make jupyterhub`):
//     callers fail, nothing is ever skipped.
//   - Start picks three distinct free loopback ports (hub, hub API,
//     proxy API) and a token, runs the hub, and returns once its REST API
//     answers and it has checked the servers in its database ("Initialized
//     N spawners"), within two minutes; otherwise it stops the process and
//     returns an error with the tail of its log.
//   - Stop ends the hub (SIGTERM, then SIGKILL to its group, so its proxy
//     too, after 30 s), leaving its servers running (cleanup_servers is
//     False); Hub.Start runs it again on the same database and ports.
//   - The REST calls return the HTTP status and an error for any answer of
//     300 or more; Settled waits until no server of the given users is
//     pending.
package hub
