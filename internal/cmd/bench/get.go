package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/reflector"
)

// measureGet: P6. A cache hit with testing.Benchmark (median of 5 runs of
// about a second each; `make bench` also runs reflector's BenchmarkGet
// through benchstat), against the informer's GetByKey; and the requests a
// miss costs, counted at the proxy.
func measureGet(ctx context.Context, e *env, r *results, ns string, n int) error {
	pods, stop, err := startKubespawn(ctx, e.cfg, ns, "", reflector.Options{})
	if err != nil {
		return err
	}
	names := make([]string, n)
	keys := make([]string, n)
	for i := range n {
		names[i] = benchpod.Name(i)
		keys[i] = ns + "/" + names[i]
	}
	runs := func(f func(b *testing.B)) (ns float64, allocs int64) {
		var nss []float64
		for range 5 {
			res := testing.Benchmark(f)
			nss = append(nss, float64(res.NsPerOp()))
			allocs = res.AllocsPerOp()
		}
		return medianF(nss), allocs
	}
	hitNs, hitAllocs := runs(func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, src, err := pods.Get(ctx, ns, names[i%n]); err != nil || src != reflector.SourceCache {
				b.Fatal(src, err)
			}
		}
	})
	stop()
	inf, stopInf := startInformer(kubernetes.NewForConfigOrDie(ownTransport(e.cfg)), ns, "", nil)
	for !inf.HasSynced() {
		time.Sleep(20 * time.Millisecond)
	}
	infNs, infAllocs := runs(func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, ok, err := inf.GetIndexer().GetByKey(keys[i%n]); err != nil || !ok {
				b.Fatal(err)
			}
		}
	})
	stopInf()

	// A miss: through a counting proxy.
	p, err := faultproxy.New(e.cluster.Config(), faultproxy.Options{})
	if err != nil {
		return err
	}
	defer p.Close()
	pods, stop, err = startKubespawn(ctx, p.ClientConfig(e.cfg), ns, "", reflector.Options{ProbeInterval: -1, AuditInterval: -1})
	if err != nil {
		return err
	}
	defer stop()
	const misses = 100
	p.ResetStats()
	for i := range misses {
		_, src, err := pods.Get(ctx, ns, fmt.Sprintf("nobody-%d", i))
		if !apierrors.IsNotFound(err) || src != reflector.SourceAPI {
			return fmt.Errorf("P6: a miss answered %v from %s", err, src)
		}
	}
	var reqs int64
	for k, s := range p.Stats() {
		if k.Verb == faultproxy.VerbGet && k.Resource == "pods" {
			reqs += s.Requests
		}
	}
	var all int64
	for _, s := range p.Stats() {
		all += s.Requests
	}
	r.add(row{ID: "P6", Figure: fmt.Sprintf("Get: cache hit (%d pods); a miss", n),
		Value:    fmt.Sprintf("hit %.0f ns/op, %d allocs; miss %.2f requests (%d GETs, %d requests in all, for %d misses)", hitNs, hitAllocs, float64(reqs)/misses, reqs, all, misses),
		Baseline: fmt.Sprintf("informer GetByKey %.0f ns/op, %d allocs", infNs, infAllocs),
		Ratio:    ratio(hitNs, infNs),
		Goal:     "hit ≤ 200 ns; a miss = exactly 1 request", Met: met(hitNs <= 200 && reqs == misses && all == misses)})
	return nil
}
