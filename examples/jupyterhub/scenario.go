package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

// EnvConfig configures one hub + spawner service + stand-in.
type EnvConfig struct {
	// Admin is the control plane's admin config; Client its client (the
	// view that bypasses everything: the audit's).
	Admin  *rest.Config
	Client kubernetes.Interface
	// Namespace of the users' pods; Dir for state and logs.
	Namespace, Dir string
	// SpawnerBinary is examples/spawner built (BuildSpawner).
	SpawnerBinary string
	// ThroughProxy puts a fault proxy between the service and the API
	// server (Env.Proxy).
	ThroughProxy bool
	// HubStartTimeout, HTTPTimeout: the hub's start_timeout, http_timeout.
	HubStartTimeout, HTTPTimeout time.Duration
	// SweepInterval, OrphanMinAge: the service's sweeper.
	SweepInterval, OrphanMinAge time.Duration
	// StopTimeout: the service's --stop-timeout (default 60s).
	StopTimeout time.Duration
}

// Env is a running hub with its spawner service and stand-in.
type Env struct {
	Config  EnvConfig
	Proxy   *faultproxy.Proxy
	Service *Service
	StandIn *StandIn
	Hub     *Hub
}

// StartEnv starts the stand-in, the service (through a fault proxy if
// asked) and the hub; Close stops them all.
func StartEnv(ctx context.Context, c EnvConfig) (_ *Env, err error) {
	e := &Env{Config: c}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	svcCfg := c.Admin
	if c.ThroughProxy {
		// TLS (HTTP/2): a kubeconfig's token is only sent over TLS.
		if e.Proxy, err = faultproxy.New(c.Admin, faultproxy.Options{HTTP2: true}); err != nil {
			return nil, err
		}
		svcCfg = e.Proxy.ClientConfig(c.Admin)
	}
	kubeconfig := filepath.Join(c.Dir, "service.kubeconfig")
	if err := testcluster.WriteKubeConfig(kubeconfig, svcCfg); err != nil {
		return nil, err
	}
	if e.StandIn, err = StartStandIn(c.Client, c.Namespace); err != nil {
		return nil, err
	}
	e.Service, err = StartService(ctx, ServiceOptions{
		Binary: c.SpawnerBinary, Dir: c.Dir, Kubeconfig: kubeconfig, Namespace: c.Namespace,
		StartTimeout: 3 * c.HubStartTimeout, SweepInterval: c.SweepInterval, OrphanMinAge: c.OrphanMinAge,
		StopTimeout: c.StopTimeout,
	})
	if err != nil {
		return nil, err
	}
	hubDir := filepath.Join(c.Dir, "hub")
	if err := os.MkdirAll(hubDir, 0o700); err != nil {
		return nil, err
	}
	if e.Hub, err = NewHub(HubOptions{Dir: hubDir, Service: e.Service, NotebookPort: e.StandIn.Port,
		StartTimeout: c.HubStartTimeout, HTTPTimeout: c.HTTPTimeout, PollInterval: 5 * time.Second}); err != nil {
		return nil, err
	}
	if err := e.Hub.Start(ctx); err != nil {
		e.Hub = nil
		return nil, err
	}
	return e, nil
}

// Close stops the hub, the service, the stand-in and the proxy.
func (e *Env) Close() {
	if e.Hub != nil && e.Hub.Process != nil {
		e.Hub.Stop()
	}
	if e.Service != nil {
		e.Service.Stop()
	}
	if e.StandIn != nil {
		e.StandIn.Close()
	}
	if e.Proxy != nil {
		_ = e.Proxy.Close()
	}
}

// Logs are the tails of the hub's and the service's logs.
func (e *Env) Logs() string {
	var b strings.Builder
	if e.Hub != nil && e.Hub.Process != nil {
		b.WriteString(e.Hub.Tail(60))
	}
	if e.Service != nil {
		b.WriteString(e.Service.Tail(60))
	}
	return b.String()
}

// IncidentOptions is the 2018 incident at some scale.
type IncidentOptions struct {
	Users int
	// Launch spreads the launches over this long.
	Launch time.Duration
	// StallAt: after this fraction of the launches the pod watch between
	// the service and the API server stalls silently, for good.
	StallAt float64
	// Every NeverReady-th user's pod never becomes ready (the hub's
	// start_timeout fires); every BadImage-th fails to pull its image;
	// every Slow-th starts slowly; every StopEvery-th running user stops
	// during the stall.
	NeverReady, BadImage, Slow, StopEvery int
	// Out gets the progress lines (nil: none).
	Out io.Writer
}

