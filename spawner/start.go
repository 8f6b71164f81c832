package spawner

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/reflector"
)

// maxWarningEvents is how many Warning events a StartError carries.
const maxWarningEvents = 5

// Start creates the pod for req and waits until it is running, has an IP
// and all its containers are ready. On any failure after the create was
// sent (fail-fast reason, timeout, cancellation, Stop) it deletes the pod it
// created, with a UID precondition, and returns only once the API server
// confirms it gone; if that cleanup fails, or a create whose outcome is
// unknown can be neither found nor ruled out within the settle window, the
// error says so (ErrCleanupFailed) and the pod is counted and logged for the
// sweeper. Errors are *StartError (or wrap ErrInvalidArgument) and match the
// sentinel errors with errors.Is.
func (s *Spawner) Start(ctx context.Context, req Request) (*Result, error) {
	begin := s.opts.Clock.Now()
	pod, timeout, err := s.buildPod(req)
	var claims []*corev1.PersistentVolumeClaim
	var owned []ownedObject
	if err == nil {
		claims, err = s.buildClaims(req)
	}
	if err == nil {
		owned, err = s.buildOwned(req, pod)
	}
	if err != nil {
		s.metrics.starts.WithLabelValues("invalid_request").Inc()
		return nil, err
	}
	logger := s.logger(ctx).WithValues("pod", klog.KObj(pod))
	ctx = klog.NewContext(ctx, logger)

	res, err := s.start(ctx, &attempt{s: s, req: req, want: pod, startID: pod.Annotations[AnnotationStartID], claims: claims, owned: owned}, timeout)
	d := s.opts.Clock.Since(begin)
	if err != nil {
		var se *StartError
		result := "error"
		if errors.As(err, &se) {
			result = reasonOf(se.Reason).label
		}
		s.metrics.starts.WithLabelValues(result).Inc()
		s.metrics.startDuration.WithLabelValues("failure").Observe(d.Seconds())
		logger.Info("Start failed", "err", err, "duration", d)
		return nil, err
	}
	res.Duration = d
	result := "running"
	if res.Adopted {
		result = "adopted"
	}
	s.metrics.starts.WithLabelValues(result).Inc()
	s.metrics.startDuration.WithLabelValues("success").Observe(d.Seconds())
	logger.V(2).Info("Pod ready", "uid", res.UID, "podIP", res.PodIP, "duration", d, "adopted", res.Adopted)
	return res, nil
}

func (s *Spawner) start(ctx context.Context, a *attempt, timeout time.Duration) (*Result, error) {
	pod := a.want
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The start timeout covers waiting for the name's lock too.
	sctx, stopTimer := s.withTimeout(sctx, timeout, ErrStartTimeout)
	defer stopTimer()

	unlock, err := s.locks.lock(sctx, lockKey(pod.Namespace, pod.Name), cancel)
	if err != nil {
		return nil, a.startError(sctx, err) // nothing was created
	}
	defer unlock()
	if sctx.Err() != nil {
		return nil, a.startError(sctx, sctx.Err()) // a Stop came first
	}

	res, err := a.run(sctx)
	if err == nil {
		a.waitProgress(ctx)
		return res, nil
	}
	se := a.startError(sctx, err)
	// gone: the pod this start created or adopted is confirmed gone. Only
	// then are its events forgotten; a pod it did not create (se.UID of
	// ErrAlreadyRunning, ErrNameConflict) keeps its history.
	gone := false
	// The progress stream was cancelled when waitReady returned; a blocked
	// Progress callback must not delay the cleanup, so it is waited for
	// (bounded) only afterwards.
	if a.uid != "" || a.ambiguous {
		deleted, cerr := a.cleanup(ctx)
		se.Deleted = deleted
		gone = cerr == nil && a.uid != ""
		if cerr != nil {
			se.Cleanup = fmt.Errorf("%w: %w", ErrCleanupFailed, cerr)
			s.metrics.cleanupFailed.Inc()
			klog.FromContext(ctx).Error(cerr, "Could not delete the pod of a failed start: left for the sweeper", "uid", a.uid)
		} else if deleted {
			s.metrics.deletedOnFail.Inc()
		}
	}
	a.waitProgress(ctx)
	if se.UID == "" {
		se.UID = a.uid // an ambiguous create may have been resolved by the cleanup
	}
	a.attachWarnings(ctx, se)
	if gone {
		s.forgetEvents(a.uid)
	}
	return nil, se
}

// warningGrace bounds how long a failed start waits for the Warning event
// that explains a failure read from the pod's status (the scheduler's
// FailedScheduling, the kubelet's Failed): the status and the event are
// written together, but reach the spawner through two watches. The
// failure's reason and message come from the status and never wait.
const warningGrace = time.Second

