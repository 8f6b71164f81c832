package spawner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/reflector"
)

// State is the coarse state of a pod as Poll reports it.
type State string

const (
	// StateRunning: phase Running (see PodStatus.Ready for readiness).
	StateRunning State = "running"
	// StatePending: accepted but not running yet.
	StatePending State = "pending"
	// StateStopped: the pod terminated (failed, evicted, completed) or the
	// API server says it does not exist.
	StateStopped State = "stopped"
	// StateUnknown: the pod's state could not be determined.
	StateUnknown State = "unknown"
)

// PodStatus is Poll's answer.
type PodStatus struct {
	State State
	// Ready: running, with an IP and all containers ready.
	Ready bool
	// Terminating: the pod has a deletionTimestamp.
	Terminating bool
	// Reason and Message explain a stopped pod: "NotFound" for a pod the
	// API server does not have, the pod's reason (e.g. "Evicted") or the
	// container's termination reason (e.g. "Error", "Completed").
	Reason  string
	Message string
	// ExitCode of the first terminated container, if any.
	ExitCode *int32
	// Pod as read; nil when not found.
	Pod *corev1.Pod
	// Source says whether the cache or the API server answered.
	Source reflector.Source
}

// Poll reports the pod's state. It reads through the pod cache, which asks
// the API server on a miss or when unhealthy: a pod is reported stopped
// because it is absent only when the API server says NotFound. Other read
// errors give StateUnknown and the error.
func (s *Spawner) Poll(ctx context.Context, namespace, name string) (PodStatus, error) {
	if err := validateRef(namespace, name); err != nil {
		return PodStatus{State: StateUnknown}, err
	}
	pod, src, err := s.opts.Pods.Get(ctx, namespace, name)
	if apierrors.IsNotFound(err) && src != reflector.SourceAPI {
		// The cache contract says this cannot happen; absence is still
		// only taken from the API server.
		pod, err = s.opts.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		src = reflector.SourceAPI
	}
	if apierrors.IsNotFound(err) {
		s.decidedAbsent(src)
		return PodStatus{State: StateStopped, Reason: "NotFound", Message: "the API server has no such pod", Source: src}, nil
	}
	if err != nil {
		return PodStatus{State: StateUnknown, Source: src}, fmt.Errorf("spawner: poll %s/%s: %w", namespace, name, err)
	}
	return podStatus(pod, src), nil
}

func podStatus(pod *corev1.Pod, src reflector.Source) PodStatus {
	st := PodStatus{Pod: pod, Source: src, Terminating: pod.DeletionTimestamp != nil, Reason: pod.Status.Reason, Message: pod.Status.Message}
	if t := firstTerminated(pod); t != nil {
		code := t.ExitCode
		st.ExitCode = &code
		if st.Reason == "" {
			st.Reason = t.Reason
		}
		if st.Message == "" {
			st.Message = t.Message
		}
	}
	switch pod.Status.Phase {
	case corev1.PodRunning:
		st.State, st.Ready = StateRunning, podReady(pod)
	case corev1.PodPending:
		st.State = StatePending
	case corev1.PodFailed:
		st.State = StateStopped
		if st.Reason == "" {
			st.Reason = "Failed"
		}
	case corev1.PodSucceeded:
		st.State = StateStopped
		if st.Reason == "" {
			st.Reason = "Completed"
		}
	default:
		st.State = StateUnknown
	}
	return st
}
