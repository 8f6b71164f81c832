package soak

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/reflector"
)

// Config configures a soak.
type Config struct {
	// Cluster is a running control plane with a pod simulator.
	Cluster *testcluster.Cluster
	// Seed of the schedule; the same seed replays the same schedule.
	Seed uint64
	// Cycles is the number of start/stop cycles of each run.
	Cycles int
	// Users run their cycles concurrently. Default 12.
	Users int
	// StartTimeout and StopTimeout of the services. Defaults 10s, 30s.
	StartTimeout, StopTimeout time.Duration
	// FailureTimeout of the services' caches (reflector.Options). Default
	// 15s: short, so that probes throttled for longer fit in a short
	// workload; longer than the long stall of every watch.
	FailureTimeout time.Duration
	// Progress, if set, gets a line now and then.
	Progress io.Writer
	// LogDir keeps the instances' logs. Default: a temporary directory.
	LogDir string
}

func (c *Config) defaults() error {
	if c.Cluster == nil || c.Cycles <= 0 {
		return errors.New("soak: a cluster and a positive number of cycles are needed")
	}
	c.Users = cmp.Or(c.Users, 12)
	c.StartTimeout = cmp.Or(c.StartTimeout, 10*time.Second)
	c.StopTimeout = cmp.Or(c.StopTimeout, 30*time.Second)
	c.FailureTimeout = cmp.Or(c.FailureTimeout, 15*time.Second)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.LogDir == "" {
		dir, err := os.MkdirTemp("", "kubespawn-soak-")
		if err != nil {
			return err
		}
		c.LogDir = dir
	}
	return nil
}

// span is how long the faults are spread over: about how long the
// workload runs (a cycle takes a few seconds, users run at once).
func (c Config) span() time.Duration {
	perUser := (c.Cycles + c.Users - 1) / c.Users
	return max(30*time.Second, time.Duration(perUser)*2500*time.Millisecond)
}

// Run replays one seeded schedule twice, on the same control plane: with
// kubespawn (two spawner service instances as processes, one of them
// killed mid-run and replaced) and with the 2018 KubeSpawner replica, each
// through its own fault proxy, and reports what each left behind.
func Run(ctx context.Context, c Config) (Report, error) {
	if err := c.defaults(); err != nil {
		return Report{}, err
	}
	begin := time.Now()
	sched := newSchedule(c.Seed, c.Users, c.Cycles, c.span(), c.FailureTimeout)
	rep := Report{Seed: c.Seed, Cycles: c.Cycles, Users: c.Users, Faults: map[FaultKind]int{}, FailureTimeout: c.FailureTimeout, LogDir: c.LogDir}
	for _, f := range sched.Faults {
		rep.Faults[f.Kind]++
	}
	fmt.Fprintf(c.Progress, "soak: seed %d, %d cycles, %d users, %d faults over %s (SOAK_SEED=%d replays this schedule)\n",
		c.Seed, c.Cycles, c.Users, len(sched.Faults), sched.Span.Round(time.Second), c.Seed)

	var err error
	if rep.Kubespawn, err = c.runOne(ctx, sched, "kubespawn", 0); err != nil {
		return rep, err
	}
	// The 2018 logic freezes on a dead watch stream and then waits out
	// every start and stop timeout: its run is cut at twice the time
	// kubespawn's workload took, and reports the cycles it completed.
	if rep.Legacy, err = c.runOne(ctx, sched, "legacy", 2*rep.Kubespawn.Workload); err != nil {
		return rep, err
	}
	rep.Duration = time.Since(begin)
	return rep, nil
}