// setUID records the UID of the pod this start created or adopted, here
// and in its name lock (a Stop with that UID cancels this start).
func (a *attempt) setUID(uid types.UID) {
	a.uid = uid
	a.s.locks.setStartUID(lockKey(a.want.Namespace, a.want.Name), uid)
}

// attachWarnings sets se.Events to the pod's last Warning events, waiting
// up to warningGrace for one when a fail-fast reason has none yet.
func (a *attempt) attachWarnings(ctx context.Context, se *StartError) {
	src := a.s.opts.Events
	if src == nil || se.UID == "" {
		return
	}
	ref := events.PodRef{Namespace: se.Namespace, Name: se.Name, UID: se.UID}
	se.Events = lastWarnings(src.Events(ref))
	if len(se.Events) > 0 || !reasonOf(se.Reason).warned {
		return
	}
	deadline := a.s.opts.Clock.Now().Add(warningGrace)
	for len(se.Events) == 0 && a.s.opts.Clock.Now().Before(deadline) && ctx.Err() == nil {
		if a.s.sleep(ctx, 50*time.Millisecond) != nil {
			break
		}
		se.Events = lastWarnings(src.Events(ref))
	}
}

// attempt is the state of one Start.
type attempt struct {
	s       *Spawner
	req     Request
	want    *corev1.Pod
	startID string
	// claims and owned are the request's claims and owned objects, checked
	// and labelled.
	claims []*corev1.PersistentVolumeClaim
	owned  []ownedObject
	// uid is the UID of the pod this start created or adopted: the one to
	// delete if the start fails. Empty until known.
	uid types.UID
	// ambiguous: a create failed in a way that may hide a success; cleanup
	// must look for a pod carrying our start ID.
	ambiguous bool
	adopted   bool
	// admitted: the pod passed a dry-run create (admitPod).
	admitted bool
	// progress forwards events to req.Progress; nil when not streaming.
	progress *progressForwarder
}

func (a *attempt) run(ctx context.Context) (*Result, error) {
	// Claims first: a start that fails on one leaves no pod.
	claims, err := a.ensureClaims(ctx)
	if err != nil {
		return nil, err
	}
	pod, err := a.ensure(ctx)
	if err != nil {
		return nil, err
	}
	owned, err := a.ensureOwned(ctx, pod)
	if err != nil {
		return nil, err
	}
	pod, err = a.waitReady(ctx, pod)
	if err != nil {
		return nil, err
	}
	return &Result{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, PodIP: pod.Status.PodIP, Pod: pod, Adopted: a.adopted,
		Claims: claims, Owned: owned}, nil
}

// startError turns err into a *StartError, attributing context errors to
// their cause (timeout, Stop, or the caller).
func (a *attempt) startError(ctx context.Context, err error) *StartError {
	var se *StartError
	if !errors.As(err, &se) {
		se = &StartError{Reason: ErrCreateFailed, Err: err}
	}
	if ctx.Err() != nil && !reasonOf(se.Reason).failFast {
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, ErrStartTimeout):
			se.Reason, se.Err = ErrStartTimeout, nil
		case errors.Is(cause, ErrStopRequested):
			se.Reason, se.Err = ErrStopRequested, nil
		default:
			se.Reason, se.Err = ErrStartCancelled, cause
		}
	}
	se.Namespace, se.Name = a.want.Namespace, a.want.Name
	if se.UID == "" {
		se.UID = a.uid
	}
	return se
}

