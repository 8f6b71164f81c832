package podsim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// knownScenarios are the values accepted in AnnotationScenario.
var knownScenarios = map[string]bool{
	ScenarioNormal:                     true,
	ScenarioImagePullFailure:           true,
	ScenarioInvalidImageName:           true,
	ScenarioCreateContainerConfigError: true,
	ScenarioCrashLoop:                  true,
	ScenarioUnschedulable:              true,
	ScenarioNeverReady:                 true,
	ScenarioEvict:                      true,
	ScenarioFail:                       true,
	ScenarioComplete:                   true,
	ScenarioSlowStart:                  true,
}

// stepKind says how a step's delay is computed.
type stepKind int

const (
	// stepFixed waits a fixed delay after the previous step.
	stepFixed stepKind = iota
	// stepAbsorb waits what remains of the start delay, less one StepDelay
	// per step between it and the final step (at least one StepDelay): it
	// stands for the image pull, which takes most of the start time.
	stepAbsorb
	// stepFinal waits until the start delay after binding has passed (at
	// least one StepDelay): the step that makes the pod Running (or puts it
	// in its failure state).
	stepFinal
)

// step is one kubelet action in a pod's plan. run mutates the simulated
// status and records events; it runs exactly once. If flush is set, the
// simulated status is then written to the API server (retried until it
// succeeds or the pod is gone) before the next step.
type step struct {
	name  string
	kind  stepKind
	delay time.Duration // for stepFixed
	run   func(now time.Time) error
	flush bool
}

// podState is what the simulator knows about one pod incarnation. It is only
// touched by the worker currently processing the pod's key.
type podState struct {
	key           podKey
	scenario      string
	startDelay    time.Duration
	startDelaySet bool // by the pod's annotations, not Options.StartDelay
	restartPolicy v1.RestartPolicy
	initCtrs      []v1.Container
	ctrs          []v1.Container

	// Scheduler side.
	bound                 bool
	boundAt               time.Time
	unschedulableReported bool

	// Kubelet side.
	started    bool // the kubelet plan was built (or the pod adopted)
	adopted    bool // status was written by an earlier simulator; leave it
	status     v1.PodStatus
	sandbox    bool // PodReadyToStartContainers
	disruption *v1.PodCondition
	ip         string
	plan       []step
	next       int
	nextAt     time.Time
	ran        bool // plan[next].run has run, flush pending
	finalIdx   int
	restarts   int32

	// proc is the process side of a process pod (Options.ProcessRuntimeClass),
	// nil for a simulated one.
	proc *procPod

	// Graceful deletion.
	deleting   bool
	killRan    bool // Killing events recorded, containers terminated
	killed     bool // ... and written
	deleteAt   time.Time
	deleteDone bool
}

func newPodState(ctx context.Context, key podKey, pod *v1.Pod, opts Options) *podState {
	logger := klog.FromContext(ctx)
	st := &podState{
		key:           key,
		scenario:      pod.Annotations[AnnotationScenario],
		startDelay:    opts.StartDelay,
		restartPolicy: pod.Spec.RestartPolicy,
		initCtrs:      pod.Spec.DeepCopy().InitContainers,
		ctrs:          pod.Spec.DeepCopy().Containers,
	}
	if !knownScenarios[st.scenario] {
		logger.Error(nil, "Unknown podsim scenario, treating the pod as normal", "annotation", AnnotationScenario, "value", st.scenario)
		st.scenario = ScenarioNormal
	}
	if st.scenario == ScenarioSlowStart {
		st.startDelay = DefaultSlowStartDelay
		st.startDelaySet = true
	}
	if v, ok := pod.Annotations[AnnotationStartDelay]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			logger.Error(err, "Invalid podsim start delay, ignoring it", "annotation", AnnotationStartDelay, "value", v)
		} else {
			st.startDelay = d
			st.startDelaySet = true
		}
	}
	logger.V(4).Info("Tracking pod", "scenario", st.scenario, "startDelay", st.startDelay)
	return st
}

