package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/stats"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// writeLog records, per pod name, when requests of one kind were sent and
// answered.
type writeLog struct {
	match func(req *http.Request) (name string, ok bool)
	mu    sync.Mutex
	sent  map[string][]time.Time
	done  map[string][]time.Time
}

func newWriteLog(match func(*http.Request) (string, bool)) *writeLog {
	return &writeLog{match: match, sent: map[string][]time.Time{}, done: map[string][]time.Time{}}
}

func (l *writeLog) wrap(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			name, ok := l.match(req)
			if !ok {
				return rt.RoundTrip(req)
			}
			sent := time.Now()
			resp, err := rt.RoundTrip(req)
			if err == nil && resp.StatusCode < 300 {
				l.mu.Lock()
				l.sent[name] = append(l.sent[name], sent)
				l.done[name] = append(l.done[name], time.Now())
				l.mu.Unlock()
			}
			return resp, err
		})
	})
	return c
}

// doneOf is when the request for name sent at sent was answered.
func (l *writeLog) doneOf(name string, sent time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range l.sent[name] {
		if s.Equal(sent) {
			return l.done[name][i], true
		}
	}
	return time.Time{}, false
}

// lastSentBefore is when the last recorded request for name that was
// sent before t was sent.
func (l *writeLog) lastSentBefore(name string, t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last time.Time
	for _, s := range l.sent[name] {
		if s.Before(t) && s.After(last) {
			last = s
		}
	}
	return last, !last.IsZero()
}

