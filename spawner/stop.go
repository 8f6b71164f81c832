package spawner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/reflector"
)

// StopOptions tunes one Stop.
type StopOptions struct {
	// UID, if set, is a precondition: only the pod with this UID is
	// deleted, never a successor with the same name (which counts as the
	// target being gone). If empty, Stop reads the pod from the API server
	// and deletes it only if it is this spawner instance's (see Stop).
	UID types.UID
	// GracePeriod overrides Options.DeleteGracePeriod.
	GracePeriod *time.Duration
	// Timeout overrides Options.StopTimeout when positive.
	Timeout time.Duration
}

// Stop deletes the pod and waits until it is gone. Every DELETE carries a
// UID precondition, and every decision rests on the API server, whatever
// the cache holds: its NotFound means the pod is already gone (nil error).
// Stop is idempotent and works for pods in any phase.
//
// With opts.UID, exactly that pod is deleted: a Start that created or
// adopted it is cancelled first, and a successor of the same name is never
// touched (the target counts as gone).
//
// Without opts.UID (the caller knows no pod: a start in progress, or no
// pod found), a Start of the name in progress is cancelled first (it
// deletes its own pod). Then the pod of that name is read live from the API
// server (never the cache) and deleted only if it carries LabelManagedBy =
// ManagedByValue and LabelInstance = Options.Instance, with the UID just
// read as precondition: a pod of another instance sharing the namespace (pod
// names do not name the instance unless NamePrefix does, see InstancePrefix),
// or of no spawner at all, is never deleted; Stop returns ErrNotOwned for it
// and deletes nothing. If the precondition fails (the pod read was replaced
// in between), the name is read and checked again. A read that keeps
// failing deletes nothing and ends in ErrStopTimeout.
//
// Stop fails with ErrStopTimeout if the pod is not confirmed gone within the
// stop timeout, which includes waiting for an operation in progress on the
// same pod (the cleanup of a cancelled Start, for instance).
func (s *Spawner) Stop(ctx context.Context, namespace, name string, opts StopOptions) error {
	if err := validateRef(namespace, name); err != nil {
		return err
	}
	if opts.Timeout < 0 {
		return invalidRequest("negative stop timeout %s", opts.Timeout)
	}
	if opts.GracePeriod != nil && *opts.GracePeriod < 0 {
		return invalidRequest("negative grace period %s", *opts.GracePeriod)
	}
	logger := s.logger(ctx).WithValues("pod", klog.KRef(namespace, name))
	ctx = klog.NewContext(ctx, logger)

	timeout := s.opts.StopTimeout
	if opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	grace := s.opts.DeleteGracePeriod
	if opts.GracePeriod != nil {
		grace = opts.GracePeriod
	}
	// The stop timeout covers waiting for the name's lock too: whatever
	// holds it (a Start cleaning up, say), Stop returns in time.
	tctx, cancel := s.withTimeout(ctx, timeout, ErrStopTimeout)
	defer cancel()

	key := lockKey(namespace, name)
	takeLock := true
	if opts.UID == "" {
		if s.locks.cancelStart(key, ErrStopRequested) {
			logger.Info("Stop cancels the start in progress")
		}
	} else {
		// A Stop of pod UID stops that pod, never a successor: only a
		// Start that created or adopted that very pod is cancelled. An
		// operation on another pod of the name (a Start creating the
		// next one) is neither cancelled nor waited for: the UID
		// precondition of the DELETE already keeps its pod safe.
		cancelled, busy := s.locks.cancelStartOf(key, opts.UID, ErrStopRequested)
		if cancelled {
			logger.Info("Stop cancels the start of this pod")
		}
		takeLock = cancelled || !busy
	}
	if takeLock {
		unlock, err := s.locks.lock(tctx, key, nil)
		if err != nil {
			if errors.Is(err, ErrStopTimeout) {
				s.metrics.stops.WithLabelValues("timeout").Inc()
			} else {
				s.metrics.stops.WithLabelValues("error").Inc()
			}
			return fmt.Errorf("spawner: stop %s/%s: waiting for the operation in progress: %w", namespace, name, err)
		}
		defer unlock()
	}

	uid := opts.UID
	var alreadyGone bool
	var err error
	if uid != "" {
		alreadyGone, err = s.deleteAndConfirm(tctx, namespace, name, uid, grace)
	} else {
		uid, alreadyGone, err = s.stopByName(tctx, namespace, name, grace)
	}
	var ownedErr error
	if err == nil {
		s.forgetEvents(uid)
		// The pod's owned objects, whether or not the garbage collector
		// runs. A Stop that found no pod knows no UID: the sweeper
		// collects what that pod owned.
		objs, oerr := s.deleteOwned(tctx, namespace, uid)
		for _, o := range objs {
			s.metrics.ownedDeleted.WithLabelValues(o.Kind, "stop").Inc()
		}
		if oerr != nil {
			logger.Error(oerr, "Pod gone, but not all its owned objects could be deleted")
			ownedErr = fmt.Errorf("spawner: stop %s/%s: the pod is gone, its objects not all: %w: %w", namespace, name, ErrCleanupFailed, oerr)
		}
	}
	switch {
	case err == nil && alreadyGone:
		s.metrics.stops.WithLabelValues("already_gone").Inc()
		logger.V(2).Info("Pod already gone")
	case err == nil:
		s.metrics.stops.WithLabelValues("deleted").Inc()
		logger.V(2).Info("Pod deleted")
	case errors.Is(err, ErrNotOwned):
		s.metrics.stops.WithLabelValues("not_owned").Inc()
		logger.Info("Pod is not this instance's; not deleted", "err", err)
	case errors.Is(err, ErrStopTimeout):
		s.metrics.stops.WithLabelValues("timeout").Inc()
	default:
		s.metrics.stops.WithLabelValues("error").Inc()
	}
	if err != nil {
		return fmt.Errorf("spawner: stop %s/%s: %w", namespace, name, err)
	}
	return ownedErr
}

