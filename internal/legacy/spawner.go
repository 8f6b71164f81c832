package legacy

// This file is the BASELINE of the incident replay: a Go replica of the
// start and stop logic of JupyterHub's KubeSpawner as it was in July 2018,
// bugs included. It exists so that examples/incident-replay can show what
// kubespawn fixes. Never use it for anything else.
//
// What it replicates (kubespawner/spawner.py, mid-2018):
//
//   - start() creates the pod, then waits for it in the pod reflector's
//     cache ONLY, checking the cache about once a second, until the cached
//     pod is Running, has a pod IP, is not being deleted and has every
//     container ready, or until start_timeout:
//     TimeoutError("pod/X did not start in N seconds!"). It does NOT delete
//     the pod on timeout: JupyterHub, on a failed start, calls stop().
//   - stop() looks the pod up in the cache; if it is not there it logs
//     "No pod X to delete. Assuming already deleted." and returns WITHOUT
//     sending a DELETE. That is the compounding bug of 2018: with a frozen
//     cache, every pod created after the freeze "was never created" as far
//     as stop() could tell, so every aborted start leaked its pod. Otherwise
//     it sends DELETE with a 1 s grace period and waits, again in the cache
//     only, for the pod to disappear:
//     TimeoutError("pod/X did not disappear in N seconds!"). KubeSpawner
//     reused start_timeout for that wait (issue #253).
//   - StartWith adds what KubeSpawner creates beside the pod (Extras): the
//     user's claim before it (storage_pvc_ensure; 2018 too: create, and a
//     409 AlreadyExists means it is there, fine) and, as later versions do
//     with services_enabled and internal_ssl, a Secret and a Service once
//     the pod has a UID in the cache (it waits for one there, bounded by
//     the start timeout: "pod/X does not have a uid!"), each with an
//     ownerReference to that UID, after deleting any of the name
//     (_ensure_not_exists). If that fails, it calls stop itself (which
//     trusts the cache, as ever) and fails. Stop deletes the pod only: the
//     garbage collector is to delete the rest.
//
// kubespawn's spawner package is the fix: it always sends DELETE, proves
// absence with the API server, deletes the pod of a failed start itself and
// never waits on the cache alone.

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// PodCache is what the replica reads pods from: the cache only, by name.
// *Reflector implements it.
type PodCache interface {
	Get(name string) (*corev1.Pod, bool)
}

var _ PodCache = (*Reflector)(nil)

// SpawnerOptions are KubeSpawner's knobs that matter here.
type SpawnerOptions struct {
	// Namespace of the pods.
	Namespace string
	// StartTimeout is KubeSpawner's start_timeout (default 60s; mybinder
	// ran with 300s in 2018).
	StartTimeout time.Duration
	// StopTimeout bounds the wait for a deleted pod to leave the cache.
	// Default: StartTimeout, as KubeSpawner did.
	StopTimeout time.Duration
	// PollInterval is how often the cache is checked. Default 1s.
	PollInterval time.Duration
	// DeleteGracePeriod of the DELETE (KubeSpawner 2018: 1s).
	DeleteGracePeriod time.Duration
}

// Spawner is the 2018 replica. It is safe for concurrent use by many
// "users" (one pod name each), as KubeSpawner's per-user spawners sharing
// one reflector were.
type Spawner struct {
	client kubernetes.Interface
	cache  PodCache
	opts   SpawnerOptions

	skippedDeletes atomic.Int64
	deletes        atomic.Int64
}

// NewSpawner returns a replica that creates and deletes pods with client
// and reads them from cache.
func NewSpawner(client kubernetes.Interface, cache PodCache, opts SpawnerOptions) *Spawner {
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = opts.StartTimeout
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.DeleteGracePeriod <= 0 {
		opts.DeleteGracePeriod = time.Second
	}
	return &Spawner{client: client, cache: cache, opts: opts}
}

// TimeoutError is KubeSpawner's (tornado's) TimeoutError from
// exponential_backoff, with its message.
type TimeoutError struct {
	Pod string
	// Op is "start", "uid" (no UID in the cache for the owner references)
	// or "disappear".
	Op      string
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	switch e.Op {
	case "uid":
		return fmt.Sprintf("TimeoutError: pod/%s does not have a uid!", e.Pod)
	case "disappear":
		return fmt.Sprintf("TimeoutError: pod/%s did not disappear in %d seconds!", e.Pod, int(e.Timeout.Seconds()))
	}
	return fmt.Sprintf("TimeoutError: pod/%s did not start in %d seconds!", e.Pod, int(e.Timeout.Seconds()))
}

