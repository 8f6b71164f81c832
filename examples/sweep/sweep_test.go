package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

func TestDryRunListsButDeletesNothing(t *testing.T) {
	e := newEnv(t, "sweep")
	old := e.leakMany("old", 3, leak{startedAgo: 5 * time.Hour})
	young := e.leakMany("young", 2, leak{startedAgo: time.Hour})

	out, _, err := e.sweep("--older-than", "4h")
	require.NoError(t, err)
	rows := table(t, out)
	require.ElementsMatch(t, names(old), keys(rows))
	for _, p := range old {
		assert.Equal(t, []string{e.ns, p.Name, "5h", "Running", "too-old", "would-delete"}, rows[p.Name])
	}
	assert.Contains(t, out, "scanned 5 kubespawn pods in namespace "+e.ns+" (instance default)")
	assert.Contains(t, out, "3 pods matched, 0 deleted, 0 failed (dry run: yes)")
	assert.Contains(t, out, "add --delete")
	e.requirePresent(append(old, young...)...) // asked the API server: nothing deleted
}

func TestDeleteDeletesAndConfirms(t *testing.T) {
	e := newEnv(t, "sweep")
	old := e.leakMany("old", 3, leak{startedAgo: 5 * time.Hour})
	young := e.leakMany("young", 2, leak{startedAgo: time.Hour})

	out, _, err := e.sweep("--older-than", "4h", "--delete")
	require.NoError(t, err)
	rows := table(t, out)
	require.ElementsMatch(t, names(old), keys(rows))
	for _, p := range old {
		assert.Equal(t, "deleted", rows[p.Name][5])
	}
	assert.Contains(t, out, "3 pods matched, 3 deleted, 0 failed (dry run: no)")
	e.requireGone(old...)
	e.requirePresent(young...)

	// Again: nothing left to match, exit 0.
	out, _, err = e.sweep("--older-than", "4h", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "no pods matched")
}

// Pods never scheduled have no status.startTime (delete-pods.py crashed on
// them): their age runs from creationTimestamp.
func TestNeverScheduledPodsSweptByCreationAge(t *testing.T) {
	e := newEnv(t, "sweep")
	pending := e.leakMany("pending", 3, leak{})
	for _, p := range pending {
		require.Nil(t, p.Status.StartTime)
	}
	// A few seconds of real age (a lower bound, no upper bound on the wait).
	var out string
	require.Eventually(t, func() bool {
		var err error
		out, _, err = e.sweep("--older-than", "2s")
		require.NoError(t, err)
		return len(table(t, out)) == 3
	}, time.Minute, 500*time.Millisecond)
	for _, r := range table(t, out) {
		assert.Equal(t, []string{"Pending", "too-old", "would-delete"}, r[3:])
	}
	e.requirePresent(pending...)

	out, _, err := e.sweep("--older-than", "2s", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "3 pods matched, 3 deleted, 0 failed (dry run: no)")
	e.requireGone(pending...)
}

func TestEmptyMatch(t *testing.T) {
	e := newEnv(t, "sweep")
	// An empty namespace, then pods none of which match.
	for _, args := range [][]string{{"--older-than", "4h"}, {"--older-than", "4h", "--delete"}} {
		out, _, err := e.sweep(args...)
		require.NoError(t, err)
		assert.Contains(t, out, "scanned 0 kubespawn pods")
		assert.Contains(t, out, "no pods matched")
	}
	young := e.leakMany("young", 2, leak{startedAgo: time.Hour})
	out, _, err := e.sweep("--older-than", "4h", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "scanned 2 kubespawn pods")
	assert.Contains(t, out, "no pods matched")
	assert.Equal(t, 0, exitCode(err, io.Discard))
	e.requirePresent(young...)
}

// 8 pods in pages of 3: three list requests (checked at a recording proxy
// in front of the API server), every pod seen and deleted.
func TestPagination(t *testing.T) {
	e := newEnv(t, "sweep")
	proxy, err := faultproxy.New(cluster.Config(), faultproxy.Options{HTTP2: true}) // TLS: kubeconfig credentials are only sent over TLS
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	kubeconfig := testcluster.KubeConfig(t, proxy.ClientConfig(cluster.Config()))
	pods := e.leakMany("page", 8, leak{startedAgo: 5 * time.Hour})

	out, _, err := runCLI(t, "--kubeconfig", kubeconfig, "--namespace", e.ns, "--instance", "default", "--older-than", "4h", "--page-size", "3", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "scanned 8 kubespawn pods")
	assert.Contains(t, out, "8 pods matched, 8 deleted, 0 failed (dry run: no)")
	lists := 0
	for _, r := range proxy.Records() {
		if r.Verb == faultproxy.VerbList && r.Resource == "pods" && r.Namespace == e.ns {
			lists++
			assert.Contains(t, r.RawQuery, "limit=3")
		}
	}
	assert.Equal(t, 3, lists, "8 pods in pages of 3")
	e.requireGone(pods...)
}

