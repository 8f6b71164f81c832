package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/legacy"
	"github.com/kubespawn/kubespawn/reflector"
)

// idleCost is what one client cost the API server in a window.
type idleCost struct {
	name                  string
	reqs, wire, raw, pods float64 // per minute
}

// measureIdle: P2. The variants run side by side in one window, each
// through its own counting proxy (requests, bytes on the wire) and meter
// (bytes decoded, pods serialised), while nothing changes in scope.
func measureIdle(ctx context.Context, e *env, r *results, ns string, n int, window time.Duration) error {
	type client struct {
		name  string
		p     *faultproxy.Proxy
		m     *meter
		stop  func()
		start func(cfg *rest.Config) (func(), error)
	}
	clients := []*client{
		{name: "kubespawn (defaults)", start: func(cfg *rest.Config) (func(), error) {
			_, stop, err := startKubespawn(ctx, cfg, ns, "", reflector.Options{})
			return stop, err
		}},
		{name: "kubespawn, audit every 50 s", start: func(cfg *rest.Config) (func(), error) {
			_, stop, err := startKubespawn(ctx, cfg, ns, "", reflector.Options{AuditInterval: 50 * time.Second})
			return stop, err
		}},
		{name: "informer", start: func(cfg *rest.Config) (func(), error) {
			inf, stop := startInformer(kubernetes.NewForConfigOrDie(cfg), ns, "", nil)
			for !inf.HasSynced() {
				time.Sleep(20 * time.Millisecond)
			}
			return stop, nil
		}},
		{name: "KubeSpawner loop", start: func(cfg *rest.Config) (func(), error) {
			lctx, cancel := context.WithCancel(ctx)
			l := legacy.New(kubernetes.NewForConfigOrDie(legacy.JSONConfig(cfg)), legacy.Modern(ns, ""))
			var wg sync.WaitGroup
			wg.Go(func() { l.Run(lctx) })
			for !l.Synced() {
				time.Sleep(20 * time.Millisecond)
			}
			return func() { cancel(); wg.Wait() }, nil
		}},
	}
	for _, c := range clients {
		p, err := faultproxy.New(e.cluster.Config(), faultproxy.Options{})
		if err != nil {
			return err
		}
		c.p, c.m = p, &meter{}
		stop, err := c.start(c.m.wrap(p.ClientConfig(e.cfg)))
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		c.stop = stop
	}
	time.Sleep(3 * time.Second) // past every initial sync
	for _, c := range clients {
		c.p.ResetStats()
		c.m.reset()
	}
	logf("  P2: %d idle pods, %s window, 4 clients side by side", n, window)
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return ctx.Err()
	}
	costs := map[string]idleCost{}
	perMin := float64(time.Minute) / float64(window)
	for _, c := range clients {
		var reqs, wire int64
		for _, s := range c.p.Stats() {
			reqs += s.Requests
			wire += s.ResponseBytes
		}
		costs[c.name] = idleCost{name: c.name, reqs: float64(reqs) * perMin, wire: float64(wire) * perMin,
			raw: float64(c.m.bytes.Load()) * perMin, pods: float64(c.m.pods.Load()) * perMin}
	}
	for _, c := range clients {
		c.stop()
		c.p.Close()
	}
	ks, audit, inf, loop := costs["kubespawn (defaults)"], costs["kubespawn, audit every 50 s"], costs["informer"], costs["KubeSpawner loop"]
	// The default audit runs every 5 minutes: one audit's cost (the 50 s
	// run minus the default run, both with one minute of probes) over 5.
	am := func(f func(idleCost) float64) float64 { return f(ks) + max(f(audit)-f(ks), 0)/5 }
	amort := idleCost{reqs: am(func(c idleCost) float64 { return c.reqs }), wire: am(func(c idleCost) float64 { return c.wire }),
		raw: am(func(c idleCost) float64 { return c.raw }), pods: am(func(c idleCost) float64 { return c.pods })}
	for _, c := range []idleCost{ks, audit, inf, loop} {
		r.notef("P2 %s, per minute: %.0f requests, %s on the wire, %s decoded, %.0f pods serialised", c.name, c.reqs, kb(c.wire), kb(c.raw), c.pods)
	}
	r.add(row{ID: "P2", Figure: fmt.Sprintf("idle API cost per minute, %d pods (defaults; audit every 5 min amortised): requests / wire / uncompressed / pods serialised", n),
		Value:    fmt.Sprintf("%.1f / %s / %s / %.0f (without the audit: %.0f / %s / %s / %.0f)", amort.reqs, kb(amort.wire), kb(amort.raw), amort.pods, ks.reqs, kb(ks.wire), kb(ks.raw), ks.pods),
		Baseline: fmt.Sprintf("loop %.0f / %s / %s / %.0f; informer %.0f / %s / %s / %.0f", loop.reqs, kb(loop.wire), kb(loop.raw), loop.pods, inf.reqs, kb(inf.wire), kb(inf.raw), inf.pods),
		Ratio:    fmt.Sprintf("vs loop: wire %s, uncompressed %s, pods %s", ratio(amort.wire, loop.wire), ratio(amort.raw, loop.raw), ratio(amort.pods, loop.pods)),
		Goal:     "≤ 0.1× the loop's bytes and pods, P1 holding",
		Met:      met(amort.wire*10 <= loop.wire && amort.raw*10 <= loop.raw && amort.pods*10 <= loop.pods)})
	return nil
}