// runOne runs the schedule against one backend in a namespace of its own.
func (c Config) runOne(ctx context.Context, sched schedule, which string, limit time.Duration) (RunReport, error) {
	begin := time.Now()
	r := RunReport{Name: which, Starts: map[string]int{}}
	direct, err := kubernetes.NewForConfig(c.Cluster.Config())
	if err != nil {
		return r, err
	}
	ns, err := direct.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "soak-" + which + "-"}}, metav1.CreateOptions{})
	if err != nil {
		return r, err
	}
	// TLS, so that the instances' kubeconfig may carry the token; they
	// speak HTTP/1.1 over it (see instance.go), as in 2018.
	proxy, err := faultproxy.New(c.Cluster.Config(), faultproxy.Options{HTTP2: true})
	if err != nil {
		return r, err
	}
	defer proxy.Close()
	proxied := proxy.ClientConfig(c.Cluster.Config())

	var b backend
	stopTimeout, leakWait := c.StopTimeout, c.StartTimeout+30*time.Second
	switch which {
	case "kubespawn":
		kubeconfig := filepath.Join(c.LogDir, which+".kubeconfig")
		if err := testcluster.WriteKubeConfig(kubeconfig, proxied); err != nil {
			return r, err
		}
		b, err = newKubespawnBackend(ctx, instanceConfig{
			Kubeconfig: kubeconfig, Namespace: ns.Name,
			StartTimeout: c.StartTimeout, StopTimeout: c.StopTimeout, StallTimeout: 5 * time.Second, FailureTimeout: c.FailureTimeout,
			OrphanMinAge: c.StartTimeout + 2*time.Second, SweepEvery: 2 * time.Second,
			LeaseTimings: [3]time.Duration{4 * time.Second, 3 * time.Second, 500 * time.Millisecond},
		}, c.LogDir)
	default:
		// KubeSpawner's stop waits for the pod to leave its cache; with a
		// frozen cache it never does: a short stop timeout keeps the run's
		// length bounded without changing what it leaks.
		stopTimeout, leakWait = 5*time.Second, 5*time.Second // no sweeper: what is left stays
		b, err = newLegacyBackend(ctx, proxied, ns.Name, c.StartTimeout, stopTimeout)
	}
	if err != nil {
		return r, err
	}
	defer b.close()

	w := newWorld(b)
	stopWatch, err := w.watch(ctx, direct, ns.Name)
	if err != nil {
		return r, err
	}
	defer stopWatch()

	// Faults, on the schedule's clock.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var faults sync.WaitGroup
	stallAt := make(chan time.Time, len(sched.Faults))
	throttled := make(chan time.Duration, len(sched.Faults))
	var throttleEnd atomic.Int64 // when the probes throttled now are to be released
	faults.Go(func() { c.inject(runCtx, sched, proxy, b, w, stallAt, throttled, &throttleEnd) })

	// The users.
	var done atomic.Int64
	var users sync.WaitGroup
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	for _, u := range sched.Users {
		users.Go(func() { w.user(runCtx, u, sched.Cycles[u], &done) })
	}
	finished := make(chan struct{})
	go func() { users.Wait(); close(finished) }()
	var cut <-chan time.Time
	if limit > 0 {
		cut = time.After(limit)
	}
