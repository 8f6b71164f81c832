package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/reflector"
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
	// The reflector's own rule, not a copy of it.
	if err := (reflector.Options{StallTimeout: c.StallTimeout}).Validate(); err != nil {
		problems = append(problems, err.Error())
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
