package spawner

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/pager"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/reflector"
)

// SweepReason says why a sweep selected a pod (SweptPod.Reason, the
// swept_pods_total metric's reason label).
type SweepReason string

// The reasons the spawner's own criteria give; a Select function may give
// others.
const (
	SweepReasonMaxAge SweepReason = "max_age"
	SweepReasonOrphan SweepReason = "orphan"
)

// SweepPolicy selects the spawner's pods to delete. The pods considered
// are the spawner's (LabelManagedBy, and LabelInstance unless
// AllInstances) that also match Selector and NameContains. Of those, a pod
// is selected when it is older than MaxAge, or else, once it is at least
// MinAge old, when Select gives a reason. At least one of MaxAge and
// Select is required. Nothing is deleted unless Delete is true.
//
// Ages run from metadata.creationTimestamp and are measured against the
// API server's clock (read once per sweep): both come from the API server,
// never from a local or a node's clock. A local clock running ahead would
// make young pods look old, and so would a node's clock running behind
// (status.startTime is the kubelet's, so it is not used). A sweep that
// cannot read the server's clock fails.
//
// Every request of a sweep has a deadline: RequestTimeout for the scan (the
// server's clock, each page of the list), StopTimeout per selected pod.
type SweepPolicy struct {
	// Namespace to sweep. Required.
	Namespace string
	// AllInstances sweeps the pods of every spawner instance; by default
	// only those with this spawner's LabelInstance.
	AllInstances bool
	// Selector, if set, narrows the pods considered (it is sent to the API
	// server with the spawner's own labels).
	Selector labels.Selector
	// NameContains, if set, narrows the pods considered to those whose name
	// contains it.
	NameContains string
	// MaxAge selects pods older than this. The age runs from
	// metadata.creationTimestamp, on the API server's clock. Zero disables.
	MaxAge time.Duration
	// Select, if set, is asked about each pod considered that MaxAge did
	// not select and that is at least MinAge old; a non-empty reason
	// selects it (SweepReasonOrphan for a pod the service does not know,
	// say). An error leaves the pod alone. It is asked again, under the
	// pod's lock, just before the delete.
	Select func(ctx context.Context, pod *corev1.Pod) (SweepReason, error)
	// MinAge protects young pods from Select: a pod being started may not
	// be known to the service yet. Default: the spawner's MaxStartTimeout
	// (the longest start it allows), so that no start in progress loses
	// its pod; set it explicitly (at least the longest start timeout in
	// use) when the starting processes are configured differently.
	MinAge time.Duration
	// Delete must be true to delete; otherwise the sweep is a dry run that
	// reports what it would delete.
	Delete bool
	// PageSize of the paginated list. Default 500.
	PageSize int64
	// GracePeriod of the deletes; default Options.DeleteGracePeriod.
	GracePeriod *time.Duration
	// Concurrency of deletes. Default 8.
	Concurrency int
	// ClaimSelect, if set, is asked about each claim of the spawner
	// (LabelManagedBy, LabelInstance unless AllInstances) at least MinAge
	// old; a non-empty reason reports it (SweepResult.Claims, the
	// kubespawn_spawner_unknown_claims gauge): a claim of a key the service
	// does not know, say. Claims hold users' data: reporting is all a
	// sweep does with them unless MaxClaimAge says otherwise.
	ClaimSelect func(ctx context.Context, claim *corev1.PersistentVolumeClaim) (SweepReason, error)
	// MaxClaimAge, if positive, selects for deletion the reported claims of
	// this instance older than it. Each is deleted (with Delete) under its
	// key's name lock, only once the API server says the key has no pod and
	// ClaimSelect, asked again, still reports it, with a UID precondition,
	// and confirmed gone. Zero (the default): claims are never deleted.
	MaxClaimAge time.Duration
	// RequestTimeout bounds each request of the scan: the read of the API
	// server's clock and each page of the list (and each call of Select
	// while scanning), so that one stalled LIST fails the sweep
	// (errors.Is(err, context.DeadlineExceeded)) instead of stopping it for
	// good; the next sweep lists again. The requests for one selected pod
	// are bounded by Options.StopTimeout. Default 1m (the kube-apiserver's
	// own default request timeout).
	RequestTimeout time.Duration
}

