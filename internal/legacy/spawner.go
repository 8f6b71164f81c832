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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// Op is "start" or "disappear".
	Op      string
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	verb := "did not start"
	if e.Op == "disappear" {
		verb = "did not disappear"
	}
	return fmt.Sprintf("TimeoutError: pod/%s %s in %d seconds!", e.Pod, verb, int(e.Timeout.Seconds()))
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
	pod = pod.DeepCopy()
	pod.Namespace = s.opts.Namespace
	klog.FromContext(ctx).V(2).Info("Attempting to create pod", "pod", pod.Name)
	if _, err := s.client.CoreV1().Pods(s.opts.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	var running *corev1.Pod
	err := s.waitCache(ctx, s.opts.StartTimeout, func() bool {
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
