// Package spawnersvc runs the demo spawner service (examples/spawner) as
// a child process for the JupyterHub rig (examples/jupyterhub): built from
// this module's source, started on a free loopback port with a bearer
// token and its options, and stopped, frozen or thawed by its tests.
//
// Contract:
//   - Build compiles examples/spawner (with -race when this binary has
//     it, so that the build reuses the compiled packages).
//   - Start returns only once the service's /readyz answers 200 (within
//     two minutes); otherwise it stops the process and returns an error
//     with the tail of its log. The service runs with --instance=Instance,
//     the --stall-timeout minimum (4s) and a 2s image-pull grace, so that
//     the tests see its rules fire within seconds.
//   - Stop ends the process with SIGTERM (starts in flight are cancelled;
//     SIGKILL to its group after 30 s) and waits for it; it may be called
//     more than once. Freeze (SIGSTOP) leaves its connections open and
//     unanswered; Thaw (SIGCONT) resumes it, and Stop thaws it first.
package spawnersvc