loop:
	for {
		select {
		case <-finished:
			// Probes throttled now stay so for as long as planned: what
			// counts is that they outlast FailureTimeout.
			if end := time.Unix(0, throttleEnd.Load()); time.Now().Before(end) {
				fmt.Fprintf(c.Progress, "soak %-9s waiting %s for the probes to be released\n", which, time.Until(end).Round(time.Second))
				select {
				case <-time.After(time.Until(end)):
				case <-ctx.Done():
				}
			}
			break loop
		case <-cut:
			fmt.Fprintf(c.Progress, "soak %-9s cut at %s with %d cycles done\n", which, limit.Round(time.Second), done.Load())
			cancelRun()
			<-finished
			break loop
		case <-progress.C:
			fmt.Fprintf(c.Progress, "soak %-9s t=%4.0fs  cycles %4d/%d\n", which, time.Since(begin).Seconds(), done.Load(), c.Cycles)
		}
	}
	cancelRun()
	faults.Wait()
	clearFaults(proxy)
	close(throttled)
	for d := range throttled {
		r.ProbeThrottles = append(r.ProbeThrottles, d)
	}
	r.Cycles = int(done.Load())
	r.Workload = time.Since(begin)

	// Settle: users whose state is unknown are stopped (as a hub retries),
	// then the sweepers get time to remove what crashes left.
	settleBegin := time.Now()
	w.settle(ctx, stopTimeout)
	r.Leaks, r.ObjectLeaks = w.waitNoLeaks(ctx, direct, ns.Name, b.selector(), leakWait)
	r.Settle = time.Since(settleBegin)
	r.WrongDeletions = w.wrongDeletions()
	r.Claims, r.ClaimsLost, r.ClaimsDuplicated = w.checkClaims(ctx, direct, ns.Name)
	stopWatch() // what the cleanup below deletes is no finding
	st := b.stats(ctx)
	r.Starts = st.Outcomes
	for src, n := range st.Absence {
		if src == string(reflector.SourceAPI) {
			r.AbsenceFromAPI += n
		} else {
			r.AbsenceWithoutAPI += n // any other source is a bug
		}
	}
	r.CacheFailures = st.Failures
	r.SweptObjects, r.ReportedClaims = st.Swept, st.Reported
	close(stallAt)
	r.Stalls = stallTimings(stallAt, st.Health)
	for _, rec := range proxy.Records() {
		if rec.Status == 429 || rec.Status >= 500 || (rec.Injected && rec.Status >= 400) {
			r.APIErrorAnswers++ // answered in error: the service had to retry or recover
		}
	}
	r.Duration = time.Since(begin)

	// Leave nothing behind for the next run (no namespace controller
	// would): the pods, for the simulator, and what they had.
	bg := context.Background()
	_ = direct.CoreV1().Pods(ns.Name).DeleteCollection(bg, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{})
	if svcs, err := direct.CoreV1().Services(ns.Name).List(bg, metav1.ListOptions{}); err == nil {
		for _, svc := range svcs.Items {
			_ = direct.CoreV1().Services(ns.Name).Delete(bg, svc.Name, metav1.DeleteOptions{})
		}
	}
	_ = direct.CoreV1().Secrets(ns.Name).DeleteCollection(bg, metav1.DeleteOptions{}, metav1.ListOptions{})
	_ = direct.CoreV1().PersistentVolumeClaims(ns.Name).DeleteCollection(bg, metav1.DeleteOptions{}, metav1.ListOptions{})
	_ = direct.CoreV1().Namespaces().Delete(bg, ns.Name, metav1.DeleteOptions{})
	fmt.Fprintf(c.Progress, "soak %-9s done in %s (workload %s, settling %s): %d cycles, %d leaked, %d wrong deletions, %d Services/Secrets leaked, %d claims lost, %d duplicated\n",
		which, r.Duration.Round(time.Second), r.Workload.Round(time.Second), r.Settle.Round(time.Second), r.Cycles, len(r.Leaks), len(r.WrongDeletions),
		len(r.ObjectLeaks), len(r.ClaimsLost), len(r.ClaimsDuplicated))
	return r, nil
}