func (l *writeLog) lastDone() (time.Time, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last time.Time
	for _, ds := range l.done {
		for _, d := range ds {
			last = later(last, d)
		}
	}
	return last, len(l.done)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// podPath splits .../namespaces/NS/pods[/NAME[/SUB]].
func podPath(req *http.Request) (name, sub string, ok bool) {
	i := strings.Index(req.URL.Path, "/pods")
	if i < 0 {
		return "", "", false
	}
	parts := strings.Split(strings.TrimPrefix(req.URL.Path[i+len("/pods"):], "/"), "/")
	switch len(parts) {
	case 1:
		return parts[0], "", true
	case 2:
		return parts[0], parts[1], true
	}
	return "", "", false
}

func statusWrites(req *http.Request) (string, bool) {
	name, sub, ok := podPath(req)
	return name, ok && sub == "status" && (req.Method == http.MethodPut || req.Method == http.MethodPatch)
}

var createSeq atomic.Int64

func creates(req *http.Request) (string, bool) {
	_, _, ok := podPath(req)
	if !ok || req.Method != http.MethodPost || strings.Contains(req.URL.Path, "/pods/") {
		return "", false
	}
	// The name is in the body; one entry per create is enough.
	return fmt.Sprintf("create-%d", createSeq.Add(1)), true
}

// spawnEnv is a namespace with the pod simulator, a factory (optionally
// through a fault proxy) and a spawner.
type spawnEnv struct {
	ns    string
	f     *reflector.Factory
	pods  *reflector.PodCache
	sp    *spawner.Spawner
	proxy *faultproxy.Proxy
}

func newSpawnEnv(ctx context.Context, e *env, ns string, viaProxy bool, client func(cfg *rest.Config) kubernetes.Interface) (*spawnEnv, error) {
	s := &spawnEnv{ns: ns}
	cfg := e.cfg
	if viaProxy {
		p, err := faultproxy.New(e.cluster.Config(), faultproxy.Options{})
		if err != nil {
			return nil, err
		}
		s.proxy = p
		cfg = p.ClientConfig(e.cfg)
	}
	f, err := reflector.NewFactory(cfg, reflector.Options{})
	if err != nil {
		return nil, err
	}
	s.f = f
	if s.pods, err = f.Pods(reflector.Scope{Namespaces: []string{ns}, LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue}); err != nil {
		return nil, err
	}
	f.Start(context.Background())
	if err := f.WaitForCacheSync(ctx); err != nil {
		return nil, err
	}
	c := f.Client()
	if client != nil {
		c = client(cfg)
	}
	s.sp, err = spawner.New(spawner.Options{Client: c, Pods: s.pods, Instance: "bench",
		StartTimeout: 15 * time.Minute, StopTimeout: 5 * time.Minute})
	return s, err
}

func (s *spawnEnv) close() {
	s.f.Shutdown()
	if s.proxy != nil {
		s.proxy.Close()
	}
}

func spawnSpec(user string) *corev1.PodSpec {
	spec := benchpod.Spec(user)
	spec.SchedulerName = "" // the simulator plays the default scheduler
	return &spec
}

// measureStartLatency: P5. Starts of realistic pods, 4 at a time, with the
// simulator's default timings; latency from the simulator's Ready status
// write (the request sent) to Start returning. Then again with every pod
// watch of the cache stalled for the whole run (10 at a time).
func measureStartLatency(ctx context.Context, e *env, r *results, starts int) error {
	sim, status := startSim(ctx, e, podsim.Options{})
	defer sim.Stop()
	var rowVals []string
	var okAll = true
	for _, stalled := range []bool{false, true} {
		ns := "spawn"
		workers := 4
		if stalled {
			ns, workers = "spawn-stalled", 10
		}
		if err := e.namespace(ctx, ns); err != nil {
			return err
		}
		s, err := newSpawnEnv(ctx, e, ns, stalled, nil)
		if err != nil {
			return err
		}
		if stalled {
			s.proxy.Stall(podWatches)
		}
		seen, err := newReadyLog(s.pods)
		if err != nil {
			return err
		}
		// A plain client-go informer on the same pods, in the same process,
		// over its own connection: whose is a slow delivery?
		plain, stopPlain, err := plainReadyLog(ctx, e, ns)
		if err != nil {
			return err
		}
		// And one in a process of its own: a delay both informers of this
		// process share but that one lacks is this process's.
		other, stopOther, err := childReadyLog(ctx, e, ns)
		if err != nil {
			return err
		}
		var traces []startTrace
		lat := make([]time.Duration, 0, starts)
		var mu sync.Mutex
		var firstErr error
		work := make(chan int)
		var wg sync.WaitGroup
		begin := time.Now()
		for range workers {
			wg.Go(func() {
				for i := range work {
					key := fmt.Sprintf("user-%04d", i)
					res, err := s.sp.Start(ctx, spawner.Request{Key: key, Namespace: ns, Spec: spawnSpec(key)})
					returned := time.Now()
					if err != nil {
						mu.Lock()
						firstErr = cmpErr(firstErr, err)
						mu.Unlock()
						continue
					}
					ready, ok := status.lastSentBefore(res.Name, returned)
					mu.Lock()
					if ok {
						lat = append(lat, returned.Sub(ready))
						tr := startTrace{name: res.Name, sent: ready, returned: returned}
						tr.done, _ = status.doneOf(res.Name, ready)
						tr.kubespawn, tr.plain, tr.other = seen, plain, other
						traces = append(traces, tr)
					}
					mu.Unlock()
					_ = s.sp.Stop(ctx, ns, res.Name, spawner.StopOptions{UID: res.UID, GracePeriod: ptr.To(time.Duration(0))})
				}
			})
		}
		for i := range starts {
			work <- i
		}
		close(work)
		wg.Wait()
		took := time.Since(begin)
		stopPlain()
		stopOther()
		st := s.pods.Status()
		s.close()
		if firstErr != nil {
			return fmt.Errorf("P5: %w", firstErr)
		}
		med, p99 := stats.Median(lat), stats.Quantile(lat, 0.99)
		traceNotes(r, stalled, traces)
		name := "watch healthy"
		if stalled {
			name = "every pod watch stalled (fallback path)"
			rowVals = append(rowVals, fmt.Sprintf("%s: median %s, p99 %s, max %s", name, ms(med), ms(p99), ms(stats.Quantile(lat, 1))))
			r.notef("P5 stalled: %d starts, %d at a time, in %s; the cache counted %d stalls and stayed %s", len(lat), workers, ms(took), st.Gaps[reflector.GapStall], st.State)
		} else {
			rowVals = append(rowVals, fmt.Sprintf("%s: median %s, p99 %s, max %s", name, ms(med), ms(p99), ms(stats.Quantile(lat, 1))))
			okAll = med <= 50*time.Millisecond && p99 <= 200*time.Millisecond
			r.notef("P5 healthy: %d starts, %d at a time, in %s (simulator: start delay %s, step delay %s)", len(lat), workers, ms(took), podsim.DefaultStartDelay, podsim.DefaultStepDelay)
		}
	}
	r.add(row{ID: "P5", Figure: fmt.Sprintf("start latency, Ready status written → Start returns, %d starts", starts),
		Value: strings.Join(rowVals, "; "), Baseline: "–", Ratio: "–",
		Goal: "healthy: median ≤ 50 ms, p99 ≤ 200 ms", Met: met(okAll)})
	return nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func startSim(ctx context.Context, e *env, opts podsim.Options) (*podsim.Simulator, *writeLog) {
	status := newWriteLog(statusWrites)
	cfg := status.wrap(e.cfg)
	sim, err := podsim.Start(ctx, kubernetes.NewForConfigOrDie(cfg), opts)
	if err != nil {
		fatalf("podsim: %v", err)
	}
	return sim, status
}

// measureBurst: P10. burst Starts issued at once (a class logging in), the
// simulator's start delay fixed at 2 s; time until every pod is created
// and until every Start has returned. Baseline: the same burst with the
// spawner's client limited as client-go limits by default (5 QPS, burst
// 10).
func measureBurst(ctx context.Context, e *env, r *results, burst int) error {
	sim, _ := startSim(ctx, e, podsim.Options{StartDelay: 2 * time.Second})
	defer sim.Stop()
	type res struct {
		created, returned time.Duration
		creates, failed   int
		err               error
	}
	runBurst := func(ns string, limited bool) res {
		if err := e.namespace(ctx, ns); err != nil {
			return res{err: err}
		}
		cl := newWriteLog(creates)
		s, err := newSpawnEnv(ctx, e, ns, false, func(cfg *rest.Config) kubernetes.Interface {
			c := cl.wrap(cfg)
			if limited {
				c.QPS, c.Burst = 5, 10 // client-go's defaults (rest.DefaultQPS, DefaultBurst)
			} else {
				c.QPS = -1
			}
			return kubernetes.NewForConfigOrDie(c)
		})
		if err != nil {
			return res{err: err}
		}
		defer s.close()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var lastReturn time.Time
		failed := 0
		begin := time.Now()
		for i := range burst {
			wg.Go(func() {
				key := fmt.Sprintf("student-%04d", i)
				_, err := s.sp.Start(ctx, spawner.Request{Key: key, Namespace: ns, Spec: spawnSpec(key)})
				mu.Lock()
				defer mu.Unlock()
				lastReturn = later(lastReturn, time.Now())
				if err != nil {
					failed++
				}
			})
		}
		wg.Wait()
		lastCreate, n := cl.lastDone()
		out := res{created: lastCreate.Sub(begin), returned: lastReturn.Sub(begin), creates: n, failed: failed}
		// Clean up with the admin client, outside the measurement.
		zero := int64(0)
		_ = e.client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		for {
			l, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil && !apierrors.IsNotFound(err) || err == nil && len(l.Items) == 0 || ctx.Err() != nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		return out
	}
	logf("  P10: %d Starts at once, kubespawn (no client-side limit)", burst)
	ks := runBurst("burst", false)
	if ks.err != nil {
		return ks.err
	}
	logf("  P10: created %s, returned %s, %d creates, %d failed", ms(ks.created), ms(ks.returned), ks.creates, ks.failed)
	logf("  P10: %d Starts at once, client-go default rate limit", burst)
	base := runBurst("burst-limited", true)
	if base.err != nil {
		return base.err
	}
	logf("  P10: created %s, returned %s, %d creates, %d failed", ms(base.created), ms(base.returned), base.creates, base.failed)
	if ks.failed > 0 || base.failed > 0 {
		r.notef("P10: failed starts: kubespawn %d, baseline %d", ks.failed, base.failed)
	}
	r.add(row{ID: "P10", Figure: fmt.Sprintf("%d Starts at once (simulator start delay 2 s): every pod created / every Start returned", burst),
		Value:    fmt.Sprintf("%s / %s (%d creates, %d failed)", ms(ks.created), ms(ks.returned), ks.creates, ks.failed),
		Baseline: fmt.Sprintf("client-go default limit (5 QPS, burst 10): %s / %s", ms(base.created), ms(base.returned)),
		Ratio:    fmt.Sprintf("created %s, returned %s", ratio(float64(ks.created), float64(base.created)), ratio(float64(ks.returned), float64(base.returned))),
		Goal:     "all created ≤ 20 s; limit left to the server (APF) or set deliberately",
		Met:      met(ks.created <= 20*time.Second && ks.failed == 0 && ks.creates == burst)})
	return nil
}

// readyLog records when the cache's own event handler first saw each pod
// Ready (and at which resourceVersion): the point between the API server's
// answer to the Ready write and the Start's return that splits the
// latency into the watch's delivery and the spawner's reaction.
type readyLog struct {
	mu sync.Mutex
	at map[string]time.Time
	rv map[string]string
}

func newReadyLog(pods *reflector.PodCache) (*readyLog, error) {
	l := &readyLog{at: map[string]time.Time{}, rv: map[string]string{}}
	_, err := pods.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { l.observe(obj) },
		UpdateFunc: func(_, obj any) { l.observe(obj) },
	})
	return l, err
}

func (l *readyLog) observe(obj any) {
	now := time.Now()
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Status.PodIP == "" {
		return
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			l.mu.Lock()
			if _, seen := l.at[pod.Name]; !seen {
				l.at[pod.Name], l.rv[pod.Name] = now, pod.ResourceVersion
			}
			l.mu.Unlock()
			return
		}
	}
}

