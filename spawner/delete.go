package spawner

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/reflector"
)

// deleteAndConfirm sends DELETE with a UID precondition (retrying transient
// errors) and waits until the API server confirms the pod gone: NotFound, or
// another UID under that name. alreadyGone reports that there was nothing to
// delete. ctx bounds the whole operation. uid is required: the spawner
// never sends a DELETE by name alone.
func (s *Spawner) deleteAndConfirm(ctx context.Context, namespace, name string, uid types.UID, grace *time.Duration) (alreadyGone bool, err error) {
	out, err := s.deleteUID(ctx, namespace, name, uid, grace)
	if err != nil {
		return false, err
	}
	if out != deleteSent {
		return true, nil
	}
	return false, s.waitGone(ctx, namespace, name, uid)
}

// deleteOutcome is what a DELETE with a UID precondition found.
type deleteOutcome int

const (
	// deleteSent: the API server accepted the DELETE of the pod uid.
	deleteSent deleteOutcome = iota
	// deleteGone: the API server has no pod of that name.
	deleteGone
	// deleteReplaced: the precondition failed, the name is another pod's.
	deleteReplaced
)

// deleteUID sends DELETE with uid as precondition, retrying transient
// errors until ctx ends.
func (s *Spawner) deleteUID(ctx context.Context, namespace, name string, uid types.UID, grace *time.Duration) (deleteOutcome, error) {
	if uid == "" {
		return 0, fmt.Errorf("spawner: internal error: DELETE of pod %s/%s without a UID precondition refused", namespace, name)
	}
	logger := klog.FromContext(ctx)
	pods := s.opts.Client.CoreV1().Pods(namespace)
	opts := metav1.DeleteOptions{}
	if grace != nil {
		secs := int64((*grace + time.Second - 1) / time.Second) // whole seconds, rounded up
		opts.GracePeriodSeconds = &secs
	}
	opts.Preconditions = &metav1.Preconditions{UID: &uid}
	b := s.retryBackoff()
	var last error // the last failure seen before ctx ended: the caller's why
	for {
		err := pods.Delete(ctx, name, opts)
		if err == nil {
			return deleteSent, nil
		}
		if apierrors.IsNotFound(err) {
			s.decidedAbsent(reflector.SourceAPI)
			return deleteGone, nil
		}
		if apierrors.IsConflict(err) {
			// The precondition failed: the name may belong to a successor.
			pod, gerr := pods.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(gerr) {
				s.decidedAbsent(reflector.SourceAPI)
				return deleteGone, nil
			}
			if gerr == nil && pod.UID != uid {
				s.decidedAbsent(reflector.SourceAPI)
				return deleteReplaced, nil
			}
			err = errors.Join(err, gerr)
		} else if !isTransient(err) {
			return 0, withLast(ctx, s.ctxErr(ctx, err), last)
		}
		if ctx.Err() == nil {
			last = err
		}
		logger.V(2).Info("Delete failed; retrying", "err", err)
		if serr := s.sleep(ctx, b.NextBackOff()); serr != nil {
			return 0, withLast(ctx, serr, last)
		}
	}
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

// withLast adds to err, once ctx has ended, the last failure a retry loop
// saw before that (an answer of the API server, or a transport error): a
// request cut by the deadline is no answer, and the caller must learn why
// the loop did not succeed.
func withLast(ctx context.Context, err, last error) error {
	if last == nil || ctx.Err() == nil || err == nil {
		return err
	}
	return fmt.Errorf("%w (last error: %v)", err, last)
}
