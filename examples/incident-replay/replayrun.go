package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
)

// newBackendFunc builds one run's backend on the run's proxied config.
type newBackendFunc func(ctx context.Context, proxied *rest.Config, ns string, logger klog.Logger) (backend, error)

// replayRun is one replay of the schedule against one backend, in its own
// namespace, behind its own fault proxy. Its steps, in order: setup, the
// observers (sampler, progress, stall detection), the stall, the hub, the
// settling of deletions in flight, the result.
type replayRun struct {
	name, label string
	c           Config
	plans       []userPlan
	direct      kubernetes.Interface

	ns    string
	proxy *faultproxy.Proxy
	be    backend
	rec   *logRecorder
	start time.Time // the run's clock

	launches, started, failed, stopped atomic.Int64
	podsNow                            atomic.Int64

	mu      sync.Mutex
	running map[string]bool // pod names the hub believes running
	series  []sample

	beforeStall struct {
		sync.Mutex
		requests, bytes int64
	}
}

// runOne plays plans against one backend and returns what it left behind.
func runOne(ctx context.Context, cfg *rest.Config, direct kubernetes.Interface, name, label string,
	newBackend newBackendFunc, plans []userPlan, c Config) (RunResult, error) {
	r := &replayRun{name: name, label: label, c: c, plans: plans, direct: direct, running: map[string]bool{}}
	if err := r.setup(ctx, cfg, newBackend); err != nil {
		return RunResult{Name: name, Label: label, StallAt: c.StallAt}, err
	}
	defer r.proxy.Close()
	defer r.be.close()

	r.start = time.Now()
	r.rec.setStart(r.start)
	stopObservers := r.observe(ctx)
	stallTimer := time.AfterFunc(c.StallAt, r.stall)
	defer stallTimer.Stop()

	r.playHub(ctx)
	if err := ctx.Err(); err != nil {
		stopObservers()
		return RunResult{Name: name, Label: label, StallAt: c.StallAt}, err
	}
	left, err := r.settle(ctx)
	stopObservers()
	if err != nil {
		return RunResult{Name: name, Label: label, StallAt: c.StallAt}, err
	}
	return r.result(left), nil
}

// setup creates the run's namespace (a generated name: a second replay on
// the same cluster must not meet the first one's, which stays Terminating
// with no namespace controller), its proxy, log recorder and backend.
func (r *replayRun) setup(ctx context.Context, cfg *rest.Config, newBackend newBackendFunc) error {
	created, err := r.direct.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: r.c.NamespacePrefix + r.name + "-"}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating namespace %s…: %w", r.c.NamespacePrefix+r.name, err)
	}
	r.ns = created.Name
	if r.proxy, err = faultproxy.New(cfg, faultproxy.Options{}); err != nil {
		return err
	}
	fmt.Fprintf(r.c.Progress, "\n=== %s (namespace %s, %d users over %s, watch stall at t=%s, start timeout %s)\n",
		strings.ToUpper(r.label[:1])+r.label[1:], r.ns, len(r.plans), r.c.Duration, r.c.StallAt, r.c.StartTimeout)
	r.rec = newLogRecorder(time.Now())
	// The log lines of each kind the report shows.
	keep := func(msg string) bool {
		return msg == "Restarting watch" || msg == "Reflector degraded" || strings.Contains(msg, "sweeper")
	}
	if r.name == "baseline" {
		keep = func(msg string) bool { return strings.HasPrefix(msg, "No pod ") || strings.Contains(msg, "giving up") }
	}
	r.be, err = newBackend(ctx, r.proxy.ClientConfig(cfg), r.ns, newRecordingLogger(r.rec, keep))
	if err != nil {
		r.proxy.Close()
		return err
	}
	return nil
}

func (r *replayRun) elapsed() float64 { return time.Since(r.start).Seconds() }

func (r *replayRun) hubLog(pod string, err error) {
	text := err.Error()
	r.rec.add(strings.ReplaceAll(text, pod, "X"), text)
}

// sample counts the pods on the server, with the direct client.
func (r *replayRun) sample(ctx context.Context) {
	list, err := r.direct.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return
	}
	r.podsNow.Store(int64(len(list.Items)))
	r.mu.Lock()
	r.series = append(r.series, sample{T: r.elapsed(), Pods: len(list.Items), Running: len(r.running)})
	r.mu.Unlock()
}

func (r *replayRun) printProgress() {
	extra := ""
	if kb, ok := r.be.(*kubespawnBackend); ok {
		extra = "  reflector " + kb.state()
	}
	r.mu.Lock()
	running := len(r.running)
	r.mu.Unlock()
	fmt.Fprintf(r.c.Progress, "[%-9s t=%3.0fs] launches %3d/%d  running %3d  failed %3d  pods on server %3d%s\n",
		r.name, r.elapsed(), r.launches.Load(), len(r.plans), running, r.failed.Load(), r.podsNow.Load(), extra)
}

