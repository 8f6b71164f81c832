package reflector_test

// Benchmarks against the plain client-go informer and the KubeSpawner-style
// relist loop, on the real control plane. `make bench` runs them; the
// results go into BENCHMARKS.md. Pod count and window are set by
// KUBESPAWN_BENCH_PODS (default 1000) and KUBESPAWN_BENCH_WINDOW (default
// 60s).

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/legacy"
	"github.com/kubespawn/kubespawn/reflector"
)

const benchNS = "bench"

var (
	benchOnce sync.Once
	benchPods int
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KUBESPAWN_BENCH_WINDOW")); err == nil && d > 0 {
		return d
	}
	return time.Minute
}

// benchSetup creates benchPods realistic pods (two containers, ten env
// vars, resources, a volume) once per test binary.
func benchSetup(b *testing.B) {
	benchOnce.Do(func() {
		klog.SetOutput(ioDiscard{})
		klog.LogToStderr(false)
		benchPods = envInt("KUBESPAWN_BENCH_PODS", 1000)
		client := kubernetes.NewForConfigOrDie(cluster.Config())
		ctx := context.Background()
		_, _ = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{})
		var wg sync.WaitGroup
		work := make(chan int)
		for range 32 {
			wg.Go(func() {
				for i := range work {
					_, err := client.CoreV1().Pods(benchNS).Create(ctx, benchPod(i), metav1.CreateOptions{})
					if err != nil {
						panic(err)
					}
				}
			})
		}
		for i := range benchPods {
			work <- i
		}
		close(work)
		wg.Wait()
	})
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }

func benchPod(i int) *corev1.Pod {
	var env []corev1.EnvVar
	for j := range 10 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("VAR_%d", j), Value: fmt.Sprintf("value-%d-%d", i, j)})
	}
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("jupyter-user-%05d", i),
			Labels:      map[string]string{"component": "singleuser-server", "app.kubernetes.io/managed-by": "kubespawn", "hub.jupyter.org/username": fmt.Sprintf("user-%05d", i)},
			Annotations: map[string]string{"hub.jupyter.org/username": fmt.Sprintf("user-%05d", i)},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{
				{Name: "notebook", Image: "jupyter/base-notebook:2026-11", Env: env, Resources: res,
					Ports:        []corev1.ContainerPort{{ContainerPort: 8888, Name: "notebook"}},
					VolumeMounts: []corev1.VolumeMount{{Name: "home", MountPath: "/home/jovyan"}}},
				{Name: "sidecar", Image: "busybox:1.36", Command: []string{"sleep", "infinity"}, Resources: res},
			},
			Volumes: []corev1.Volume{{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

const benchSelector = "component=singleuser-server"

// startKubespawn starts a factory with a pod cache of the bench scope
// over cfg and returns the cache and the factory's Shutdown.
func startKubespawn(b *testing.B, cfg *rest.Config) (*reflector.PodCache, func()) {
	return startKubespawnWith(b, cfg, reflector.Options{})
}

func startKubespawnWith(b *testing.B, cfg *rest.Config, opts reflector.Options) (*reflector.PodCache, func()) {
	f, err := reflector.NewFactory(cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{benchNS}, LabelSelector: benchSelector})
	if err != nil {
		b.Fatal(err)
	}
	f.Start(context.Background())
	if err := f.WaitForCacheSync(context.Background()); err != nil {
		b.Fatal(err)
	}
	return pods, f.Shutdown
}

func startInformer(b *testing.B, client kubernetes.Interface, strip bool) (cache.SharedIndexInformer, func()) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(benchNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = benchSelector }))
	inf := f.Core().V1().Pods().Informer()
	if strip {
		_ = inf.SetTransform(func(o any) (any, error) { return reflector.StripManagedFields(o) })
	}
	stop := make(chan struct{})
	f.Start(stop)
	// Poll HasSynced every 20 ms, as reflector.WaitForSync does:
	// cache.WaitForCacheSync polls every 100 ms, which would time the poll
	// period rather than the sync.
	for !inf.HasSynced() {
		time.Sleep(20 * time.Millisecond)
	}
	return inf, func() { close(stop); f.Shutdown() }
}