func (l *readyLog) readyAt(name string) (time.Time, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.at[name], l.rv[name]
}

// startTrace is one Start's timeline: the simulator sent the Ready write,
// the API server answered it, the cache's handler saw the pod Ready, the
// Start returned.
type startTrace struct {
	name                 string
	sent, done, returned time.Time
	// kubespawn and plain are the handlers' logs, read when the notes are
	// made (a handler may see the pod after the Start returned).
	kubespawn, plain, other *readyLog
}

// traceNotes adds, for P5, the p50/p99 of each leg of the timeline and the
// five slowest starts leg by leg, so that a slow start says where its
// time went.
func traceNotes(r *results, stalled bool, traces []startTrace) {
	if len(traces) == 0 {
		return
	}
	var write, deliver, plainDeliver, otherDeliver, react, own []time.Duration
	for _, t := range traces {
		cached, _ := t.kubespawn.readyAt(t.name)
		if t.done.IsZero() || cached.IsZero() {
			continue
		}
		write = append(write, t.done.Sub(t.sent))
		deliver = append(deliver, cached.Sub(t.done))
		react = append(react, t.returned.Sub(cached))
		if p, _ := t.plain.readyAt(t.name); !p.IsZero() {
			plainDeliver = append(plainDeliver, p.Sub(t.done))
			// kubespawn's own part: from the moment a plain informer of
			// the same process has the Ready pod to the Start's return.
			own = append(own, t.returned.Sub(p))
		}
		if o, _ := t.other.readyAt(t.name); !o.IsZero() {
			otherDeliver = append(otherDeliver, o.Sub(t.done))
		}
	}
	name := "healthy"
	if stalled {
		name = "stalled"
	}
	r.notef("P5 %s, legs (p50 / p99 / max) of the %d of %d starts whose Ready pod kubespawn's cache saw (the others returned from the API fallback first): Ready write answered %s / %s / %s; cache handler saw it %s / %s / %s later; Start returned %s / %s / %s after that",
		name, len(deliver), len(traces), ms(stats.Median(write)), ms(stats.Quantile(write, 0.99)), ms(stats.Quantile(write, 1)),
		ms(stats.Median(deliver)), ms(stats.Quantile(deliver, 0.99)), ms(stats.Quantile(deliver, 1)),
		ms(stats.Median(react)), ms(stats.Quantile(react, 0.99)), ms(stats.Quantile(react, 1)))
	r.notef("P5 %s, the same Ready writes seen after the write was answered by a plain client-go informer of this process (own connection): %s / %s / %s; by one in another process: %s / %s / %s (p50 / p99 / max)",
		name, ms(stats.Median(plainDeliver)), ms(stats.Quantile(plainDeliver, 0.99)), ms(stats.Quantile(plainDeliver, 1)),
		ms(stats.Median(otherDeliver)), ms(stats.Quantile(otherDeliver, 0.99)), ms(stats.Quantile(otherDeliver, 1)))
	r.notef("P5 %s, kubespawn's own part (a plain informer of this process has the Ready pod → Start returns): %s / %s / %s (p50 / p99 / max)",
		name, ms(stats.Median(own)), ms(stats.Quantile(own, 0.99)), ms(stats.Quantile(own, 1)))
	slices.SortFunc(traces, func(a, b startTrace) int { return cmp.Compare(b.returned.Sub(b.sent), a.returned.Sub(a.sent)) })
	for _, t := range traces[:min(5, len(traces))] {
		cached, rv := t.kubespawn.readyAt(t.name)
		p, _ := t.plain.readyAt(t.name)
		o, _ := t.other.readyAt(t.name)
		seenBy := func(at time.Time) string {
			if at.IsZero() {
				return "never"
			}
			return ms(at.Sub(t.done)) + " after the answer"
		}
		if cached.IsZero() {
			r.notef("P5 %s slow start %s: total %s = write answered %s + Start returned %s after that from the API fallback (kubespawn's cache never saw the Ready pod); a plain informer saw it %s, one in another process %s",
				name, t.name, ms(t.returned.Sub(t.sent)), ms(t.done.Sub(t.sent)), ms(t.returned.Sub(t.done)), seenBy(p), seenBy(o))
			continue
		}
		r.notef("P5 %s slow start %s (Ready rv %s): total %s = write answered %s + kubespawn's cache saw it %s later + Start returned %s after that; a plain informer saw it %s, one in another process %s",
			name, t.name, rv, ms(t.returned.Sub(t.sent)), ms(t.done.Sub(t.sent)), ms(cached.Sub(t.done)), ms(t.returned.Sub(cached)), seenBy(p), seenBy(o))
	}
}

