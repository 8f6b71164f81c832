package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/stats"
	"github.com/kubespawn/kubespawn/reflector"
)

var metaPatch = metav1.PatchOptions{FieldManager: "bench"}

var podWatches = faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"}

// touch writes an annotation of pod i as another component would (a
// kubelet's status, a user's label): a change in scope that the spawner
// did not make.
func touch(ctx context.Context, client kubernetes.Interface, ns string, i int) (*corev1.Pod, error) {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"bench.kubespawn.io/touch":%q}}}`, time.Now().Format(time.RFC3339Nano))
	return client.CoreV1().Pods(ns).Patch(ctx, benchpod.Name(i), types.MergePatchType, []byte(patch), metaPatch)
}

// detect waits until the cache reports a stall it had not counted at
// base, and returns when its state first left synced after since.
func detect(ctx context.Context, pods *reflector.PodCache, base int, since time.Time, limit time.Duration) (time.Duration, bool) {
	ch, cancel := pods.NotifyState()
	defer cancel()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	var first time.Time
	for {
		if first.IsZero() && pods.State() != reflector.StateSynced {
			first = time.Now()
		}
		if pods.Status().Gaps[reflector.GapStall] > base {
			if first.IsZero() {
				first = time.Now()
			}
			return first.Sub(since), true
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			return 0, false
		case <-ctx.Done():
			return 0, false
		}
	}
}

// measureStall: P1. Each trial starts a cache through a fault proxy
// (plain HTTP/1.1, so a stalled response is a silent, open TCP
// connection), waits a random part of a probe interval, then:
//   - stream dies: only the open main watch goes silent, and another
//     component changes a pod; timed from that change;
//   - every watch stalls: every pod watch, open and new, holds back its
//     data (probes included), and another component changes a pod; timed
//     from that change. (With nothing changed there is nothing to miss:
//     an empty probe completes through the stall and the cache is right.)
//   - canary: the stream dies and the spawner writes a pod, reported with
//     ExpectWrite as spawner.Start and Stop do; timed from the write.
//
// The baseline is a plain informer over the same kind of proxy, stream
// dies, given informer-wait to show the change.
func measureStall(ctx context.Context, e *env, r *results, ns string, n int, c config) error {
	type cfgT struct {
		name string
		opts reflector.Options
	}
	configs := []cfgT{{"default options (StallTimeout 10 s, probe every 5 s)", reflector.Options{}},
		{"tightest (StallTimeout 4 s, probe every 2 s)", reflector.Options{StallTimeout: 4 * time.Second}}}
	kinds := []string{"stream dies", "every watch stalls", "canary"}
	res := map[string]map[string][]time.Duration{}
	missed := map[string]int{}
	target := 0
	for _, cf := range configs {
		res[cf.name] = map[string][]time.Duration{}
		f, err := reflector.NewFactory(e.cfg, cf.opts)
		if err != nil {
			return err
		}
		full := f.Options()
		f.Shutdown()
		interval := full.ProbeInterval
		for trial := range c.trials {
			for _, kind := range kinds {
				p, err := faultproxy.New(e.cluster.Config(), faultproxy.Options{})
				if err != nil {
					return err
				}
				pods, stop, err := startKubespawn(ctx, p.ClientConfig(e.cfg), ns, "", cf.opts)
				if err != nil {
					p.Close()
					return err
				}
				time.Sleep(time.Second + rand.N(interval))
				base := pods.Status().Gaps[reflector.GapStall]
				var t0 time.Time
				target = (target + 1) % n
				switch kind {
				case "stream dies":
					p.StallOpen(podWatches)
					t0 = time.Now()
					_, err = touch(ctx, e.client, ns, target)
				case "every watch stalls":
					p.Stall(podWatches)
					t0 = time.Now()
					_, err = touch(ctx, e.client, ns, target)
				case "canary":
					p.StallOpen(podWatches)
					t0 = time.Now()
					var w *corev1.Pod
					if w, err = touch(ctx, e.client, ns, target); err == nil {
						pods.ExpectWrite(w)
					}
				}
				if err != nil {
					stop()
					p.Close()
					return err
				}
				d, ok := detect(ctx, pods, base, t0, 4*full.StallTimeout)
				if ok {
					res[cf.name][kind] = append(res[cf.name][kind], d)
				} else {
					missed[cf.name+"/"+kind]++
				}
				logf("  P1 %s, %s, trial %d: %s (found: %v)", cf.name, kind, trial+1, ms(d), ok)
				p.UnstallAll()
				stop()
				p.Close()
			}
		}
	}

	// Baseline: a plain informer, stream dies, a change elsewhere.
	p, err := faultproxy.New(e.cluster.Config(), faultproxy.Options{})
	if err != nil {
		return err
	}
	inf, stopInf := startInformer(kubernetes.NewForConfigOrDie(p.ClientConfig(e.cfg)), ns, "", nil)
	for !inf.HasSynced() {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	p.StallOpen(podWatches)
	w, err := touch(ctx, e.client, ns, n-1)
	if err != nil {
		return err
	}
	t0 := time.Now()
	informerSaw := time.Duration(-1)
	for time.Since(t0) < c.waitInf {
		if o, ok, _ := inf.GetIndexer().GetByKey(ns + "/" + w.Name); ok && o.(*corev1.Pod).ResourceVersion == w.ResourceVersion {
			informerSaw = time.Since(t0)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopInf()
	p.Close()
	baseline := fmt.Sprintf("not within %s", c.waitInf)
	if informerSaw >= 0 {
		baseline = "saw the change after " + ms(informerSaw)
	}
	logf("  P1 baseline informer: %s", baseline)

	for _, cf := range configs {
		var parts []string
		worst := time.Duration(0)
		for _, kind := range kinds[:2] {
			ds := res[cf.name][kind]
			parts = append(parts, fmt.Sprintf("%s %s (max %s)", kind, ms(stats.Median(ds)), ms(stats.Quantile(ds, 1))))
			worst = max(worst, stats.Quantile(ds, 1))
		}
		can := res[cf.name]["canary"]
		miss := 0
		for _, kind := range kinds {
			miss += missed[cf.name+"/"+kind]
		}
		value := strings.Join(parts, "; ") + fmt.Sprintf("; after a write (canary) %s (max %s)", ms(stats.Median(can)), ms(stats.Quantile(can, 1)))
		if miss > 0 {
			value += fmt.Sprintf("; %d trials not detected", miss)
		}
		goal := "≤ 10 s; ≤ 3 s after a write"
		ok := miss == 0 && worst <= 10*time.Second && stats.Quantile(can, 1) <= 3*time.Second
		r.add(row{ID: "P1", Figure: "silent-stall detection, " + cf.name + fmt.Sprintf(", median (max) of %d", c.trials),
			Value: value, Baseline: "plain informer over HTTP/1.1: " + baseline, Ratio: "– (never vs found)", Goal: goal, Met: met(ok)})
	}
	return nil
}
