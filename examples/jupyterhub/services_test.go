//go:build integration

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/spawner"
)

// newServicesEnv is newHubEnv with real servers and services_enabled: the
// hub's class sends a Service with each pod and connects to the Service's
// ClusterIP (dns_name_template "{cluster_ip}"), which the rig's kube-proxy
// stand-in (internal/svcproxy) serves on loopback.
func newServicesEnv(t *testing.T, httpTimeout time.Duration) *hubtest.Env {
	t.Helper()
	ns := cluster.Namespace(t, "hub", testcluster.NoPodsLeft(""), testcluster.KeepEvents())
	cluster.PodSim(t, podsim.Options{PodIP: "127.0.0.1", ProcessRuntimeClass: podsim.DefaultProcessRuntimeClass,
		ImageEntrypoints: map[string][]string{hubtest.SingleUserImage: {}}})
	e, err := hubtest.Start(t.Context(), hubtest.Config{
		Admin: cluster.Config(), Client: cluster.Client(t), Namespace: ns, Dir: t.TempDir(), SpawnerBinary: spawnerBin,
		HubStartTimeout: 90 * time.Second, HTTPTimeout: httpTimeout, SweepInterval: time.Minute, OrphanMinAge: 5 * time.Minute,
		ProcessRuntime: podsim.DefaultProcessRuntimeClass, Services: true,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", e.Logs())
			t.Logf("svcproxy: %+v", e.SvcProxy.Ports())
		}
		e.Close()
	})
	return e
}

// nextEvent returns the first event of w that ok accepts.
func nextEvent(t *testing.T, w watch.Interface, what string, ok func(watch.Event) bool) watch.Event {
	t.Helper()
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case ev, open := <-w.ResultChan():
			require.True(t, open, "the watch ended before %s", what)
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s", what)
		}
	}
}

// TestServicesEnabledGoesToTheClusterIP (issue 22, item 6, as far as this
// machine allows): with services_enabled the real hub starts a real
// jupyterhub-singleuser whose pod gets a Service, created by the spawner
// service and owned by the pod (a controller reference with its UID), and
// the hub connects to the Service's ClusterIP, served by the kube-proxy
// stand-in with the real EndpointSlice controller's endpoints.
//
// The server is not reached through it: the pod simulator's pods have
// loopback IPs (127.244.x.y), which the API server refuses in
// EndpointSlices, so the controller publishes no endpoint (its Warning
// event says so), the stand-in rejects the hub's connections, and the hub
// gives up after http_timeout. The test pins that, and that such a start
// leaves nothing: the hub stops the server, the pod and its Service are
// deleted. Once process pods get a non-loopback IP of this machine
// (internal/podsim), the same rig serves /user/<name>/api/status through
// the Service, and this test becomes that one.
func TestServicesEnabledGoesToTheClusterIP(t *testing.T) {
	e := newServicesEnv(t, 15*time.Second)
	ctx := t.Context()
	client := cluster.Client(t)
	ns := e.Config.Namespace
	require.NoError(t, e.Hub.CreateUsers(ctx, []string{"ada"}))
	// Watches from before the start: what the API server had, whenever
	// the test reads it.
	pods, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
	require.NoError(t, err)
	defer pods.Stop()
	svcs, err := client.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=jupyter-ada"}) // pod_name_template
	require.NoError(t, err)
	defer svcs.Stop()
	require.NoError(t, e.Hub.StartNamedServer(ctx, "ada", "", nil))

	pod := nextEvent(t, pods, "ada's pod with its IP", func(ev watch.Event) bool {
		p, ok := ev.Object.(*corev1.Pod)
		return ok && ev.Type != watch.Deleted && p.Status.PodIP != ""
	}).Object.(*corev1.Pod)
	svc := nextEvent(t, svcs, "ada's Service", func(ev watch.Event) bool { return ev.Type == watch.Added }).Object.(*corev1.Service)
	require.Len(t, svc.OwnerReferences, 1)
	own := svc.OwnerReferences[0]
	assert.Equal(t, "Pod", own.Kind)
	assert.Equal(t, pod.Name, own.Name)
	assert.Equal(t, pod.UID, own.UID, "owned by this very pod")
	assert.True(t, own.Controller != nil && *own.Controller, "a controller reference")
	require.NotEmpty(t, svc.Spec.ClusterIP)

	// The EndpointSlice controller tried to publish the pod's IP.
	var msgs []string
	require.Eventually(t, func() bool {
		list, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + svc.Name})
		if err != nil {
			return false
		}
		msgs = nil
		for _, ev := range list.Items {
			msgs = append(msgs, ev.Reason+": "+ev.Message)
			if ev.Reason == "FailedToUpdateEndpointSlices" && strings.Contains(ev.Message, `"`+pod.Status.PodIP+`": may not be in the loopback range`) {
				return true
			}
		}
		return false
	}, 3*time.Minute, 100*time.Millisecond, "the controller's refused endpoint: %v", msgs)

	ready := waitReady(t, e, []string{"ada"}, "")
	assert.False(t, ready["ada"], "no endpoint: the server is never reached through its Service")
	assert.Positive(t, e.Hub.Count(fmt.Sprintf("Server at http://%s:8888/user/ada/ didn't respond", svc.Spec.ClusterIP)),
		"the hub connected to the Service's ClusterIP")
	served := e.SvcProxy.Served(types.NamespacedName{Namespace: ns, Name: svc.Name})
	assert.Positive(t, served.Rejected, "the stand-in rejected the hub's connections: %+v", served)
	assert.Zero(t, served.Forwarded, "%+v", served)

	// Nothing is left: the hub stopped the server, the service deleted the
	// pod and its Service.
	require.NoError(t, e.StopAll(ctx, []string{"ada"}))
	nextEvent(t, svcs, "the Service's deletion", func(ev watch.Event) bool { return ev.Type == watch.Deleted })
	nextEvent(t, pods, "the pod's deletion", func(ev watch.Event) bool { return ev.Type == watch.Deleted })
}
