// Command sweep finds and deletes leaked kubespawn pods: the mybinder.org
// delete-pods.py of the 2018 incident, done right on top of
// spawner.Sweep.
//
//	sweep --namespace users --older-than 4h            # dry run: list
//	sweep --namespace users --older-than 4h --delete   # delete, confirm gone
//	sweep --namespace users --orphans-from http://127.0.0.1:8082/known-pods --delete
//
// It lists the spawner's pods (label app.kubernetes.io/managed-by=kubespawn,
// of one --instance unless --all-instances) page by page, selects those
// older than --older-than (age from status.startTime, or creationTimestamp
// for pods never scheduled) and/or those the service does not know
// (--orphans-from), narrowed by --selector and --name-contains. It is a dry
// run unless --delete is given; deletes carry a UID precondition and each
// deletion is confirmed by the API server. See ../RUNBOOK.md.
//
// Exit status: 0 when every selected pod was deleted (or in a dry run, or
// when nothing matched), 1 when a delete failed or the sweep could not run,
// 2 for bad flags.
package main