// ref is the object reference events are recorded against: the pod, with
// the container's fieldPath for container events.
func (st *podState) ref(fieldPath string) *v1.ObjectReference {
	return &v1.ObjectReference{
		Kind:       "Pod",
		APIVersion: "v1",
		Namespace:  st.key.Namespace,
		Name:       st.key.Name,
		UID:        st.key.UID,
		FieldPath:  fieldPath,
	}
}

// podDesc is the kubelet's "name_namespace(uid)" pod description.
func (st *podState) podDesc() string {
	return fmt.Sprintf("%s_%s(%s)", st.key.Name, st.key.Namespace, st.key.UID)
}

// container returns the spec of container i (init or app).
func (st *podState) container(i int, init bool) *v1.Container {
	if init {
		return &st.initCtrs[i]
	}
	return &st.ctrs[i]
}

// cs returns the simulated status of container i (init or app).
func (st *podState) cs(i int, init bool) *v1.ContainerStatus {
	if init {
		return &st.status.InitContainerStatuses[i]
	}
	return &st.status.ContainerStatuses[i]
}

func (st *podState) containerID(name string, restart int32) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", st.key.UID, name, restart))
	return "containerd://" + hex.EncodeToString(sum[:])
}

// imageID mimics what containerd reports: the repository with the digest of
// the image.
func imageID(image string) string {
	repo := image
	if i := strings.Index(repo, "@"); i >= 0 {
		return repo
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	if !strings.Contains(repo, "/") {
		repo = "docker.io/library/" + repo
	} else if first := repo[:strings.Index(repo, "/")]; !strings.ContainsAny(first, ".:") && first != "localhost" {
		repo = "docker.io/" + repo
	}
	sum := sha256.Sum256([]byte(image))
	return repo + "@sha256:" + hex.EncodeToString(sum[:])
}

func waiting(reason, msg string) v1.ContainerState {
	return v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason, Message: msg}}
}

func (st *podState) setWaiting(i int, init bool, reason, msg string) {
	c := st.cs(i, init)
	c.State = waiting(reason, msg)
	c.Ready = false
	c.Started = ptr.To(false)
}

func (st *podState) setCreated(i int, init bool) {
	c := st.cs(i, init)
	c.ImageID = imageID(c.Image)
	c.ContainerID = st.containerID(c.Name, c.RestartCount)
}

func (st *podState) setRunning(i int, init bool, ready bool, now time.Time) {
	c := st.cs(i, init)
	c.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(now)}}
	c.Ready = ready
	c.Started = ptr.To(true)
}

func (st *podState) setTerminated(i int, init bool, exitCode int32, reason, msg string, now time.Time) {
	c := st.cs(i, init)
	var started metav1.Time // zero if the container never ran
	if c.State.Running != nil {
		started = c.State.Running.StartedAt
	} else if c.ContainerID != "" {
		started = metav1.NewTime(now)
	}
	c.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
		ExitCode:    exitCode,
		Reason:      reason,
		Message:     msg,
		StartedAt:   started,
		FinishedAt:  metav1.NewTime(now),
		ContainerID: c.ContainerID,
	}}
	c.Ready = false
	c.Started = ptr.To(false)
}

func isTerminal(p v1.PodPhase) bool { return p == v1.PodSucceeded || p == v1.PodFailed }

