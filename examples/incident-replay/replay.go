package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	"github.com/kubespawn/kubespawn/internal/podsim"
)

// Config is the scripted scenario. Times are compressed: the 2018 hub had a
// 300 s start timeout and the stall lasted hours.
type Config struct {
	// Users is the number of launches, spread evenly over Duration.
	Users int
	// Duration is the launch window.
	Duration time.Duration
	// StallAt is when the pod watch goes silent (from the start of the
	// run); it stays silent until the run ends, as in 2018.
	StallAt time.Duration
	// StartTimeout and StopTimeout of both spawners.
	StartTimeout time.Duration
	StopTimeout  time.Duration
	// StallTimeout of kubespawn's reflector.
	StallTimeout time.Duration
	// Seed of the schedule: both runs replay the same one.
	Seed uint64
	// SlowFraction of pods start in 0.6-1.4 x StartTimeout;
	// ImagePullFailureFraction never pull their image; StopFraction of
	// users stop their server after a session.
	SlowFraction             float64
	ImagePullFailureFraction float64
	StopFraction             float64
	// NamespacePrefix is prepended to "baseline-" and "kubespawn-" to make
	// the generated namespace names.
	NamespacePrefix string
	// Progress receives the live progress lines (nil: discarded).
	Progress io.Writer
	// ProgressInterval between progress lines; default 5s.
	ProgressInterval time.Duration
}

// DefaultConfig is the scenario of `make demo`.
func DefaultConfig() Config {
	return Config{
		Users: 200, Duration: 60 * time.Second, StartTimeout: 15 * time.Second, StopTimeout: 10 * time.Second,
		StallTimeout: 5 * time.Second, Seed: 20180707,
		SlowFraction: 0.15, ImagePullFailureFraction: 0.03, StopFraction: 0.3,
		NamespacePrefix: "replay-", ProgressInterval: 5 * time.Second,
	}
}

