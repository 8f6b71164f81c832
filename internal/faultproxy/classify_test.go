package faultproxy_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	type want = faultproxy.RequestInfo
	tests := []struct {
		method, target string
		want           want
	}{
		// core group, namespaced
		{"GET", "/api/v1/namespaces/ns1/pods", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/pods?watch=true", want{IsResourceRequest: true, Verb: "watch", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/pods?watch=1&resourceVersion=10", want{IsResourceRequest: true, Verb: "watch", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/pods?watch=false", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/pods?watch=0", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/pods/p1", want{IsResourceRequest: true, Verb: "get", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"HEAD", "/api/v1/namespaces/ns1/pods/p1", want{IsResourceRequest: true, Verb: "get", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"GET", "/api/v1/namespaces/ns1/pods/p1/log", want{IsResourceRequest: true, Verb: "get", Version: "v1", Resource: "pods", Subresource: "log", Namespace: "ns1", Name: "p1"}},
		{"POST", "/api/v1/namespaces/ns1/pods", want{IsResourceRequest: true, Verb: "create", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"POST", "/api/v1/namespaces/ns1/pods/p1/eviction", want{IsResourceRequest: true, Verb: "create", Version: "v1", Resource: "pods", Subresource: "eviction", Namespace: "ns1", Name: "p1"}},
		{"PUT", "/api/v1/namespaces/ns1/pods/p1", want{IsResourceRequest: true, Verb: "update", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"PUT", "/api/v1/namespaces/ns1/pods/p1/status", want{IsResourceRequest: true, Verb: "update", Version: "v1", Resource: "pods", Subresource: "status", Namespace: "ns1", Name: "p1"}},
		{"PATCH", "/api/v1/namespaces/ns1/pods/p1", want{IsResourceRequest: true, Verb: "patch", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"DELETE", "/api/v1/namespaces/ns1/pods/p1", want{IsResourceRequest: true, Verb: "delete", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"DELETE", "/api/v1/namespaces/ns1/pods?labelSelector=a%3Db", want{IsResourceRequest: true, Verb: "deletecollection", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/events", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "events", Namespace: "ns1"}},
		// all namespaces, cluster-scoped
		{"GET", "/api/v1/pods", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "pods"}},
		{"GET", "/api/v1/pods?watch=true&allowWatchBookmarks=true", want{IsResourceRequest: true, Verb: "watch", Version: "v1", Resource: "pods"}},
		{"GET", "/api/v1/nodes/n1", want{IsResourceRequest: true, Verb: "get", Version: "v1", Resource: "nodes", Name: "n1"}},
		{"PATCH", "/api/v1/nodes/n1/status", want{IsResourceRequest: true, Verb: "patch", Version: "v1", Resource: "nodes", Subresource: "status", Name: "n1"}},
		// namespaces themselves
		{"GET", "/api/v1/namespaces", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "namespaces"}},
		{"POST", "/api/v1/namespaces", want{IsResourceRequest: true, Verb: "create", Version: "v1", Resource: "namespaces"}},
		{"GET", "/api/v1/namespaces/ns1", want{IsResourceRequest: true, Verb: "get", Version: "v1", Resource: "namespaces", Namespace: "ns1", Name: "ns1"}},
		{"DELETE", "/api/v1/namespaces/ns1", want{IsResourceRequest: true, Verb: "delete", Version: "v1", Resource: "namespaces", Namespace: "ns1", Name: "ns1"}},
		{"PUT", "/api/v1/namespaces/ns1/finalize", want{IsResourceRequest: true, Verb: "update", Version: "v1", Resource: "namespaces", Subresource: "finalize", Namespace: "ns1", Name: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/status", want{IsResourceRequest: true, Verb: "get", Version: "v1", Resource: "namespaces", Subresource: "status", Namespace: "ns1", Name: "ns1"}},
		// named groups
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l1", want{IsResourceRequest: true, Verb: "get", Group: "coordination.k8s.io", Version: "v1", Resource: "leases", Namespace: "kube-system", Name: "l1"}},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l1", want{IsResourceRequest: true, Verb: "update", Group: "coordination.k8s.io", Version: "v1", Resource: "leases", Namespace: "kube-system", Name: "l1"}},
		{"GET", "/apis/events.k8s.io/v1/namespaces/ns1/events?watch=1", want{IsResourceRequest: true, Verb: "watch", Group: "events.k8s.io", Version: "v1", Resource: "events", Namespace: "ns1"}},
		{"GET", "/apis/apps/v1/deployments", want{IsResourceRequest: true, Verb: "list", Group: "apps", Version: "v1", Resource: "deployments"}},
		{"PATCH", "/apis/apps/v1/namespaces/ns1/deployments/d1/scale", want{IsResourceRequest: true, Verb: "patch", Group: "apps", Version: "v1", Resource: "deployments", Subresource: "scale", Namespace: "ns1", Name: "d1"}},
		{"GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", want{IsResourceRequest: true, Verb: "get", Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles", Name: "admin"}},
		// legacy watch prefix
		{"GET", "/api/v1/watch/namespaces/ns1/pods", want{IsResourceRequest: true, Verb: "watch", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/watch/namespaces/ns1/pods/p1", want{IsResourceRequest: true, Verb: "watch", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"GET", "/api/v1/watch/pods", want{IsResourceRequest: true, Verb: "watch", Version: "v1", Resource: "pods"}},
		{"GET", "/apis/apps/v1/watch/namespaces/ns1/deployments", want{IsResourceRequest: true, Verb: "watch", Group: "apps", Version: "v1", Resource: "deployments", Namespace: "ns1"}},
		// list/watch of one object by field selector
		{"GET", "/api/v1/namespaces/ns1/pods?fieldSelector=metadata.name%3Dp1&watch=true", want{IsResourceRequest: true, Verb: "watch", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"GET", "/api/v1/namespaces/ns1/pods?fieldSelector=metadata.name%3D%3Dp1", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		{"GET", "/api/v1/namespaces/ns1/pods?fieldSelector=metadata.name%21%3Dp1", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"GET", "/api/v1/namespaces/ns1/pods?fieldSelector=spec.nodeName%3Dn1", want{IsResourceRequest: true, Verb: "list", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		{"DELETE", "/api/v1/namespaces/ns1/pods?fieldSelector=metadata.name%3Dp1", want{IsResourceRequest: true, Verb: "deletecollection", Version: "v1", Resource: "pods", Namespace: "ns1"}},
		// legacy proxy verb: no subresource
		{"GET", "/api/v1/proxy/namespaces/ns1/pods/p1/some/path", want{IsResourceRequest: true, Verb: "proxy", Version: "v1", Resource: "pods", Namespace: "ns1", Name: "p1"}},
		// discovery and non-resource
		{"GET", "/api", want{Verb: "get"}},
		{"GET", "/api/v1", want{Verb: "get"}},
		{"GET", "/apis", want{Verb: "get"}},
		{"GET", "/apis/apps", want{Verb: "get"}},
		{"GET", "/apis/apps/v1", want{Verb: "get"}},
		{"GET", "/version", want{Verb: "get"}},
		{"GET", "/healthz", want{Verb: "get"}},
		{"GET", "/openapi/v3/api/v1", want{Verb: "get"}},
		{"POST", "/some/thing", want{Verb: "post"}},
		{"GET", "/api/v1/watch", want{Verb: "get"}},
		{"GET", "/", want{Verb: "get"}},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			u, err := url.Parse(tc.target)
			require.NoError(t, err)
			tc.want.Path = u.Path
			assert.Equal(t, tc.want, faultproxy.Classify(tc.method, u))
		})
	}
}

func TestRequestInfoKey(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("/api/v1/namespaces/ns1/pods/p1/status")
	assert.Equal(t, faultproxy.Key{Verb: "patch", Resource: "pods/status"}, faultproxy.Classify("PATCH", u).Key())
	u, _ = url.Parse("/api/v1/namespaces/ns1/pods?watch=1")
	assert.Equal(t, faultproxy.Key{Verb: "watch", Resource: "pods"}, faultproxy.Classify("GET", u).Key())
	u, _ = url.Parse("/version")
	assert.Equal(t, faultproxy.Key{Verb: "get"}, faultproxy.Classify("GET", u).Key())
}

func TestMatch(t *testing.T) {
	t.Parallel()
	classify := func(method, target string) faultproxy.RequestInfo {
		u, err := url.Parse(target)
		require.NoError(t, err)
		return faultproxy.Classify(method, u)
	}
	watchPods := classify("GET", "/api/v1/namespaces/ns1/pods?watch=true")
	podStatus := classify("PATCH", "/api/v1/namespaces/ns1/pods/p1/status")
	lease := classify("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns1/leases/l1")
	version := classify("GET", "/version")
	mainWatch := classify("GET", "/api/v1/namespaces/ns1/pods?watch=true&timeoutSeconds=438")
	probe := classify("GET", "/api/v1/namespaces/ns1/pods?watch=true&timeoutSeconds=3")
	long := faultproxy.Match{Verb: faultproxy.VerbWatch, MinTimeout: time.Minute}
	short := faultproxy.Match{Verb: faultproxy.VerbWatch, MaxTimeout: 10 * time.Second}
	reflectorProbe := classify("GET", "/api/v1/namespaces/ns1/pods?watch=true&timeoutSeconds=1")
	atBound := classify("GET", "/api/v1/namespaces/ns1/pods?watch=true&timeoutSeconds=10")

	tests := []struct {
		name string
		m    faultproxy.Match
		ri   faultproxy.RequestInfo
		want bool
	}{
		{"zero matches watch", faultproxy.Match{}, watchPods, true},
		{"zero matches non-resource", faultproxy.Match{}, version, true},
		{"verb", faultproxy.Match{Verb: faultproxy.VerbWatch}, watchPods, true},
		{"other verb", faultproxy.Match{Verb: faultproxy.VerbList}, watchPods, false},
		{"resource", faultproxy.Match{Resource: "pods"}, watchPods, true},
		{"other resource", faultproxy.Match{Resource: "events"}, watchPods, false},
		{"resource matches subresource", faultproxy.Match{Resource: "pods"}, podStatus, true},
		{"subresource", faultproxy.Match{Resource: "pods/status"}, podStatus, true},
		{"other subresource", faultproxy.Match{Resource: "pods/log"}, podStatus, false},
		{"subresource does not match main resource", faultproxy.Match{Resource: "pods/status"}, watchPods, false},
		{"namespace", faultproxy.Match{Namespace: "ns1"}, watchPods, true},
		{"other namespace", faultproxy.Match{Namespace: "ns2"}, watchPods, false},
		{"all fields", faultproxy.Match{Verb: "watch", Resource: "pods", Namespace: "ns1"}, watchPods, true},
		{"resource.group", faultproxy.Match{Resource: "leases.coordination.k8s.io"}, lease, true},
		{"resource.other-group", faultproxy.Match{Resource: "leases.apps"}, lease, false},
		{"core group", faultproxy.Match{Resource: "pods."}, watchPods, true},
		{"core group vs named", faultproxy.Match{Resource: "leases."}, lease, false},
		{"resource never matches non-resource", faultproxy.Match{Resource: "pods"}, version, false},
		{"long watch", long, mainWatch, true},
		{"short watch is not long", long, probe, false},
		{"watch without a timeout is not long", long, watchPods, false},
		{"probe is short", short, reflectorProbe, true},
		{"short watch is short", short, probe, true},
		{"at the bound is short", short, atBound, true},
		{"long watch is not short", short, mainWatch, false},
		{"watch without a timeout is not short", short, watchPods, false},
		{"min and max", faultproxy.Match{MinTimeout: 2 * time.Second, MaxTimeout: time.Minute}, probe, true},
		{"below min and max", faultproxy.Match{MinTimeout: 2 * time.Second, MaxTimeout: time.Minute}, reflectorProbe, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.m.Matches(tc.ri))
		})
	}
}