// SweptPod is one pod considered by a sweep.
type SweptPod struct {
	Namespace string
	Name      string
	UID       types.UID
	// Key is the pod's user/session key (AnnotationKey).
	Key   string
	Phase corev1.PodPhase
	// Age, on the API server's clock.
	Age time.Duration
	// Reason is why a selected pod was selected, or why a pod was skipped.
	Reason SweepReason
	// Err is set for pods whose deletion failed or that were skipped
	// because of an error.
	Err error
}

// SweepResult says what a sweep found and did.
type SweepResult struct {
	DryRun bool
	// Scanned counts the pods considered.
	Scanned int
	// Selected are the pods the policy selects: to be deleted in a dry run;
	// otherwise those still selected when re-checked under their name lock
	// just before the delete (each one is in Deleted or Failed).
	Selected []SweptPod
	// Deleted are the selected pods deleted and confirmed gone.
	Deleted []SweptPod
	// Failed are selected pods that could not be deleted or confirmed gone.
	Failed []SweptPod
	// Skipped are pods left alone although they might match: terminating
	// already, in use by an operation of this spawner ("busy"), or Select
	// failed; and, when deleting, pods that no longer matched when
	// re-checked ("gone", "replaced", "terminating", "no_longer_selected",
	// "select_failed").
	Skipped []SweptPod
	// Objects are the owned objects (Services, Secrets, ConfigMaps) whose
	// pod the API server no longer has: the garbage collector has not
	// collected them (it lags, or does not run). A sweep with Delete deletes
	// them, whatever their age: their pod is proven gone.
	Objects []SweptObject
	// Claims are the claims ClaimSelect reports; Selected ones (MaxClaimAge)
	// are deleted with Delete.
	Claims []SweptObject
}

const (
	defaultPageSize         = 500
	defaultSweepConcurrency = 8
	defaultRequestTimeout   = time.Minute
)

func (s *Spawner) sweepDefaults(p SweepPolicy) (SweepPolicy, error) {
	var problems []string
	if p.Namespace == "" {
		problems = append(problems, "Namespace is required")
	}
	if p.MaxAge < 0 || p.MinAge < 0 || p.PageSize < 0 || p.Concurrency < 0 || p.RequestTimeout < 0 || p.MaxClaimAge < 0 || (p.GracePeriod != nil && *p.GracePeriod < 0) {
		problems = append(problems, "MaxAge, MinAge, MaxClaimAge, PageSize, Concurrency, RequestTimeout and GracePeriod must not be negative")
	}
	if p.MaxAge == 0 && p.Select == nil {
		problems = append(problems, "set MaxAge, Select or both")
	}
	if p.MaxClaimAge > 0 && p.ClaimSelect == nil {
		problems = append(problems, "MaxClaimAge needs ClaimSelect (which claims are of unknown keys)")
	}
	if len(problems) > 0 {
		return p, fmt.Errorf("%w: sweep policy: %s", ErrInvalidArgument, strings.Join(problems, "; "))
	}
	if p.Selector == nil {
		p.Selector = labels.Everything()
	}
	p.MinAge = cmp.Or(p.MinAge, s.opts.MaxStartTimeout)
	p.PageSize = cmp.Or(p.PageSize, defaultPageSize)
	p.Concurrency = cmp.Or(p.Concurrency, defaultSweepConcurrency)
	if p.GracePeriod == nil {
		p.GracePeriod = s.opts.DeleteGracePeriod
	}
	p.RequestTimeout = cmp.Or(p.RequestTimeout, defaultRequestTimeout)
	return p, nil
}

