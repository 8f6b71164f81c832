//go:build integration

package main

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

// hubSimOptions are the options of the package's one pod simulator
// (cluster.PodSim starts it with its first caller's options, and ignores
// later ones): the stand-in's pods at 127.0.0.1, pods of the process
// runtime (real servers) at IPs of their own in podsim.BenchmarkPodCIDR,
// which the API server accepts in EndpointSlices, so that the services
// test's Service has its pod as endpoint. Start makes that range local (a
// route on lo, as root).
func hubSimOptions() podsim.Options {
	return podsim.Options{PodIP: "127.0.0.1", PodCIDR: podsim.BenchmarkPodCIDR, ProcessRuntimeClass: podsim.DefaultProcessRuntimeClass,
		ImageEntrypoints: map[string][]string{hubtest.SingleUserImage: {}, hubtest.LargeProfileImage: {}}}
}

// newServicesEnv is newHubEnv with real servers and services_enabled: the
// hub's class sends a Service with each pod and connects to the Service's
// ClusterIP (dns_name_template "{cluster_ip}"), which the rig's kube-proxy
// stand-in (internal/svcproxy) serves on loopback, forwarding to the
// endpoints of the real EndpointSlice controller.
func newServicesEnv(t *testing.T) *hubtest.Env {
	t.Helper()
	ns := cluster.Namespace(t, "hub", testcluster.NoPodsLeft(""), testcluster.KeepEvents())
	sim := cluster.PodSim(t, hubSimOptions())
	// Fail here, not with a start timeout: a simulator started by an
	// earlier test with other options gives loopback pod IPs, which no
	// EndpointSlice may list.
	require.Equal(t, podsim.BenchmarkPodCIDR, sim.PodCIDR().String(),
		"the package's pod simulator was started with another PodCIDR: every cluster.PodSim call of this package must pass hubSimOptions()")
	e, err := hubtest.Start(t.Context(), hubtest.Config{
		Admin: cluster.Config(), Client: cluster.Client(t), Namespace: ns, Dir: t.TempDir(), SpawnerBinary: spawnerBin,
		HubStartTimeout: 90 * time.Second, HTTPTimeout: 30 * time.Second, SweepInterval: time.Minute, OrphanMinAge: 5 * time.Minute,
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

// TestServicesEnabledThroughTheService (issue 22, item 6): with
// services_enabled the real hub starts a real jupyterhub-singleuser whose
// pod has a Service, created by the spawner service, owned by the pod
// (controller reference, the pod's UID); the real EndpointSlice controller
// lists the pod's IP (podsim.BenchmarkPodCIDR: not loopback, which the API
// server refuses in EndpointSlices) for it; the hub's proxy route targets
// the Service's ClusterIP (the class's dns_name_template "{cluster_ip}"),
// and /user/<name>/api/status answers 200 with the user's token through
// the hub's proxy, the ClusterIP and the kube-proxy stand-in, which counted
// the forwarded connections. After the stop the pod and its Service are
// gone from the API server.
func TestServicesEnabledThroughTheService(t *testing.T) {
	parallelHub(t)
	e := newServicesEnv(t)
	ctx := t.Context()
	client := cluster.Client(t)
	ns := e.Config.Namespace
	require.NoError(t, e.Hub.CreateUsers(ctx, []string{"ada"}))
	t.Cleanup(func() {
		if t.Failed() {
			logProcessPods(t, e)
		}
	})
	require.NoError(t, e.Hub.StartNamedServer(ctx, "ada", "", nil))
	ready := waitReady(t, e, []string{"ada"}, "")
	require.True(t, ready["ada"], "ada's server is ready in the hub")

	pod, err := e.UserPod(ctx, "ada")
	require.NoError(t, err)
	require.NotNil(t, pod)
	svc, err := client.CoreV1().Services(ns).Get(ctx, "jupyter-ada", metav1.GetOptions{}) // pod_name_template
	require.NoError(t, err)
	require.Len(t, svc.OwnerReferences, 1)
	own := svc.OwnerReferences[0]
	assert.Equal(t, "Pod", own.Kind)
	assert.Equal(t, pod.Name, own.Name)
	assert.Equal(t, pod.UID, own.UID, "owned by this very pod")
	assert.True(t, own.Controller != nil && *own.Controller, "a controller reference")
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	assert.True(t, netip.MustParsePrefix(podsim.BenchmarkPodCIDR).Contains(netip.MustParseAddr(pod.Status.PodIP)),
		"a routable pod IP: %s", pod.Status.PodIP)

	slicesList, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name})
	require.NoError(t, err)
	var addrs []string
	for _, s := range slicesList.Items {
		assert.Equal(t, "endpointslice-controller.k8s.io", s.Labels[discoveryv1.LabelManagedBy], "the controller's slice")
		for _, ep := range s.Endpoints {
			addrs = append(addrs, ep.Addresses...)
		}
	}
	assert.True(t, slices.Contains(addrs, pod.Status.PodIP), "the EndpointSlice lists the pod's IP %s: %v", pod.Status.PodIP, addrs)

	routes, err := e.Routes(ctx)
	require.NoError(t, err)
	assert.Equal(t, "http://"+clusterIP.String()+":8888", routes["/user/ada/"], "the hub routes ada to the Service's ClusterIP: %v", routes)

	// The hub's readiness checks went through the ClusterIP (some may
	// have been rejected while the endpoint was not yet published: the
	// pod is Ready before the controller and the stand-in's cache catch
	// up), and so does a user's request: not one rejected or failed.
	svcName := types.NamespacedName{Namespace: ns, Name: svc.Name}
	before := e.SvcProxy.Served(svcName)
	assert.Positive(t, before.Forwarded, "the hub's connections went through the ClusterIP: %+v", before)
	status(t, e, "ada", "/user/ada/api/status")
	after := e.SvcProxy.Served(svcName)
	assert.Greater(t, after.Forwarded, before.Forwarded, "the user's GET went through the ClusterIP: before %+v, after %+v", before, after)
	assert.Equal(t, before.Rejected, after.Rejected, "before %+v, after the user's GET %+v", before, after)
	assert.Zero(t, after.Failed, "%+v", after)

	require.NoError(t, e.StopAll(ctx, []string{"ada"}))
	require.Eventually(t, func() bool {
		_, err := client.CoreV1().Services(ns).Get(ctx, svc.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 100*time.Millisecond, "the Service goes with the pod")
	_, err = client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the pod is gone: %v", err)
}