// SkippedDeletes counts the stops that sent no DELETE because the pod was
// not in the cache ("No pod X to delete. Assuming already deleted.").
func (s *Spawner) SkippedDeletes() int64 { return s.skippedDeletes.Load() }

// Deletes counts the DELETEs sent.
func (s *Spawner) Deletes() int64 { return s.deletes.Load() }

// IsPodRunning is KubeSpawner's is_pod_running: Running, with an IP, not
// being deleted, every container ready.
func IsPodRunning(pod *corev1.Pod) bool {
	if pod == nil || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return false
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if !cs.Ready {
			return false
		}
	}
	return true
}

// Start creates pod (its namespace is forced to Options.Namespace) and waits
// for it in the cache until it runs or the start timeout passes. On timeout
// it returns a *TimeoutError and leaves the pod alone: the caller, like
// JupyterHub, is expected to call Stop. It returns the running pod as
// cached.
func (s *Spawner) Start(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	return s.StartWith(ctx, pod, Extras{})
}

// Extras are what KubeSpawner creates beside a user's pod. Their
// namespaces are forced to Options.Namespace.
type Extras struct {
	// Claim, if set, is created before the pod (storage_pvc_ensure): a 409
	// AlreadyExists is taken for "it is there"; any other error fails the
	// start before the pod is created. Nothing here ever deletes it.
	Claim *corev1.PersistentVolumeClaim
	// Secret (internal_ssl) and Service (services_enabled), if set, are
	// created in that order once the pod has a UID in the cache, with an
	// ownerReference to it; one of the name already there (an earlier
	// pod's: Stop leaves them to the garbage collector) is deleted first.
	// A Service without a selector selects the pod's labels. If the UID
	// does not show up in time, or a create fails, StartWith calls Stop
	// (cache-only: a pod the cache lacks stays) and fails.
	Secret  *corev1.Secret
	Service *corev1.Service
}

// StartWith is Start with x: the claim first, then the pod, then the
// owned objects, then the wait for the pod to run. The waits for the UID
// and for the pod running share one start timeout from the pod's create.
func (s *Spawner) StartWith(ctx context.Context, pod *corev1.Pod, x Extras) (*corev1.Pod, error) {
	logger := klog.FromContext(ctx)
	ns := s.opts.Namespace
	if x.Claim != nil {
		claim := x.Claim.DeepCopy()
		claim.Namespace = ns
		logger.V(2).Info("Attempting to create pvc", "pvc", claim.Name)
		if _, err := s.client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
			if !apierrors.IsAlreadyExists(err) {
				return nil, err
			}
			logger.V(2).Info("PVC "+claim.Name+" already exists, so did not create new pvc.", "pvc", claim.Name)
		}
	}
	pod = pod.DeepCopy()
	pod.Namespace = ns
	logger.V(2).Info("Attempting to create pod", "pod", pod.Name)
	if _, err := s.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(s.opts.StartTimeout)
	if x.Secret != nil || x.Service != nil {
		if err := s.createOwned(ctx, pod, x, deadline); err != nil {
			// KubeSpawner: "cleanup on failure and re-raise", with its
			// stop, which trusts the cache. (A cancellation is no
			// Exception there: no cleanup.)
			if ctx.Err() == nil {
				_ = s.Stop(ctx, pod.Name)
			}
			return nil, err
		}
	}
	var running *corev1.Pod
	err := s.waitCache(ctx, time.Until(deadline), func() bool {
		p, ok := s.cache.Get(pod.Name)
		if ok && IsPodRunning(p) {
			running = p
			return true
		}
		return false
	})
	if err != nil {
		if err == errTimeout {
			return nil, &TimeoutError{Pod: pod.Name, Op: "start", Timeout: s.opts.StartTimeout}
		}
		return nil, err
	}
	return running, nil
}

