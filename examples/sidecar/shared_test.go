//go:build integration

package main

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// TestOneWatchPerScopeForTheWholeProcess: two spawners and the sidecar's
// pod and event caches in one process, on one factory, share one pod
// watch and one event watch for their scope, counted at the proxy.
func TestOneWatchPerScopeForTheWholeProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	metrics := prometheus.NewRegistry()
	f, err := reflector.NewFactory(p.ClientConfig(cluster.Config()), reflector.Options{Registerer: metrics})
	require.NoError(t, err)
	t.Cleanup(f.Shutdown)

	selector := spawner.LabelManagedBy + "=" + spawner.ManagedByValue
	srv, err := newServer(Config{Factory: f, Namespaces: []string{e.ns}, Selector: selector, Metrics: metrics})
	require.NoError(t, err)
	t.Cleanup(srv.CloseStreams)
	for _, instance := range []string{"hub-a", "hub-b"} {
		pods, err := f.Pods(reflector.Scope{Namespaces: []string{e.ns}, LabelSelector: selector})
		require.NoError(t, err)
		idx, err := events.IndexFor(f, reflector.Scope{Namespaces: []string{e.ns}}, events.Options{})
		require.NoError(t, err)
		_, err = spawner.New(spawner.Options{Client: f.Client(), Pods: pods, Events: idx, Instance: instance,
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"spawner": instance}, metrics)})
		require.NoError(t, err)
	}
	f.Start(context.Background())
	require.NoError(t, f.WaitForCacheSync(t.Context()))

	count := func(resource string) int {
		n := 0
		for _, rec := range p.Records() {
			q, _ := url.ParseQuery(rec.RawQuery)
			secs, _ := strconv.Atoi(q.Get("timeoutSeconds"))
			if rec.Verb == faultproxy.VerbWatch && rec.Resource == resource && rec.End.IsZero() && secs >= 60 {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return count("pods") == 1 && count("events") == 1 }, 10*time.Second, 20*time.Millisecond)
	time.Sleep(time.Second) // and no second one appears
	require.Equal(t, 1, count("pods"), "one pod watch")
	require.Equal(t, 1, count("events"), "one event watch")
	require.Len(t, f.Status(), 2, "one pod cache, one event cache")
}