func (c Config) validate() error {
	var problems []string
	if c.Users < 1 {
		problems = append(problems, "users must be at least 1")
	}
	if c.Duration <= 0 || c.StartTimeout <= 0 || c.StopTimeout <= 0 {
		problems = append(problems, "duration, start timeout and stop timeout must be positive")
	}
	if c.StallAt <= 0 || c.StallAt >= c.Duration {
		problems = append(problems, fmt.Sprintf("the stall (at %s) must happen inside the launch window (0-%s)", c.StallAt, c.Duration))
	}
	if c.StallTimeout < 4*time.Second {
		problems = append(problems, "stall timeout must be at least 4s")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// sample is one point of the pods-on-the-server series.
type sample struct {
	T       float64 `json:"t"`
	Pods    int     `json:"pods"`
	Running int     `json:"running"`
}

type reportLogLine struct {
	AtSeconds float64 `json:"at"`
	Text      string  `json:"text"`
	Count     int     `json:"count"`
}

// RunResult is the outcome of one run.
type RunResult struct {
	Name  string
	Label string
	// Launches, successful and failed starts.
	Launches, Started, Failed int
	// StoppedByUsers counts servers users stopped after a successful start.
	StoppedByUsers int
	// Running is how many servers the hub believes are running at the end.
	Running int
	// PodsOnServer at the end (not being deleted).
	PodsOnServer int
	// Leaked: pods on the server at the end that the hub does not believe
	// are running.
	Leaked     int
	LeakedPods []string
	// StallDetectedAfter is nil if the stall was never detected.
	StallDetectedAfter *time.Duration
	APIRequests        int64
	APIBytes           int64
	// The same, counted up to the moment of the stall.
	APIRequestsBeforeStall int64
	APIBytesBeforeStall    int64
	StallAt                time.Duration
	Elapsed                time.Duration
	Series                 []sample
	Log                    []reportLogLine
}

// Report is the outcome of both runs.
type Report struct {
	Config    Config
	Baseline  RunResult
	Kubespawn RunResult
}

// replay runs the scenario with the baseline, then with kubespawn, on the
// control plane behind cfg (admin, direct). It starts the pod simulator.
func replay(ctx context.Context, cfg *rest.Config, c Config) (*Report, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = 5 * time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	direct := rest.CopyConfig(cfg)
	direct.QPS, direct.Burst = -1, 0 // the simulator writes a lot; never throttle it
	directClient, err := kubernetes.NewForConfig(direct)
	if err != nil {
		return nil, err
	}
	sim, err := podsim.Start(ctx, directClient, podsim.Options{})
	if err != nil {
		return nil, fmt.Errorf("starting the pod simulator: %w", err)
	}
	defer sim.Stop()

	plans := makeSchedule(c)
	rep := &Report{Config: c}
	runs := []struct {
		name, label string
		out         *RunResult
		make        func(ctx context.Context, proxied *rest.Config, ns string, logger klog.Logger) (backend, error)
	}{
		{"baseline", "baseline: KubeSpawner 2018 replica", &rep.Baseline, func(ctx context.Context, p *rest.Config, ns string, l klog.Logger) (backend, error) {
			return newBaseline(ctx, p, ns, c, l)
		}},
		{"kubespawn", "kubespawn: spawner + self-healing reflector", &rep.Kubespawn, func(ctx context.Context, p *rest.Config, ns string, l klog.Logger) (backend, error) {
			return newKubespawn(ctx, p, ns, c, l)
		}},
	}
	for _, r := range runs {
		res, err := runOne(ctx, cfg, directClient, r.name, r.label, r.make, plans, c)
		if err != nil {
			return nil, fmt.Errorf("%s run: %w", r.name, err)
		}
		*r.out = res
	}
	return rep, nil
}

// runOne plays plans against one backend in its own namespace, behind its
// own fault proxy.
func runOne(ctx context.Context, cfg *rest.Config, direct kubernetes.Interface, name, label string,
	newBackend func(context.Context, *rest.Config, string, klog.Logger) (backend, error), plans []userPlan, c Config) (RunResult, error) {
	res := RunResult{Name: name, Label: label, StallAt: c.StallAt}
	// A generated name: a second replay on the same cluster must not meet
	// the first one's namespace (a test cluster has no namespace
	// controller, so it stays Terminating).
	created, err := direct.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: c.NamespacePrefix + name + "-"}}, metav1.CreateOptions{})
	if err != nil {
		return res, fmt.Errorf("creating namespace %s…: %w", c.NamespacePrefix+name, err)
	}
	ns := created.Name
	proxy, err := faultproxy.New(cfg, faultproxy.Options{})
	if err != nil {
		return res, err
	}
	defer proxy.Close()

	fmt.Fprintf(c.Progress, "\n=== %s (namespace %s, %d users over %s, watch stall at t=%s, start timeout %s)\n",
		strings.ToUpper(label[:1])+label[1:], ns, len(plans), c.Duration, c.StallAt, c.StartTimeout)
	rec := newLogRecorder(time.Now())
	var logger klog.Logger
	if name == "baseline" {
		logger = newRecordingLogger(rec, func(msg string) bool { return strings.HasPrefix(msg, "No pod ") || strings.Contains(msg, "giving up") })
	} else {
		logger = newRecordingLogger(rec, func(msg string) bool {
			return msg == "Restarting watch" || msg == "Reflector degraded" || strings.Contains(msg, "sweeper")
		})
	}
	be, err := newBackend(ctx, proxy.ClientConfig(cfg), ns, logger)
	if err != nil {
		return res, err
	}
	defer be.close()

	// The run's clock starts now.
	start := time.Now()
	rec.setStart(start)
	var (
		launches, started, failed, stopped atomic.Int64
		mu                                 sync.Mutex
		running                            = map[string]bool{} // pod names the hub believes running
		series                             []sample
		podsNow                            atomic.Int64
	)
	runningCount := func() int { mu.Lock(); defer mu.Unlock(); return len(running) }
	hubLog := func(pod string, err error) {
		text := err.Error()
		rec.add(strings.ReplaceAll(text, pod, "X"), text)
	}

	// Count pods on the server every second, with the direct client.
	sampleCtx, stopSampling := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	takeSample := func() {
		list, err := direct.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return
		}
		podsNow.Store(int64(len(list.Items)))
		mu.Lock()
		series = append(series, sample{T: time.Since(start).Seconds(), Pods: len(list.Items), Running: len(running)})
		mu.Unlock()
	}
	go func() {
		defer close(samplerDone)
		wait.UntilWithContext(sampleCtx, func(context.Context) { takeSample() }, time.Second)
	}()
	progress := func() {
		extra := ""
		if kb, ok := be.(*kubespawnBackend); ok {
			extra = "  reflector " + kb.state()
		}
		fmt.Fprintf(c.Progress, "[%-9s t=%3.0fs] launches %3d/%d  running %3d  failed %3d  pods on server %3d%s\n",
			name, time.Since(start).Seconds(), launches.Load(), len(plans), runningCount(), failed.Load(), podsNow.Load(), extra)
	}
	progressCtx, stopProgress := context.WithCancel(ctx)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		wait.UntilWithContext(progressCtx, func(context.Context) { progress() }, c.ProgressInterval)
	}()

	// The stall: every pod watch through this run's proxy, open or new,
	// goes silent, connections open. Nobody lifts it.
	var beforeStall struct {
		sync.Mutex
		requests, bytes int64
	}
	stallTimer := time.AfterFunc(c.StallAt, func() {
		beforeStall.Lock()
		for _, ctr := range proxy.Stats() {
			beforeStall.requests += ctr.Requests
			beforeStall.bytes += ctr.ResponseBytes
		}
		beforeStall.Unlock()
		proxy.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
		be.stallInjected(time.Now())
		fmt.Fprintf(c.Progress, "[%-9s t=%3.0fs] >>> the pod watch goes silent (TCP open, no bytes), and stays so until the end of the run\n", name, time.Since(start).Seconds())
	})
	defer stallTimer.Stop()
	detectDone := make(chan struct{})
	go func() {
		defer close(detectDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-progressCtx.Done():
				return
			case <-t.C:
				if d := be.stallDetected(); !d.IsZero() {
					fmt.Fprintf(c.Progress, "[%-9s t=%3.0fs] >>> stall detected by the reflector %.1fs after it began: relisting, readers fall back to the API server\n",
						name, d.Sub(start).Seconds(), d.Sub(start).Seconds()-c.StallAt.Seconds())
					return
				}
			}
		}
	}()

	// The hub: one goroutine per user.
	var wg sync.WaitGroup
	for _, u := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(u.LaunchAt))):
			}
			pod := be.podName(u)
			launches.Add(1)
			if err := be.start(ctx, u); err != nil {
				failed.Add(1)
				hubLog(pod, err)
				// JupyterHub aborts a failed spawn by calling stop().
				if err := be.stop(ctx, u); err != nil {
					hubLog(pod, err)
				}
				return
			}
			started.Add(1)
			mu.Lock()
			running[pod] = true
			mu.Unlock()
			if u.StopAfter <= 0 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(u.StopAfter):
			}
			mu.Lock()
			delete(running, pod) // the hub marks the server stopped, whatever stop() says
			mu.Unlock()
			stopped.Add(1)
			if err := be.stop(ctx, u); err != nil {
				hubLog(pod, err)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		stopProgress()
		stopSampling()
		return res, err
	}

	// Let deletions in flight finish (the simulated kubelet needs up to
	// the 1 s grace period), then look at what is left on the server.
	var left []corev1.Pod
	for deadline := time.Now().Add(10 * time.Second); ; {
		list, err := direct.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			stopProgress()
			stopSampling()
			return res, err
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
		if terminating == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopProgress()
	<-progressDone
	<-detectDone
	takeSample()
	progress()
	stopSampling()
	<-samplerDone

	mu.Lock()
	for _, p := range left {
		if !running[p.Name] {
			res.LeakedPods = append(res.LeakedPods, p.Name)
		}
	}
	res.Running = len(running)
	res.Series = series
	mu.Unlock()
	slices.Sort(res.LeakedPods)
	res.Leaked = len(res.LeakedPods)
	res.PodsOnServer = len(left)
	res.Launches, res.Started, res.Failed = int(launches.Load()), int(started.Load()), int(failed.Load())
	res.StoppedByUsers = int(stopped.Load())
	if d := be.stallDetected(); !d.IsZero() {
		after := d.Sub(start) - c.StallAt
		res.StallDetectedAfter = &after
	}
	for _, ctr := range proxy.Stats() {
		res.APIRequests += ctr.Requests
		res.APIBytes += ctr.ResponseBytes
	}
	beforeStall.Lock()
	res.APIRequestsBeforeStall, res.APIBytesBeforeStall = beforeStall.requests, beforeStall.bytes
	beforeStall.Unlock()
	res.Log = rec.lines()
	res.Elapsed = time.Since(start)
	return res, nil
}