// ensure creates the pod, retrying transient errors, and resolves
// AlreadyExists. It returns the pod to wait for (created or adopted).
func (a *attempt) ensure(ctx context.Context) (*corev1.Pod, error) {
	logger := klog.FromContext(ctx)
	pods := a.s.opts.Client.CoreV1().Pods(a.want.Namespace)
	b := a.s.opts.CreateBackoff()
	b.Reset()
	for {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx) // nothing sent: not ambiguous
		}
		created, sent, err := a.create(ctx, pods)
		if err == nil {
			a.setUID(created.UID)
			a.s.opts.Pods.ExpectWrite(created) // the cache must see it: a canary
			logger.V(2).Info("Pod created", "uid", created.UID, "rv", created.ResourceVersion)
			return created, nil
		}
		if ctx.Err() != nil {
			a.ambiguous = a.ambiguous || maybeCreated(err, sent)
			return nil, err
		}
		if apierrors.IsAlreadyExists(err) {
			var pod *corev1.Pod
			pod, err = a.resolveExisting(ctx)
			if pod != nil || (err != nil && !isTransient(err)) {
				return pod, err
			}
			if err == nil {
				continue // the old pod is gone: create again
			}
		} else if !isTransient(err) {
			if maybeCreated(err, sent) {
				// Not an answer of the API server (a 201 whose body could
				// not be read, for instance): the pod may exist. Not
				// retried, but not a rejection either; cleanup looks for it.
				a.ambiguous = true
				return nil, &StartError{Reason: ErrCreateFailed, Message: "the outcome of the create is unknown", Err: err}
			}
			return nil, &StartError{Reason: ErrRejected, Err: err}
		}
		a.ambiguous = a.ambiguous || maybeCreated(err, sent)
		d := b.NextBackOff()
		if d == backoff.Stop {
			return nil, &StartError{Reason: ErrCreateFailed, Message: "retries exhausted", Err: err}
		}
		if secs, ok := apierrors.SuggestsClientDelay(err); ok && time.Duration(secs)*time.Second > d {
			d = time.Duration(secs) * time.Second // honour Retry-After
		}
		logger.V(2).Info("Transient error creating the pod, retrying", "err", err, "delay", d)
		if err := a.s.sleep(ctx, d); err != nil {
			return nil, err
		}
	}
}

// create sends one create and reports, from an HTTP trace, whether the
// request was written to a connection: a create cancelled before that
// cannot have created anything, so its cleanup need not look for a pod.
func (a *attempt) create(ctx context.Context, pods typedcorev1.PodInterface) (*corev1.Pod, createSent, error) {
	var transport, wrote atomic.Bool
	trace := &httptrace.ClientTrace{
		GetConn:      func(string) { transport.Store(true) },
		WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) },
	}
	created, err := pods.Create(httptrace.WithClientTrace(ctx, trace), a.want.DeepCopy(), metav1.CreateOptions{})
	switch {
	case wrote.Load():
		return created, sent, err
	case transport.Load() || ctx.Err() != nil:
		// The HTTP transport was asked but never wrote the request, or the
		// context ended before it was even asked.
		return created, notSent, err
	}
	return created, sentUnknown, err // no HTTP transport (a fake clientset)
}

// resolveExisting inspects, through the API server, the pod that made the
// create fail with AlreadyExists. It returns the pod to wait for, or nil
// and nil error to create again, or an error.
func (a *attempt) resolveExisting(ctx context.Context) (*corev1.Pod, error) {
	logger := klog.FromContext(ctx)
	pods := a.s.opts.Client.CoreV1().Pods(a.want.Namespace)
	pod, err := pods.Get(ctx, a.want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		a.s.decidedAbsent(reflector.SourceAPI)
		return nil, nil // gone in between
	case err != nil:
		return nil, err
	case pod.Annotations[AnnotationStartID] == a.startID:
		// An earlier create of this very start succeeded behind an error.
		a.setUID(pod.UID)
		return pod, nil
	case !a.ours(pod):
		return nil, &StartError{Reason: ErrNameConflict, UID: pod.UID,
			Message: fmt.Sprintf("existing pod has labels %v", pod.Labels)}
	case pod.DeletionTimestamp != nil:
		logger.Info("Previous pod of this key is terminating; waiting for it to go", "oldUID", pod.UID)
		if err := a.s.waitGone(ctx, pod.Namespace, pod.Name, pod.UID); err != nil {
			return nil, err
		}
		return nil, nil
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		// A stopped pod of ours (evicted, failed, completed) holds the name:
		// remove exactly that pod, then create again.
		logger.Info("Previous pod of this key has stopped; deleting it", "oldUID", pod.UID, "phase", pod.Status.Phase, "reason", pod.Status.Reason)
		if _, err := a.s.deleteAndConfirm(ctx, pod.Namespace, pod.Name, pod.UID, a.s.opts.DeleteGracePeriod); err != nil {
			return nil, err
		}
		return nil, nil
	case a.s.opts.AdoptRunning:
		logger.Info("Adopting the existing pod", "uid", pod.UID)
		a.setUID(pod.UID)
		a.adopted = true
		return pod, nil
	default:
		return nil, &StartError{Reason: ErrAlreadyRunning, UID: pod.UID, Message: fmt.Sprintf("phase %s", pod.Status.Phase)}
	}
}

// ours: a pod of this spawner instance for this key.
func (a *attempt) ours(pod *corev1.Pod) bool {
	l := pod.Labels
	return l[LabelManagedBy] == ManagedByValue && l[LabelInstance] == a.s.opts.Instance && l[LabelKeyHash] == a.want.Labels[LabelKeyHash]
}

