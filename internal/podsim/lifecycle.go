package podsim

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// Messages written by the simulated scheduler and kubelet.
const (
	unschedulableMessage = "0/1 nodes are available: 1 Insufficient cpu."
	evictionMessage      = "The node was low on resource: memory."
	missingConfigMap     = "podsim-missing-config"
	// neverReadyMessage is the Unhealthy event of ScenarioNeverReady.
	neverReadyMessage = "Readiness probe failed: HTTP probe failed with statuscode: 503"
)

// reconcile moves one pod incarnation along: scheduling, then the kubelet's
// plan, or graceful deletion. pod is the informer's copy, with key's UID.
func (s *Simulator) reconcile(ctx context.Context, st *podState, pod *v1.Pod) error {
	now := time.Now()
	if pod.DeletionTimestamp != nil {
		if !st.bound && pod.Spec.NodeName == "" {
			// The API server deletes unbound pods at once (or holds them for
			// their finalizers): no container to stop, nothing to bind.
			return nil
		}
		st.bound = true
		if st.proc != nil && !st.adopted {
			return s.reconcileProcessDeletion(ctx, st, pod, now)
		}
		return s.reconcileDeletion(ctx, st, pod, now)
	}
	if !st.bound {
		if pod.Spec.NodeName == "" {
			bound, err := s.schedule(ctx, st, pod, now)
			if err != nil || !bound {
				return err
			}
		} else {
			// Bound by someone else (or created with spec.nodeName).
			st.bound = true
			st.boundAt = now
		}
	}
	if !st.started {
		if err := s.startKubelet(ctx, st, pod, now); err != nil {
			return err
		}
	}
	if st.proc != nil && !st.adopted {
		return s.runProcessPod(ctx, st, pod)
	}
	return s.runPlan(ctx, st)
}

