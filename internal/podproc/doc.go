// Package podproc runs a pod's container as a local process: the container
// runtime under podsim's process pods (podsim.Options.ProcessRuntimeClass).
// podsim plays the kubelet (pod status, events, restart policy, graceful
// deletion); this package turns a container spec into a process, runs it,
// probes its readiness and checks that none is left running.
//
// # Contract
//
//   - Resolve builds a container's process from its spec: command+args (or,
//     with no command, the image's registered entrypoint+args; without one,
//     a *ContainerError of kind ErrCreateContainer, reason
//     CreateContainerError), with $(VAR) references expanded as the kubelet
//     does; its environment from envFrom then env: literal values,
//     secretKeyRef and configMapKeyRef read from the API server (one GET per
//     object, each with a deadline), the downward API's fieldRef
//     (metadata.name, namespace, uid, labels['k'], annotations['k'],
//     spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP)
//     and resourceFieldRef. A missing Secret, ConfigMap or key that is not
//     optional is a *ContainerError of kind ErrCreateContainerConfig with the
//     kubelet's message (`secret "s" not found`, `couldn't find key k in
//     Secret ns/s`); an executable not found in the environment's PATH, one
//     of kind ErrStart (reason StartError). Any other error is transient.
//   - The process does not inherit the caller's environment: it gets PATH
//     (the caller's, else DefaultPath), HOSTNAME (the pod's name), HOME
//     (Dir/home) and TMPDIR (Dir/tmp), each unless the container's env sets
//     it, then the container's env. Its working directory is workingDir, or
//     Dir/work; HOME, TMPDIR and the default working directory are made
//     before it starts. Dir is the pod's own directory, given by the caller:
//     never the repository.
//   - Network: every pod has an IP of its own, local to this machine
//     (podsim's PodCIDR: 127.244.0.0/16 by default, all routed to lo on
//     Linux, or a range made local on lo), and a process must listen there
//     only, so that
//     two users' servers on port 8888 never collide. Rather than a network
//     namespace per pod (root, plus a veth pair and routes per pod for the
//     hub to reach it), wildcard listen addresses are rewritten to the pod's
//     IP, in exactly these forms (RewriteArgs, RewriteServiceURL):
//     "--F=V" and "--F V" among the arguments after the executable, where F
//     is ip, <Name>App.ip (a traitlets class: ServerApp, NotebookApp,
//     SingleUserNotebookApp, ...), bind or host, and V is a wildcard host
//     ("", 0.0.0.0, ::, [::], *; bare or in single or double quotes) or
//     such a host with a port (0.0.0.0:8000, :8000, [::]:8000); and the
//     host of JUPYTERHUB_SERVICE_URL when it is a wildcard
//     (http://0.0.0.0:8888/user/a/, http://*:8888/, http://:8888/).
//     Nothing else is rewritten: a program that listens on every interface
//     by default, or through another flag, a config file or a shell script,
//     does so on the host, and may collide.
//   - Security context: runAsUser and runAsGroup (container over pod), the
//     pod's supplementalGroups and fsGroup are applied when the caller is
//     root (the pod's directories are then given to that user); otherwise
//     they are ignored, and Spec.Notes says so. runAsNonRoot with an
//     effective user 0 is an ErrCreateContainerConfig, as on a kubelet.
//     Volumes and volume mounts are not simulated: the process sees the
//     host's file system.
//   - Start runs the process in a process group of its own (its
//     container), with SIGKILL as its parent-death signal, its output
//     (stdout and stderr) appended to Spec.LogPath after a header line per
//     start, and an end line per exit. When the process exits, what is left
//     of its group is killed, and Done is closed once none is alive. An
//     exit by signal is reported as 128+signal (143, 137), as a container
//     runtime does. Terminate sends SIGTERM to the process only (a
//     runtime signals the container's main process); Kill and Stop's
//     SIGKILL reach the whole group. A process that leaves its group
//     (setsid, a daemon's double fork) escapes both, and Find.
//   - Readiness (Prober): the container's readinessProbe httpGet (path and
//     port, a number or a port's name, on the pod's IP unless host is set;
//     2xx and 3xx pass; no proxy, no keep-alive, no certificate check, as
//     the kubelet), else its tcpSocket, else (no probe, or an exec or grpc
//     probe) a TCP connect to the first TCP containerPort every second,
//     else Ready as soon as the process runs. initialDelaySeconds,
//     periodSeconds (capped by ProbeOptions.MaxPeriod), timeoutSeconds,
//     successThreshold and failureThreshold are honoured.
//   - Nothing left running: every process Start started is tracked until it
//     and its group are confirmed gone (then dropped, since process IDs are
//     reused). Find, VerifyNone and VerifyMain report the ones still alive,
//     with their logs' tails, like goleak does for goroutines: call them
//     once every simulator is stopped.
package podproc
