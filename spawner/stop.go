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
	// target being gone).
	UID types.UID
	// GracePeriod overrides Options.DeleteGracePeriod.
	GracePeriod *time.Duration
	// Timeout overrides Options.StopTimeout when positive.
	Timeout time.Duration
}

// Stop deletes the pod and waits until it is gone. The DELETE is always sent
// to the API server, whatever the cache holds; the API server's NotFound
// means the pod is already gone (nil error). A Start of the same pod in
// progress is cancelled first (it then deletes its pod itself). Stop is
// idempotent and works for pods in any phase. It fails with ErrStopTimeout if
// the pod is not confirmed gone within the stop timeout, which includes
// waiting for an operation in progress on the same pod (the cleanup of a
// cancelled Start, for instance).
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

	alreadyGone, err := s.deleteAndConfirm(tctx, namespace, name, opts.UID, grace)
	if err == nil {
		s.forgetEvents(opts.UID)
	}
	switch {
	case err == nil && alreadyGone:
		s.metrics.stops.WithLabelValues("already_gone").Inc()
		logger.V(2).Info("Pod already gone")
	case err == nil:
		s.metrics.stops.WithLabelValues("deleted").Inc()
		logger.V(2).Info("Pod deleted")
	case errors.Is(err, ErrStopTimeout):
		s.metrics.stops.WithLabelValues("timeout").Inc()
	default:
		s.metrics.stops.WithLabelValues("error").Inc()
	}
	if err != nil {
		return fmt.Errorf("spawner: stop %s/%s: %w", namespace, name, err)
	}
	return nil
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

// deleteAndConfirm sends DELETE (with a UID precondition when uid is set,
// retrying transient errors) and waits until the API server confirms the pod
// gone: NotFound, or another UID under that name. alreadyGone reports that
// there was nothing to delete. ctx bounds the whole operation.
func (s *Spawner) deleteAndConfirm(ctx context.Context, namespace, name string, uid types.UID, grace *time.Duration) (alreadyGone bool, err error) {
	logger := klog.FromContext(ctx)
	pods := s.opts.Client.CoreV1().Pods(namespace)
	opts := metav1.DeleteOptions{}
	if grace != nil {
		secs := int64((*grace + time.Second - 1) / time.Second) // whole seconds, rounded up
		opts.GracePeriodSeconds = &secs
	}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	b := s.retryBackoff()
	for {
		err := pods.Delete(ctx, name, opts)
		if err == nil {
			break
		}
		if apierrors.IsNotFound(err) {
			s.decidedAbsent(reflector.SourceAPI)
			return true, nil
		}
		if apierrors.IsConflict(err) && uid != "" {
			// The precondition failed: the name may belong to a successor.
			pod, gerr := pods.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(gerr) || (gerr == nil && pod.UID != uid) {
				s.decidedAbsent(reflector.SourceAPI)
				return true, nil
			}
			err = errors.Join(err, gerr)
		} else if !isTransient(err) {
			return false, s.ctxErr(ctx, err)
		}
		logger.V(2).Info("Delete failed; retrying", "err", err)
		if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
			return false, fmt.Errorf("%w (last error: %v)", serr, err)
		}
	}
	if uid == "" {
		// Without a precondition, find out which pod is left terminating.
		pod, err := s.liveGet(ctx, namespace, name)
		if apierrors.IsNotFound(err) {
			s.decidedAbsent(reflector.SourceAPI)
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if pod.DeletionTimestamp == nil {
			return false, nil // a successor created after our DELETE
		}
		uid = pod.UID
	}
	return false, s.waitGone(ctx, namespace, name, uid)
}

// waitGone waits until the API server no longer has the pod with uid. Cache
// notifications trigger a check; the cache may only say "still there".
// Without notifications, a live GET is sent every FallbackInterval.
func (s *Spawner) waitGone(ctx context.Context, namespace, name string, uid types.UID) error {
	notify, unsubscribe := s.opts.Pods.Notify(namespace, name)
	defer unsubscribe()
	pods := s.opts.Client.CoreV1().Pods(namespace)
	live := true // check the API server first: unbound pods go at once
	for {
		if !live {
			pod, _, err := s.opts.Pods.Get(ctx, namespace, name)
			live = !(err == nil && pod.UID == uid) // still cached as there: no need to ask
		}
		if live {
			pod, err := pods.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) || (err == nil && pod.UID != uid) {
				s.decidedAbsent(reflector.SourceAPI)
				return nil
			}
			if err == nil {
				s.opts.Pods.ExpectWrite(pod) // the deletion's version: a canary
			}
			if err != nil && ctx.Err() == nil {
				klog.FromContext(ctx).V(2).Info("Live GET failed; will retry", "err", err)
			}
		}
		t := s.opts.Clock.NewTimer(s.opts.FallbackInterval)
		select {
		case <-notify:
			live = false
		case <-t.C():
			live = true
		case <-ctx.Done():
			t.Stop()
			return s.ctxErr(ctx, fmt.Errorf("pod UID %s still present", uid))
		}
		t.Stop()
	}
}

// liveGet GETs the pod from the API server, retrying transient errors until
// ctx ends.
func (s *Spawner) liveGet(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	b := s.retryBackoff()
	for {
		pod, err := s.opts.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil || !isTransient(err) {
			return pod, s.ctxErr(ctx, err)
		}
		if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
			return nil, fmt.Errorf("%w (last error: %v)", serr, err)
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