// schedule binds the pod to the node (or reports it unschedulable). It
// returns true once the pod is bound.
func (s *Simulator) schedule(ctx context.Context, st *podState, pod *v1.Pod, now time.Time) (bool, error) {
	logger := klog.FromContext(ctx)
	if len(pod.Spec.SchedulingGates) > 0 {
		logger.V(4).Info("Pod has scheduling gates, waiting")
		return false, nil
	}
	if st.scenario == ScenarioUnschedulable {
		if st.unschedulableReported {
			return false, nil
		}
		err := s.updateStatus(ctx, st.key, func(p *v1.Pod) {
			setCondition(&p.Status, v1.PodCondition{
				Type:               v1.PodScheduled,
				Status:             v1.ConditionFalse,
				Reason:             v1.PodReasonUnschedulable,
				Message:            unschedulableMessage,
				ObservedGeneration: p.Generation,
			}, time.Now())
		})
		if err != nil {
			return false, err
		}
		s.shard(st.key.UID).scheduler.Eventf(st.ref(""), v1.EventTypeWarning, "FailedScheduling", unschedulableMessage)
		st.unschedulableReported = true
		logger.V(2).Info("Pod reported unschedulable")
		return false, nil
	}

	binding := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: st.key.Namespace, Name: st.key.Name, UID: st.key.UID},
		Target:     v1.ObjectReference{Kind: "Node", Name: s.opts.NodeName},
	}
	err := s.client.CoreV1().Pods(st.key.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	switch {
	case err == nil:
	case apierrors.IsNotFound(err):
		return false, errPodGone
	case apierrors.IsConflict(err):
		// Another UID now, or already bound (maybe by an earlier attempt
		// whose answer was lost): ask the API server which.
		latest, gerr := s.client.CoreV1().Pods(st.key.Namespace).Get(ctx, st.key.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(gerr):
			return false, errPodGone
		case gerr != nil:
			return false, gerr
		case latest.UID != st.key.UID:
			return false, errPodGone
		case latest.Spec.NodeName == "":
			return false, err
		case latest.Spec.NodeName != s.opts.NodeName:
			return false, errPodGone
		}
	default:
		return false, err
	}
	s.shard(st.key.UID).scheduler.Eventf(st.ref(""), v1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", st.key.Namespace, st.key.Name, s.opts.NodeName)
	st.bound = true
	st.boundAt = now
	logger.V(2).Info("Bound pod")
	return true, nil
}

// startKubelet builds the kubelet's plan for a bound pod, or adopts a pod
// whose status an earlier kubelet (simulator) already wrote.
func (s *Simulator) startKubelet(ctx context.Context, st *podState, pod *v1.Pod, now time.Time) error {
	if pod.Status.StartTime != nil && pod.Status.Phase != v1.PodPending {
		st.status = *pod.Status.DeepCopy()
		st.ip = st.status.PodIP
		if st.ip != "" {
			s.ips.reserve(st.ip)
		}
		st.sandbox = !isTerminal(st.status.Phase)
		st.adopted = true
		st.started = true
		klog.FromContext(ctx).V(2).Info("Adopted pod with an existing kubelet status", "phase", pod.Status.Phase)
		return nil
	}
	if pod.Status.PodIP != "" {
		st.ip = pod.Status.PodIP
		s.ips.reserve(st.ip)
	}
	if st.proc != nil {
		st.started = true // runProcessPod takes it from here
		return nil
	}
	s.buildPlan(st)
	st.started = true
	st.next = 0
	st.nextAt = now.Add(s.delayOf(st, 0, now))
	return nil
}

// runPlan runs every step that is due, then schedules the key for the next.
func (s *Simulator) runPlan(ctx context.Context, st *podState) error {
	if st.adopted || st.deleting {
		return nil
	}
	logger := klog.FromContext(ctx)
	for st.next < len(st.plan) {
		now := time.Now()
		if now.Before(st.nextAt) {
			s.queue.AddAfter(st.key, st.nextAt.Sub(now))
			return nil
		}
		stp := st.plan[st.next]
		if !st.ran {
			if err := stp.run(now); err != nil {
				return err
			}
			st.ran = true
		}
		if stp.flush {
			if err := s.flush(ctx, st); err != nil {
				return err
			}
		}
		logger.V(5).Info("Pod step done", "step", stp.name, "phase", st.status.Phase)
		st.next++
		st.ran = false
		if st.next < len(st.plan) {
			now = time.Now()
			st.nextAt = now.Add(s.delayOf(st, st.next, now))
		}
	}
	return nil
}

// delayOf is how long step i waits once the previous step is done.
func (s *Simulator) delayOf(st *podState, i int, now time.Time) time.Duration {
	step := s.opts.StepDelay
	deadline := st.boundAt.Add(st.startDelay)
	switch st.plan[i].kind {
	case stepFinal:
		return max(step, deadline.Sub(now))
	case stepAbsorb:
		return max(step, deadline.Sub(now)-time.Duration(st.finalIdx-i)*step)
	default:
		return st.plan[i].delay
	}
}

// flush writes the simulated kubelet status to the API server.
func (s *Simulator) flush(ctx context.Context, st *podState) error {
	return s.updateStatus(ctx, st.key, func(pod *v1.Pod) { st.applyStatus(pod, time.Now()) })
}

// updateStatus applies mutate to the latest pod read from the API server and
// writes its status, retrying on conflicts. It returns errPodGone if the pod
// no longer exists or its name belongs to another UID.
func (s *Simulator) updateStatus(ctx context.Context, key podKey, mutate func(*v1.Pod)) error {
	pods := s.client.CoreV1().Pods(key.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := pods.Get(ctx, key.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return errPodGone
		}
		if err != nil {
			return err
		}
		if pod.UID != key.UID {
			return errPodGone
		}
		mutate(pod)
		_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			return errPodGone
		}
		return err
	})
}

// reconcileDeletion plays the kubelet's part of a graceful deletion: stop
// the containers, then after min(grace period, MaxGracePeriod) delete the pod
// for good with grace period 0 and a UID precondition.
func (s *Simulator) reconcileDeletion(ctx context.Context, st *podState, pod *v1.Pod, now time.Time) error {
	logger := klog.FromContext(ctx)
	if st.deleteDone {
		return nil
	}
	if !st.deleting {
		st.deleting = true
		grace := deletionGrace(pod)
		wait := min(grace, s.opts.MaxGracePeriod)
		st.deleteAt = now.Add(wait)
		logger.V(2).Info("Pod is being deleted", "gracePeriod", grace, "finalDeleteIn", wait)
	}
	if !st.killed {
		if st.started && !isTerminal(st.status.Phase) && st.status.Phase != "" {
			if !st.killRan {
				s.kill(st, now)
				st.killRan = true
			}
			if err := s.flush(ctx, st); err != nil {
				return err
			}
		}
		st.killed = true
	}
	if now = time.Now(); now.Before(st.deleteAt) {
		s.queue.AddAfter(st.key, st.deleteAt.Sub(now))
		return nil
	}
	return s.finalDelete(ctx, st)
}

