// Command spawner is a minimal demo spawner service built on kubespawn's
// spawner package: one pod per user, started, polled and stopped over
// HTTP, with the pod and event caches shared through one reflector.Factory
// and a leader-elected sweeper that deletes the pods its user table does
// not know. The table is rebuilt from the API server at start-up, before
// anything is served or swept; a stop that cannot complete stays owned
// (stop-pending) and is retried until the pod is gone. With
// --storage-capacity each user has a claim (Zero to JupyterHub's
// singleuser.storage), mounted in their pod, kept across stops and deleted
// only by DELETE /users/{user}/claims (JupyterHub's delete_forever); with
// --services-enabled each pod has a Service that goes with it. See
// README.md for the HTTP contract and ../RUNBOOK.md for operating it.
package main
