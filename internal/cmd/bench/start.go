package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
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
		st := s.pods.Status()
		s.close()
		if firstErr != nil {
			return fmt.Errorf("P5: %w", firstErr)
		}
		med, p99 := median(lat), quantile(lat, 0.99)
		name := "watch healthy"
		if stalled {
			name = "every pod watch stalled (fallback path)"
			rowVals = append(rowVals, fmt.Sprintf("%s: median %s, p99 %s, max %s", name, ms(med), ms(p99), ms(quantile(lat, 1))))
			r.notef("P5 stalled: %d starts, %d at a time, in %s; the cache counted %d stalls and stayed %s", len(lat), workers, ms(took), st.Gaps[reflector.GapStall], st.State)
		} else {
			rowVals = append(rowVals, fmt.Sprintf("%s: median %s, p99 %s, max %s", name, ms(med), ms(p99), ms(quantile(lat, 1))))
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
