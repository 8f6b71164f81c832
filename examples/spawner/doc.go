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
// --services-enabled each pod has a Service that goes with it.
//
// A start's body may carry the hub's whole pod, its claims and its
// Services (the JupyterHub class sends them): decoded strictly, as the API
// server decodes, so an unknown or misspelt field is a 400 naming it. The
// service keeps the last word on the namespace, the pod's name, its own
// labels and annotations and the owners of companions (a body that sets
// them is a 400), and checks the pod against the operator's pod policy,
// Pod Security baseline by default (--pod-policy loosens it): a violation
// is a 403 naming the field, before anything is created. The namespace's
// Pod Security Admission is the second line (reason "rejected"). A poll
// that hears the API server's NotFound for a running user's pod drops the
// user's row (and the pod's owned objects, through Stop with its UID), so
// a pod deleted behind the service's back never locks its user out. See
// README.md for the HTTP contract and ../RUNBOOK.md for operating it.
package main