// inject applies the schedule's faults to the run's proxy (and crashes
// an instance) at their times, until ctx ends. How long the probes were
// throttled each time, until lifted or cut by the end of the workload, is
// sent on throttled.
func (c Config) inject(ctx context.Context, sched schedule, p *faultproxy.Proxy, b backend, w *world, stallAt chan<- time.Time, throttled chan<- time.Duration, throttleEnd *atomic.Int64) {
	start := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	podWatches := faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"}
	for _, f := range sched.Faults {
		t := time.NewTimer(time.Until(start.Add(f.At)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		lift := func(undo func()) {
			wg.Go(func() {
				select {
				case <-ctx.Done():
				case <-time.After(f.For):
				}
				undo()
			})
		}
		switch f.Kind {
		case FaultStallAll:
			stallAt <- time.Now()
			p.Stall(podWatches)
			lift(func() { p.Unstall(podWatches) })
		case FaultStallOpen:
			if p.StallOpen(podWatches) > 0 {
				stallAt <- time.Now()
			}
		case FaultReset:
			p.ResetConnections()
		case FaultRefuse:
			p.Refuse(true)
			lift(func() { p.Refuse(false) })
		case FaultGone:
			p.InjectWatchError(podWatches, 410, f.N)
		case FaultWatchError:
			p.InjectWatchError(podWatches, 500, f.N)
		case FaultHoldLists:
			m := faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods"}
			p.Stall(m)
			lift(func() { p.Unstall(m) })
		case FaultWatch429:
			p.InjectStatus(podWatches, 429, f.N, time.Second)
		case FaultWatch500:
			p.InjectStatus(podWatches, 500, f.N, 0)
		case FaultLatency:
			all := faultproxy.Match{}
			p.SetLatency(all, 300*time.Millisecond)
			lift(func() { p.SetLatency(all, 0) })
		case FaultStallEvents:
			m := faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "events"}
			p.Stall(m)
			lift(func() { p.Unstall(m) })
		case FaultRestartServer:
			rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			if err := c.Cluster.RestartAPIServer(rctx); err != nil {
				klog.FromContext(ctx).Error(err, "Soak: apiserver restart failed")
			}
			cancel()
		case FaultCrash:
			w.crash(ctx)
		case FaultThrottleProbes:
			begin := time.Now()
			throttleEnd.Store(begin.Add(f.For).UnixNano())
			if f.Hold {
				p.Stall(probeWatches)
				lift(func() { p.Unstall(probeWatches); throttled <- time.Since(begin) })
			} else {
				p.InjectStatus(probeWatches, 429, 1_000_000, time.Second)
				lift(func() { p.InjectStatus(probeWatches, 429, 0, 0); throttled <- time.Since(begin) })
			}
		}
	}
}

func clearFaults(p *faultproxy.Proxy) {
	p.ClearFaults()
	p.UnstallAll()
	p.Refuse(false)
	p.SetLatency(faultproxy.Match{}, 0)
}

// stallTimings tells, for each silent stall, how long the caches went on
// claiming health after it began: for each instance process alive then,
// until its cache ceased to claim health (zero if it did not claim it at
// that moment); the longest of the instances counts. A stall no cache
// claimed health through is detected.
func stallTimings(stallAt <-chan time.Time, procs [][]healthChange) []StallTiming {
	var out []StallTiming
	for at := range stallAt {
		st := StallTiming{At: at, Detected: true}
		for _, changes := range procs {
			if len(changes) == 0 || changes[0].At.After(at) {
				continue // this process was not running then
			}
			healthyAt := false
			for _, c := range changes {
				if !c.At.After(at) {
					healthyAt = c.Healthy
				}
			}
			if !healthyAt {
				continue // not claiming health when the stall began
			}
			found := false
			for _, c := range changes {
				if c.At.After(at) && !c.Healthy {
					st.After = max(st.After, c.At.Sub(at))
					found = true
					break
				}
			}
			if !found {
				st.Detected = false
			}
		}
		out = append(out, st)
	}
	return out
}

// world is what the simulated hub believes, and what it saw happen.
type world struct {
	b backend

	mu        sync.Mutex
	running   map[string]types.UID // user -> the pod believed running
	unknown   map[string]bool      // users whose last operation has an unknown outcome
	protected map[types.UID]string // pods believed running: deleting one is wrong unless its user stops it
	wrong     []string
	// claims are the users' claims as first seen (user -> UID), live
	// those not being deleted (user -> UID -> name); lost and dup what
	// the watch saw happen to them, by claim UID.
	claims    map[string]types.UID
	live      map[string]map[types.UID]string
	lost, dup map[types.UID]string
	// paused: the users of group 0 wait while its instance is replaced.
	paused chan struct{}
}

func newWorld(b backend) *world {
	p := make(chan struct{})
	close(p)
	return &world{b: b, running: map[string]types.UID{}, unknown: map[string]bool{}, protected: map[types.UID]string{},
		claims: map[string]types.UID{}, live: map[string]map[types.UID]string{}, lost: map[types.UID]string{}, dup: map[types.UID]string{}, paused: p}
}

// watch watches, for the whole run, the pods (every deletion of a pod
// believed running is recorded) and the claims (every deletion is: the
// soak never calls DeleteClaims; so is a second claim of a user). The
// returned stop may be called more than once.
func (w *world) watch(ctx context.Context, client kubernetes.Interface, ns string) (func(), error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	check := func(obj any, how string) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if user, ok := w.protected[pod.UID]; ok {
			w.wrong = append(w.wrong, fmt.Sprintf("%s (user %s, uid %s) %s", pod.Name, user, pod.UID, how))
			delete(w.protected, pod.UID)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*corev1.Pod), newObj.(*corev1.Pod)
			if o.DeletionTimestamp == nil && n.DeletionTimestamp != nil {
				check(n, "deleted")
			}
		},
		DeleteFunc: func(obj any) { check(obj, "removed") },
	}); err != nil {
		return nil, err
	}
	claims := f.Core().V1().PersistentVolumeClaims().Informer()
	if _, err := claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { w.claimSeen(obj.(*corev1.PersistentVolumeClaim)) },
		UpdateFunc: func(_, newObj any) {
			// A claim deleted on a cluster without the claim protection
			// controller stays Terminating: deleted all the same.
			if c := newObj.(*corev1.PersistentVolumeClaim); c.DeletionTimestamp != nil {
				w.claimGone(c, "deleted")
			} else {
				w.claimSeen(c)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if c, ok := obj.(*corev1.PersistentVolumeClaim); ok {
				w.claimGone(c, "removed")
			}
		},
	}); err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	f.Start(stop)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, claims.HasSynced) {
		close(stop)
		f.Shutdown()
		return nil, errors.New("soak: the watch of pods and claims did not sync")
	}
	var once sync.Once
	return func() { once.Do(func() { close(stop); f.Shutdown() }) }, nil
}

