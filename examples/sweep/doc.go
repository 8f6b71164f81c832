// Command sweep finds and deletes leaked kubespawn pods: the mybinder.org
// delete-pods.py of the 2018 incident, done right on top of
// spawner.Sweep.
//
//	sweep --namespace users --instance hub-1 --older-than 4h            # dry run: list
//	sweep --namespace users --instance hub-1 --older-than 4h --delete   # delete, confirm gone
//	sweep --namespace users --instance hub-1 --orphans-from http://127.0.0.1:8082/known-pods --delete
//
// It lists the spawner's pods (label app.kubernetes.io/managed-by=kubespawn,
// of one --instance unless --all-instances) page by page, selects those
// older than --older-than and/or those the service does not know
// (--orphans-from) and at least --orphan-min-age old, narrowed by --selector
// and --name-contains. It is a dry run unless --delete is given; deletes
// carry a UID precondition and each deletion is confirmed by the API server.
// See ../RUNBOOK.md.
//
// It shows what pods leave behind, too. Owned objects (a pod's Services,
// Secrets, ConfigMaps: label kubespawn.io/pod-uid) whose pod the API
// server no longer has are listed, and deleted with --delete whatever
// their age. Claims (users' home directories, which outlive pods) are only
// listed with --report-claims: those whose key has no pod (the CLI has no
// user table, so a user who merely stopped is listed too), at least
// --orphan-min-age old. A claim is deleted only with an explicit
// --max-claim-age and --delete, and only one of --instance older than it
// whose key still has no pod just before the delete.
//
// A pod's age runs from its metadata.creationTimestamp, on the API server's
// clock (spawner.Sweep reads it): never from the local clock, and never
// from status.startTime, which the kubelet writes with its node's clock (a
// node clock behind would make a pod being started look hours old). Every
// request of the scan (the server's clock, each list page) is bounded by
// --request-timeout (0: the library's default), so a stalled API server
// fails the run (exit status 1) instead of hanging it; each selected pod's
// delete and confirmation by --timeout.
//
// Exit status: 0 when every selected pod, object and claim was deleted (or
// in a dry run, or when nothing matched), 1 when a delete failed or the
// sweep could not run, 2 for bad flags.
package main