// Sweep selects the spawner's pods by policy and, if policy.Delete, deletes
// them with UID preconditions and waits for the API server to confirm each
// one gone. Before its delete, each pod is read again from the API server
// under its name lock and the policy applied again (Select is asked a
// second time); pods in use by this spawner are skipped, never waited for. The list is paginated. An empty match is not an error. The error
// joins the failures of individual pods (also in SweepResult.Failed).
func (s *Spawner) Sweep(ctx context.Context, policy SweepPolicy) (SweepResult, error) {
	p, err := s.sweepDefaults(policy)
	if err != nil {
		return SweepResult{}, err
	}
	logger := s.logger(ctx).WithValues("namespace", p.Namespace, "dryRun", !p.Delete)
	ctx = klog.NewContext(ctx, logger)
	mode := "dry_run"
	if p.Delete {
		mode = "delete"
	}
	res, err := s.sweep(ctx, p)
	if err != nil {
		s.metrics.sweeps.WithLabelValues(mode, "error").Inc()
	} else {
		s.metrics.sweeps.WithLabelValues(mode, "ok").Inc()
	}
	logger.Info("Sweep done", "scanned", res.Scanned, "selected", len(res.Selected), "deleted", len(res.Deleted), "failed", len(res.Failed), "skipped", len(res.Skipped),
		"ownerlessObjects", len(res.Objects), "reportedClaims", len(res.Claims))
	return res, err
}

// sweep is one sweep in steps: the server's clock, the scan of the pods,
// the deletion of the pods selected, then what pods leave behind (owned
// objects whose pod is gone, claims of unknown keys).
func (s *Spawner) sweep(ctx context.Context, p SweepPolicy) (SweepResult, error) {
	res := SweepResult{DryRun: !p.Delete}
	clk, err := s.serverClock(ctx, p.RequestTimeout)
	if err != nil {
		return res, err
	}
	if err := s.scanPods(ctx, p, clk.Now(), &res); err != nil {
		return res, fmt.Errorf("spawner: sweep: listing pods in %s: %w", p.Namespace, err)
	}
	if p.Delete && len(res.Selected) > 0 {
		s.deleteSelected(ctx, p, clk, &res)
	}
	var errs []error
	for _, f := range res.Failed {
		errs = append(errs, fmt.Errorf("%s/%s: %w", f.Namespace, f.Name, f.Err))
	}
	if len(errs) > 0 {
		errs = []error{fmt.Errorf("%d of %d deletions failed: %w", len(errs), len(res.Selected), errors.Join(errs...))}
	}

	// Objects after pods: a pod this sweep deleted leaves its objects
	// ownerless, and they go in the same sweep.
	res.Objects, err = s.sweepObjects(ctx, p, clk.Now())
	if err != nil {
		errs = append(errs, err)
	}
	res.Claims, err = s.sweepClaims(ctx, p, clk)
	if err != nil {
		errs = append(errs, err)
	}
	if p.ClaimSelect != nil && err == nil {
		s.metrics.unknownClaims.WithLabelValues(p.Namespace).Set(float64(len(res.Claims)))
	}
	for _, o := range append(slices.Clone(res.Objects), res.Claims...) {
		if o.Err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", o.Kind, o.Namespace, o.Name, o.Err))
		}
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("spawner: sweep: %w", errors.Join(errs...))
	}
	return res, nil
}