// deletionGrace is the grace period of a pod being deleted.
func deletionGrace(pod *v1.Pod) time.Duration {
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// finalDelete deletes the pod for good, with grace period 0 and a UID
// precondition, as the kubelet does once its containers are stopped.
func (s *Simulator) finalDelete(ctx context.Context, st *podState) error {
	err := s.client.CoreV1().Pods(st.key.Namespace).Delete(ctx, st.key.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      metav1.NewUIDPreconditions(string(st.key.UID)),
	})
	switch {
	case err == nil:
		klog.FromContext(ctx).V(2).Info("Deleted pod")
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// Gone, or the name belongs to a newer pod (UID precondition).
		return errPodGone
	default:
		return err
	}
	st.deleteDone = true
	return nil
}

// kill stops every container like the kubelet does on deletion: a Killing
// event per running container, every container terminated, a terminal phase.
func (s *Simulator) kill(st *podState, now time.Time) {
	allSucceeded := true
	stop := func(list []v1.ContainerStatus, init bool) {
		for i := range list {
			c := &list[i]
			switch {
			case c.State.Running != nil:
				s.kubeletEvent(st, c.Name, init, v1.EventTypeNormal, "Killing", "Stopping container %s", c.Name)
				st.setTerminated(i, init, 0, "Completed", "", now)
			case c.State.Waiting != nil:
				st.setTerminated(i, init, 137, "ContainerStatusUnknown", "The container could not be located when the pod was terminated", now)
			}
			if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
				allSucceeded = false
			}
		}
	}
	stop(st.status.InitContainerStatuses, true)
	stop(st.status.ContainerStatuses, false)
	st.plan = nil
	st.sandbox = false
	if allSucceeded {
		st.status.Phase = v1.PodSucceeded
	} else {
		st.status.Phase = v1.PodFailed
	}
}

// kubeletEvent records an event about one container of the pod.
func (s *Simulator) kubeletEvent(st *podState, container string, init bool, eventtype, reason, messageFmt string, args ...any) {
	fieldPath := fmt.Sprintf("spec.containers{%s}", container)
	if init {
		fieldPath = fmt.Sprintf("spec.initContainers{%s}", container)
	}
	s.shard(st.key.UID).kubelet.Eventf(st.ref(fieldPath), eventtype, reason, messageFmt, args...)
}

