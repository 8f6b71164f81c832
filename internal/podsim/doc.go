// Package podsim is an in-process pod lifecycle simulator for tests and
// demos that run against a real kube-apiserver and etcd but no scheduler,
// kubelet or container runtime.
//
// A [Simulator] stands in for both the default scheduler and the kubelet of
// exactly one fake Node. It watches every pod in the cluster through one
// shared informer and drives each pod that is unbound, or bound to its node,
// through the transitions a real scheduler and kubelet would write:
//
//   - scheduling: the pod is bound through the pods/binding subresource and a
//     "Scheduled" event is recorded by "default-scheduler" (or, for the
//     unschedulable scenario, the PodScheduled condition is set to False with
//     reason Unschedulable and a "FailedScheduling" event is recorded);
//   - start: the kubelet's first status update (startTime, hostIP, podIP, phase
//     Pending, containers waiting in ContainerCreating), then the events
//     Pulling, Pulled, Created and Started per container, then phase Running
//     with all conditions True and all containers running and ready;
//   - failure scenarios selected per pod by the [AnnotationScenario]
//     annotation (see the Scenario constants), each writing the same
//     container state reasons, pod reasons and events as a real kubelet;
//   - graceful deletion: a "Killing" event per running container, containers
//     terminated, then after min(grace period, [Options.MaxGracePeriod]) the
//     final delete with grace period 0 and a UID precondition, as the kubelet
//     does.
//
// Every write goes to the API server: the pods/binding and pods/status
// subresources, DELETE, and core/v1 Events written through client-go's
// tools/record broadcasters (so events are correlated, deduplicated and
// spam-filtered exactly like a real component's), with one recorder per
// source. A broadcaster writes one event at a time and silently drops events
// beyond its queue of 1000, so pods are spread by UID over 4 broadcasters:
// each pod's events keep their order, and bursts of a few hundred pods lose
// none (300 pods at once were checked). Events reference the pod
// with kind, namespace, name and UID, and kubelet events carry the
// container's fieldPath (spec.containers{name}), so consumers can filter them
// by involvedObject.uid.
//
// # Contract
//
//   - Work is driven by informer notifications and a rate-limited delaying
//     workqueue keyed by namespace, name and UID; no goroutine sleeps per pod.
//     A few workers (4) process keys; one key is never processed by two
//     workers at once.
//   - A pod that is deleted or replaced (same name, new UID) mid-lifecycle is
//     never acted on with the old pod's plan: every key carries the UID, the
//     cached pod must have that UID, status updates re-read the pod and check
//     its UID, the binding and the final delete carry UID preconditions.
//   - Status updates are read-modify-write with retry.RetryOnConflict,
//     re-reading the latest pod from the API server on every attempt. The
//     simulator owns the kubelet's status fields (phase, reason, message,
//     IPs, startTime, container statuses and the PodScheduled,
//     PodReadyToStartContainers, Initialized, ContainersReady, Ready and
//     DisruptionTarget conditions); other conditions are preserved.
//   - Pods bound to another node name are ignored. A pod created with
//     spec.nodeName set to the simulator's node skips scheduling (no
//     Scheduled event) and starts at once. A bound pod that already carries a
//     kubelet status past Pending (startTime set, phase Running, Succeeded or
//     Failed), as a restarted simulator reusing its node finds them, is
//     adopted as it is: its status is not rewritten and its scenario is not
//     resumed (a crash loop stops looping), but graceful deletion is still
//     carried out. A bound Pending pod is started over, keeping its
//     startTime and podIP.
//   - A pod's annotations are read once, when the simulator first sees that
//     pod incarnation; changing them later has no effect.
//   - Scheduling gates are honoured: a gated pod is not bound until its
//     gates are removed.
//   - The simulator only ever uses the client it is given. That client should
//     have direct admin access to the API server (never through a fault
//     proxy: the simulator plays cluster components, not the code under
//     test) and a client-side rate limit high enough for the pod count (for
//     hundreds of pods, rest.Config.QPS = -1 or a few hundred), since every
//     pod costs a handful of writes and events.
//   - Pod IPs are allocated from Options.PodCIDR, by default
//     DefaultPodCIDR (127.244.0.0/16), and the node's address is 127.0.0.1:
//     addresses local to this machine, so that code under test that dials
//     a pod IP can never send traffic off it. The simulator itself opens no
//     connection to them, except the readiness probes of process pods.
//     Options.PodIP (every simulated pod at one loopback address) stays
//     loopback whatever the range.
//   - The API server refuses loopback addresses in EndpointSlices, so pods
//     that must be endpoints of Services (a Service per user's server,
//     through the real EndpointSlice controller and a kube-proxy such as
//     internal/svcproxy) need a PodCIDR that is not loopback: an IPv4
//     network address of at most /28, not containing the node's address;
//     the conventional one is BenchmarkPodCIDR (198.18.0.0/16, RFC 2544's
//     benchmarking range: never routed on the internet). Before it writes
//     anything, Start checks with a listen that the range's first and last
//     pod addresses can be bound; if not, it adds a local route for the
//     whole range on lo ("ip route replace local <cidr> dev lo", Linux's
//     AnyIP: every address of it is then this machine's, for listening and
//     dialling alike), with a deadline, and checks again. That needs root
//     (CAP_NET_ADMIN): without it Start fails with ErrPodCIDRNotLocal and
//     the command to run as root. The route is left in place on purpose: it
//     is idempotent, and the simulators of several test binaries share it
//     (and the range: the machine-wide lock of process pods' IPs below is
//     per address, whatever the range). Invalid options are ErrInvalidOptions.
//   - Timings are lower bounds: a normal pod reaches Running and Ready no
//     sooner than StartDelay after it was bound (and no sooner than the
//     lifecycle steps allow); nothing guarantees an upper bound on a loaded
//     machine.
//
// # Process pods
//
// A pod whose spec.runtimeClassName is Options.ProcessRuntimeClass (say
// DefaultProcessRuntimeClass) is not scripted: the simulator runs its first
// container as a local process, through package podproc (the container
// runtime: see its documentation for exactly how a container becomes a
// process, which listen addresses are rewritten to the pod's IP, and what
// is not simulated). The API server's RuntimeClass admission refuses pods
// that name a RuntimeClass that does not exist: Start creates it
// (EnsureRuntimeClass), and a pod without it, or naming another one, is
// simulated as before. Such a pod:
//
//   - is scheduled and first synced as any pod (Pending, startTime, its own
//     pod IP from Options.PodCIDR, containers waiting in
//     ContainerCreating); its IP is also locked machine-wide (a file lock
//     per address under os.TempDir()), so that simulators of two test
//     binaries with the same range never give two processes the same
//     address. Options.StartDelay does not apply (the image is present).
//   - honours the scenarios played before or beside the process, with the
//     simulated pods' events, reasons and messages: ScenarioUnschedulable
//     (the scheduler's); AnnotationStartDelay and ScenarioSlowStart, as
//     the image pull's length (Pulling, the container waiting in
//     ContainerCreating, then "Successfully pulled image" and the
//     process starts); ScenarioImagePullFailure (ErrImagePull, then
//     ImagePullBackOff) and ScenarioInvalidImageName (InspectFailed),
//     which never start a process; ScenarioNeverReady, a readiness probe
//     that never passes: the process runs and the pod is Running, its
//     container is never Ready (the container's own readiness check is
//     not run; one Warning Unhealthy event), and deletion SIGTERMs the
//     process as any. The scenarios that script how containers run and
//     end (ScenarioCreateContainerConfigError, ScenarioCrashLoop,
//     ScenarioEvict, ScenarioFail, ScenarioComplete) are the real
//     process's to decide: they are logged ("scenario annotation
//     ignored") and the pod runs as a normal one.
//   - has its container's configuration resolved from the API server: a
//     missing Secret, ConfigMap or key leaves the container waiting in
//     CreateContainerConfigError with the kubelet's message and a Warning
//     Failed event, retried with back-off until it exists; a container with
//     no command (and an image not in Options.ImageEntrypoints) waits in
//     CreateContainerError for good; an executable that does not start is
//     a terminated StartError (exit code 128).
//   - is Running once the process is started (Pulled, Created and Started
//     events; state running with its startedAt), and Ready when its
//     readiness check passes (httpGet at the pod IP, else tcpSocket, else a
//     TCP connect to the first containerPort, else at once; periods capped
//     by Options.MaxProbePeriod; failed probes of the container's own
//     readinessProbe are Warning Unhealthy events), not Ready again after
//     failureThreshold failures.
//   - when the process ends: state terminated with its exit code (128+signal
//     when killed) and reason Completed (0) or Error; with restartPolicy
//     Never, or OnFailure and exit code 0, the phase becomes Succeeded
//     (0) or Failed; otherwise the container is restarted as the kubelet
//     does: the first restart at once, then after a CrashLoopBackOff
//     (waiting, Warning BackOff) that grows, restartCount and lastState
//     kept, phase Running.
//   - on graceful deletion: a Killing event, SIGTERM to the process, SIGKILL
//     to its process group after min(grace period, MaxGracePeriod), the
//     containers' final states and phase, then the final delete with a UID
//     precondition as soon as the process is gone; a pod whose process
//     never started (its image still pulling, or failed) has none to
//     stop. A pod deleted at once
//     (grace period 0) or replaced has its process stopped the same way in
//     the background.
//   - only its first container runs: init containers complete at once and
//     the other containers run and are Ready at once (they are not run);
//     they stop when the first container ends for good.
//
// Its output (stdout and stderr) is appended to a log file in its own
// directory under Options.ProcessDir: ProcessPod gives its path,
// ProcessLogTail its last lines (for tests to print on failure), Processes
// lists the running ones. Stop stops every process it started and waits
// until they are gone; podproc.VerifyNone and podproc.VerifyMain check,
// like goleak, that no process started by any simulator is left.
//
// A restarted simulator adopts a process pod past Pending as it adopts any
// pod: it leaves its status alone and runs no process (the earlier
// simulator's process died with it).
//
// # Why not kwok
//
// kwok (Kubernetes WithOut Kubelet) can also fake nodes and pods against a
// real API server. We chose an in-process simulator instead because it gives
// exact per-pod control of failure scenarios (an annotation on the pod picks
// image pull failure, crash loop, eviction, slow start and so on, with the
// exact reasons a kubelet writes) AND it emits the Kubernetes Events that
// spawners show users as progress (kwok's fast stages emit none), with far
// less code, no extra binary to build and no extra process to manage in
// tests.
package podsim