// observe starts the sampler (every second), the progress lines and the
// stall detection report; the returned func stops them, takes a last
// sample and prints a last progress line.
func (r *replayRun) observe(ctx context.Context) (stop func()) {
	sampleCtx, stopSampling := context.WithCancel(ctx)
	progressCtx, stopProgress := context.WithCancel(ctx)
	var sampler, observers sync.WaitGroup
	sampler.Go(func() { wait.UntilWithContext(sampleCtx, r.sample, time.Second) })
	observers.Go(func() {
		wait.UntilWithContext(progressCtx, func(context.Context) { r.printProgress() }, r.c.ProgressInterval)
	})
	observers.Go(func() {
		// Reports the detection once, checking every 100 ms.
		_ = wait.PollUntilContextCancel(progressCtx, 100*time.Millisecond, false, func(context.Context) (bool, error) {
			d := r.be.stallDetected()
			if d.IsZero() {
				return false, nil
			}
			fmt.Fprintf(r.c.Progress, "[%-9s t=%3.0fs] >>> stall detected by the reflector %.1fs after it began: relisting, readers fall back to the API server\n",
				r.name, d.Sub(r.start).Seconds(), d.Sub(r.start).Seconds()-r.c.StallAt.Seconds())
			return true, nil
		})
	})
	return func() {
		stopProgress()
		observers.Wait()
		if ctx.Err() == nil {
			r.sample(ctx)
			r.printProgress()
		}
		stopSampling()
		sampler.Wait()
	}
}

// stall silences every pod watch through this run's proxy, open or new,
// with connections open. Nobody lifts it.
func (r *replayRun) stall() {
	r.beforeStall.Lock()
	for _, ctr := range r.proxy.Stats() {
		r.beforeStall.requests += ctr.Requests
		r.beforeStall.bytes += ctr.ResponseBytes
	}
	r.beforeStall.Unlock()
	r.proxy.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	r.be.stallInjected(time.Now())
	fmt.Fprintf(r.c.Progress, "[%-9s t=%3.0fs] >>> the pod watch goes silent (TCP open, no bytes), and stays so until the end of the run\n", r.name, r.elapsed())
}

// playHub plays the hub: one goroutine per user, each launching at its
// time and stopping after its session, as JupyterHub would.
func (r *replayRun) playHub(ctx context.Context) {
	var wg sync.WaitGroup
	for _, u := range r.plans {
		wg.Go(func() { r.user(ctx, u) })
	}
	wg.Wait()
}

func (r *replayRun) user(ctx context.Context, u userPlan) {
	if !sleepCtx(ctx, time.Until(r.start.Add(u.LaunchAt))) {
		return
	}
	pod := r.be.podName(u)
	r.launches.Add(1)
	if err := r.be.start(ctx, u); err != nil {
		r.failed.Add(1)
		r.hubLog(pod, err)
		// JupyterHub aborts a failed spawn by calling stop().
		if err := r.be.stop(ctx, u); err != nil {
			r.hubLog(pod, err)
		}
		return
	}
	r.started.Add(1)
	r.setRunning(pod, true)
	if u.StopAfter <= 0 || !sleepCtx(ctx, u.StopAfter) {
		return
	}
	r.setRunning(pod, false) // the hub marks the server stopped, whatever stop() says
	r.stopped.Add(1)
	if err := r.be.stop(ctx, u); err != nil {
		r.hubLog(pod, err)
	}
}

func (r *replayRun) setRunning(pod string, running bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if running {
		r.running[pod] = true
	} else {
		delete(r.running, pod)
	}
}

// sleepCtx sleeps d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// settle lets deletions in flight finish (the simulated kubelet needs up
// to the 1 s grace period, 10 s at most) and returns the pods left on the
// server that are not being deleted.
func (r *replayRun) settle(ctx context.Context) ([]corev1.Pod, error) {
	var left []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := r.direct.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		terminating := 0
		left = left[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				terminating++
			} else {
				left = append(left, p)
			}
		}
		return terminating == 0, nil
	})
	if wait.Interrupted(err) && ctx.Err() == nil {
		err = nil // still terminating after 10 s: counted as they are
	}
	return left, err
}

// result: a leaked pod is one on the server that the hub does not believe
// running.
func (r *replayRun) result(left []corev1.Pod) RunResult {
	res := RunResult{Name: r.name, Label: r.label, StallAt: r.c.StallAt}
	r.mu.Lock()
	for _, p := range left {
		if !r.running[p.Name] {
			res.LeakedPods = append(res.LeakedPods, p.Name)
		}
	}
	res.Running = len(r.running)
	res.Series = r.series
	r.mu.Unlock()
	slices.Sort(res.LeakedPods)
	res.Leaked = len(res.LeakedPods)
	res.PodsOnServer = len(left)
	res.Launches, res.Started, res.Failed = int(r.launches.Load()), int(r.started.Load()), int(r.failed.Load())
	res.StoppedByUsers = int(r.stopped.Load())
	if d := r.be.stallDetected(); !d.IsZero() {
		after := d.Sub(r.start) - r.c.StallAt
		res.StallDetectedAfter = &after
	}
	for _, ctr := range r.proxy.Stats() {
		res.APIRequests += ctr.Requests
		res.APIBytes += ctr.ResponseBytes
	}
	r.beforeStall.Lock()
	res.APIRequestsBeforeStall, res.APIBytesBeforeStall = r.beforeStall.requests, r.beforeStall.bytes
	r.beforeStall.Unlock()
	res.Log = r.rec.lines()
	res.Elapsed = time.Since(r.start)
	return res
}