// scanPods lists the spawner's pods page by page, each page with its own
// deadline, and sorts them into res.Selected and res.Skipped.
func (s *Spawner) scanPods(ctx context.Context, p SweepPolicy, now time.Time, res *SweepResult) error {
	lp := pager.New(s.boundedPages(p.RequestTimeout, kindAPI(s.opts.Client, kindPod).pages(p.Namespace)))
	lp.PageSize = p.PageSize
	return lp.EachListItem(ctx, metav1.ListOptions{LabelSelector: s.ownSelector(p, true).String()}, func(obj runtime.Object) error {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return nil
		}
		res.Scanned++
		if p.NameContains != "" && !strings.Contains(pod.Name, p.NameContains) {
			return nil
		}
		sp := SweptPod{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Key: pod.Annotations[AnnotationKey], Phase: pod.Status.Phase, Age: podAge(pod, now)}
		switch {
		case pod.DeletionTimestamp != nil:
			sp.Reason = skipTerminating
			res.Skipped = append(res.Skipped, sp)
			return nil
		case s.locks.busy(lockKey(pod.Namespace, pod.Name)):
			sp.Reason = skipBusy
			res.Skipped = append(res.Skipped, sp)
			return nil
		}
		sctx, cancel := s.withTimeout(ctx, p.RequestTimeout, requestDeadline("Select", p.RequestTimeout))
		reason, skip, err := matchPolicy(sctx, p, pod, sp.Age)
		cancel()
		switch {
		case reason != "":
			sp.Reason = reason
			res.Selected = append(res.Selected, sp)
		case skip == skipSelectFailed:
			sp.Reason, sp.Err = skip, err
			res.Skipped = append(res.Skipped, sp)
		}
		return nil
	})
}

// deleteSelected deletes res.Selected, Concurrency at a time. What the
// list said may be stale by now (a Start may have adopted the pod, the
// service may know it now): each candidate is re-checked under its name
// lock before it is deleted (sweepOne), and skipped if it no longer
// matches. Afterwards Selected keeps the pods deletion was attempted for,
// each in Deleted or Failed.
func (s *Spawner) deleteSelected(ctx context.Context, p SweepPolicy, clk clock.PassiveClock, res *SweepResult) {
	type outcome struct {
		sp   SweptPod
		skip SweepReason
	}
	candidates := res.Selected
	outcomes := make([]outcome, len(candidates))
	var wg sync.WaitGroup
	sem := make(chan struct{}, p.Concurrency)
	for i, sp := range candidates {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sp, skip, err := s.sweepOne(ctx, p, clk, sp)
			if err != nil && skip == "" {
				sp.Err = err
			}
			outcomes[i] = outcome{sp: sp, skip: skip}
		}()
	}
	wg.Wait()
	res.Selected = nil
	for _, o := range outcomes {
		switch {
		case o.skip != "":
			o.sp.Reason = o.skip
			res.Skipped = append(res.Skipped, o.sp)
		case o.sp.Err != nil:
			res.Selected = append(res.Selected, o.sp)
			res.Failed = append(res.Failed, o.sp)
		default:
			res.Selected = append(res.Selected, o.sp)
			res.Deleted = append(res.Deleted, o.sp)
			s.metrics.swept.WithLabelValues(string(o.sp.Reason)).Inc()
		}
	}
}

// Reasons a pod is skipped (SweptPod.Reason).
const (
	skipBusy         SweepReason = "busy"
	skipGone         SweepReason = "gone"
	skipReplaced     SweepReason = "replaced"
	skipTerminating  SweepReason = "terminating"
	skipNotSelected  SweepReason = "no_longer_selected"
	skipSelectFailed SweepReason = "select_failed"
)

// matchPolicy applies p to pod: reason is set when the pod is selected;
// otherwise skip may say why (skipSelectFailed, with Select's error).
func matchPolicy(ctx context.Context, p SweepPolicy, pod *corev1.Pod, age time.Duration) (reason, skip SweepReason, err error) {
	switch {
	case p.MaxAge > 0 && age > p.MaxAge:
		return SweepReasonMaxAge, "", nil
	case p.Select != nil && age >= p.MinAge:
		reason, err := p.Select(ctx, pod)
		if err != nil {
			return "", skipSelectFailed, err
		}
		return reason, "", nil
	}
	return "", "", nil
}

