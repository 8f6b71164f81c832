package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/stats"
	"github.com/kubespawn/kubespawn/reflector"
)

const churnAnnotation = "bench.kubespawn.io/churn"

// tracker records, per pod, when a consumer first saw the round's update.
type tracker struct {
	name  string
	round atomic.Int64
	sent  []atomic.Int64 // unix nanos the update of pod i was sent
	seen  []atomic.Int64 // unix nanos this consumer saw it (0: not yet)
	count atomic.Int64
	last  atomic.Int64
}

func newTracker(name string, n int, sent []atomic.Int64) *tracker {
	return &tracker{name: name, sent: sent, seen: make([]atomic.Int64, n)}
}

func (t *tracker) reset(round int) {
	t.round.Store(int64(round))
	for i := range t.seen {
		t.seen[i].Store(0)
	}
	t.count.Store(0)
}

// observe records pod if it carries this round's update.
func (t *tracker) observe(pod *corev1.Pod) {
	if pod == nil || pod.Annotations[churnAnnotation] != strconv.FormatInt(t.round.Load(), 10) {
		return
	}
	i := podIndex(pod.Name)
	if i < 0 || i >= len(t.seen) {
		return
	}
	now := time.Now().UnixNano()
	if t.seen[i].CompareAndSwap(0, now) {
		t.count.Add(1)
		t.last.Store(now)
	}
}

func podIndex(name string) int {
	const prefix = "jupyter-user-"
	if len(name) <= len(prefix) {
		return -1
	}
	i, err := strconv.Atoi(name[len(prefix):])
	if err != nil {
		return -1
	}
	return i
}

func (t *tracker) lags() []time.Duration {
	out := make([]time.Duration, 0, len(t.seen))
	for i := range t.seen {
		if s := t.seen[i].Load(); s != 0 {
			out = append(out, time.Duration(s-t.sent[i].Load()))
		}
	}
	return out
}

// measureChurn: P7. n pods are each updated once
// by 32 writers as fast as the API server takes it, while a raw informer
// handler, a kubespawn AddEventHandler handler and kubespawn Notify
// subscribers (one per pod, each reading the pod with Get on a signal, as
// the spawner does) watch side by side in this process.
func measureChurn(ctx context.Context, e *env, r *results, ns string, n int) error {
	sent := make([]atomic.Int64, n)
	raw := newTracker("raw informer handler", n, sent)
	handler := newTracker("kubespawn handler", n, sent)
	notify := newTracker("kubespawn Notify + Get", n, sent)

	inf, stopInf := startInformer(kubernetes.NewForConfigOrDie(ownTransport(e.cfg)), ns, "", nil)
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, obj any) {
		p, _ := obj.(*corev1.Pod)
		raw.observe(p)
	}}); err != nil {
		return err
	}
	defer stopInf()
	pods, stop, err := startKubespawn(ctx, e.cfg, ns, "", reflector.Options{})
	if err != nil {
		return err
	}
	defer stop()
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, obj any) {
		p, _ := obj.(*corev1.Pod)
		handler.observe(p)
	}}); err != nil {
		return err
	}
	for !inf.HasSynced() {
		time.Sleep(20 * time.Millisecond)
	}
	sctx, cancelSubs := context.WithCancel(ctx)
	var subs sync.WaitGroup
	defer func() { cancelSubs(); subs.Wait() }()
	for i := range n {
		ch, cancel := pods.Notify(ns, benchpod.Name(i))
		subs.Go(func() {
			defer cancel()
			for {
				select {
				case <-sctx.Done():
					return
				case <-ch:
					if p, _, err := pods.Get(sctx, ns, benchpod.Name(i)); err == nil {
						notify.observe(p)
					}
				}
			}
		})
	}
	trackers := []*tracker{raw, handler, notify}
	const rounds = 1
	var writes time.Duration
	took := map[string][]time.Duration{}
	var allLags = map[string][]time.Duration{}
	for round := 1; round <= rounds; round++ {
		for _, t := range trackers {
			t.reset(round)
		}
		start := time.Now()
		work := make(chan int)
		var wg sync.WaitGroup
		var werr atomic.Value
		for range 32 {
			wg.Go(func() {
				for i := range work {
					patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"%d"}}}`, churnAnnotation, round)
					sent[i].Store(time.Now().UnixNano())
					if _, err := e.client.CoreV1().Pods(ns).Patch(ctx, benchpod.Name(i), types.MergePatchType, []byte(patch), metaPatch); err != nil {
						werr.Store(err)
					}
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
		if err, _ := werr.Load().(error); err != nil {
			return err
		}
		writes += time.Since(start)
		deadline := time.Now().Add(2 * time.Minute)
		for _, t := range trackers {
			for t.count.Load() < int64(n) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if t.count.Load() < int64(n) {
				return fmt.Errorf("P7: %s saw %d of %d updates", t.name, t.count.Load(), n)
			}
			took[t.name] = append(took[t.name], time.Duration(t.last.Load()-start.UnixNano()))
			allLags[t.name] = append(allLags[t.name], t.lags()...)
		}
		logf("  P7 round %d: %d updates written in %s; all seen: raw %s, handler %s, notify %s", round, n, ms(time.Since(start)),
			ms(took[raw.name][round-1]), ms(took[handler.name][round-1]), ms(took[notify.name][round-1]))
	}
	tput := func(name string) float64 {
		var sum time.Duration
		for _, d := range took[name] {
			sum += d
		}
		return float64(rounds*n) / sum.Seconds()
	}
	rawT, hT, nT := tput(raw.name), tput(handler.name), tput(notify.name)
	lag := func(name string) string {
		return fmt.Sprintf("lag p50 %s, p99 %s", ms(stats.Median(allLags[name])), ms(stats.Quantile(allLags[name], 0.99)))
	}
	r.notef("P7: %d updates (merge patches of an annotation) written by 32 writers in %s (%.0f/s), the three consumers side by side in one process", rounds*n, ms(writes), float64(rounds*n)/writes.Seconds())
	over := func(x float64) float64 { return (rawT/x - 1) * 100 }
	r.add(row{ID: "P7", Figure: fmt.Sprintf("update throughput, %d pods churning (each updated once)", n),
		Value:    fmt.Sprintf("handler %.0f updates/s (%s); Notify + Get %.0f/s (%s)", hT, lag(handler.name), nT, lag(notify.name)),
		Baseline: fmt.Sprintf("raw informer handler %.0f/s (%s)", rawT, lag(raw.name)),
		Ratio:    fmt.Sprintf("overhead: handler %+.1f %%, Notify %+.1f %%", over(hT), over(nT)),
		Goal:     "overhead ≤ 10 %", Met: met(over(hT) <= 10 && over(nT) <= 10)})
	return nil
}
