package spawner

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubespawn/kubespawn/reflector"
)

// Sentinel errors. Every error the spawner returns wraps one of them, so
// callers branch with errors.Is.
var (
	// ErrInvalidOptions: New was given unusable Options. It is
	// reflector.ErrInvalidOptions: one error for one idea.
	ErrInvalidOptions = reflector.ErrInvalidOptions
	// ErrInvalidArgument: a Request, StopOptions, SweepPolicy,
	// SweeperOptions or other argument is unusable; nothing was sent to the
	// API server. It is reflector.ErrInvalidArgument.
	ErrInvalidArgument = reflector.ErrInvalidArgument

	// ErrClosed: the Spawner has been closed (Close); nothing was started.
	ErrClosed = errors.New("spawner: closed")

	// ErrRejected: the API server refused the create permanently (Invalid,
	// BadRequest, Forbidden, ...). It was not retried.
	ErrRejected = errors.New("spawner: pod rejected by the API server")
	// ErrCreateFailed: the create kept failing with transient errors until
	// the retry budget (CreateBackoff) ran out, or failed without an answer
	// of the API server (e.g. the response body could not be read), so that
	// the pod may have been created: the cleanup then looks for it.
	ErrCreateFailed = errors.New("spawner: pod create failed")
	// ErrAlreadyRunning: a pod of ours with this name already runs and
	// AdoptRunning is off.
	ErrAlreadyRunning = errors.New("spawner: pod already running")
	// ErrNameConflict: a pod with this name exists and is not ours.
	ErrNameConflict = errors.New("spawner: pod name taken by a pod kubespawn does not manage")

	// Fail-fast reasons of a start.
	ErrImagePull             = errors.New("spawner: image pull failed")
	ErrInvalidImage          = errors.New("spawner: invalid image name")
	ErrCreateContainerConfig = errors.New("spawner: container config error")
	ErrUnschedulable         = errors.New("spawner: pod unschedulable")
	ErrCrashLoop             = errors.New("spawner: container crash loop")
	ErrPodFailed             = errors.New("spawner: pod terminated before it was ready")
	// ErrDeletedExternally: the pod was deleted or replaced (new UID) by
	// someone else while starting, as proven by the API server.
	ErrDeletedExternally = errors.New("spawner: pod deleted externally")
	// ErrStartTimeout: the pod was not ready within the start timeout.
	ErrStartTimeout = errors.New("spawner: start timed out")
	// ErrStartCancelled: the caller's context ended before the pod was
	// ready; errors.Is(err, context.Canceled) (or DeadlineExceeded) holds too.
	ErrStartCancelled = errors.New("spawner: start cancelled")
	// ErrStopRequested: Stop was called for the pod while it was starting.
	ErrStopRequested = errors.New("spawner: stopped while starting")

	// Failures of a start's claims (Request.Claims), before any pod was
	// created: a start that fails on a claim leaves no pod.
	//
	// ErrClaimConflict: a claim of that name exists and is not this
	// instance's for the key (other labels or key annotation).
	ErrClaimConflict = errors.New("spawner: claim name taken by a claim of another key or owner")
	// ErrClaimIncompatible: the existing claim of the key differs from the
	// request in a field that cannot be changed (access modes, storage
	// class, volume mode, volume name, selector), or needs to grow and the
	// API server refused the expansion. The message names the field.
	ErrClaimIncompatible = errors.New("spawner: existing claim cannot take the requested spec")
	// ErrClaimTerminating: the claim is being deleted (DeleteClaims, or by
	// hand); a new one can be created once it is gone.
	ErrClaimTerminating = errors.New("spawner: claim is being deleted")
	// ErrClaimFailed: the API server refused to create the claim (a
	// ResourceQuota, an admission webhook, validation) or could not be read.
	ErrClaimFailed = errors.New("spawner: claim could not be ensured")
	// ErrClaimInUse: DeleteClaims found the key's pod: stop it first.
	ErrClaimInUse = errors.New("spawner: claims still in use by the key's pod")

	// Failures of a start's owned objects (Request.Services, Secrets,
	// ConfigMaps), after the pod was created: the start deletes the pod and
	// the objects it created.
	//
	// ErrOwnedObjectFailed: the API server refused to create an owned
	// object (an admission webhook, validation, RBAC, quota).
	ErrOwnedObjectFailed = errors.New("spawner: object of the pod could not be created")
	// ErrOwnedObjectConflict: an object of that name exists and is not this
	// instance's for the key.
	ErrOwnedObjectConflict = errors.New("spawner: object name taken by an object kubespawn does not manage")

	// ErrNotOwned: Stop without a UID found, under the pod's name, a pod
	// this spawner did not create (no LabelManagedBy, or another
	// LabelInstance); nothing was deleted.
	ErrNotOwned = errors.New("spawner: pod is not this spawner instance's")

	// ErrStopTimeout: the pod was not confirmed gone within the stop timeout.
	ErrStopTimeout = errors.New("spawner: pod not gone within the stop timeout")
	// ErrCleanupFailed: a failed start could not delete (or confirm the
	// deletion of) its pod, or, after a create whose outcome is unknown,
	// could not establish within the settle window (min(StopTimeout/2, 30s))
	// whether the pod exists ("create outcome unconfirmed"). The pod, if
	// any, is left for the sweeper. Stop returns it too when the pod is
	// gone but its owned objects could not all be deleted (the garbage
	// collector and the sweeper will; a Stop with the UID retries).
	ErrCleanupFailed = errors.New("spawner: cleanup of the failed pod did not complete")
)