// sweepOne deletes one selected pod under its name lock (so it never races
// a Start or Stop of this process), with its UID as precondition. A pod
// whose lock is taken is skipped, never waited for. Under the lock the pod
// is read again from the API server and the policy re-applied: a pod gone,
// replaced (another UID), terminating or no longer selected is skipped (the
// skip reason is returned, with Select's error for skipSelectFailed).
func (s *Spawner) sweepOne(ctx context.Context, p SweepPolicy, clk clock.PassiveClock, sp SweptPod) (SweptPod, SweepReason, error) {
	unlock, ok := s.locks.tryLock(lockKey(sp.Namespace, sp.Name))
	if !ok {
		return sp, skipBusy, nil
	}
	defer unlock()
	tctx, cancel := s.withTimeout(ctx, s.opts.StopTimeout, ErrStopTimeout)
	defer cancel()
	pod, err := s.liveGet(tctx, sp.Namespace, sp.Name)
	switch {
	case apierrors.IsNotFound(err):
		s.decidedAbsent(reflector.SourceAPI)
		return sp, skipGone, nil
	case err != nil:
		return sp, "", fmt.Errorf("re-reading the pod: %w", err)
	case pod.UID != sp.UID:
		return sp, skipReplaced, nil
	case pod.DeletionTimestamp != nil:
		return sp, skipTerminating, nil
	}
	sp.Age, sp.Phase = podAge(pod, clk.Now()), pod.Status.Phase
	reason, skip, err := matchPolicy(tctx, p, pod, sp.Age)
	if reason == "" {
		if skip == "" {
			skip = skipNotSelected
		}
		sp.Err = err
		return sp, skip, err
	}
	sp.Reason = reason
	if _, err := s.deleteAndConfirm(tctx, sp.Namespace, sp.Name, sp.UID, p.GracePeriod); err != nil {
		return sp, "", err
	}
	s.forgetEvents(sp.UID)
	klog.FromContext(ctx).Info("Swept pod", "pod", klog.KRef(sp.Namespace, sp.Name), "uid", sp.UID, "reason", sp.Reason, "age", sp.Age.Round(time.Second), "key", sp.Key)
	return sp, "", nil
}

// podAge runs from creationTimestamp, which the API server sets with its
// own clock; now is on that clock too (serverClock). status.startTime is
// not used: the kubelet writes it with its node's clock, and a node clock
// running behind would make a pod seconds old look hours old, past MinAge.
func podAge(pod *corev1.Pod, now time.Time) time.Duration {
	start := pod.CreationTimestamp.Time
	if start.IsZero() {
		return 0
	}
	return now.Sub(start)
}

// requestDeadline is the cause of a request's deadline: it wraps
// context.DeadlineExceeded and says which request and how long.
func requestDeadline(what string, d time.Duration) error {
	return fmt.Errorf("%w: %s got no answer within %s", context.DeadlineExceeded, what, d)
}

// boundedPages gives each page of pages a deadline of its own, d: a stalled
// LIST would otherwise stop the sweeper for good while its replica keeps
// renewing the Lease.
func (s *Spawner) boundedPages(d time.Duration, pages pager.ListPageFunc) pager.ListPageFunc {
	return func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		rctx, cancel := s.withTimeout(ctx, d, requestDeadline("the list page", d))
		defer cancel()
		list, err := pages(rctx, opts)
		if err != nil {
			return nil, s.ctxErr(rctx, err)
		}
		return list, nil
	}
}

// SweeperOptions configures RunSweeper.
type SweeperOptions struct {
	// Policy of every sweep.
	Policy SweepPolicy
	// Interval between sweeps while leading. Default 10m.
	Interval time.Duration
	// LeaseName and LeaseNamespace name the coordination.k8s.io Lease.
	// Defaults: "kubespawn-sweeper-<Instance>" and Policy.Namespace, so
	// that two services sharing a namespace elect their sweepers apart.
	LeaseName      string
	LeaseNamespace string
	// Identity of this replica in the Lease. Default: hostname plus a
	// random suffix.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are the leader election
	// timings. Defaults 15s, 10s, 2s. Every Lease request is bounded by
	// RenewDeadline, while acquiring the Lease too.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// OnSweep, if set, is called after each sweep with its result.
	OnSweep func(SweepResult, error)
}

