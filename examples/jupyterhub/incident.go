package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
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
	// Processes, if set, lists the running processes of the pod
	// simulator's process pods (Simulator.Processes): with real servers,
	// their memory is measured (incidentReport.PeakRSS).
	Processes func() []podsim.ProcessInfo
	// AfterAudit, if set, runs after the audit and before the clean-up,
	// with the users whose servers are then running (the demo's
	// screenshots); its error is returned once the clean-up is done.
	AfterAudit func(ctx context.Context, running []string) error
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
	// RealServers: every pod ran a real jupyterhub-singleuser (the hub's
	// class asked for the process runtime), not the stand-in.
	RealServers bool
	// PeakServers, PeakRSS and PeakPSS: the most server processes running
	// at once and the most memory they (and their children) used at once,
	// resident (shared pages counted in every process) and proportional
	// (shared pages split among their users); sampled, 0 without
	// incidentOptions.Processes.
	PeakServers      int
	PeakRSS, PeakPSS int64
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
	rep := incidentReport{Users: o.Users, RealServers: e.Config.ProcessRuntime != ""}
	var mem *memSampler
	if o.Processes != nil {
		mem = startMemSampler(o.Processes, 500*time.Millisecond)
		defer mem.stop()
	}
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
	servers := "a stand-in HTTP server answers for every pod"
	if rep.RealServers {
		servers = "every pod runs a real jupyterhub-singleuser at its own loopback IP"
	}
	say("%d users launch over %s through the hub's REST API (never ready: %d, bad image: %d); %s", o.Users, o.Launch, neverReady, badImage, servers)

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
	if mem != nil {
		mem.sample() // every started server runs now
		n, rss, pss := mem.peak()
		say("server processes running: %d, %s resident, %s proportional (the most so far)", n, mib(rss), mib(pss))
	}

	// Users stop servers while the watch is still stalled.
	var stopping, stillRunning []string
	for i, name := range running {
		if o.StopEvery > 0 && i%o.StopEvery == 0 {
			stopping = append(stopping, name)
		} else {
			stillRunning = append(stillRunning, name)
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
	if mem != nil {
		mem.stop()
		rep.PeakServers, rep.PeakRSS, rep.PeakPSS = mem.peak()
	}
	say("audit (straight from the API server): %d pods, %d servers running in the hub, %d leaked, %d missing", rep.Final.Pods, rep.Final.HubRunning, len(rep.Final.Leaked), len(rep.Final.Missing))
	var afterErr error
	if o.AfterAudit != nil {
		afterErr = o.AfterAudit(ctx, stillRunning)
	}

	// Clean up: the watch comes back, every server is stopped.
	e.Proxy.UnstallAll()
	if err := e.StopAll(ctx, users); err != nil {
		return rep, errors.Join(afterErr, err)
	}
	say("clean-up: the watch is back, every server stopped, no pod left")
	return rep, afterErr
}

// memSampler samples the resident memory of the real servers' processes
// (and their children) from /proc, and keeps the peak.
type memSampler struct {
	procs    func() []podsim.ProcessInfo
	mu       sync.Mutex
	maxN     int
	maxRSS   int64
	maxPSS   int64
	done     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

func startMemSampler(procs func() []podsim.ProcessInfo, every time.Duration) *memSampler {
	m := &memSampler{procs: procs, done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(m.stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m.sample()
			select {
			case <-m.done:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// sample adds one sample now.
func (m *memSampler) sample() {
	ps := m.procs()
	var rss, pss int64
	for _, p := range ps {
		r, q := treeMem(p.Pid, 0)
		rss, pss = rss+r, pss+q
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maxN = max(m.maxN, len(ps))
	m.maxRSS = max(m.maxRSS, rss)
	m.maxPSS = max(m.maxPSS, pss)
}

// peak is the most processes and the most memory (RSS, PSS) seen at once.
func (m *memSampler) peak() (int, int64, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maxN, m.maxRSS, m.maxPSS
}

// stop ends the sampling and waits for its goroutine; idempotent.
func (m *memSampler) stop() {
	m.stopOnce.Do(func() { close(m.done) })
	<-m.stopped
}

// treeMem is the resident and the proportional memory (Rss, Pss of
// /proc/<pid>/smaps_rollup) of process pid and its descendants, in bytes;
// 0 for a process gone meanwhile.
func treeMem(pid, depth int) (rss, pss int64) {
	if pid <= 0 || depth > 8 {
		return 0, 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(b)) {
		key, v, _ := strings.Cut(line, ":")
		if key != "Rss" && key != "Pss" {
			continue
		}
		f := strings.Fields(v) // "123456 kB"
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		if key == "Rss" {
			rss = kb * 1024
		} else {
			pss = kb * 1024
		}
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, c := range strings.Fields(string(children)) {
			if child, err := strconv.Atoi(c); err == nil {
				r, p := treeMem(child, depth+1)
				rss, pss = rss+r, pss+p
			}
		}
	}
	return rss, pss
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

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
	if r.RealServers {
		row("single-user servers", "real")
		if r.PeakServers > 0 {
			row("most server processes at once", r.PeakServers)
			row("their peak RSS (all servers)", mib(r.PeakRSS))
			row("  proportional (PSS: shared pages split)", mib(r.PeakPSS))
		}
	} else {
		row("single-user servers", "stand-in")
	}
	fmt.Fprintf(w, "\n(watch stalled at t=%.1fs; the incident took %.1fs up to the audit)\n", r.StallAt.Seconds(), r.Elapsed.Seconds())
}