// startReason is one row of the reason table: every error a failed Start
// can carry as its Reason, with its metrics label and how Start treats it.
// This table is the only list of reasons; the error values, fail-fast
// handling and labels all come from it.
type startReason struct {
	err error
	// label is the value of the result label of starts_total.
	label string
	// failFast: the start failed for good before its timeout; a context
	// ending at the same time does not turn it into a timeout or a cancel.
	failFast bool
	// warned: the kubelet or scheduler explains it with a Warning event,
	// which the StartError should carry (see warningGrace).
	warned bool
}

var startReasons = []startReason{
	{ErrImagePull, "image_pull", true, true},
	{ErrInvalidImage, "invalid_image", true, true},
	{ErrCreateContainerConfig, "create_container_config", true, true},
	{ErrUnschedulable, "unschedulable", true, true},
	{ErrCrashLoop, "crash_loop", true, true},
	{ErrPodFailed, "pod_failed", true, false},
	{ErrDeletedExternally, "deleted_externally", true, false},
	{ErrRejected, "rejected", true, false},
	{ErrAlreadyRunning, "already_running", true, false},
	{ErrNameConflict, "name_conflict", true, false},
	{ErrClaimConflict, "claim_conflict", true, false},
	{ErrClaimIncompatible, "claim_incompatible", true, false},
	{ErrClaimTerminating, "claim_terminating", true, false},
	{ErrClaimFailed, "claim_failed", true, false},
	{ErrOwnedObjectFailed, "owned_object_failed", true, false},
	{ErrOwnedObjectConflict, "owned_object_conflict", true, false},
	{ErrStartTimeout, "timeout", false, false},
	{ErrStopRequested, "stopped", false, false},
	{ErrStartCancelled, "cancelled", false, false},
	{ErrCreateFailed, "create_failed", false, false},
}

// reasonOf returns the table row of reason (label "error" if unknown).
func reasonOf(reason error) startReason {
	for _, r := range startReasons {
		if r.err == reason {
			return r
		}
	}
	return startReason{err: reason, label: "error"}
}

// StartError is the error of a failed Start. errors.Is matches its Reason
// (one of the sentinel errors), the underlying Err (an API error or
// context.Canceled, for instance) and, if cleanup failed, ErrCleanupFailed
// and the cleanup's own error.
type StartError struct {
	Namespace string
	Name      string
	// UID of the pod this start created or inspected; empty if unknown.
	UID types.UID
	// Reason is the sentinel error describing what went wrong.
	Reason error
	// Message is a human-readable detail, e.g. the container's waiting
	// message or the API server's answer.
	Message string
	// Err is the underlying error, if any.
	Err error
	// Events are the pod's last Warning events (oldest first) when an
	// EventSource is configured.
	Events []*corev1.Event
	// Deleted is true when the start deleted the pod it created and the API
	// server confirmed it gone.
	Deleted bool
	// Cleanup is non-nil when the pod could not be deleted or confirmed
	// gone; it wraps ErrCleanupFailed.
	Cleanup error
}

func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: pod %s/%s", e.Reason, e.Namespace, e.Name)
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil && (e.Message == "" || !strings.Contains(e.Message, e.Err.Error())) {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if n := len(e.Events); n > 0 {
		ev := e.Events[n-1]
		fmt.Fprintf(&b, " (last warning: %s: %s)", ev.Reason, ev.Message)
	}
	if e.Deleted {
		b.WriteString(" (pod deleted)")
	}
	if e.Cleanup != nil {
		fmt.Fprintf(&b, "; %v", e.Cleanup)
	}
	return b.String()
}

// Unwrap lets errors.Is and errors.As see the reason, the cause and the
// cleanup error.
func (e *StartError) Unwrap() []error {
	errs := make([]error, 0, 3)
	for _, err := range []error{e.Reason, e.Err, e.Cleanup} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func invalidRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}
