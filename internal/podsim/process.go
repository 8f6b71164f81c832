package podsim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/childproc"
	"github.com/kubespawn/kubespawn/internal/podproc"
)

// DefaultProcessRuntimeClass is the conventional value of
// Options.ProcessRuntimeClass.
const DefaultProcessRuntimeClass = "kubespawn-process"

// RuntimeHandler is the handler of the RuntimeClass EnsureRuntimeClass
// creates.
const RuntimeHandler = "podsim-process"

// DefaultMaxProbePeriod is the default of Options.MaxProbePeriod.
const DefaultMaxProbePeriod = 250 * time.Millisecond

// apiTimeout bounds the simulator's own one-off requests.
const apiTimeout = 30 * time.Second

// EnsureRuntimeClass creates the node.k8s.io/v1 RuntimeClass name (handler
// RuntimeHandler) unless it exists. The API server's RuntimeClass admission
// refuses a pod that names a RuntimeClass that does not exist, so process
// pods (Options.ProcessRuntimeClass) need it; Start calls it.
func EnsureRuntimeClass(ctx context.Context, client kubernetes.Interface, name string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	rc := &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"podsim.kubespawn.io/simulated": "true"}},
		Handler:    RuntimeHandler,
	}
	_, err := client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{})
	if err == nil || apierrors.IsAlreadyExists(err) {
		return nil
	}
	return fmt.Errorf("podsim: create RuntimeClass %q: %w", name, err)
}

// ProcessInfo describes the process of a process pod.
type ProcessInfo struct {
	Namespace string
	Name      string
	UID       types.UID
	// Container is the container that runs as the process (the first).
	Container string
	// Pid is the process's ID while it runs, else 0.
	Pid int
	// Dir is the pod's directory (HOME is Dir/home, TMPDIR Dir/tmp and the
	// default working directory Dir/work).
	Dir string
	// LogPath is the file the process's output (stdout and stderr) is
	// appended to, across restarts.
	LogPath string
}

// processScenarios are the scenarios a process pod honours: those the
// scheduler or the kubelet plays before the process runs (scheduling, the
// image pull) or beside it (its readiness). The others script how the
// containers run and end, which the real process decides: they are
// ignored (and logged).
var processScenarios = map[string]bool{
	ScenarioNormal:           true,
	ScenarioUnschedulable:    true,
	ScenarioImagePullFailure: true,
	ScenarioInvalidImageName: true,
	ScenarioSlowStart:        true,
	ScenarioNeverReady:       true,
}

// pullStage is how far a process pod's simulated image pull got.
type pullStage int

const (
	pullNotStarted pullStage = iota
	pullPulling              // Pulling recorded, waiting for the pull's time
	pullFailed               // ErrImagePull written, ImagePullBackOff next
	pullDone                 // pulled (or already present): the process may start
)

// procPod is the process side of a process pod incarnation. The fields
// under mu are shared with the pod's probe and exit goroutines and with
// Stop; the others are only touched by the worker processing the pod's key.
type procPod struct {
	info  ProcessInfo
	grace time.Duration // SIGTERM to SIGKILL when the simulator lets go
	// scenario is the pod's scenario if a process pod honours it
	// (processScenarios), else ScenarioNormal; pullDelay is how long the
	// first image pull takes (the pod's start delay annotations; 0: the
	// image is present).
	scenario  string
	pullDelay time.Duration

	mu          sync.Mutex
	ipLock      *os.File // machine-wide lock of the pod IP (see lockIP)
	run         *podproc.Process
	cancelProbe context.CancelFunc
	ready       bool

	synced          bool // first status written
	initEvents      bool // init containers' events recorded
	siblingsStarted bool
	dirty           bool // st.status changed, not yet written
	exitSeen        bool // the current run's end is in st.status
	terminal        bool // ended for good (restart policy)
	stuck           bool // CreateContainerError: never retried
	backoffSet      bool
	retryAt         time.Time
	configRetries   int32
	killAt          time.Time
	killSent        bool
	pull            pullStage
	pullStart       time.Time
	pullNext        time.Time // ImagePullBackOff is due
	freshPull       bool      // the pull just succeeded: no "already present" event
}

