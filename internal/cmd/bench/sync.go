package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	krt "k8s.io/apimachinery/pkg/runtime"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/pager"

	"github.com/kubespawn/kubespawn/internal/slim"
	"github.com/kubespawn/kubespawn/internal/stats"
	"github.com/kubespawn/kubespawn/reflector"
)

// syncResult is one variant's medians at one size.
type syncResult struct {
	Sync    time.Duration
	PerPod  float64 // heap bytes held per cached pod
	Peak    float64 // heap peak during the sync above the heap before it
	Samples int
}

// heapNow is the live heap after two collections.
func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// settledHeap is the live heap once collections stop freeing memory (a
// stopped cache's goroutines may hold on to its objects for a moment).
func settledHeap() uint64 {
	h := heapNow()
	for range 30 {
		time.Sleep(100 * time.Millisecond)
		next := heapNow()
		if next+256<<10 > h {
			return next
		}
		h = next
	}
	return h
}

// peakSampler samples HeapAlloc every 20 ms until stop, returning the
// highest value seen.
func peakSampler() (stop func() uint64) {
	done := make(chan struct{})
	var peak uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak }
}

// setWatchList switches client-go's WatchListClient feature (read when an
// informer is created).
func setWatchList(on bool) {
	type setter interface {
		Set(clientfeatures.Feature, bool) error
	}
	if s, ok := clientfeatures.FeatureGates().(setter); ok {
		_ = s.Set(clientfeatures.WatchListClient, on)
	}
}

// variant starts a cache of ns and returns once it has synced, with its
// stop function.
type variant struct {
	name string
	// attribution variants are timed only (P4's breakdown), once.
	attribution bool
	start       func(ctx context.Context, cfg *rest.Config, ns string, want int) (stop func(), err error)
}

func informerVariant(name string, transform cache.TransformFunc, json, watchList bool) variant {
	return variant{name: name, attribution: json || !watchList, start: func(ctx context.Context, cfg *rest.Config, ns string, want int) (func(), error) {
		setWatchList(watchList)
		defer setWatchList(true)
		c := rest.CopyConfig(cfg)
		if json {
			c.ContentType, c.AcceptContentTypes = "application/json", "application/json"
		}
		inf, stop := startInformer(kubernetes.NewForConfigOrDie(ownTransport(c)), ns, "", transform)
		for !inf.HasSynced() {
			if ctx.Err() != nil {
				stop()
				return nil, ctx.Err()
			}
			// The same 20 ms poll as reflector's WaitForSync.
			time.Sleep(20 * time.Millisecond)
		}
		if got := len(inf.GetStore().ListKeys()); got != want {
			stop()
			return nil, fmt.Errorf("%s synced with %d pods, want %d", name, got, want)
		}
		return stop, nil
	}}
}

// ownTransport gives cfg's clients a transport of their own (client-go
// shares one per TLS config otherwise), as each kubespawn cache has.
func ownTransport(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return c
}

// startInformer starts a plain SharedInformerFactory pod informer of ns
// (and selector).
func startInformer(client kubernetes.Interface, ns, selector string, transform cache.TransformFunc) (cache.SharedIndexInformer, func()) {
	opts := []informers.SharedInformerOption{informers.WithNamespace(ns)}
	if selector != "" {
		opts = append(opts, informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	}
	if transform != nil {
		opts = append(opts, informers.WithTransform(transform))
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, opts...)
	inf := f.Core().V1().Pods().Informer()
	stop := make(chan struct{})
	f.Start(stop)
	return inf, func() { close(stop); f.Shutdown() }
}

// attributionOnly makes v one of P4's breakdown: timed once, no heap.
func attributionOnly(v variant) variant { v.attribution = true; return v }

func kubespawnVariant(name string, opts reflector.Options, watchList bool) variant {
	return variant{name: name, attribution: !watchList, start: func(ctx context.Context, cfg *rest.Config, ns string, want int) (func(), error) {
		setWatchList(watchList)
		defer setWatchList(true)
		pods, stop, err := startKubespawn(ctx, cfg, ns, "", opts)
		if err == nil {
			if got := pods.Status().Objects; got != want {
				stop()
				return nil, fmt.Errorf("%s synced with %d pods, want %d", name, got, want)
			}
		}
		return stop, err
	}}
}

// startKubespawn starts a factory with a pod cache of ns (and selector)
// and waits for its sync.
func startKubespawn(ctx context.Context, cfg *rest.Config, ns, selector string, opts reflector.Options) (*reflector.PodCache, func(), error) {
	f, err := reflector.NewFactory(cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{ns}, LabelSelector: selector})
	if err != nil {
		return nil, nil, err
	}
	f.Start(context.Background())
	if err := f.WaitForCacheSync(ctx); err != nil {
		f.Shutdown()
		return nil, nil, err
	}
	return pods, f.Shutdown, nil
}