// waitReady waits for the pod to be ready, driven by the cache's
// notifications, with a live GET whenever none arrived for
// FallbackInterval (a stalled watch cannot hide a ready pod).
func (a *attempt) waitReady(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	s := a.s
	notify, unsubscribe := s.opts.Pods.Notify(pod.Namespace, pod.Name)
	defer unsubscribe()

	if s.opts.Events != nil && a.req.Progress != nil && a.progress == nil {
		a.progress = a.forwardProgress(ctx)
		// Only cancel the stream here: start waits for the callback after
		// the cleanup, bounded (a blocked callback cannot block a cleanup).
		defer a.progress.cancel()
	}

	var pullSince time.Time
	for {
		v := classifyPod(pod, s.opts.Clock.Now(), &pullSince, s.opts.ImagePullGrace)
		if v.ready {
			return pod, nil
		}
		if v.reason != nil {
			return nil, &StartError{Reason: v.reason, Message: v.message, UID: pod.UID}
		}
		wait := s.opts.FallbackInterval
		if v.recheck > 0 && v.recheck < wait {
			wait = v.recheck
		}
		t := s.opts.Clock.NewTimer(wait)
		var next *corev1.Pod
		var err error
		select {
		case <-notify:
			next, err = a.observe(ctx, true)
		case <-t.C():
			next, err = a.observe(ctx, false)
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		}
		t.Stop()
		if err != nil {
			return nil, err
		}
		if next != nil {
			pod = next
		}
	}
}

// observe reads the pod. The cache may only say "still there, this is its
// state"; a miss, another UID or a deletion is confirmed by the API server.
// A nil pod and nil error mean: nothing new could be learned (transient API
// error), keep waiting.
func (a *attempt) observe(ctx context.Context, useCache bool) (*corev1.Pod, error) {
	ns, name := a.want.Namespace, a.want.Name
	if useCache {
		pod, _, err := a.s.opts.Pods.Get(ctx, ns, name)
		if err == nil && pod.UID == a.uid && pod.DeletionTimestamp == nil {
			return pod, nil
		}
	}
	pod, err := a.s.opts.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		a.s.decidedAbsent(reflector.SourceAPI)
		return nil, &StartError{Reason: ErrDeletedExternally, Message: "the API server has no such pod"}
	case err != nil:
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		klog.FromContext(ctx).V(2).Info("Live GET failed; will retry", "err", err)
		return nil, nil
	case pod.UID != a.uid:
		a.s.decidedAbsent(reflector.SourceAPI)
		return nil, &StartError{Reason: ErrDeletedExternally, Message: fmt.Sprintf("replaced by pod UID %s", pod.UID)}
	case pod.DeletionTimestamp != nil:
		return nil, &StartError{Reason: ErrDeletedExternally, Message: "pod is being deleted"}
	}
	a.s.opts.Pods.ExpectWrite(pod)
	return pod, nil
}

// progressWait bounds how long Start waits, after the progress stream was
// cancelled (and after any cleanup), for the Progress callback to finish.
// A callback still blocked then is abandoned: Start returns while it runs,
// and it is given no further updates.
const progressWait = 2 * time.Second

// progressForwarder is the goroutine feeding req.Progress.
type progressForwarder struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	abandoned bool
}

// forwardProgress streams this pod's progress to req.Progress from one
// goroutine. cancel ends the stream; waitProgress then waits until the
// callback has seen everything delivered so far, so that Progress is not
// called after Start returns (unless it blocked for longer than
// progressWait and was abandoned).
func (a *attempt) forwardProgress(ctx context.Context) *progressForwarder {
	pctx, cancel := context.WithCancel(ctx)
	p := &progressForwarder{cancel: cancel, done: make(chan struct{})}
	stream, err := a.s.opts.Events.Stream(pctx, events.PodRef{Namespace: a.want.Namespace, Name: a.want.Name, UID: a.uid})
	if err != nil {
		klog.FromContext(ctx).Error(err, "Cannot stream pod events; no progress will be reported")
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		for u := range stream {
			p.mu.Lock()
			abandoned := p.abandoned
			p.mu.Unlock()
			if !abandoned { // once abandoned, only drain the stream
				a.req.Progress(u)
			}
		}
	}()
	return p
}

// waitProgress cancels the progress stream, if any, and waits up to
// progressWait for the callback to return.
func (a *attempt) waitProgress(ctx context.Context) {
	p := a.progress
	if p == nil {
		return
	}
	p.cancel()
	t := a.s.opts.Clock.NewTimer(progressWait)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C():
		p.mu.Lock()
		p.abandoned = true
		p.mu.Unlock()
		klog.FromContext(ctx).Info("Progress callback still blocked; abandoned", "waited", progressWait)
	}
}

