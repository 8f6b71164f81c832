package main

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/legacy"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// backend is what the simulated hub drives: the 2018 baseline or kubespawn.
type backend interface {
	podName(u userPlan) string
	// start starts the user's server; on error the hub calls stop, exactly
	// as JupyterHub does after a failed spawn.
	start(ctx context.Context, u userPlan) error
	stop(ctx context.Context, u userPlan) error
	// stallInjected tells the backend when the stall began, for detection
	// timing; stallDetected returns when the backend first noticed it (zero
	// if never).
	stallInjected(t time.Time)
	stallDetected() time.Time
	close()
}

// podSpec is the single-user server of every pod (podsim runs nothing).
func podSpec() corev1.PodSpec {
	grace := int64(1)
	return corev1.PodSpec{
		Containers:                    []corev1.Container{{Name: "notebook", Image: "jupyter/base-notebook:2018"}},
		TerminationGracePeriodSeconds: &grace,
	}
}

// hubConfig is the hub's client configuration: no client-side rate limit
// (the Python client had none), so neither run is throttled by client-go.
func hubConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 1000, 2000
	return cfg
}

// ---------------------------------------------------------------------------
// Baseline: the 2018 KubeSpawner replica (internal/legacy).

// legacySelector is KubeSpawner's pod reflector selector.
const legacySelector = "component=singleuser-server"

type baselineBackend struct {
	ns       string
	refl     *legacy.Reflector
	sp       *legacy.Spawner
	cancel   context.CancelFunc
	done     chan struct{}
	startLog klog.Logger
}

// newBaseline starts the replica's reflector through proxied (the run's
// fault proxy) with the 2018 options, and waits for its first list.
func newBaseline(ctx context.Context, proxied *rest.Config, ns string, c Config, logger klog.Logger) (*baselineBackend, error) {
	client, err := kubernetes.NewForConfig(hubConfig(legacy.JSONConfig(proxied)))
	if err != nil {
		return nil, err
	}
	refl := legacy.New(client, legacy.Of2018(ns, legacySelector))
	rctx, cancel := context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), logger))
	b := &baselineBackend{ns: ns, refl: refl, cancel: cancel, done: make(chan struct{}), startLog: logger}
	go func() { defer close(b.done); refl.Run(rctx) }()
	for !refl.Synced() {
		select {
		case <-ctx.Done():
			b.close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	b.sp = legacy.NewSpawner(client, refl, legacy.SpawnerOptions{
		Namespace: ns, StartTimeout: c.StartTimeout, StopTimeout: c.StopTimeout, DeleteGracePeriod: time.Second,
	})
	return b, nil
}

func (b *baselineBackend) podName(u userPlan) string { return "jupyter-" + u.User }

func (b *baselineBackend) start(ctx context.Context, u userPlan) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        b.podName(u),
			Labels:      map[string]string{"component": "singleuser-server", "hub.jupyter.org/username": u.User},
			Annotations: u.annotations(),
		},
		Spec: podSpec(),
	}
	_, err := b.sp.Start(klog.NewContext(ctx, b.startLog), pod)
	return err
}

func (b *baselineBackend) stop(ctx context.Context, u userPlan) error {
	return b.sp.Stop(klog.NewContext(ctx, b.startLog), b.podName(u))
}

func (b *baselineBackend) stallInjected(time.Time)  {}
func (b *baselineBackend) stallDetected() time.Time { return time.Time{} } // nothing notices: that was the incident

func (b *baselineBackend) close() {
	b.cancel()
	<-b.done
}

// ---------------------------------------------------------------------------
// kubespawn: the spawner package on the self-healing reflector.

type kubespawnBackend struct {
	ns     string
	f      *reflector.Factory
	refl   *reflector.PodCache
	sp     *spawner.Spawner
	cancel context.CancelFunc
	done   chan struct{}
	logger klog.Logger

	mu        sync.Mutex
	stallAt   time.Time
	baseGaps  int
	detected  time.Time
	lastState reflector.State
}

// namePrefix of kubespawn's pods.
const namePrefix = "kubespawn"

func newKubespawn(ctx context.Context, proxied *rest.Config, ns string, c Config, logger klog.Logger) (*kubespawnBackend, error) {
	cfg := hubConfig(proxied)
	f, err := reflector.NewFactory(cfg, reflector.Options{StallTimeout: c.StallTimeout, Logger: &logger})
	if err != nil {
		return nil, err
	}
	refl, err := f.Pods(reflector.Scope{Namespaces: []string{ns}, LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
	if err != nil {
		return nil, err
	}
	client := f.Client()
	grace := time.Second
	sp, err := spawner.New(spawner.Options{
		Client:       client,
		Pods:         refl,
		Instance:     "incident-replay",
		NamePrefix:   namePrefix,
		StartTimeout: c.StartTimeout,
		StopTimeout:  c.StopTimeout,
		// Compressed like the start timeout.
		ImagePullGrace:    max(time.Second, c.StartTimeout/5),
		FallbackInterval:  max(time.Second, c.StallTimeout/2),
		DeleteGracePeriod: &grace,
		Logger:            &logger,
	})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.Start(rctx)
	b := &kubespawnBackend{ns: ns, f: f, refl: refl, sp: sp, cancel: cancel, done: make(chan struct{}), logger: logger}
	go b.watchStatus(rctx)
	if err := refl.WaitForSync(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// watchStatus notes when the reflector first reports a stall after the
// stall was injected.
func (b *kubespawnBackend) watchStatus(ctx context.Context) {
	defer close(b.done)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := b.refl.Status()
		gaps := st.Gaps[reflector.GapStall] + st.Gaps[reflector.GapIdle]
		b.mu.Lock()
		if !b.stallAt.IsZero() && b.detected.IsZero() && gaps > b.baseGaps {
			b.detected = time.Now()
		}
		b.lastState = st.State
		b.mu.Unlock()
	}
}

func (b *kubespawnBackend) podName(u userPlan) string {
	name, err := spawner.PodName(namePrefix, u.User)
	if err != nil {
		panic(err) // user names are fixed and valid
	}
	return name
}

func (b *kubespawnBackend) start(ctx context.Context, u userPlan) error {
	spec := podSpec()
	_, err := b.sp.Start(ctx, spawner.Request{Key: u.User, Namespace: b.ns, Annotations: u.annotations(), Spec: &spec})
	return err
}

func (b *kubespawnBackend) stop(ctx context.Context, u userPlan) error {
	return b.sp.Stop(ctx, b.ns, b.podName(u), spawner.StopOptions{})
}

func (b *kubespawnBackend) stallInjected(t time.Time) {
	st := b.refl.Status()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stallAt = t
	b.baseGaps = st.Gaps[reflector.GapStall] + st.Gaps[reflector.GapIdle]
}

func (b *kubespawnBackend) stallDetected() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.detected
}

func (b *kubespawnBackend) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.lastState)
}

func (b *kubespawnBackend) close() {
	b.cancel()
	b.f.Shutdown()
	<-b.done
}