const (
	vInformer      = "informer"
	vInformerStrip = "informer + managedFields strip"
	vSlim          = "kubespawn (slim, default)"
	vFull          = "kubespawn FullPods"
)

// byName are the variants a child process may run.
var byName map[string]variant

// childEnv carries a child's job: one variant, measured in a fresh
// process so that no cache measured before it is in its heap.
const childEnv = "KUBESPAWN_BENCH_CHILD"

type childJob struct {
	Host, Token string
	CA          []byte
	Variant, NS string
	N           int
	// HeapProfile, if set, is where the child writes a heap profile of
	// what it holds once synced (-heap-profiles).
	HeapProfile string
}

// heapProfiles is -heap-profiles: a directory for a heap profile of each
// variant after its sync, one file per size and variant.
var heapProfiles string

// profilePath is where the heap profile of variant at n pods goes, "" for
// none.
func profilePath(variant string, n int) string {
	if heapProfiles == "" {
		return ""
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, variant)
	return filepath.Join(heapProfiles, fmt.Sprintf("heap-%d-%s.pprof", n, name))
}

// runChild measures variant in a fresh process.
func runChild(ctx context.Context, cfg *rest.Config, name, ns string, n int) (syncResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return syncResult{}, err
	}
	return runChildOf(ctx, exe, cfg, name, ns, n, profilePath(name, n))
}

// runChildOf measures variant in a fresh process of exe: this program, or
// another build of it (-ab-exe).
func runChildOf(ctx context.Context, exe string, cfg *rest.Config, name, ns string, n int, profile string) (syncResult, error) {
	job, _ := json.Marshal(childJob{Host: cfg.Host, Token: cfg.BearerToken, CA: cfg.CAData, Variant: name, NS: ns, N: n, HeapProfile: profile})
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(job))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return syncResult{}, fmt.Errorf("child: %w", err)
	}
	var res syncResult
	return res, json.Unmarshal(out, &res)
}

// child runs the job in KUBESPAWN_BENCH_CHILD and prints its result.
func child(job string) {
	var j childJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		fatalf("child: %v", err)
	}
	cfg := &rest.Config{Host: j.Host, BearerToken: j.Token, TLSClientConfig: rest.TLSClientConfig{CAData: j.CA}, QPS: -1}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if j.Variant == readyWatchVariant {
		readyWatch(cfg, j.NS)
		return
	}
	measureVariants() // fills byName
	v, ok := byName[j.Variant]
	if !ok {
		fatalf("child: no variant %q", j.Variant)
	}
	before := settledHeap()
	peak := peakSampler()
	start := time.Now()
	stop, err := v.start(context.Background(), cfg, j.NS, j.N)
	d := time.Since(start)
	p := peak()
	if err != nil {
		fatalf("child: %s: %v", v.name, err)
	}
	after := heapNow()
	if j.HeapProfile != "" {
		// After the GCs of heapNow: the profile shows what the cache
		// holds (inuse_space), sampled at the default rate.
		if err := writeHeapProfile(j.HeapProfile); err != nil {
			fatalf("child: %v", err)
		}
	}
	res := syncResult{Sync: d, PerPod: float64(int64(after)-int64(before)) / float64(j.N), Peak: float64(int64(p) - int64(before))}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	stop()
}