// RunSweeper sweeps every Interval while this replica holds the Lease, so
// that several replicas never sweep at once. It returns when ctx ends or
// the Spawner is closed (nil), or at once for invalid options or a closed
// Spawner (ErrClosed). Leadership lost is retried.
func (s *Spawner) RunSweeper(ctx context.Context, opts SweeperOptions) error {
	if _, err := s.sweepDefaults(opts.Policy); err != nil {
		return err
	}
	ctx, done, err := s.run(ctx)
	if err != nil {
		return err
	}
	defer done()
	if opts.Interval < 0 {
		return fmt.Errorf("%w: sweeper: negative Interval", ErrInvalidArgument)
	}
	opts.Interval = cmp.Or(opts.Interval, 10*time.Minute)
	if opts.LeaseName == "" {
		opts.LeaseName = "kubespawn-sweeper-" + s.opts.Instance
	}
	if opts.LeaseNamespace == "" {
		opts.LeaseNamespace = opts.Policy.Namespace
	}
	if opts.Identity == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		opts.Identity = host + "-" + hex.EncodeToString(b[:])
	}
	opts.LeaseDuration = cmp.Or(opts.LeaseDuration, 15*time.Second)
	opts.RenewDeadline = cmp.Or(opts.RenewDeadline, 10*time.Second)
	opts.RetryPeriod = cmp.Or(opts.RetryPeriod, 2*time.Second)
	logger := s.logger(ctx).WithValues("lease", klog.KRef(opts.LeaseNamespace, opts.LeaseName), "identity", opts.Identity)
	ctx = klog.NewContext(ctx, logger)

	// term serialises sweeping across leadership terms: a sweep of a lost
	// term ends (its context is cancelled) before the next term sweeps.
	var term sync.Mutex
	cfg := leaderelection.LeaderElectionConfig{
		Lock: deadlineLock{Interface: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: opts.LeaseName, Namespace: opts.LeaseNamespace},
			Client:     s.opts.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: opts.Identity},
		}, timeout: opts.RenewDeadline},
		LeaseDuration:   opts.LeaseDuration,
		RenewDeadline:   opts.RenewDeadline,
		RetryPeriod:     opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            "kubespawn-sweeper",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				term.Lock()
				defer term.Unlock()
				if lctx.Err() != nil {
					return // the term ended before it began
				}
				logger.Info("Leading: sweeping", "interval", opts.Interval)
				s.sweepLoop(lctx, opts)
			},
			OnStoppedLeading: func() { logger.Info("Not leading") },
		},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(cfg)
		if err != nil {
			return fmt.Errorf("%w: sweeper: %v", ErrInvalidArgument, err)
		}
		le.Run(ctx)
	}
	term.Lock() // wait for the last term's sweep to end
	term.Unlock()
	return nil
}

func (s *Spawner) sweepLoop(ctx context.Context, opts SweeperOptions) {
	t := s.opts.Clock.NewTicker(opts.Interval)
	defer t.Stop()
	for {
		res, err := s.Sweep(ctx, opts.Policy)
		if err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "Sweep failed")
		}
		if opts.OnSweep != nil {
			opts.OnSweep(res, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// deadlineLock bounds every Lease request by timeout. client-go's leader
// election bounds renewals by RenewDeadline, but sends the requests that
// acquire the Lease on the caller's context: one stalled GET would keep the
// replica from ever leading. The leader election runs on the real clock, and
// so do these deadlines.
type deadlineLock struct {
	resourcelock.Interface
	timeout time.Duration
}

func (l deadlineLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Interface.Get(ctx)
}

func (l deadlineLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Interface.Create(ctx, ler)
}

func (l deadlineLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Interface.Update(ctx, ler)
}