// claimSeen notes a live claim: the first of its user, or a second one.
func (w *world) claimSeen(c *corev1.PersistentVolumeClaim) {
	if c.DeletionTimestamp != nil {
		w.claimGone(c, "deleted")
		return
	}
	user := w.b.claimKey(c)
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.claims[user]; !ok {
		w.claims[user] = c.UID
	}
	if w.live[user] == nil {
		w.live[user] = map[types.UID]string{}
	}
	w.live[user][c.UID] = c.Name
	if len(w.live[user]) > 1 {
		if _, ok := w.dup[c.UID]; !ok {
			w.dup[c.UID] = fmt.Sprintf("user %s: claims %v at once", user, slices.Sorted(maps.Values(w.live[user])))
		}
	}
}

// claimGone: a claim deleted (or found gone). Nothing in the soak may
// delete one.
func (w *world) claimGone(c *corev1.PersistentVolumeClaim, how string) {
	user := w.b.claimKey(c)
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.live[user], c.UID)
	if _, ok := w.lost[c.UID]; !ok {
		w.lost[c.UID] = fmt.Sprintf("%s (user %s, uid %s) %s", c.Name, user, c.UID, how)
	}
}

// checkClaims reads the claims from the API server at the end: every
// user's first claim must still be there, alive, and alone. It returns
// how many users have one, and what was lost or duplicated over the run.
func (w *world) checkClaims(ctx context.Context, client kubernetes.Interface, ns string) (int, []string, []string) {
	list, err := client.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, []string{"cannot list: " + err.Error()}, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	byUser := map[string][]string{}
	alive := map[types.UID]bool{}
	for _, c := range list.Items {
		if c.DeletionTimestamp == nil {
			user := w.b.claimKey(&c)
			byUser[user] = append(byUser[user], c.Name)
			alive[c.UID] = true
		}
	}
	lost, dup := maps.Clone(w.lost), maps.Clone(w.dup)
	for user, uid := range w.claims {
		if _, ok := lost[uid]; !ok && !alive[uid] {
			lost[uid] = fmt.Sprintf("user %s: claim uid %s gone", user, uid)
		}
	}
	for user, names := range byUser {
		if len(names) > 1 {
			dup[types.UID("end/"+user)] = fmt.Sprintf("user %s: claims %v at the end", user, names)
		}
	}
	return len(byUser), slices.Sorted(maps.Values(lost)), slices.Sorted(maps.Values(dup))
}

