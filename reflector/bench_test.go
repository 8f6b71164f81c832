//go:build integration

package reflector_test

// Go benchmarks of the read path on the real control plane, with realistic
// JupyterHub user pods (internal/benchpod). `make bench` runs them with
// -count 6 through benchstat; the rest of the performance table
// (BENCHMARKS.md) is internal/cmd/bench. KUBESPAWN_BENCH_PODS (default
// 1000) sets the pod count.

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/reflector"
)

const benchNS = "bench"

var (
	benchOnce sync.Once
	benchPods int
	benchErr  error
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchSetup creates benchPods realistic pods once per test binary.
func benchSetup(b *testing.B) {
	benchOnce.Do(func() {
		klog.LogToStderr(false)
		benchPods = envInt("KUBESPAWN_BENCH_PODS", 1000)
		client := kubernetes.NewForConfigOrDie(cluster.Config())
		ctx := context.Background()
		_, _ = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{})
		benchErr = benchpod.Create(ctx, client, benchNS, 0, benchPods, 16, nil)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
}

func startKubespawn(b *testing.B, cfg *rest.Config, opts reflector.Options) (*reflector.PodCache, func()) {
	f, err := reflector.NewFactory(cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{benchNS}, LabelSelector: benchpod.Selector})
	if err != nil {
		b.Fatal(err)
	}
	f.Start(context.Background())
	if err := f.WaitForCacheSync(context.Background()); err != nil {
		b.Fatal(err)
	}
	return pods, f.Shutdown
}

func startInformer(client kubernetes.Interface) (cache.SharedIndexInformer, func()) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(benchNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = benchpod.Selector }))
	inf := f.Core().V1().Pods().Informer()
	stop := make(chan struct{})
	f.Start(stop)
	for !inf.HasSynced() {
		time.Sleep(20 * time.Millisecond)
	}
	return inf, func() { close(stop); f.Shutdown() }
}

// BenchmarkGet: a cache hit (the spawner's hot path) against the plain
// informer's GetByKey.
func BenchmarkGet(b *testing.B) {
	benchSetup(b)
	ctx := context.Background()
	names := make([]string, benchPods)
	keys := make([]string, benchPods)
	for i := range benchPods {
		names[i] = benchpod.Name(i)
		keys[i] = benchNS + "/" + names[i]
	}
	b.Run("impl=kubespawn", func(b *testing.B) {
		r, stop := startKubespawn(b, cluster.Config(), reflector.Options{})
		defer stop()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, src, err := r.Get(ctx, benchNS, names[i%benchPods]); err != nil || src != reflector.SourceCache {
				b.Fatal(src, err)
			}
		}
	})
	b.Run("impl=informer", func(b *testing.B) {
		inf, stop := startInformer(kubernetes.NewForConfigOrDie(cluster.Config()))
		defer stop()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, ok, err := inf.GetIndexer().GetByKey(keys[i%benchPods]); err != nil || !ok {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetMiss: a pod the cache does not have costs exactly one
// request to the API server (counted at a proxy), whose NotFound is the
// answer.
func BenchmarkGetMiss(b *testing.B) {
	benchSetup(b)
	ctx := context.Background()
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	r, stop := startKubespawn(b, p.ClientConfig(cluster.Config()), reflector.Options{ProbeInterval: -1, AuditInterval: -1})
	defer stop()
	p.ResetStats()
	n := 0
	for i := 0; b.Loop(); i++ {
		if _, src, err := r.Get(ctx, benchNS, fmt.Sprintf("nobody-%d", i)); !apierrors.IsNotFound(err) || src != reflector.SourceAPI {
			b.Fatal(src, err)
		}
		n++
	}
	var reqs int64
	for _, s := range p.Stats() {
		reqs += s.Requests
	}
	b.ReportMetric(float64(reqs)/float64(n), "requests/op")
}