func (pp *procPod) setIPLock(f *os.File) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.ipLock = f
}

// unlockIP releases the pod IP's machine-wide lock, once no process of the
// pod listens there any more.
func (pp *procPod) unlockIP() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.ipLock != nil {
		pp.ipLock.Close()
		pp.ipLock = nil
	}
}

func (pp *procPod) current() *podproc.Process {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.run
}

func (pp *procPod) setRun(run *podproc.Process, cancel context.CancelFunc) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.run, pp.cancelProbe, pp.ready = run, cancel, false
}

func (pp *procPod) stopProbe() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.cancelProbe != nil {
		pp.cancelProbe()
	}
}

// setReady records a probe verdict about run and reports whether it
// changed; a verdict about an earlier run (a prober being stopped) is
// dropped.
func (pp *procPod) setReady(run *podproc.Process, ready bool) bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.run != run {
		return false
	}
	changed := pp.ready != ready
	pp.ready = ready
	return changed
}

func (pp *procPod) isReady() bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.ready
}

// isProcessPod reports whether pod asks for the process runtime.
func (s *Simulator) isProcessPod(pod *v1.Pod) bool {
	rc := pod.Spec.RuntimeClassName
	return s.opts.ProcessRuntimeClass != "" && rc != nil && *rc == s.opts.ProcessRuntimeClass && len(pod.Spec.Containers) > 0
}

// newProcPod sets up the process side of a new process pod incarnation. It
// is called with s.mu held.
func (s *Simulator) newProcPod(ctx context.Context, st *podState, pod *v1.Pod) *procPod {
	scenario := st.scenario
	if !processScenarios[scenario] {
		klog.FromContext(ctx).Info("Process pod: scenario annotation ignored", "annotation", AnnotationScenario, "value", scenario)
		scenario = ScenarioNormal
	}
	var pullDelay time.Duration
	if st.startDelaySet {
		pullDelay = st.startDelay // Options.StartDelay is for simulated pods only
	}
	grace := 30 * time.Second
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	dir := filepath.Join(s.procDir, fmt.Sprintf("%s_%s_%s", st.key.Namespace, st.key.Name, st.key.UID))
	ctr := pod.Spec.Containers[0].Name
	pp := &procPod{
		info: ProcessInfo{
			Namespace: st.key.Namespace, Name: st.key.Name, UID: st.key.UID,
			Container: ctr, Dir: dir, LogPath: podproc.LogPath(dir, ctr),
		},
		grace:     min(grace, s.opts.MaxGracePeriod),
		scenario:  scenario,
		pullDelay: pullDelay,
	}
	s.procs[st.key] = pp
	s.procByName[types.NamespacedName{Namespace: st.key.Namespace, Name: st.key.Name}] = pp
	return pp
}

// runProcessPod moves a process pod along: first status, start (or the
// container error that prevents it), readiness, the process's end and the
// restart policy. Status changes are written at the end of the pass.
func (s *Simulator) runProcessPod(ctx context.Context, st *podState, pod *v1.Pod) error {
	pp := st.proc
	now := time.Now()
	if !pp.synced {
		if st.ip == "" {
			ip, lock, err := s.allocateLocked()
			if err != nil && ip == "" {
				return err
			}
			if err != nil {
				klog.FromContext(ctx).Error(err, "Process pod IP not locked machine-wide", "podIP", ip)
			}
			st.ip = ip
			pp.setIPLock(lock)
		}
		if err := s.firstSync(st, now); err != nil {
			return err
		}
		// Init containers and the containers after the first are not run:
		// they complete, or run and are Ready, at once.
		for i := range st.initCtrs {
			if !pp.initEvents {
				s.simulatedStartEvents(st, i, true)
			}
			st.setCreated(i, true)
			st.setTerminated(i, true, 0, "Completed", "", now)
		}
		pp.initEvents = true
		st.appWaiting("ContainerCreating")
		if err := s.flush(ctx, st); err != nil {
			return err
		}
		pp.synced = true
	}
	if err := s.stepProcess(ctx, st, pod, now); err != nil {
		return err
	}
	if pp.dirty {
		if err := s.flush(ctx, st); err != nil {
			return err
		}
		pp.dirty = false
	}
	return nil
}