// conditions computes the kubelet-owned pod conditions from the simulated
// status, like the kubelet's status generator.
func (st *podState) conditions() []v1.PodCondition {
	phase := st.status.Phase
	conds := []v1.PodCondition{{Type: v1.PodScheduled, Status: v1.ConditionTrue}}

	ready := v1.PodCondition{Type: v1.PodReadyToStartContainers, Status: v1.ConditionFalse}
	if st.sandbox {
		ready.Status = v1.ConditionTrue
	}
	conds = append(conds, ready)

	var incomplete []string
	for _, c := range st.initCtrs {
		s, ok := statusOf(st.status.InitContainerStatuses, c.Name)
		done := ok && s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
		if isSidecar(&c) {
			done = ok && (s.Started != nil && *s.Started || s.State.Terminated != nil)
		}
		if !done {
			incomplete = append(incomplete, c.Name)
		}
	}
	initialized := v1.PodCondition{Type: v1.PodInitialized, Status: v1.ConditionTrue}
	switch {
	case len(incomplete) == 0:
	case phase == v1.PodSucceeded:
		initialized.Reason = "PodCompleted"
	default:
		initialized.Status = v1.ConditionFalse
		initialized.Reason = "ContainersNotInitialized"
		initialized.Message = fmt.Sprintf("containers with incomplete status: %s", incomplete)
	}
	conds = append(conds, initialized)

	var unready []string
	for _, c := range st.initCtrs {
		if s, ok := statusOf(st.status.InitContainerStatuses, c.Name); isSidecar(&c) && (!ok || !s.Ready) {
			unready = append(unready, c.Name)
		}
	}
	for _, c := range st.ctrs {
		if s, ok := statusOf(st.status.ContainerStatuses, c.Name); !ok || !s.Ready {
			unready = append(unready, c.Name)
		}
	}
	cr := v1.PodCondition{Type: v1.ContainersReady, Status: v1.ConditionTrue}
	switch {
	case phase == v1.PodSucceeded:
		cr.Status, cr.Reason = v1.ConditionFalse, "PodCompleted"
	case phase == v1.PodFailed:
		cr.Status, cr.Reason = v1.ConditionFalse, "PodFailed"
	case len(unready) > 0:
		cr.Status, cr.Reason = v1.ConditionFalse, "ContainersNotReady"
		cr.Message = fmt.Sprintf("containers with unready status: %s", unready)
	}
	pr := cr
	pr.Type = v1.PodReady
	conds = append(conds, cr, pr)

	if st.disruption != nil {
		conds = append(conds, *st.disruption)
	}
	return conds
}

func statusOf(list []v1.ContainerStatus, name string) (v1.ContainerStatus, bool) {
	for _, s := range list {
		if s.Name == name {
			return s, true
		}
	}
	return v1.ContainerStatus{}, false
}

func isSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}

// applyStatus writes the simulated kubelet status onto pod, keeping fields
// and conditions the kubelet does not own, and keeping the transition time
// of conditions whose status did not change.
func (st *podState) applyStatus(pod *v1.Pod, now time.Time) {
	want := st.status.DeepCopy()
	s := &pod.Status
	s.ObservedGeneration = pod.Generation
	s.Phase = want.Phase
	s.Reason = want.Reason
	s.Message = want.Message
	s.HostIP, s.HostIPs = want.HostIP, want.HostIPs
	s.PodIP, s.PodIPs = want.PodIP, want.PodIPs
	if s.StartTime == nil {
		s.StartTime = want.StartTime
	}
	s.InitContainerStatuses = want.InitContainerStatuses
	s.ContainerStatuses = want.ContainerStatuses
	for _, c := range st.conditions() {
		c.ObservedGeneration = pod.Generation
		setCondition(s, c, now)
	}
}

// setCondition sets or replaces the condition of c's type, keeping the
// existing lastTransitionTime if the status is unchanged.
func setCondition(s *v1.PodStatus, c v1.PodCondition, now time.Time) {
	c.LastTransitionTime = metav1.NewTime(now)
	for i := range s.Conditions {
		old := &s.Conditions[i]
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status && !old.LastTransitionTime.IsZero() {
			c.LastTransitionTime = old.LastTransitionTime
		}
		c.LastProbeTime = old.LastProbeTime
		*old = c
		return
	}
	s.Conditions = append(s.Conditions, c)
}