// buildPlan lays out the kubelet's steps for the pod's scenario.
func (s *Simulator) buildPlan(st *podState) {
	S := s.opts.StepDelay
	st.plan = nil
	add := func(name string, kind stepKind, delay time.Duration, flush bool, run func(now time.Time) error) {
		if kind == stepFinal {
			st.finalIdx = len(st.plan)
		}
		st.plan = append(st.plan, step{name: name, kind: kind, delay: delay, flush: flush, run: run})
	}

	// The kubelet's first sync: startTime, IPs, containers waiting.
	add("sync", stepFixed, S, true, func(now time.Time) error { return s.firstSync(st, now) })

	// Init containers run one after the other to completion (sidecars,
	// i.e. restartable init containers, keep running).
	for i := range st.initCtrs {
		c := &st.initCtrs[i]
		s.addStartSteps(st, add, i, true, stepFixed)
		last := i == len(st.initCtrs)-1
		if isSidecar(c) {
			add("sidecar-ready", stepFixed, S, true, func(now time.Time) error {
				st.cs(i, true).Ready = true
				if last {
					st.appWaiting("ContainerCreating")
				}
				return nil
			})
			continue
		}
		add("init-done", stepFixed, S, true, func(now time.Time) error {
			st.setTerminated(i, true, 0, "Completed", "", now)
			if last {
				st.appWaiting("ContainerCreating")
			}
			return nil
		})
	}

	n := len(st.ctrs)
	// kindFor is the delay kind of the step that stands for container i's
	// image pull (or its failure): the first absorbs the start delay, the
	// last of a failure scenario is the final step.
	kindFor := func(i int, final bool) stepKind {
		switch {
		case final && i == n-1:
			return stepFinal
		case i == 0:
			return stepAbsorb
		default:
			return stepFixed
		}
	}

	switch st.scenario {
	case ScenarioImagePullFailure:
		for i := range st.ctrs {
			add("pulling", stepFixed, S, false, func(now time.Time) error {
				s.pullingEvent(st, i)
				return nil
			})
			add("err-image-pull", kindFor(i, true), S, i == n-1, func(now time.Time) error {
				s.errImagePull(st, i)
				return nil
			})
		}
		add("image-pull-backoff", stepFixed, s.imagePullBackOffDelay(), true, func(now time.Time) error {
			for i := range st.ctrs {
				s.imagePullBackOff(st, i)
			}
			return nil
		})

	case ScenarioInvalidImageName:
		for i := range st.ctrs {
			add("invalid-image-name", kindFor(i, true), S, i == n-1, func(now time.Time) error {
				s.invalidImageName(st, i)
				return nil
			})
		}

	case ScenarioCreateContainerConfigError:
		for i := range st.ctrs {
			s.addPullSteps(st, add, i, false, kindFor(i, false))
			msg := fmt.Sprintf("configmap %q not found", missingConfigMap)
			kind := stepFixed
			if i == n-1 {
				kind = stepFinal
			}
			add("create-container-config-error", kind, S, i == n-1, func(now time.Time) error {
				s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeWarning, "Failed", "Error: %s", msg)
				st.setWaiting(i, false, "CreateContainerConfigError", msg)
				return nil
			})
		}

	default:
		for i := range st.ctrs {
			s.addStartSteps(st, add, i, false, kindFor(i, false))
		}
		scenario := st.scenario
		if scenario == ScenarioCrashLoop && st.restartPolicy == v1.RestartPolicyNever {
			scenario = ScenarioFail
		}
		add("running", stepFinal, 0, true, func(now time.Time) error {
			for i := range st.ctrs {
				switch scenario {
				case ScenarioFail:
					st.setTerminated(i, false, 1, "Error", "", now)
				case ScenarioComplete:
					st.setTerminated(i, false, 0, "Completed", "", now)
				case ScenarioNeverReady:
					s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeWarning, "Unhealthy", neverReadyMessage)
				case ScenarioCrashLoop:
				default:
					st.cs(i, false).Ready = true
				}
			}
			switch scenario {
			case ScenarioFail:
				st.status.Phase = v1.PodFailed
				st.sandbox = false
			case ScenarioComplete:
				st.status.Phase = v1.PodSucceeded
				st.sandbox = false
			default:
				st.status.Phase = v1.PodRunning
			}
			return nil
		})
		switch scenario {
		case ScenarioEvict:
			add("evicted", stepFixed, max(S, st.startDelay), true, func(now time.Time) error {
				s.shard(st.key.UID).kubelet.Eventf(st.ref(""), v1.EventTypeWarning, "Evicted", evictionMessage)
				for i := range st.ctrs {
					s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeNormal, "Killing", "Stopping container %s", st.ctrs[i].Name)
					st.setTerminated(i, false, 137, "Error", "", now)
				}
				st.status.Phase = v1.PodFailed
				st.status.Reason = "Evicted"
				st.status.Message = evictionMessage
				st.sandbox = false
				st.disruption = &v1.PodCondition{
					Type:    v1.DisruptionTarget,
					Status:  v1.ConditionTrue,
					Reason:  v1.PodReasonTerminationByKubelet,
					Message: evictionMessage,
				}
				return nil
			})
		case ScenarioCrashLoop:
			s.addCrashCycle(st)
		}
	}
}

// The image pull scenarios' steps, shared by simulated and process pods:
// the same events and container states.

// pullingEvent records the start of app container i's image pull.
func (s *Simulator) pullingEvent(st *podState, i int) {
	s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeNormal, "Pulling", "Pulling image %q", st.ctrs[i].Image)
}

