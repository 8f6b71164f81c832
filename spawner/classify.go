package spawner

import (
	"errors"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// verdict is what one look at a starting pod says.
type verdict struct {
	ready   bool
	reason  error  // a fail-fast sentinel, or nil to keep waiting
	message string // detail for the StartError
	// recheck > 0: look again after this long even without news (the
	// image-pull grace runs out then).
	recheck time.Duration
}

// classifyPod decides whether a starting pod is ready, has failed for good,
// or needs more time. pullSince tracks when image pull errors were first
// seen (zero when none), so that a pull failing transiently gets
// ImagePullGrace before the start fails.
func classifyPod(pod *corev1.Pod, now time.Time, pullSince *time.Time, grace time.Duration) verdict {
	switch pod.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		msg := fmt.Sprintf("phase %s", pod.Status.Phase)
		if pod.Status.Reason != "" {
			msg += ", reason " + pod.Status.Reason
		}
		if pod.Status.Message != "" {
			msg += ": " + pod.Status.Message
		}
		if t := firstTerminated(pod); t != nil {
			msg += fmt.Sprintf(" (exit code %d, %s)", t.ExitCode, t.Reason)
		}
		return verdict{reason: ErrPodFailed, message: msg}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return verdict{reason: ErrUnschedulable, message: c.Message}
		}
	}
	pulling := ""
	for _, cs := range allStatuses(pod) {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		msg := fmt.Sprintf("container %q: %s: %s", cs.Name, w.Reason, w.Message)
		switch w.Reason {
		case "ErrImagePull", "ImagePullBackOff":
			pulling = msg
		case "ErrImageNeverPull":
			return verdict{reason: ErrImagePull, message: msg}
		case "InvalidImageName":
			return verdict{reason: ErrInvalidImage, message: msg}
		case "CreateContainerConfigError":
			return verdict{reason: ErrCreateContainerConfig, message: msg}
		case "CrashLoopBackOff":
			return verdict{reason: ErrCrashLoop, message: msg}
		}
	}
	if pulling == "" {
		*pullSince = time.Time{}
	} else {
		if pullSince.IsZero() {
			*pullSince = now
		}
		waited := now.Sub(*pullSince)
		if waited >= grace {
			return verdict{reason: ErrImagePull, message: pulling}
		}
		return verdict{recheck: grace - waited}
	}
	return verdict{ready: podReady(pod)}
}

// podReady: Running, with an IP, and every container of the spec Ready.
func podReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return false
	}
	ready := map[string]bool{}
	for _, cs := range pod.Status.ContainerStatuses {
		ready[cs.Name] = cs.Ready
	}
	for _, c := range pod.Spec.Containers {
		if !ready[c.Name] {
			return false
		}
	}
	return true
}

func allStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, 0, len(pod.Status.InitContainerStatuses)+len(pod.Status.ContainerStatuses))
	out = append(out, pod.Status.InitContainerStatuses...)
	return append(out, pod.Status.ContainerStatuses...)
}

// firstTerminated returns the termination state of the first terminated
// container (current state, else last state), preferring a non-zero exit.
func firstTerminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	var first *corev1.ContainerStateTerminated
	for _, cs := range allStatuses(pod) {
		for _, t := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
			if t == nil {
				continue
			}
			if t.ExitCode != 0 {
				return t
			}
			if first == nil {
				first = t
			}
		}
	}
	return first
}

// isTransient reports whether a failed request may succeed if retried:
// 429, 5xx, timeouts and connection errors. Validation and authorisation
// errors are not.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		switch st.Status().Code {
		case 429, 500, 502, 503, 504:
			return true
		}
		return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err)
	}
	if utilnet.IsConnectionReset(err) || utilnet.IsConnectionRefused(err) || utilnet.IsProbableEOF(err) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// maybeCreated reports whether a failed create may nevertheless have
// created the pod: anything but a 4xx answer from the server (a timeout or a
// broken connection can hide a success).
func maybeCreated(err error) bool {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := st.Status().Code
		return code < 400 || code >= 500
	}
	return true
}