// IncidentReport is what the hub and the API server ended with.
type IncidentReport struct {
	Users, Started, Failed int
	// TimedOut: starts the hub gave up on after its start_timeout, then
	// stopped itself (poll() said running, so it called stop()).
	TimedOut int
	// FailedFast: starts the service failed (image pull) before the
	// timeout; their pods were deleted by the service.
	FailedFast int
	// StoppedByUsers: servers stopped through the hub during the stall.
	StoppedByUsers int
	// StallDetected: the service's /readyz reported the stalled watch.
	StallDetected bool
	StallAt       time.Duration
	Final         Audit
	Elapsed       time.Duration
}

// Leaked is the number of pods on the API server that the hub does not
// believe running.
func (r IncidentReport) Leaked() int { return len(r.Final.Leaked) }

func scenarioOf(o IncidentOptions, i int) map[string]string {
	switch {
	case o.NeverReady > 0 && i%o.NeverReady == o.NeverReady-1:
		return map[string]string{podsim.AnnotationScenario: podsim.ScenarioNeverReady}
	case o.BadImage > 0 && i%o.BadImage == o.BadImage-2:
		return map[string]string{podsim.AnnotationScenario: podsim.ScenarioImagePullFailure}
	case o.Slow > 0 && i%o.Slow == 1:
		return map[string]string{podsim.AnnotationScenario: podsim.ScenarioSlowStart, podsim.AnnotationStartDelay: "2s"}
	}
	return nil
}

// UserName is the i-th user of a run.
func UserName(i int) string { return fmt.Sprintf("user-%03d", i) }

// RunIncident replays the incident against e (which must run ThroughProxy)
// and leaves every server stopped and the watch unstalled at the end.
func RunIncident(ctx context.Context, e *Env, o IncidentOptions) (IncidentReport, error) {
	if e.Proxy == nil {
		return IncidentReport{}, errors.New("the incident needs the fault proxy (EnvConfig.ThroughProxy)")
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	begin := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "  t=%5.1fs  %s\n", time.Since(begin).Seconds(), fmt.Sprintf(format, args...))
	}
	rep := IncidentReport{Users: o.Users}
	users := make([]string, o.Users)
	for i := range users {
		users[i] = UserName(i)
	}
	if err := e.Hub.CreateUsers(ctx, users); err != nil {
		return rep, err
	}
	neverReady, badImage := 0, 0
	for i := range users {
		switch scenarioOf(o, i)[podsim.AnnotationScenario] {
		case podsim.ScenarioNeverReady:
			neverReady++
		case podsim.ScenarioImagePullFailure:
			badImage++
		}
	}
	say("%d users launch over %s through the hub's REST API (never ready: %d, bad image: %d)", o.Users, o.Launch, neverReady, badImage)

	// The service's readiness tells whether it noticed the stall.
	stallSeen := make(chan struct{})
	var once sync.Once
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	stalled := make(chan struct{})
	go func() {
		select {
		case <-stalled:
		case <-watchCtx.Done():
			return
		}
		if waitHTTP(watchCtx, e.Service.URL+"/readyz", nil, http.StatusServiceUnavailable, nil) == nil {
			once.Do(func() { close(stallSeen) })
		}
	}()

	stallAt := int(float64(o.Users) * o.StallAt)
	var launchErr error
	tick := time.NewTicker(max(o.Launch/time.Duration(max(o.Users, 1)), time.Millisecond))
	defer tick.Stop()
	for i, name := range users {
		if i == stallAt {
			e.Proxy.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
			rep.StallAt = time.Since(begin)
			close(stalled)
			say("the pod watch between the spawner service and the API server stalls silently, and stays stalled")
		}
		if err := e.Hub.StartServer(ctx, name, scenarioOf(o, i)); err != nil && launchErr == nil {
			launchErr = err
		}
		if i < len(users)-1 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return rep, ctx.Err()
			}
		}
	}
	if launchErr != nil {
		return rep, launchErr
	}
	say("all %d launched; waiting for the hub to settle (start_timeout %s)", o.Users, e.Config.HubStartTimeout)
	sctx, cancel := context.WithTimeout(ctx, 3*e.Config.HubStartTimeout+2*e.Config.HTTPTimeout+time.Minute)
	defer cancel()
	seen, err := e.Hub.Settled(sctx, users)
	if err != nil {
		return rep, err
	}
	var running []string
	for _, name := range users {
		if s, ok := seen[name].Server(); ok && s.Ready {
			running = append(running, name)
		}
	}
	rep.Started = len(running)
	rep.Failed = o.Users - rep.Started
	rep.TimedOut = e.Hub.Count("seconds, giving up")
	rep.FailedFast = e.Hub.Count("Unhandled error starting")
	say("settled: %d running, %d failed (%d timed out and stopped by the hub, %d failed fast)", rep.Started, rep.Failed, rep.TimedOut, rep.FailedFast)

	// Users stop servers while the watch is still stalled.
	var stopping []string
	for i, name := range running {
		if o.StopEvery > 0 && i%o.StopEvery == 0 {
			stopping = append(stopping, name)
		}
	}
	if err := parallel(stopping, 16, func(name string) error {
		_, err := e.Hub.StopServer(ctx, name)
		return err
	}); err != nil {
		return rep, err
	}
	if _, err := e.Hub.Settled(sctx, users); err != nil {
		return rep, err
	}
	rep.StoppedByUsers = len(stopping)
	say("%d users stopped their servers during the stall", rep.StoppedByUsers)
	// The stall began long before (a start timeout ago at least): the
	// service has said so on /readyz by now, or it never will.
	select {
	case <-stallSeen:
		rep.StallDetected = true
	case <-time.After(30 * time.Second):
	}

	// The audit, bypassing the proxy: converge within a bound, or report
	// what is left.
	deadline := time.Now().Add(time.Minute)
	for {
		if rep.Final, err = Check(ctx, e.Hub, e.Config.Client, e.Config.Namespace, users); err != nil {
			return rep, err
		}
		if (len(rep.Final.Leaked) == 0 && len(rep.Final.Missing) == 0) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	rep.Elapsed = time.Since(begin)
	say("audit (straight from the API server): %d pods, %d servers running in the hub, %d leaked, %d missing", rep.Final.Pods, rep.Final.HubRunning, len(rep.Final.Leaked), len(rep.Final.Missing))

	// Clean up: the watch comes back, every server is stopped.
	e.Proxy.UnstallAll()
	if err := StopAll(ctx, e, users); err != nil {
		return rep, err
	}
	return rep, nil
}