// plainReadyLog runs a plain client-go informer on ns (its own client, so
// its own connection) recording when it first sees each pod Ready.
func plainReadyLog(ctx context.Context, e *env, ns string) (*readyLog, func(), error) {
	client, err := kubernetes.NewForConfig(e.cfg)
	if err != nil {
		return nil, nil, err
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	l := &readyLog{at: map[string]time.Time{}, rv: map[string]string{}}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { l.observe(obj) },
		UpdateFunc: func(_, obj any) { l.observe(obj) },
	}); err != nil {
		return nil, nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	f.Start(fctx.Done())
	f.WaitForCacheSync(fctx.Done())
	return l, func() { cancel(); f.Shutdown() }, nil
}

// readyWatchVariant is the child job of childReadyLog.
const readyWatchVariant = "ready-watch"

// childReadyLog runs readyWatch in a child process (this binary) and
// collects its records: the same clock (one machine), another process.
func childReadyLog(ctx context.Context, e *env, ns string) (*readyLog, func(), error) {
	job, _ := json.Marshal(childJob{Host: e.cfg.Host, Token: e.cfg.BearerToken, CA: e.cfg.CAData, Variant: readyWatchVariant, NS: ns})
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(cctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(job))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, nil, err
	}
	l := &readyLog{at: map[string]time.Time{}, rv: map[string]string{}}
	synced := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var rec readyRecord
			if json.Unmarshal(sc.Bytes(), &rec) != nil {
				continue
			}
			if rec.Synced {
				close(synced)
				continue
			}
			l.mu.Lock()
			l.at[rec.Name], l.rv[rec.Name] = time.Unix(0, rec.At), rec.RV
			l.mu.Unlock()
		}
	}()
	select {
	case <-synced:
	case <-done:
		cancel()
		return nil, nil, fmt.Errorf("ready-watch child ended before its informer synced")
	}
	return l, func() { cancel(); <-done; _ = cmd.Wait() }, nil
}

type readyRecord struct {
	Synced bool   `json:"synced,omitempty"`
	Name   string `json:"name,omitempty"`
	RV     string `json:"rv,omitempty"`
	At     int64  `json:"at,omitempty"`
}

// readyWatch is the child's side: a plain informer on ns printing, as JSON
// lines, when it first sees each pod Ready; it runs until killed.
func readyWatch(cfg *rest.Config, ns string) {
	client := kubernetes.NewForConfigOrDie(cfg)
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	l := &readyLog{at: map[string]time.Time{}, rv: map[string]string{}}
	report := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		l.observe(obj)
		at, rv := l.readyAt(pod.Name)
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() && rv == pod.ResourceVersion {
			_ = enc.Encode(readyRecord{Name: pod.Name, RV: rv, At: at.UnixNano()})
		}
	}
	_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    report,
		UpdateFunc: func(_, obj any) { report(obj) },
	})
	stop := make(chan struct{})
	f.Start(stop)
	f.WaitForCacheSync(stop)
	mu.Lock()
	_ = enc.Encode(readyRecord{Synced: true})
	mu.Unlock()
	<-stop
}
