package spawner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
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
		case "CreateContainerConfigError", "CreateContainerError":
			// Config: a missing Secret or ConfigMap key; create: the
			// runtime refused the container (a bad command, say). The
			// kubelet retries both, but neither mends itself within a
			// start.
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
// errors are not, and neither are transport errors that no retry can fix
// (an untrusted or mismatched certificate, a host name that does not
// resolve, a malformed URL): such a request never reached the API server.
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
	if neverReachesServer(err) {
		return false
	}
	if utilnet.IsConnectionReset(err) || utilnet.IsConnectionRefused(err) || utilnet.IsProbableEOF(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op)
}

// neverReachesServer reports transport errors that mean the request could
// not be delivered, and never will be as configured: certificate and
// name-resolution failures, unusable URLs.
func neverReachesServer(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		dns       *net.DNSError
	)
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return true
	case errors.As(err, &dns):
		return dns.IsNotFound
	}
	var ue *url.Error
	return errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "unsupported protocol scheme")
}

// maybeCreated reports whether a failed create may nevertheless have
// created the pod: anything but a 4xx answer from the server (a timeout or
// a broken connection can hide a success), unless the request was never
// sent (see createSent).
func maybeCreated(err error, sent createSent) bool {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := st.Status().Code
		return code < 400 || code >= 500
	}
	if neverReachesServer(err) {
		return false
	}
	if sent == notSent && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || utilnet.IsConnectionRefused(err)) {
		return false // cancelled, or refused, before the request was written
	}
	return true
}

// createSent is what an HTTP trace says of a create request: written to
// the connection, not written, or unknown (no HTTP transport: a fake
// clientset).
type createSent int

const (
	sentUnknown createSent = iota
	notSent
	sent
)