// errImagePull fails app container i's image pull: Warning Failed events,
// the container waiting in ErrImagePull.
func (s *Simulator) errImagePull(st *podState, i int) {
	img := st.ctrs[i].Image
	errMsg := fmt.Sprintf("rpc error: code = NotFound desc = failed to pull and unpack image %q: podsim: simulated image pull failure", img)
	s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeWarning, "Failed", "Failed to pull image %q: %s", img, errMsg)
	s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeWarning, "Failed", "Error: ErrImagePull")
	st.setWaiting(i, false, "ErrImagePull", errMsg)
}

// imagePullBackOffDelay is the time from ErrImagePull to ImagePullBackOff.
func (s *Simulator) imagePullBackOffDelay() time.Duration {
	return max(s.opts.StepDelay, s.opts.StartDelay)
}

// imagePullBackOff moves app container i from ErrImagePull to
// ImagePullBackOff, with the BackOff and Failed events.
func (s *Simulator) imagePullBackOff(st *podState, i int) {
	img := st.ctrs[i].Image
	prev := st.cs(i, false).State.Waiting.Message
	s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeNormal, "BackOff", "Back-off pulling image %q", img)
	s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeWarning, "Failed", "Error: ImagePullBackOff")
	st.setWaiting(i, false, "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", img, prev))
}

// invalidImageName refuses app container i's image name: Warning
// InspectFailed and Failed, the container waiting in InvalidImageName.
func (s *Simulator) invalidImageName(st *podState, i int) {
	img := st.ctrs[i].Image
	msg := fmt.Sprintf("Failed to apply default image tag %q: couldn't parse image name %q: invalid reference format", img, img)
	s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeWarning, "InspectFailed", "%s", msg)
	s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeWarning, "Failed", "Error: InvalidImageName")
	st.setWaiting(i, false, "InvalidImageName", msg)
}