func writeHeapProfile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// measureSync: P3 (heap per cached pod), P4 (initial sync), P8 (100,000
// pods: heap, sync, peak) at n pods, each variant measured in a fresh child
// process (so that no earlier cache lingers in its heap), in turn, reps
// times (at least 7 up to 10,000 pods, once at 100,000), medians kept.
func measureSync(ctx context.Context, e *env, r *results, ns string, n int, c config) error {
	if c.abExe != "" {
		return measureAB(ctx, e, r, ns, n, c)
	}
	variants := measureVariants()
	reps := c.reps
	switch {
	case n >= 100000:
		reps = 1
	case n <= 10000:
		// Quick enough, and one sync here varies by ±25 % from run to run
		// even on a quiet machine: a median of 3 was not enough to tell
		// 0.9× from 1.1×.
		reps = max(reps, 7)
	}
	// The measured variants, and the attribution ones timed once.
	var measured, once []variant
	for _, v := range variants {
		if v.attribution {
			once = append(once, v)
		} else {
			measured = append(measured, v)
		}
	}
	samples := map[string][]syncResult{}
	for rep := range reps {
		// Each round starts with the next measured variant, so that none is
		// always the first after the setup's writes (or after a given
		// other); the attribution variants follow in the first round.
		round := append(slices.Clone(measured[rep%len(measured):]), measured[:rep%len(measured)]...)
		if rep == 0 {
			round = append(round, once...)
		}
		for _, v := range round {
			if v.name == "informer, JSON" && n >= 100000 {
				continue // JSON at 100,000 pods: minutes and gigabytes, shown at the smaller sizes
			}
			s, err := runChild(ctx, e.cfg, v.name, ns, n)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			samples[v.name] = append(samples[v.name], s)
			logf("  %d pods, %s: sync %s, %s/pod, peak +%s", n, v.name, ms(s.Sync), kb(s.PerPod), kb(s.Peak))
		}
	}
	med := map[string]syncResult{}
	for name, ss := range samples {
		var syncs []time.Duration
		var per, peak []float64
		for _, s := range ss {
			syncs, per, peak = append(syncs, s.Sync), append(per, s.PerPod), append(peak, s.Peak)
		}
		med[name] = syncResult{Sync: stats.Median(syncs), PerPod: medianF(per), Peak: medianF(peak), Samples: len(ss)}
	}
	if r.syncs == nil {
		r.syncs = map[int]map[string]syncResult{}
	}
	r.syncs[n] = med

	// Pagination: the LIST alone, as one response and in pages of 500.
	lists, listErrs := map[string]time.Duration{}, map[string]error{}
	listTime := func(name string) string {
		if err := listErrs[name]; err != nil {
			return "failed (" + err.Error() + ")"
		}
		if _, ok := lists[name]; !ok {
			return "not run at this size"
		}
		return ms(lists[name])
	}
	for _, l := range []struct {
		name  string
		json  bool
		limit int64
		rv    string
	}{
		{"LIST protobuf, one response (watch cache, RV=0)", false, 0, "0"},
		{"LIST protobuf, pages of 500 (consistent)", false, 500, ""},
		{"LIST JSON, one response (watch cache, RV=0)", true, 0, "0"},
	} {
		if l.json && n >= 100000 {
			continue
		}
		cfg := rest.CopyConfig(e.cfg)
		if l.json {
			cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
		}
		// A diagnostic, not a figure: one failure (at 100,000 pods the API
		// server on these 2 cores can drop a connection under the load of
		// the previous huge response) is retried once on a new connection
		// and then reported, rather than losing the run's figures.
		var err error
		for attempt := range 2 {
			if attempt > 0 {
				logf("  %d pods, %s: %v; again on a new connection", n, l.name, err)
				cfg = rest.CopyConfig(cfg)
				cfg.Dial = (&net.Dialer{Timeout: 30 * time.Second}).DialContext // a custom dialer: a transport of its own
			}
			var d time.Duration
			var items int
			d, items, err = timeList(ctx, kubernetes.NewForConfigOrDie(cfg), ns, l.rv, l.limit)
			if err == nil {
				lists[l.name] = d
				logf("  %d pods, %s: %s (%d items)", n, l.name, ms(d), items)
				break
			}
		}
		if err != nil {
			listErrs[l.name] = err
			logf("  %d pods, %s: failed twice: %v", n, l.name, err)
		}
	}
	runtime.GC()

	inf, slim, full, strip := med[vInformer], med[vSlim], med[vFull], med[vInformerStrip]
	size := fmt.Sprintf("%d pods", n)
	r.add(row{ID: "P3", Figure: "heap per cached pod, " + size,
		Value:    fmt.Sprintf("%s (FullPods %s)", kb(slim.PerPod), kb(full.PerPod)),
		Baseline: fmt.Sprintf("%s (with a managedFields strip %s)", kb(inf.PerPod), kb(strip.PerPod)),
		Ratio:    ratio(slim.PerPod, inf.PerPod) + " (FullPods " + ratio(full.PerPod, inf.PerPod) + ")",
		Goal:     "≤ 0.33×", Met: met(slim.PerPod*3 <= inf.PerPod)})
	r.add(row{ID: "P4", Figure: "initial sync, " + size,
		Value:    fmt.Sprintf("%s (FullPods %s)", ms(slim.Sync), ms(full.Sync)),
		Baseline: ms(inf.Sync),
		Ratio:    ratio(float64(slim.Sync), float64(inf.Sync)),
		Goal:     "≤ 1.0×", Met: met(slim.Sync <= inf.Sync)})
	r.notef("P4 at %d pods, what contributes (one run each): informer WatchList (default, protobuf) %s; informer with WatchList off, i.e. a paginated LIST then a watch, %s; kubespawn with WatchList off %s; informer over JSON %s; the LIST alone: %s",
		n, ms(inf.Sync), syncOf(med, "informer, WatchList off (paginated LIST)"), syncOf(med, "kubespawn, WatchList off"), syncOf(med, "informer, JSON"),
		fmt.Sprintf("protobuf in one response %s, protobuf in pages of 500 %s, JSON in one response %s",
			listTime("LIST protobuf, one response (watch cache, RV=0)"), listTime("LIST protobuf, pages of 500 (consistent)"), listTime("LIST JSON, one response (watch cache, RV=0)")))
	r.notef("P3/P4/P8 at %d pods: medians of %d runs; heap peak during the sync above the heap before it: kubespawn %s, FullPods %s, informer %s, informer + strip %s",
		n, slim.Samples, kb(slim.Peak), kb(full.Peak), kb(inf.Peak), kb(strip.Peak))
	if n >= 100000 {
		heap := slim.PerPod * float64(n)
		r.add(row{ID: "P8", Figure: fmt.Sprintf("%d pods in one reflector: heap / sync / peak during sync", n),
			Value:    fmt.Sprintf("%s / %s / %s", kb(heap), ms(slim.Sync), kb(slim.Peak)),
			Baseline: fmt.Sprintf("%s / %s / %s", kb(inf.PerPod*float64(n)), ms(inf.Sync), kb(inf.Peak)),
			Ratio:    fmt.Sprintf("heap %s, sync %s, peak %s", ratio(slim.PerPod, inf.PerPod), ratio(float64(slim.Sync), float64(inf.Sync)), ratio(slim.Peak, inf.Peak)),
			Goal:     "heap ≤ 0.5 GB, sync ≤ 20 s (2 cores)", Met: met(heap <= 0.5e9 && slim.Sync <= 20*time.Second)})
	}
	return nil
}