func (s *Simulator) stepProcess(ctx context.Context, st *podState, pod *v1.Pod, now time.Time) error {
	pp := st.proc
	if pp.terminal || pp.stuck {
		return nil
	}
	if pp.exitSeen {
		// The last run ended (or did not start) and the restart policy
		// restarts it.
		return s.restartProcess(ctx, st, pod, now)
	}
	run := pp.current()
	if run == nil {
		if pp.pull != pullDone && !s.pullImage(ctx, st, now) {
			return nil
		}
		return s.startProcess(ctx, st, pod, now)
	}
	if ex, exited := run.Exit(); exited {
		s.processEnded(ctx, st, ex.Code, ex.Signal != 0, "", ex.At)
		if !pp.terminal {
			// Write the terminated state before the restart replaces it.
			s.queue.AddAfter(st.key, s.opts.StepDelay)
		}
		return nil
	}
	if ready := pp.isReady(); ready != st.cs(0, false).Ready {
		st.cs(0, false).Ready = ready
		pp.dirty = true
	}
	return nil
}

// pullImage plays the kubelet's image pull before the process first starts
// and reports whether it is done. An invalid image name is refused at once;
// otherwise the pull takes pullDelay (Pulling, the container waiting in
// ContainerCreating) and succeeds, or for ScenarioImagePullFailure fails
// with ErrImagePull, then ImagePullBackOff for good. No process starts
// before the pull is done, none ever after it failed. A pod deleted
// meanwhile goes to reconcileProcessDeletion, never here.
func (s *Simulator) pullImage(ctx context.Context, st *podState, now time.Time) bool {
	pp := st.proc
	logger := klog.FromContext(ctx)
	ctr := &st.ctrs[0]
	switch {
	case pp.scenario == ScenarioInvalidImageName:
		for i := range st.ctrs {
			s.invalidImageName(st, i)
		}
		pp.stuck, pp.dirty = true, true
		logger.Info("Process pod: invalid image name (scenario), no process started")
		return false
	case pp.scenario != ScenarioImagePullFailure && pp.pullDelay == 0:
		pp.pull = pullDone // the image is present
		return true
	}
	failing := pp.scenario == ScenarioImagePullFailure
	due := func(at time.Time) bool {
		if now.Before(at) {
			s.queue.AddAfter(st.key, at.Sub(now))
			return false
		}
		return true
	}
	switch pp.pull {
	case pullNotStarted:
		pp.pullStart, pp.pull = now, pullPulling
		if failing {
			for i := range st.ctrs {
				s.pullingEvent(st, i)
			}
		} else if ctr.ImagePullPolicy != v1.PullNever {
			s.pullingEvent(st, 0)
		}
		fallthrough
	case pullPulling:
		if !failing {
			if !due(pp.pullStart.Add(pp.pullDelay)) {
				return false
			}
			if ctr.ImagePullPolicy != v1.PullNever {
				s.pulledEvent(st, ctr, false, now.Sub(pp.pullStart))
				pp.freshPull = true
			}
			pp.pull = pullDone
			logger.V(2).Info("Process pod: image pulled", "took", now.Sub(pp.pullStart))
			return true
		}
		// As a simulated pod: Pulling is seen a step before the failure.
		if !due(pp.pullStart.Add(max(s.opts.StepDelay, pp.pullDelay))) {
			return false
		}
		for i := range st.ctrs {
			s.errImagePull(st, i)
		}
		pp.pull, pp.dirty = pullFailed, true
		pp.pullNext = now.Add(s.imagePullBackOffDelay())
		s.queue.AddAfter(st.key, pp.pullNext.Sub(now))
		logger.Info("Process pod: image pull failed (scenario), no process started")
		return false
	case pullFailed:
		if !due(pp.pullNext) {
			return false
		}
		for i := range st.ctrs {
			s.imagePullBackOff(st, i)
		}
		pp.stuck, pp.dirty = true, true
	}
	return false
}