func (w *world) wrongDeletions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.wrong)
}

// believeRunning: the start answered ok.
func (w *world) believeRunning(user string, uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.running[user], w.protected[uid] = uid, user
	delete(w.unknown, user)
}

// stopping: the user asks for a stop; from now on its pod may go.
func (w *world) stopping(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if uid, ok := w.running[user]; ok {
		delete(w.protected, uid)
		delete(w.running, user)
	}
	w.unknown[user] = true
}

func (w *world) stopped(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.unknown, user)
}

// crash kills group 0's instance. Its table is lost: the hub takes its
// users' servers for ended (a fresh instance cannot know them, and its
// sweeper will remove their pods).
func (w *world) crash(ctx context.Context) {
	w.mu.Lock()
	pause := make(chan struct{})
	w.paused = pause
	for user, uid := range w.running {
		if w.b.group(user) == 0 {
			delete(w.protected, uid)
			delete(w.running, user)
		}
	}
	w.mu.Unlock()
	if err := w.b.crash(ctx); err != nil {
		klog.FromContext(ctx).Error(err, "Soak: replacing the crashed instance failed")
	}
	close(pause)
}

func (w *world) waitUnpaused(ctx context.Context) {
	w.mu.Lock()
	p := w.paused
	w.mu.Unlock()
	select {
	case <-p:
	case <-ctx.Done():
	}
}

// user runs one user's cycles as a hub would drive them.
func (w *world) user(ctx context.Context, user string, plans []cyclePlan, done *atomic.Int64) {
	var prev types.UID
	for _, p := range plans {
		if ctx.Err() != nil {
			return
		}
		w.waitUnpaused(ctx)
		sctx, cancel := context.WithCancel(ctx)
		if p.CancelAfter > 0 {
			sctx, cancel = context.WithTimeout(ctx, p.CancelAfter)
		}
		var race sync.WaitGroup
		if p.StopRace {
			race.Go(func() {
				select {
				case <-time.After(p.StopRaceAfter):
				case <-ctx.Done():
					return
				}
				w.stopping(user)
				_ = w.b.stop(ctx, user, "")
			})
		}
		uid, ok, _, err := w.b.start(sctx, user, p.Scenario)
		cancel()
		race.Wait()
		switch {
		case ok && !p.StopRace:
			w.believeRunning(user, uid)
			if p.LateStop && prev != "" {
				_ = w.b.stop(ctx, user, prev) // must leave the new pod alone
			}
			select {
			case <-time.After(p.Hold):
			case <-ctx.Done():
			}
			w.stopping(user)
			w.retryStop(ctx, user, uid)
			prev = uid
		default:
			// Failed, cancelled, raced by a stop, or the service was down
			// (err): the hub calls stop, as JupyterHub does.
			_ = err
			w.stopping(user)
			w.retryStop(ctx, user, "")
		}
		done.Add(1)
	}
}