// maxSettleWindow caps how long the cleanup of an ambiguous create watches
// for the pod to appear (see settleWindow).
const maxSettleWindow = 30 * time.Second

// settleWindow is how long the cleanup of an ambiguous create keeps looking
// for a pod carrying its start ID: a create stuck in a slow API server can
// still commit after the start gave up on it. It is min(StopTimeout/2, 30s):
// a Stop that cancelled the start waits for this cleanup within its own
// StopTimeout, and needs time left for its DELETE.
func (s *Spawner) settleWindow() time.Duration {
	return min(s.opts.StopTimeout/2, maxSettleWindow)
}

// errCreateUnconfirmed: after an ambiguous create, no pod of this start
// appeared within the settle window; it might still appear later.
var errCreateUnconfirmed = errors.New("create outcome unconfirmed")

// cleanup deletes the pod this start created (or adopted) and waits until
// the API server confirms it gone. deleted reports that this cleanup
// deleted it (false if the API server said it was gone already). It runs on
// fresh contexts, since the caller's may be cancelled already: the delete
// is bounded by StopTimeout; after an ambiguous create, the search for the
// pod first takes up to settleWindow.
func (a *attempt) cleanup(parent context.Context) (deleted bool, err error) {
	s := a.s
	ns, name := a.want.Namespace, a.want.Name
	uid := a.uid
	if uid == "" {
		// A create failed ambiguously: look for a pod carrying our start ID.
		if uid, err = a.findAmbiguous(parent); err != nil {
			return false, err
		}
		a.setUID(uid)
	}
	ctx, cancel := s.withTimeout(context.WithoutCancel(parent), s.opts.StopTimeout, ErrStopTimeout)
	defer cancel()
	var ownedErr error
	if len(a.owned) > 0 {
		// Its objects too, by LabelPodUID (an ambiguous create of one is
		// found as well): the garbage collector may lag or not run.
		var objs []ObjectRef
		objs, ownedErr = s.deleteOwned(ctx, ns, uid)
		for _, o := range objs {
			s.metrics.ownedDeleted.WithLabelValues(o.Kind, "failed_start").Inc()
		}
	}
	klog.FromContext(parent).V(2).Info("Deleting the pod of a failed start", "uid", uid)
	alreadyGone, err := s.deleteAndConfirm(ctx, ns, name, uid, s.opts.DeleteGracePeriod)
	if err != nil {
		return false, errors.Join(err, ownedErr)
	}
	if ownedErr != nil {
		return !alreadyGone, fmt.Errorf("the pod is gone, its objects not all: %w", ownedErr)
	}
	return !alreadyGone, nil
}

// findAmbiguous looks, through the API server, for the pod of an ambiguous
// create (one carrying this start's ID) and returns its UID. A NotFound, or
// the name held by another pod, proves nothing while the create may still
// be in flight in the API server: it keeps looking (on cache notifications
// and every FallbackInterval) for settleWindow, and then fails with
// errCreateUnconfirmed.
func (a *attempt) findAmbiguous(parent context.Context) (types.UID, error) {
	s := a.s
	ns, name := a.want.Namespace, a.want.Name
	window := s.settleWindow()
	ctx, cancel := s.withTimeout(context.WithoutCancel(parent), window, errCreateUnconfirmed)
	defer cancel()
	notify, unsubscribe := s.opts.Pods.Notify(ns, name)
	defer unsubscribe()
	pods := s.opts.Client.CoreV1().Pods(ns)
	last := "no pod"
	for {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil && pod.Annotations[AnnotationStartID] == a.startID:
			return pod.UID, nil
		case err == nil:
			last = fmt.Sprintf("the name is held by pod UID %s of another start", pod.UID)
		case apierrors.IsNotFound(err):
			last = "no pod"
		case ctx.Err() == nil:
			last = fmt.Sprintf("last GET failed: %v", err)
		}
		t := s.opts.Clock.NewTimer(s.opts.FallbackInterval)
		select {
		case <-notify:
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("%w: no pod with start ID %s appeared within %s (%s); it may still be created",
				errCreateUnconfirmed, a.startID, window, last)
		}
		t.Stop()
	}
}

func lastWarnings(evs []*corev1.Event) []*corev1.Event {
	var out []*corev1.Event
	for _, e := range evs {
		if e != nil && e.Type == corev1.EventTypeWarning {
			out = append(out, e)
		}
	}
	if len(out) > maxWarningEvents {
		out = out[len(out)-maxWarningEvents:]
	}
	return out
}
