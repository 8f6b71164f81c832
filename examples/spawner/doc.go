// Command spawner is a minimal demo spawner service built on kubespawn's
// spawner package: one pod per user, started, polled and stopped over
// HTTP, with the pod and event caches shared through one reflector.Factory
// and a leader-elected sweeper that deletes the pods its user table does
// not know. The table is rebuilt from the API server at start-up, before
// anything is served or swept; a stop that cannot complete stays owned
// (stop-pending) and is retried until the pod is gone. See README.md for
// the HTTP contract and ../RUNBOOK.md for operating it.
package main
