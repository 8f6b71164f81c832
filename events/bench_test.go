//go:build integration

package events

// Memory of the event cache against a plain client-go Event informer, on
// the real control plane. `make bench` runs each variant in a process of
// its own (-bench 'EventCacheMemory/kubespawn', then .../informer): in one
// process a cache measured first can still be in the heap when the next is
// measured. See BENCHMARKS.md.

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/reflector"
)

const (
	benchEventsNS   = "bench-events"
	benchEventPods  = 500
	benchEventsEach = 10 // kubelet-like lifecycle: Scheduled, Pulling, Pulled, Created, Started, ...
)

var benchEventsOnce sync.Once

func benchEventsSetup(b *testing.B) {
	benchEventsOnce.Do(func() {
		klog.LogToStderr(false)
		client := kubernetes.NewForConfigOrDie(cluster.Config())
		ctx := context.Background()
		_, _ = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchEventsNS}}, metav1.CreateOptions{})
		reasons := []string{"Scheduled", "Pulling", "Pulled", "Created", "Started"}
		var wg sync.WaitGroup
		work := make(chan int)
		for range 16 {
			wg.Go(func() {
				for i := range work {
					pod, j := i/benchEventsEach, i%benchEventsEach
					ev := podEvent(benchEventsNS, fmt.Sprintf("jupyter-user-%04d", pod), types.UID(fmt.Sprintf("uid-%04d", pod)),
						fmt.Sprintf("jupyter-user-%04d.%d", pod, j), corev1.EventTypeNormal, reasons[j%len(reasons)],
						fmt.Sprintf("step %d of the lifecycle of a user's notebook pod, with a message of typical length", j), time.Now())
					ev.Source = corev1.EventSource{Component: "kubelet", Host: "kubespawn-sim-node"}
					if _, err := client.CoreV1().Events(benchEventsNS).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
						panic(err)
					}
				}
			})
		}
		for i := range benchEventPods * benchEventsEach {
			work <- i
		}
		close(work)
		wg.Wait()
	})
}

func benchHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkEventCacheMemory: heap per cached event, kubespawn's event
// reflector (slimmed objects plus the per-pod index) against a plain
// informer.
func BenchmarkEventCacheMemory(b *testing.B) {
	benchEventsSetup(b)
	client := kubernetes.NewForConfigOrDie(cluster.Config())
	const n = benchEventPods * benchEventsEach
	measure := func(b *testing.B, start func() func()) {
		var perEvent float64
		for b.Loop() {
			before := benchHeap()
			stop := start()
			perEvent = float64(benchHeap()-before) / n
			stop()
		}
		b.ReportMetric(perEvent, "B/event")
	}
	b.Run("kubespawn", func(b *testing.B) {
		measure(b, func() func() {
			f, err := reflector.NewFactory(cluster.Config(), reflector.Options{})
			if err != nil {
				b.Fatal(err)
			}
			r, err := IndexFor(f, reflector.Scope{Namespaces: []string{benchEventsNS}}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			f.Start(context.Background())
			if err := r.WaitForSync(context.Background()); err != nil {
				b.Fatal(err)
			}
			if got := r.Stats(); got.Pods != benchEventPods {
				b.Fatalf("index has %d pods, want %d", got.Pods, benchEventPods)
			}
			return f.Shutdown
		})
	})
	b.Run("informer", func(b *testing.B) {
		measure(b, func() func() {
			f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(benchEventsNS))
			inf := f.Core().V1().Events().Informer()
			stop := make(chan struct{})
			f.Start(stop)
			if !cache.WaitForCacheSync(stop, inf.HasSynced) {
				b.Fatal("informer did not sync")
			}
			return func() { close(stop); f.Shutdown() }
		})
	})
}