// stopByName stops the pod of that name for a caller that knows no UID:
// it reads the pod live, deletes it only if it is this instance's, with
// the UID read as precondition, and reads again if that pod was replaced
// in between. uid is the pod deleted (or found gone); ctx bounds it all.
func (s *Spawner) stopByName(ctx context.Context, namespace, name string, grace *time.Duration) (uid types.UID, alreadyGone bool, err error) {
	logger := klog.FromContext(ctx)
	b := s.retryBackoff()
	for {
		pod, err := s.liveGet(ctx, namespace, name)
		switch {
		case apierrors.IsNotFound(err):
			s.decidedAbsent(reflector.SourceAPI)
			return "", true, nil
		case err != nil:
			return "", false, fmt.Errorf("reading the pod: %w", err)
		case !s.owns(pod):
			return "", false, fmt.Errorf("%w: pod UID %s has %s=%q, %s=%q; this spawner's %s is %q", ErrNotOwned,
				pod.UID, LabelManagedBy, pod.Labels[LabelManagedBy], LabelInstance, pod.Labels[LabelInstance], LabelInstance, s.opts.Instance)
		}
		out, err := s.deleteUID(ctx, namespace, name, pod.UID, grace)
		switch {
		case err != nil:
			return pod.UID, false, err
		case out == deleteGone:
			return pod.UID, true, nil
		case out == deleteReplaced:
			// The pod read is gone and another holds the name: check it
			// like the first, never delete it unchecked.
			logger.V(2).Info("Pod replaced before the DELETE; reading the name again", "uid", pod.UID)
			if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
				return pod.UID, false, serr
			}
			continue
		}
		return pod.UID, false, s.waitGone(ctx, namespace, name, pod.UID)
	}
}

// owns: a pod this spawner instance created (or could have).
func (s *Spawner) owns(pod *corev1.Pod) bool {
	return pod.Labels[LabelManagedBy] == ManagedByValue && pod.Labels[LabelInstance] == s.opts.Instance
}

func validateRef(namespace, name string) error {
	if namespace == "" || name == "" {
		return invalidRequest("namespace and name are required (got %q, %q)", namespace, name)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return invalidRequest("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return invalidRequest("pod name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// liveGet GETs the pod from the API server, retrying transient errors until
// ctx ends.
func (s *Spawner) liveGet(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	b := s.retryBackoff()
	var last error
	for {
		pod, err := s.opts.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil || !isTransient(err) {
			return pod, withLast(ctx, s.ctxErr(ctx, err), last)
		}
		if ctx.Err() == nil {
			last = err
		}
		if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
			return nil, withLast(ctx, serr, last)
		}
	}
}

// retryBackoff paces retries of deletes and GETs; ctx bounds them.
func (s *Spawner) retryBackoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = 0
	b.Clock = s.opts.Clock
	b.Reset()
	return b
}

// sleep waits d on the injected clock, or returns ctx's cause.
func (s *Spawner) sleep(ctx context.Context, d time.Duration) error {
	t := s.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return s.ctxErr(ctx, nil)
	}
}

// ctxErr returns err, or ctx's cause when ctx has ended (wrapping err).
func (s *Spawner) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	cause := context.Cause(ctx)
	if err == nil || errors.Is(err, cause) {
		return cause
	}
	return fmt.Errorf("%w: %v", cause, err)
}

// withTimeout is context.WithTimeout on the injected clock, with a cause.
func (s *Spawner) withTimeout(ctx context.Context, d time.Duration, cause error) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := s.opts.Clock.NewTimer(d)
	go func() {
		select {
		case <-t.C():
			cancel(cause)
		case <-ctx.Done():
			t.Stop()
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// forgetEvents drops a pod's entry from the event index once the pod is
// confirmed gone: its events are of no more use.
func (s *Spawner) forgetEvents(uid types.UID) {
	if s.opts.Events != nil && uid != "" {
		s.opts.Events.ForgetPod(uid)
	}
}