// knownPodsServer serves what --orphans-from expects and counts requests.
func knownPodsServer(t *testing.T, body any) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/known-pods" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		require.NoError(t, json.NewEncoder(w).Encode(body))
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestOrphansFrom(t *testing.T) {
	e := newEnv(t, "sweep")
	known := e.leakMany("known", 2, leak{startedAgo: time.Hour})
	orphans := e.leakMany("orphan", 3, leak{startedAgo: time.Hour})
	// Young pods are protected even though unknown: they may be starting.
	starting := e.leakMany("starting", 1, leak{startedAgo: time.Minute})

	for _, body := range []any{
		KnownPods{Namespace: e.ns, Instance: "default", Pods: names(known)},
		names(known), // a bare JSON array works too
	} {
		ts := knownPodsServer(t, body)
		out, errOut, err := e.sweep("--orphans-from", ts.URL+"/known-pods", "--orphan-min-age", "10m")
		require.NoError(t, err)
		assert.Contains(t, errOut, "knows 2 pods")
		rows := table(t, out)
		require.ElementsMatch(t, names(orphans), keys(rows))
		for _, p := range orphans {
			assert.Equal(t, []string{"60m", "Running", "orphan", "would-delete"}, rows[p.Name][2:])
		}
	}
	e.requirePresent(append(append(known, orphans...), starting...)...)

	ts := knownPodsServer(t, KnownPods{Namespace: e.ns, Pods: names(known)})
	out, _, err := e.sweep("--orphans-from", ts.URL+"/known-pods", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "3 pods matched, 3 deleted, 0 failed (dry run: no)")
	e.requireGone(orphans...)
	e.requirePresent(append(known, starting...)...)

	// Both criteria: too old OR orphan, each row says which.
	ancient := e.leak("known-ancient", leak{startedAgo: 30 * time.Hour})
	stray := e.leak("stray", leak{startedAgo: time.Hour})
	ts = knownPodsServer(t, KnownPods{Pods: append(names(known), ancient.Name)})
	out, _, err = e.sweep("--orphans-from", ts.URL+"/known-pods", "--older-than", "24h")
	require.NoError(t, err)
	rows := table(t, out)
	require.ElementsMatch(t, []string{ancient.Name, stray.Name}, keys(rows))
	assert.Equal(t, "too-old", rows[ancient.Name][4])
	assert.Equal(t, "orphan", rows[stray.Name][4])
}