// BenchmarkInitialSync: time from start to a synced cache of benchPods.
func BenchmarkInitialSync(b *testing.B) {
	benchSetup(b)
	client := kubernetes.NewForConfigOrDie(cluster.Config())
	b.Run("kubespawn", func(b *testing.B) {
		for b.Loop() {
			_, stop := startKubespawn(b, cluster.Config())
			stop()
		}
	})
	b.Run("informer", func(b *testing.B) {
		for b.Loop() {
			_, stop := startInformer(b, client, false)
			stop()
		}
	})
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCacheMemory: heap held per cached pod.
func BenchmarkCacheMemory(b *testing.B) {
	benchSetup(b)
	client := kubernetes.NewForConfigOrDie(cluster.Config())
	measure := func(b *testing.B, start func() func()) {
		var perPod float64
		for b.Loop() {
			before := heapAlloc()
			stop := start()
			after := heapAlloc()
			perPod = float64(after-before) / float64(benchPods)
			stop()
		}
		b.ReportMetric(perPod, "B/pod")
	}
	b.Run("kubespawn", func(b *testing.B) {
		measure(b, func() func() { _, stop := startKubespawn(b, cluster.Config()); return stop })
	})
	b.Run("informer", func(b *testing.B) {
		measure(b, func() func() { _, stop := startInformer(b, client, false); return stop })
	})
	b.Run("informer+strip", func(b *testing.B) {
		measure(b, func() func() { _, stop := startInformer(b, client, true); return stop })
	})
}

// BenchmarkGet: a cache hit, the spawner's hot path.
func BenchmarkGet(b *testing.B) {
	benchSetup(b)
	client := kubernetes.NewForConfigOrDie(cluster.Config())
	ctx := context.Background()
	b.Run("kubespawn", func(b *testing.B) {
		r, stop := startKubespawn(b, cluster.Config())
		defer stop()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, src, err := r.Get(ctx, benchNS, fmt.Sprintf("jupyter-user-%05d", i%benchPods)); err != nil || src != reflector.SourceCache {
				b.Fatal(src, err)
			}
		}
	})
	b.Run("informer", func(b *testing.B) {
		inf, stop := startInformer(b, client, false)
		defer stop()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, ok, err := inf.GetIndexer().GetByKey(fmt.Sprintf("%s/jupyter-user-%05d", benchNS, i%benchPods)); err != nil || !ok {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkIdleAPICost: requests and bytes per minute that keeping the
// cache costs the API server while nothing changes, through a counting
// proxy.
func BenchmarkIdleAPICost(b *testing.B) {
	benchSetup(b)
	window := benchWindow()
	run := func(b *testing.B, name string, start func(cfg *rest.Config) func()) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
				if err != nil {
					b.Fatal(err)
				}
				cfg := p.ClientConfig(cluster.Config())
				if name == "kubespawner-loop" {
					cfg = legacy.JSONConfig(cfg)
				}
				stop := start(cfg)
				time.Sleep(2 * time.Second) // past the initial sync
				p.ResetStats()
				time.Sleep(window)
				var reqs, bytes int64
				for _, c := range p.Stats() {
					reqs += c.Requests
					bytes += c.ResponseBytes
				}
				stop()
				p.Close()
				perMin := float64(time.Minute) / float64(window)
				b.ReportMetric(float64(reqs)*perMin, "req/min")
				b.ReportMetric(float64(bytes)*perMin, "bytes/min")
			}
		})
	}
	run(b, "kubespawn", func(cfg *rest.Config) func() { _, stop := startKubespawn(b, cfg); return stop })
	// One audit inside the window: five times the default audit rate.
	run(b, "kubespawn-audit-1m", func(cfg *rest.Config) func() {
		_, stop := startKubespawnWith(b, cfg, reflector.Options{AuditInterval: 50 * time.Second})
		return stop
	})
	run(b, "informer", func(cfg *rest.Config) func() {
		_, stop := startInformer(b, kubernetes.NewForConfigOrDie(cfg), false)
		return stop
	})
	run(b, "kubespawner-loop", func(cfg *rest.Config) func() {
		ctx, cancel := context.WithCancel(context.Background())
		r := legacy.New(kubernetes.NewForConfigOrDie(cfg), legacy.Modern(benchNS, benchSelector))
		go r.Run(ctx)
		return cancel
	})
}