// StopAll stops every running server of users through the hub and waits
// until the API server has none of their pods.
func StopAll(ctx context.Context, e *Env, users []string) error {
	if err := parallel(users, 16, func(name string) error {
		u, err := e.Hub.User(ctx, name)
		if err != nil {
			return err
		}
		if _, ok := u.Server(); !ok {
			return nil
		}
		_, err = e.Hub.StopServer(ctx, name)
		return err
	}); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := e.Hub.Settled(sctx, users); err != nil {
		return err
	}
	for {
		pods, err := PodsOnServer(sctx, e.Config.Client, e.Config.Namespace)
		if err == nil && len(pods) == 0 {
			return nil
		}
		select {
		case <-sctx.Done():
			names := []string{}
			for _, p := range pods {
				names = append(names, p.Name)
			}
			slices.Sort(names)
			return fmt.Errorf("pods left after stopping every server: %v (%v)", names, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PrintReport prints the demo's table.
func PrintReport(w io.Writer, r IncidentReport) {
	row := func(label string, v any) { fmt.Fprintf(w, "%40s  %8v\n", label, v) }
	fmt.Fprintf(w, "\n%40s  %8s\n", "", "JupyterHub 3.0 + kubespawn")
	row("users", r.Users)
	row("started (ready in the hub)", r.Started)
	row("failed starts", r.Failed)
	row("  stopped by the hub after its timeout", r.TimedOut)
	row("  failed fast (image pull)", r.FailedFast)
	row("stopped by users during the stall", r.StoppedByUsers)
	row("servers the hub believes running", r.Final.HubRunning)
	row("pods on the API server at the end", r.Final.Pods)
	row("PODS LEAKED on the API server", len(r.Final.Leaked))
	row("running in the hub without a pod", len(r.Final.Missing))
	stall := "no"
	if r.StallDetected {
		stall = "yes"
	}
	row("stall reported by the service /readyz", stall)
	fmt.Fprintf(w, "\n(watch stalled at t=%.1fs; run took %.1fs)\n", r.StallAt.Seconds(), r.Elapsed.Seconds())
}
