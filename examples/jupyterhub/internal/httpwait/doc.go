// Package httpwait waits until a URL answers a given status: how the
// JupyterHub rig (examples/jupyterhub) knows that a process it started,
// the hub or the spawner service, is ready, or that the service reports
// itself unready.
//
// Contract: For polls every 50 ms and returns nil at the first answer
// with the wanted status; it returns an error, with the last answer or
// transport error, once ctx is done or the exited channel is closed (the
// process that should answer has ended). It never decides anything from
// one failed request.
package httpwait