// startProcess resolves the first container's spec and starts its process.
func (s *Simulator) startProcess(ctx context.Context, st *podState, pod *v1.Pod, now time.Time) error {
	pp := st.proc
	logger := klog.FromContext(ctx)
	if now.Before(pp.retryAt) {
		s.queue.AddAfter(st.key, pp.retryAt.Sub(now))
		return nil
	}
	ctr := &st.ctrs[0]
	spec, err := podproc.Resolve(ctx, s.client, pod, ctr.Name, podproc.Config{
		IP: st.ip, HostIP: s.nodeIP, Dir: pp.info.Dir,
		Entrypoints: s.opts.ImageEntrypoints, Allocatable: nodeResources(),
	})
	var run *podproc.Process
	if err == nil {
		for _, n := range spec.Notes {
			logger.V(2).Info("Process pod", "container", ctr.Name, "note", n)
		}
		if !pp.freshPull {
			s.kubeletEvent(st, ctr.Name, false, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", ctr.Image)
		}
		pp.freshPull = false
		if err = os.MkdirAll(pp.info.Dir, 0o755); err == nil {
			run, err = podproc.Start(spec)
		}
	}
	var cerr *podproc.ContainerError
	switch {
	case errors.As(err, &cerr) && errors.Is(err, podproc.ErrCreateContainerConfig):
		// As the kubelet: reported, and retried with back-off until the
		// configuration exists.
		s.kubeletEvent(st, ctr.Name, false, v1.EventTypeWarning, "Failed", "Error: %s", cerr.Message)
		if w := st.cs(0, false).State.Waiting; w == nil || w.Reason != cerr.Reason || w.Message != cerr.Message {
			st.setWaiting(0, false, cerr.Reason, cerr.Message)
			pp.dirty = true
		}
		pp.retryAt = now.Add(s.crashBackoff(pp.configRetries))
		pp.configRetries++
		s.queue.AddAfter(st.key, pp.retryAt.Sub(now))
		logger.V(2).Info("Process pod: container configuration error", "reason", cerr.Reason, "message", cerr.Message)
		return nil
	case errors.As(err, &cerr) && errors.Is(err, podproc.ErrCreateContainer):
		s.kubeletEvent(st, ctr.Name, false, v1.EventTypeWarning, "Failed", "Error: %s", cerr.Message)
		st.setWaiting(0, false, cerr.Reason, cerr.Message)
		pp.stuck, pp.dirty = true, true
		logger.Info("Process pod cannot run", "reason", cerr.Reason, "message", cerr.Message)
		return nil
	case errors.As(err, &cerr): // ErrStart: the container was created, its process did not start
		st.setCreated(0, false)
		s.kubeletEvent(st, ctr.Name, false, v1.EventTypeNormal, "Created", "Created container: %s", ctr.Name)
		s.kubeletEvent(st, ctr.Name, false, v1.EventTypeWarning, "Failed", "Error: %s", cerr.Message)
		pp.setRun(nil, nil)
		s.processEnded(ctx, st, 128, false, cerr.Message, now)
		if !pp.terminal {
			s.queue.AddAfter(st.key, s.opts.StepDelay)
		}
		logger.Info("Process pod: process did not start", "message", cerr.Message)
		return nil
	case err != nil:
		return err // transient (API server): retried
	}
	pp.configRetries = 0
	st.setCreated(0, false)
	s.kubeletEvent(st, ctr.Name, false, v1.EventTypeNormal, "Created", "Created container: %s", ctr.Name)
	s.kubeletEvent(st, ctr.Name, false, v1.EventTypeNormal, "Started", "Started container %s", ctr.Name)
	prober := podproc.NewProber(ctr, podproc.ProbeOptions{IP: st.ip, MaxPeriod: s.opts.MaxProbePeriod})
	// ScenarioNeverReady is a readiness probe that never passes: the
	// container's own check is not run, and it is never Ready.
	neverReady := pp.scenario == ScenarioNeverReady
	st.setRunning(0, false, !neverReady && prober.Kind() == podproc.ProbeNone, run.Started())
	if !pp.siblingsStarted {
		for i := 1; i < len(st.ctrs); i++ {
			s.simulatedStartEvents(st, i, false)
			st.setCreated(i, false)
			st.setRunning(i, false, true, now)
		}
		pp.siblingsStarted = true
	}
	st.status.Phase = v1.PodRunning
	pp.dirty = true
	readiness := prober.String()
	if neverReady {
		readiness = "never (scenario " + ScenarioNeverReady + ")"
	}
	logger.V(2).Info("Process pod started", "pid", run.Pid(), "argv", spec.Argv, "dir", spec.Dir, "log", spec.LogPath, "readiness", readiness)
	if n := prober.Note(); n != "" && !neverReady {
		logger.Info("Process pod", "note", n)
	}

	pctx, cancel := context.WithCancel(s.ctx)
	pp.setRun(run, cancel)
	switch {
	case neverReady:
		s.kubeletEvent(st, ctr.Name, false, v1.EventTypeWarning, "Unhealthy", neverReadyMessage)
	case prober.Kind() == podproc.ProbeNone:
		pp.setReady(run, true)
	default:
		key, name := st.key, ctr.Name
		s.procWG.Go(func() {
			prober.Run(pctx, func(ready bool, failure string) {
				if failure != "" && prober.Explicit() {
					s.kubeletEventFor(key, name, v1.EventTypeWarning, "Unhealthy", "Readiness probe failed: %s", failure)
				}
				if pp.setReady(run, ready) {
					s.queue.Add(key)
				}
			})
		})
	}
	s.procWG.Go(func() {
		select {
		case <-run.Done():
			cancel()
			s.queue.Add(st.key)
		case <-s.ctx.Done():
		}
	})
	return nil
}

// simulatedStartEvents records Pulled, Created and Started for a container
// that is not run.
func (s *Simulator) simulatedStartEvents(st *podState, i int, init bool) {
	c := st.container(i, init)
	s.kubeletEvent(st, c.Name, init, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
	s.kubeletEvent(st, c.Name, init, v1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	s.kubeletEvent(st, c.Name, init, v1.EventTypeNormal, "Started", "Started container %s", c.Name)
}

// kubeletEventFor records an event about an app container from outside the
// pod's worker (st is not to be touched there).
func (s *Simulator) kubeletEventFor(key podKey, container, eventtype, reason, messageFmt string, args ...any) {
	ref := &v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: key.Namespace, Name: key.Name, UID: key.UID,
		FieldPath: fmt.Sprintf("spec.containers{%s}", container)}
	s.shard(key.UID).kubelet.Eventf(ref, eventtype, reason, messageFmt, args...)
}

// processEnded puts the end of the first container's run in st.status and
// applies the restart policy: with no restart, the other containers stop
// and the pod's phase becomes Succeeded (exit code 0) or Failed.
func (s *Simulator) processEnded(ctx context.Context, st *podState, code int32, signaled bool, msg string, at time.Time) {
	pp := st.proc
	pp.stopProbe()
	reason := "Completed"
	switch {
	case msg != "":
		reason = podproc.ReasonStartError
	case code != 0:
		reason = "Error"
		if st.ctrs[0].TerminationMessagePolicy == v1.TerminationMessageFallbackToLogsOnError {
			msg = logTail(pp.info.LogPath)
		}
	}
	st.setTerminated(0, false, code, reason, msg, at)
	pp.exitSeen, pp.dirty = true, true
	restart := st.restartPolicy == v1.RestartPolicyAlways || st.restartPolicy == "" ||
		(st.restartPolicy == v1.RestartPolicyOnFailure && code != 0)
	klog.FromContext(ctx).V(2).Info("Process pod's process ended", "exitCode", code, "signaled", signaled, "reason", reason, "restart", restart)
	if restart {
		return
	}
	pp.terminal = true
	for i := 1; i < len(st.ctrs); i++ {
		if st.cs(i, false).State.Running != nil {
			st.setTerminated(i, false, 0, "Completed", "", at)
		}
	}
	st.sandbox = false
	if code == 0 {
		st.status.Phase = v1.PodSucceeded
	} else {
		st.status.Phase = v1.PodFailed
	}
}

// restartProcess restarts an ended process as the kubelet does: the first
// restart at once, later ones after a CrashLoopBackOff that grows.
func (s *Simulator) restartProcess(ctx context.Context, st *podState, pod *v1.Pod, now time.Time) error {
	pp := st.proc
	c := st.cs(0, false)
	if !pp.backoffSet {
		pp.backoffSet = true
		pp.retryAt = now
		if st.restarts > 0 {
			backoff := s.crashBackoff(st.restarts - 1)
			pp.retryAt = now.Add(backoff)
			c.LastTerminationState = c.State
			st.setWaiting(0, false, "CrashLoopBackOff",
				fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", backoff, c.Name, st.podDesc()))
			s.kubeletEvent(st, c.Name, false, v1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s", c.Name, st.podDesc())
			pp.dirty = true
		}
	}
	if now.Before(pp.retryAt) {
		s.queue.AddAfter(st.key, pp.retryAt.Sub(now))
		return nil
	}
	if c.State.Terminated != nil {
		c.LastTerminationState = c.State
	}
	c.RestartCount++
	st.restarts++
	pp.setRun(nil, nil)
	pp.retryAt = time.Time{}
	pp.exitSeen, pp.backoffSet = false, false
	return s.startProcess(ctx, st, pod, now)
}

// reconcileProcessDeletion is the kubelet's graceful deletion of a process
// pod: SIGTERM to the process, SIGKILL to its group once min(grace period,
// MaxGracePeriod) has passed, the containers' final states, then the final
// delete with a UID precondition as soon as the process is gone.
func (s *Simulator) reconcileProcessDeletion(ctx context.Context, st *podState, pod *v1.Pod, now time.Time) error {
	pp := st.proc
	logger := klog.FromContext(ctx)
	if st.deleteDone {
		return nil
	}
	run := pp.current()
	if !st.deleting {
		st.deleting = true
		wait := min(deletionGrace(pod), s.opts.MaxGracePeriod)
		pp.killAt = now.Add(wait)
		if run != nil {
			if _, exited := run.Exit(); !exited {
				s.kubeletEvent(st, pp.info.Container, false, v1.EventTypeNormal, "Killing", "Stopping container %s", pp.info.Container)
				pp.stopProbe()
				run.Terminate()
				logger.V(2).Info("Process pod is being deleted: sent SIGTERM", "pid", run.Pid(), "killIn", wait)
			}
		}
	}
	if run != nil {
		ex, exited := run.Exit()
		if !exited {
			if now.Before(pp.killAt) {
				s.queue.AddAfter(st.key, pp.killAt.Sub(now))
				return nil
			}
			if !pp.killSent {
				logger.V(2).Info("Process pod's grace period is over: sending SIGKILL", "pid", run.Pid())
				run.Kill()
				pp.killSent = true
			}
			return nil // its exit goroutine queues the key
		}
		if !pp.exitSeen {
			st.setTerminated(0, false, ex.Code, exitReason(ex.Code), "", ex.At)
			pp.exitSeen = true
		}
	}
	if !st.killed {
		if st.started && st.status.Phase != "" && !isTerminal(st.status.Phase) {
			if !st.killRan {
				s.kill(st, now) // the containers not run, and the phase
				st.killRan = true
			}
			if err := s.flush(ctx, st); err != nil {
				return err
			}
		}
		st.killed = true
	}
	return s.finalDelete(ctx, st)
}

func exitReason(code int32) string {
	if code == 0 {
		return "Completed"
	}
	return "Error"
}

// logTail is the kubelet's FallbackToLogsOnError message: the end of the
// log, at most 80 lines and 2048 bytes.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	out := strings.Join(lines, "\n")
	if len(out) > 2048 {
		out = out[len(out)-2048:]
	}
	return out
}

// releaseProcess lets go of a forgotten process pod: its process, if any,
// is stopped in the background (SIGTERM, SIGKILL after its grace).
func (s *Simulator) releaseProcess(key podKey, pp *procPod) {
	s.mu.Lock()
	delete(s.procs, key)
	s.mu.Unlock()
	pp.stopProbe()
	run := pp.current()
	if run == nil {
		pp.unlockIP()
		return
	}
	s.procWG.Go(func() {
		run.Stop(pp.grace)
		pp.unlockIP()
	})
}

// setUpProcesses prepares the process runtime: the RuntimeClass and the
// directory of the process pods.
func (s *Simulator) setUpProcesses(ctx context.Context) error {
	if err := EnsureRuntimeClass(ctx, s.client, s.opts.ProcessRuntimeClass); err != nil {
		return err
	}
	if s.opts.ProcessDir != "" {
		s.procDir = s.opts.ProcessDir
		if err := os.MkdirAll(s.procDir, 0o755); err != nil {
			return fmt.Errorf("podsim: process directory: %w", err)
		}
		return nil
	}
	dir, err := os.MkdirTemp("", "podsim-processes-")
	if err != nil {
		return fmt.Errorf("podsim: process directory: %w", err)
	}
	// Traversable by a process run as another user (runAsUser).
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("podsim: process directory: %w", err)
	}
	s.procDir, s.ownProcDir = dir, true
	return nil
}

// stopProcesses stops every process the simulator runs, at once, and waits
// for them and for the process goroutines.
func (s *Simulator) stopProcesses() {
	s.mu.Lock()
	pps := make([]*procPod, 0, len(s.procs))
	for _, pp := range s.procs {
		pps = append(pps, pp)
	}
	s.mu.Unlock()
	for _, pp := range pps {
		pp.stopProbe()
		s.procWG.Go(func() {
			if run := pp.current(); run != nil {
				run.Stop(pp.grace)
			}
			pp.unlockIP()
		})
	}
	s.procWG.Wait()
	if s.ownProcDir {
		_ = os.RemoveAll(s.procDir)
	}
}

// Processes returns the running processes of the simulator's process pods,
// ordered by namespace and name.
func (s *Simulator) Processes() []ProcessInfo {
	s.mu.Lock()
	pps := make([]*procPod, 0, len(s.procs))
	for _, pp := range s.procs {
		pps = append(pps, pp)
	}
	s.mu.Unlock()
	var out []ProcessInfo
	for _, pp := range pps {
		if info, running := pp.snapshot(); running {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b ProcessInfo) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

func (pp *procPod) snapshot() (ProcessInfo, bool) {
	info := pp.info
	run := pp.current()
	if run == nil {
		return info, false
	}
	if _, exited := run.Exit(); exited {
		return info, false
	}
	info.Pid = run.Pid()
	return info, true
}

// ProcessPod describes the process of the latest process pod named
// namespace/name that this simulator ran, also once the pod is gone (until
// Stop); false if it ran none.
func (s *Simulator) ProcessPod(namespace, name string) (ProcessInfo, bool) {
	s.mu.Lock()
	pp, ok := s.procByName[types.NamespacedName{Namespace: namespace, Name: name}]
	s.mu.Unlock()
	if !ok {
		return ProcessInfo{}, false
	}
	info, _ := pp.snapshot()
	return info, true
}

// ProcessLogTail returns the last lines of the log of process pod
// namespace/name (see ProcessPod), headed by its path: for tests to print on
// failure.
func (s *Simulator) ProcessLogTail(namespace, name string, lines int) string {
	info, ok := s.ProcessPod(namespace, name)
	if !ok {
		return fmt.Sprintf("--- podsim: no process pod %s/%s ---\n", namespace, name)
	}
	return childproc.TailFile(info.LogPath, lines)
}