// measureAB is -ab-exe: the default kubespawn cache of this build against
// the same cache of another build of this program (the code before a
// change, say), on the same pods and control plane, interleaved with a
// plain informer (this build's) so that the machine's drift shows: for
// each of c.abReps rounds, informer, this build, the other build, each in
// a fresh child process. It adds notes, no rows.
func measureAB(ctx context.Context, e *env, r *results, ns string, n int, c config) error {
	measureVariants() // fills byName
	self, err := os.Executable()
	if err != nil {
		return err
	}
	runs := []struct{ label, exe, variant string }{
		{"informer", self, vInformer},
		{"kubespawn, this build", self, vSlim},
		{"kubespawn, " + c.abExe, c.abExe, vSlim},
	}
	samples := make([][]syncResult, len(runs))
	for rep := range c.abReps {
		for i, x := range runs {
			profile := ""
			if heapProfiles != "" {
				profile = filepath.Join(heapProfiles, fmt.Sprintf("heap-%d-ab%d-rep%d.pprof", n, i, rep))
			}
			s, err := runChildOf(ctx, x.exe, e.cfg, x.variant, ns, n, profile)
			if err != nil {
				return fmt.Errorf("%s: %w", x.label, err)
			}
			samples[i] = append(samples[i], s)
			logf("  %d pods, A/B round %d, %s: sync %s, %s/pod, peak +%s", n, rep+1, x.label, ms(s.Sync), kb(s.PerPod), kb(s.Peak))
		}
	}
	for i, x := range runs {
		var syncs []time.Duration
		var per, peak []float64
		for _, s := range samples[i] {
			syncs, per, peak = append(syncs, s.Sync), append(per, s.PerPod), append(peak, s.Peak)
		}
		r.notef("A/B at %d pods, %s (%d rounds): sync median %s (%s–%s), heap %s/pod (%s–%s), peak +%s",
			n, x.label, len(syncs), ms(stats.Median(syncs)), ms(slices.Min(syncs)), ms(slices.Max(syncs)),
			kb(medianF(per)), kb(slices.Min(per)), kb(slices.Max(per)), kb(medianF(peak)))
	}
	return nil
}