// Stop is the 2018 stop(): it trusts the cache to decide whether there is
// anything to delete.
func (s *Spawner) Stop(ctx context.Context, name string) error {
	logger := klog.FromContext(ctx)
	if _, ok := s.cache.Get(name); !ok {
		// THE BUG: the cache is taken as proof that the pod does not exist.
		s.skippedDeletes.Add(1)
		logger.Info(fmt.Sprintf("No pod %s to delete. Assuming already deleted.", name), "pod", name)
		return nil
	}
	grace := int64(s.opts.DeleteGracePeriod / time.Second)
	logger.V(2).Info("Deleting pod", "pod", name)
	s.deletes.Add(1)
	err := s.client.CoreV1().Pods(s.opts.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	if err != nil {
		return err
	}
	err = s.waitCache(ctx, s.opts.StopTimeout, func() bool {
		_, ok := s.cache.Get(name)
		return !ok
	})
	if err == errTimeout {
		return &TimeoutError{Pod: name, Op: "disappear", Timeout: s.opts.StopTimeout}
	}
	return err
}

// createOwned creates x's Secret and Service for pod once the cache has
// its UID for their owner reference.
func (s *Spawner) createOwned(ctx context.Context, pod *corev1.Pod, x Extras, deadline time.Time) error {
	ns := s.opts.Namespace
	var uid types.UID
	err := s.waitCache(ctx, time.Until(deadline), func() bool {
		p, ok := s.cache.Get(pod.Name)
		if ok && p.UID != "" {
			uid = p.UID
			return true
		}
		return false
	})
	if err == errTimeout {
		return &TimeoutError{Pod: pod.Name, Op: "uid", Timeout: s.opts.StartTimeout}
	}
	if err != nil {
		return err
	}
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: uid}}
	if x.Secret != nil {
		sec := x.Secret.DeepCopy()
		sec.Namespace, sec.OwnerReferences = ns, owner
		api := s.client.CoreV1().Secrets(ns)
		if err := s.replace(ctx, deadline, "secret", sec.Name,
			func() error { _, err := api.Create(ctx, sec, metav1.CreateOptions{}); return err },
			func() error { return api.Delete(ctx, sec.Name, metav1.DeleteOptions{}) },
			func() error { _, err := api.Get(ctx, sec.Name, metav1.GetOptions{}); return err },
		); err != nil {
			return err
		}
	}
	if x.Service != nil {
		svc := x.Service.DeepCopy()
		svc.Namespace, svc.OwnerReferences = ns, owner
		if len(svc.Spec.Selector) == 0 {
			svc.Spec.Selector = pod.Labels
		}
		api := s.client.CoreV1().Services(ns)
		if err := s.replace(ctx, deadline, "service", svc.Name,
			func() error { _, err := api.Create(ctx, svc, metav1.CreateOptions{}); return err },
			func() error { return api.Delete(ctx, svc.Name, metav1.DeleteOptions{}) },
			func() error { _, err := api.Get(ctx, svc.Name, metav1.GetOptions{}); return err },
		); err != nil {
			return err
		}
	}
	return nil
}

// replace is KubeSpawner's _ensure_not_exists (delete by name, then read
// until the 404), then _make_create_resource_request (create; a 409
// ensures it does not exist again and retries), until deadline. Errors
// of the delete and the read are retried; of the create, returned.
func (s *Spawner) replace(ctx context.Context, deadline time.Time, kind, name string, create, del, get func() error) error {
	logger := klog.FromContext(ctx)
	for {
		err := s.waitCache(ctx, time.Until(deadline), func() bool {
			logger.V(2).Info(fmt.Sprintf("Deleting %s/%s", kind, name))
			if err := del(); apierrors.IsNotFound(err) {
				return true
			} else if err != nil {
				return false
			}
			return apierrors.IsNotFound(get())
		})
		if err == errTimeout {
			return fmt.Errorf("TimeoutError: Failed to delete %s %s", kind, name)
		}
		if err != nil {
			return err
		}
		logger.V(2).Info("Attempting to create "+kind, "name", name)
		err = create()
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		logger.Info(fmt.Sprintf("Found existing %s %s, attempting to kill", kind, name))
	}
}

type timeoutSentinel struct{}

func (timeoutSentinel) Error() string { return "timeout" }

var errTimeout error = timeoutSentinel{}

// waitCache checks done every PollInterval until it holds, the timeout
// passes (errTimeout) or ctx ends.
func (s *Spawner) waitCache(ctx context.Context, timeout time.Duration, done func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(s.opts.PollInterval)
	defer tick.Stop()
	for {
		if done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			if done() {
				return nil
			}
			return errTimeout
		case <-tick.C:
		}
	}
}