// retryStop stops until the service says done, a few times; what is left
// unknown is settled at the end.
func (w *world) retryStop(ctx context.Context, user string, uid types.UID) {
	for range 3 {
		if err := w.b.stop(ctx, user, uid); err == nil {
			w.stopped(user)
			return
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

// settle stops every user whose last stop did not complete.
func (w *world) settle(ctx context.Context, stopTimeout time.Duration) {
	deadline := time.Now().Add(2 * stopTimeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		var users []string
		for u := range w.unknown {
			users = append(users, u)
		}
		w.mu.Unlock()
		if len(users) == 0 {
			return
		}
		for _, u := range users {
			sctx, cancel := context.WithTimeout(ctx, stopTimeout)
			if err := w.b.stop(sctx, u, ""); err == nil {
				w.stopped(u)
			}
			cancel()
		}
	}
}

// waitNoLeaks waits up to timeout for the service's pods on the API
// server to be exactly those believed running (pods being deleted do not
// count) and for no Service or Secret to be left that is not of one of
// them, and returns the leaks left.
func (w *world) waitNoLeaks(ctx context.Context, client kubernetes.Interface, ns, selector string, timeout time.Duration) ([]string, []ObjectLeak) {
	deadline := time.Now().Add(timeout)
	for {
		leaks := w.leaks(ctx, client, ns, selector)
		objects := w.objectLeaks(ctx, client, ns)
		if (len(leaks) == 0 && len(objects) == 0) || time.Now().After(deadline) || ctx.Err() != nil {
			return leaks, objects
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (w *world) leaks(ctx context.Context, client kubernetes.Interface, ns, selector string) []string {
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return []string{"cannot list: " + err.Error()}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	believed := map[types.UID]bool{}
	for _, uid := range w.running {
		believed[uid] = true
	}
	var out []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && !believed[p.UID] {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

// ObjectLeak is a Service or Secret left on the API server that belongs
// to no pod believed running.
type ObjectLeak struct {
	Kind, Name string
	// PodUID is its owner's (ownerReferences), if it has one.
	PodUID types.UID
	// PodGone: the API server has no pod of that UID. A garbage collector
	// would delete the object; the soak's control plane runs none, so
	// only its service could. Otherwise its pod is there, and leaked.
	PodGone bool
}

func (l ObjectLeak) String() string {
	switch {
	case l.PodUID == "":
		return fmt.Sprintf("%s %s (no owner pod)", l.Kind, l.Name)
	case l.PodGone:
		return fmt.Sprintf("%s %s (pod uid %s gone)", l.Kind, l.Name, l.PodUID)
	}
	return fmt.Sprintf("%s %s (pod uid %s leaked)", l.Kind, l.Name, l.PodUID)
}

// objectLeaks lists the namespace's Services and Secrets (the run's
// namespace holds only the service's) and returns those whose owner pod
// is not believed running, or is gone.
func (w *world) objectLeaks(ctx context.Context, client kubernetes.Interface, ns string) []ObjectLeak {
	fail := func(err error) []ObjectLeak { return []ObjectLeak{{Kind: "cannot list", Name: err.Error()}} }
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fail(err)
	}
	svcs, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fail(err)
	}
	secrets, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fail(err)
	}
	exists := map[types.UID]bool{}
	for _, p := range pods.Items {
		exists[p.UID] = true
	}
	var objs []metav1.Object
	for i := range svcs.Items {
		objs = append(objs, &svcs.Items[i])
	}
	for i := range secrets.Items {
		objs = append(objs, &secrets.Items[i])
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	believed := map[types.UID]bool{}
	for _, uid := range w.running {
		believed[uid] = true
	}
	var out []ObjectLeak
	for _, o := range objs {
		if o.GetDeletionTimestamp() != nil {
			continue
		}
		l := ObjectLeak{Kind: "Secret", Name: o.GetName()}
		if _, ok := o.(*corev1.Service); ok {
			l.Kind = "Service"
		}
		for _, ref := range o.GetOwnerReferences() {
			if ref.Kind == "Pod" {
				l.PodUID = ref.UID
			}
		}
		l.PodGone = l.PodUID != "" && !exists[l.PodUID]
		if l.PodUID == "" || l.PodGone || !believed[l.PodUID] {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b ObjectLeak) int { return strings.Compare(a.Kind+"/"+a.Name, b.Kind+"/"+b.Name) })
	return out
}
