// Command spawner is a minimal demo spawner service built on kubespawn's
// spawner package: one pod per user, started, polled and stopped over
// HTTP, with the pod and event caches shared through one reflector.Factory
// and a leader-elected sweeper that deletes the pods its user table does
// not know. See README.md for the HTTP contract and ../RUNBOOK.md for
// operating it.
package main