// growth: P9, per-pod heap and sync time per 1,000 pods at each size.
func (r *results) growth(sizes []int) {
	if len(sizes) < 2 {
		return
	}
	val, base := "", ""
	for _, n := range sizes {
		m := r.syncs[n]
		if m == nil {
			continue
		}
		s, i := m[vSlim], m[vInformer]
		val += fmt.Sprintf("%dk: %s/pod, %s/1k pods; ", n/1000, kb(s.PerPod), ms(s.Sync/time.Duration(max(n/1000, 1))))
		base += fmt.Sprintf("%dk: %s/pod, %s/1k pods; ", n/1000, kb(i.PerPod), ms(i.Sync/time.Duration(max(n/1000, 1))))
	}
	first, last := r.syncs[sizes[0]], r.syncs[sizes[len(sizes)-1]]
	if first == nil || last == nil {
		return
	}
	k := float64(sizes[len(sizes)-1]) / float64(sizes[0])
	heapGrowth := last[vSlim].PerPod * float64(sizes[len(sizes)-1]) / (first[vSlim].PerPod * float64(sizes[0]))
	syncGrowth := float64(last[vSlim].Sync) / float64(first[vSlim].Sync)
	infHeap := last[vInformer].PerPod * float64(sizes[len(sizes)-1]) / (first[vInformer].PerPod * float64(sizes[0]))
	infSync := float64(last[vInformer].Sync) / float64(first[vInformer].Sync)
	r.add(row{ID: "P9", Figure: fmt.Sprintf("cost growth %dk → %dk pods (×%.0f)", sizes[0]/1000, sizes[len(sizes)-1]/1000, k),
		Value:    fmt.Sprintf("%sheap ×%.1f, sync ×%.1f", val, heapGrowth, syncGrowth),
		Baseline: fmt.Sprintf("%sheap ×%.1f, sync ×%.1f", base, infHeap, infSync),
		Ratio:    fmt.Sprintf("heap growth / pod growth %.2f, sync %.2f", heapGrowth/k, syncGrowth/k),
		Goal:     "linear", Met: met(heapGrowth/k <= 1.25 && syncGrowth/k <= 1.25)})
}

// measureVariants are the caches P3, P4 and P8 compare.
func measureVariants() []variant {
	variants := []variant{
		informerVariant(vInformer, nil, false, true),
		informerVariant(vInformerStrip, slim.StripManagedFields, false, true),
		kubespawnVariant(vSlim, reflector.Options{}, true),
		kubespawnVariant(vFull, reflector.Options{FullPods: true}, true),
		informerVariant("informer, WatchList off (paginated LIST)", nil, false, false),
		// The library's own switch (Options.NoWatchList), timed once.
		attributionOnly(kubespawnVariant("kubespawn, WatchList off", reflector.Options{NoWatchList: true}, true)),
		informerVariant("informer, JSON", nil, true, true),
	}
	byName = map[string]variant{}
	for _, v := range variants {
		byName[v.name] = v
	}
	return variants
}

// timeList lists the pods of ns with client-go's pager (pages of limit, 0
// for one response) and returns how long it took and how many pods came.
func timeList(ctx context.Context, client kubernetes.Interface, ns, rv string, limit int64) (time.Duration, int, error) {
	start := time.Now()
	p := pager.New(pager.SimplePageFunc(func(opts metav1.ListOptions) (krt.Object, error) {
		return client.CoreV1().Pods(ns).List(ctx, opts)
	}))
	p.PageSize = limit
	items := 0
	err := p.EachListItem(ctx, metav1.ListOptions{ResourceVersion: rv, Limit: limit}, func(krt.Object) error { items++; return nil })
	return time.Since(start), items, err
}

// syncOf is the median sync of variant name, or says it was not run.
func syncOf(med map[string]syncResult, name string) string {
	if r, ok := med[name]; ok {
		return ms(r.Sync)
	}
	return "not run at this size"
}