// A list from the wrong service (namespace or instance) or a service that
// cannot answer must never turn every pod into an orphan.
func TestOrphansFromRefusesWrongOrFailingService(t *testing.T) {
	e := newEnv(t, "sweep")
	pods := e.leakMany("p", 2, leak{startedAgo: time.Hour})
	for name, tc := range map[string]struct {
		handler http.HandlerFunc
		want    string
	}{
		"other namespace": {func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(KnownPods{Namespace: "elsewhere", Pods: []string{}})
		}, `namespace "elsewhere"`},
		"other instance": {func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(KnownPods{Instance: "hub-2", Pods: []string{}})
		}, `instance "hub-2"`},
		"server error": {func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "database down", http.StatusServiceUnavailable)
		}, "HTTP 503"},
		"not json": {func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "<html>login</html>")
		}, "expected a JSON array"},
		"no pods field": {func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"users": []}`)
		}, `no "pods" field`},
	} {
		t.Run(name, func(t *testing.T) {
			ts := httptest.NewServer(tc.handler)
			defer ts.Close()
			_, _, err := e.sweep("--orphans-from", ts.URL, "--delete")
			require.ErrorContains(t, err, tc.want)
			assert.Equal(t, 1, exitCode(err, io.Discard))
		})
	}
	e.requirePresent(pods...)
}

func TestNameContainsAndSelector(t *testing.T) {
	e := newEnv(t, "sweep")
	ipy := e.leakMany("ipython-in-depth", 2, leak{startedAgo: 5 * time.Hour, labels: map[string]string{"tier": "free"}})
	bokeh := e.leakMany("bokeh-notebooks", 2, leak{startedAgo: 5 * time.Hour, labels: map[string]string{"tier": "paid"}})
	freeBokeh := e.leak("bokeh-free", leak{startedAgo: 5 * time.Hour, labels: map[string]string{"tier": "free"}})

	out, _, err := e.sweep("--older-than", "4h", "--name-contains", "ipython")
	require.NoError(t, err)
	assert.ElementsMatch(t, names(ipy), keys(table(t, out)))

	out, _, err = e.sweep("--older-than", "4h", "--selector", "tier=free")
	require.NoError(t, err)
	assert.ElementsMatch(t, append(names(ipy), freeBokeh.Name), keys(table(t, out)))

	// Both, deleting: only the free bokeh pod.
	out, _, err = e.sweep("--older-than", "4h", "--selector", "tier=free", "--name-contains", "bokeh", "--delete")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{freeBokeh.Name}, keys(table(t, out)))
	e.requireGone(freeBokeh)
	e.requirePresent(append(ipy, bokeh...)...)
}

func TestInstances(t *testing.T) {
	e := newEnv(t, "sweep")
	mine := e.leakMany("a", 2, leak{startedAgo: 5 * time.Hour})
	theirs := e.leakMany("b", 2, leak{startedAgo: 5 * time.Hour, instance: "hub-2"})
	// Not kubespawn's: never considered, whatever its age.
	foreign := e.leak("foreign", leak{startedAgo: 5 * time.Hour})
	foreign.Labels = map[string]string{"component": "singleuser-server"}
	_, err := e.direct.CoreV1().Pods(e.ns).Update(t.Context(), foreign, metav1.UpdateOptions{})
	require.NoError(t, err)

	out, _, err := e.sweep("--older-than", "4h")
	require.NoError(t, err)
	assert.ElementsMatch(t, names(mine), keys(table(t, out)))
	out, _, err = e.sweep("--older-than", "4h", "--instance", "hub-2")
	require.NoError(t, err)
	assert.ElementsMatch(t, names(theirs), keys(table(t, out)))
	out, _, err = e.sweep("--older-than", "4h", "--all-instances", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "(all instances)")
	assert.ElementsMatch(t, names(mine, theirs), keys(table(t, out)))
	e.requireGone(append(mine, theirs...)...)
	e.requirePresent(foreign)
}

// A pod that never goes away (a finalizer nobody removes) fails its
// deletion: the row says so, the others are deleted, and the exit status
// is non-zero.
func TestDeleteFailureExitsNonZero(t *testing.T) {
	e := newEnv(t, "sweep")
	ok := e.leakMany("ok", 2, leak{startedAgo: 5 * time.Hour})
	stuck := e.leak("stuck", leak{startedAgo: 5 * time.Hour, finalizer: true})

	out, _, err := e.sweep("--older-than", "4h", "--delete", "--timeout", "2s")
	require.ErrorIs(t, err, errDeleteFailed)
	assert.Equal(t, 1, exitCode(err, io.Discard))
	rows := table(t, out)
	require.ElementsMatch(t, names(ok, []*corev1.Pod{stuck}), keys(rows))
	assert.Equal(t, "failed:", rows[stuck.Name][5])
	assert.Contains(t, out, "not gone within the stop timeout")
	assert.Contains(t, out, "3 pods matched, 2 deleted, 1 failed (dry run: no)")
	e.requireGone(ok...)

	// The stuck pod is terminating now: a second sweep skips it.
	out, _, err = e.sweep("--older-than", "4h", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "1 already terminating")
	assert.Contains(t, out, "no pods matched")
}

func TestBadFlags(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no namespace":        {[]string{"--older-than", "4h"}, "--namespace is required"},
		"no criterion":        {[]string{"--namespace", "u"}, "set --older-than, --orphans-from or both"},
		"bad duration":        {[]string{"--namespace", "u", "--older-than", "4"}, `invalid value "4" for flag -older-than`},
		"hours as a number":   {[]string{"--namespace", "u", "--older-than", "four hours"}, "invalid value"},
		"negative age":        {[]string{"--namespace", "u", "--older-than", "-1h"}, "--older-than must be positive"},
		"bad selector":        {[]string{"--namespace", "u", "--older-than", "4h", "--selector", "a=(b"}, "--selector"},
		"bad page size":       {[]string{"--namespace", "u", "--older-than", "4h", "--page-size", "0"}, "--page-size must be positive"},
		"bad url":             {[]string{"--namespace", "u", "--orphans-from", "localhost:8082/known-pods"}, "http:// or https:// URL"},
		"orphans all":         {[]string{"--namespace", "u", "--orphans-from", "http://x/known-pods", "--all-instances"}, "cannot be combined"},
		"orphan min age zero": {[]string{"--namespace", "u", "--orphans-from", "http://x/", "--orphan-min-age", "0"}, "--orphan-min-age must be positive"},
		"unknown flag":        {[]string{"--namespace", "u", "--older-than", "4h", "--force"}, "flag provided but not defined: -force"},
		"extra argument":      {[]string{"--namespace", "u", "--older-than", "4h", "delete"}, `unexpected arguments ["delete"]`},
		"no instance":         {[]string{"--namespace", "u", "--older-than", "4h"}, "--instance is required"},
		"bad instance":        {[]string{"--kubeconfig", testcluster.KubeConfig(t, cluster.Config()), "--namespace", "u", "--older-than", "4h", "--instance", "not a label!"}, "Instance"},
	} {
		t.Run(name, func(t *testing.T) {
			_, stderr, err := runCLI(t, tc.args...)
			require.ErrorIs(t, err, errUsage)
			require.ErrorContains(t, err, tc.want)
			var msg strings.Builder
			assert.Equal(t, 2, exitCode(err, &msg))
			assert.Contains(t, msg.String(), tc.want)
			if strings.Contains(tc.want, "flag") {
				assert.Contains(t, stderr, "Usage of sweep")
			}
		})
	}
	_, _, err := runCLI(t, "--help")
	assert.Equal(t, 0, exitCode(err, io.Discard))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