// pulledEvent records a successful pull of container ctr's image that
// took took.
func (s *Simulator) pulledEvent(st *podState, ctr *v1.Container, init bool, took time.Duration) {
	took = took.Truncate(time.Millisecond)
	s.kubeletEvent(st, ctr.Name, init, v1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s (%s including waiting). Image size: %d bytes.", ctr.Image, took, took, imageSize(ctr.Image))
}

// firstSync is the kubelet's first status for a newly bound pod: Pending,
// startTime, hostIP and podIP, every container waiting.
func (s *Simulator) firstSync(st *podState, now time.Time) error {
	if st.ip == "" && s.opts.PodIP != "" && st.proc == nil {
		st.ip = s.opts.PodIP
	}
	if st.ip == "" {
		ip, err := s.ips.allocate()
		if err != nil {
			return err
		}
		st.ip = ip
	}
	st.status = v1.PodStatus{
		Phase:     v1.PodPending,
		HostIP:    s.nodeIP,
		HostIPs:   []v1.HostIP{{IP: s.nodeIP}},
		PodIP:     st.ip,
		PodIPs:    []v1.PodIP{{IP: st.ip}},
		StartTime: ptr.To(metav1.NewTime(now)),
	}
	newStatus := func(c *v1.Container, reason string) v1.ContainerStatus {
		return v1.ContainerStatus{
			Name:    c.Name,
			Image:   c.Image,
			Started: ptr.To(false),
			State:   waiting(reason, ""),
		}
	}
	for i := range st.initCtrs {
		st.status.InitContainerStatuses = append(st.status.InitContainerStatuses, newStatus(&st.initCtrs[i], "PodInitializing"))
	}
	appReason := "ContainerCreating"
	if len(st.initCtrs) > 0 {
		appReason = "PodInitializing"
	}
	for i := range st.ctrs {
		st.status.ContainerStatuses = append(st.status.ContainerStatuses, newStatus(&st.ctrs[i], appReason))
	}
	st.sandbox = true
	return nil
}

// appWaiting sets every app container still waiting to reason.
func (st *podState) appWaiting(reason string) {
	for i := range st.status.ContainerStatuses {
		if st.status.ContainerStatuses[i].State.Waiting != nil {
			st.setWaiting(i, false, reason, "")
		}
	}
}

type addFunc func(name string, kind stepKind, delay time.Duration, flush bool, run func(now time.Time) error)

// addPullSteps adds Pulling (unless the pull policy is Never) and Pulled for
// container i; pullKind is the delay kind of Pulled.
func (s *Simulator) addPullSteps(st *podState, add addFunc, i int, init bool, pullKind stepKind) {
	S := s.opts.StepDelay
	ctr := st.container(i, init)
	var pullStart time.Time
	if ctr.ImagePullPolicy != v1.PullNever {
		add("pulling", stepFixed, S, false, func(now time.Time) error {
			pullStart = now
			s.kubeletEvent(st, ctr.Name, init, v1.EventTypeNormal, "Pulling", "Pulling image %q", ctr.Image)
			return nil
		})
	}
	add("pulled", pullKind, S, false, func(now time.Time) error {
		if pullStart.IsZero() {
			s.kubeletEvent(st, ctr.Name, init, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", ctr.Image)
			return nil
		}
		s.pulledEvent(st, ctr, init, now.Sub(pullStart))
		return nil
	})
}

// addStartSteps adds Pulling, Pulled, Created and Started for container i.
// After Started the container is running but not ready; the caller decides
// readiness.
func (s *Simulator) addStartSteps(st *podState, add addFunc, i int, init bool, pullKind stepKind) {
	S := s.opts.StepDelay
	s.addPullSteps(st, add, i, init, pullKind)
	ctr := st.container(i, init)
	add("created", stepFixed, S, false, func(now time.Time) error {
		st.setCreated(i, init)
		s.kubeletEvent(st, ctr.Name, init, v1.EventTypeNormal, "Created", "Created container: %s", ctr.Name)
		return nil
	})
	add("started", stepFixed, S, false, func(now time.Time) error {
		st.setRunning(i, init, false, now)
		s.kubeletEvent(st, ctr.Name, init, v1.EventTypeNormal, "Started", "Started container %s", ctr.Name)
		return nil
	})
}

// crashBackoff is the simulated kubelet's restart back-off after the n-th
// restart: like the kubelet's 10s doubling to 5m, scaled down.
func (s *Simulator) crashBackoff(restarts int32) time.Duration {
	base := max(2*s.opts.StepDelay, s.opts.StartDelay)
	return base << min(restarts, 5)
}

// addCrashCycle appends one crash-loop cycle: the containers run for a while,
// exit with code 1, wait in CrashLoopBackOff and are restarted; the cycle
// appends the next one when the containers are running again.
func (s *Simulator) addCrashCycle(st *podState) {
	S := s.opts.StepDelay
	backoff := s.crashBackoff(st.restarts)
	runFor := max(2*S, s.opts.StartDelay)
	appendStep := func(name string, delay time.Duration, flush bool, run func(now time.Time) error) {
		st.plan = append(st.plan, step{name: name, kind: stepFixed, delay: delay, flush: flush, run: run})
	}
	appendStep("crash", runFor, true, func(now time.Time) error {
		for i := range st.ctrs {
			st.setTerminated(i, false, 1, "Error", "", now)
		}
		return nil
	})
	appendStep("crash-loop-backoff", S, true, func(now time.Time) error {
		st.restarts++
		for i := range st.ctrs {
			c := st.cs(i, false)
			c.LastTerminationState = c.State
			c.RestartCount++
			st.setWaiting(i, false, "CrashLoopBackOff",
				fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", backoff, c.Name, st.podDesc()))
			s.kubeletEvent(st, c.Name, false, v1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s", c.Name, st.podDesc())
		}
		return nil
	})
	appendStep("restart-pulled", backoff, false, func(now time.Time) error {
		for i := range st.ctrs {
			s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", st.ctrs[i].Image)
		}
		return nil
	})
	appendStep("restart-created", S, false, func(now time.Time) error {
		for i := range st.ctrs {
			st.setCreated(i, false)
			s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeNormal, "Created", "Created container: %s", st.ctrs[i].Name)
		}
		return nil
	})
	appendStep("restart-started", S, true, func(now time.Time) error {
		for i := range st.ctrs {
			st.setRunning(i, false, false, now)
			s.kubeletEvent(st, st.ctrs[i].Name, false, v1.EventTypeNormal, "Started", "Started container %s", st.ctrs[i].Name)
		}
		s.addCrashCycle(st)
		return nil
	})
}

// imageSize is a stable fake image size for the Pulled message.
func imageSize(image string) uint64 {
	sum := sha256.Sum256([]byte(image))
	return 10_000_000 + binary.BigEndian.Uint64(sum[:8])%90_000_000
}
