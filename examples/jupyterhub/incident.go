package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
)

// incidentOptions is the 2018 incident at some scale.
type incidentOptions struct {
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

// incidentReport is what the hub and the API server ended with.
type incidentReport struct {
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
	Final         hubtest.Audit
	Elapsed       time.Duration
}

// Leaked is the number of pods on the API server that the hub does not
// believe running.
func (r incidentReport) Leaked() int { return len(r.Final.Leaked) }

func scenarioOf(o incidentOptions, i int) map[string]string {
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

// userName is the i-th user of a run.
func userName(i int) string { return fmt.Sprintf("user-%03d", i) }

// runIncident replays the incident against e (which must run ThroughProxy)
// and leaves every server stopped and the watch unstalled at the end.
func runIncident(ctx context.Context, e *hubtest.Env, o incidentOptions) (incidentReport, error) {
	if e.Proxy == nil {
		return incidentReport{}, errors.New("the incident needs the fault proxy (hubtest.Config.ThroughProxy)")
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	begin := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "  t=%5.1fs  %s\n", time.Since(begin).Seconds(), fmt.Sprintf(format, args...))
	}
	rep := incidentReport{Users: o.Users}
	users := make([]string, o.Users)
	for i := range users {
		users[i] = userName(i)
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
		if e.Service.WaitReadyz(watchCtx, http.StatusServiceUnavailable) == nil {
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
	if err := hubtest.Parallel(stopping, 16, func(name string) error {
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
		if rep.Final, err = e.Check(ctx, users); err != nil {
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
	if err := e.StopAll(ctx, users); err != nil {
		return rep, err
	}
	return rep, nil
}

// printReport prints the demo's table.
func printReport(w io.Writer, r incidentReport) {
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
