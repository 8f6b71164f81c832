//go:build integration

package main

import (
	"context"
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

// leakOldAndYoung leaks 3 running pods older than limit, then 2 young
// ones: what the --older-than tests sweep, the old ones only.
func (e *env) leakOldAndYoung() (old, young []*corev1.Pod) {
	e.t.Helper()
	e.ageTiers(
		tier{past(limit), func() { old = e.leakMany("old", 3, leak{running: true}) }},
		tier{0, func() { young = e.leakMany("young", 2, leak{running: true}) }},
	)
	return old, young
}

func TestDryRunListsButDeletesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	old, young := e.leakOldAndYoung()

	out, rows := e.sweepRows("--older-than", limit.String())
	require.ElementsMatch(t, names(old), keys(rows))
	for _, p := range old {
		r := rows[p.Name]
		requireAgeAtLeast(t, r, past(limit))
		assert.Equal(t, []string{e.ns, p.Name, "Running", "too-old", "would-delete"}, []string{r[0], r[1], r[3], r[4], r[5]})
	}
	assert.Contains(t, out, "scanned 5 kubespawn pods in namespace "+e.ns+" (instance default)")
	assert.Contains(t, out, "3 pods matched, 0 deleted, 0 failed (dry run: yes)")
	assert.Contains(t, out, "add --delete")
	e.requirePresent(append(old, young...)...) // asked the API server: nothing deleted
}

func TestDeleteDeletesAndConfirms(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	old, young := e.leakOldAndYoung()

	out, rows := e.sweepRows("--older-than", limit.String(), "--delete")
	require.ElementsMatch(t, names(old), keys(rows))
	for _, p := range old {
		assert.Equal(t, "deleted", rows[p.Name][5])
	}
	assert.Contains(t, out, "3 pods matched, 3 deleted, 0 failed (dry run: no)")
	e.requireGone(old...)
	e.requirePresent(young...)

	// Again: nothing left to match, exit 0.
	out, _, err := e.sweep("--older-than", limit.String(), "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "no pods matched")
	e.requirePresent(young...)
}

// Pods never scheduled have no status.startTime (delete-pods.py crashed on
// them): their age runs from creationTimestamp, like every pod's.
func TestNeverScheduledPodsSweptByCreationAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	var pending, fresh []*corev1.Pod
	e.ageTiers(
		tier{past(limit), func() { pending = e.leakMany("pending", 3, leak{}) }},
		tier{0, func() { fresh = e.leakMany("fresh", 1, leak{}) }},
	)
	for _, p := range append(pending, fresh...) {
		require.Nil(t, p.Status.StartTime)
	}

	_, rows := e.sweepRows("--older-than", limit.String())
	require.ElementsMatch(t, names(pending), keys(rows))
	for _, r := range rows {
		requireAgeAtLeast(t, r, past(limit))
		assert.Equal(t, []string{"Pending", "too-old", "would-delete"}, r[3:])
	}
	e.requirePresent(append(pending, fresh...)...)

	out, _, err := e.sweep("--older-than", limit.String(), "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "3 pods matched, 3 deleted, 0 failed (dry run: no)")
	e.requireGone(pending...)
	e.requirePresent(fresh...)
}

// The sweeper once aged pods from status.startTime, which the kubelet
// writes with its node's clock: a node clock behind made a pod created
// seconds ago look an hour old, and the sweeper deleted a start in
// progress; a node clock ahead hides a leaked pod. Age comes from
// creationTimestamp on the API server's clock only, for --older-than and
// --orphan-min-age alike.
func TestAgeFromCreationNotStartTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	var early, fresh *corev1.Pod
	e.ageTiers(
		// Leaked, but its node's clock is an hour ahead: startTime in the future.
		tier{past(limit), func() { early = e.leak("early", leak{running: true, nodeClock: time.Hour}) }},
		// Starting right now on a node whose clock is 5 hours behind.
		tier{0, func() { fresh = e.leak("fresh", leak{running: true, nodeClock: -5 * time.Hour}) }},
	)
	require.True(t, fresh.Status.StartTime.Time.Before(fresh.CreationTimestamp.Add(-4*time.Hour)), "startTime %s", fresh.Status.StartTime)
	require.True(t, early.Status.StartTime.Time.After(early.CreationTimestamp.Add(30*time.Minute)), "startTime %s", early.Status.StartTime)

	_, rows := e.sweepRows("--older-than", limit.String())
	require.ElementsMatch(t, []string{early.Name}, keys(rows))
	requireAgeAtLeast(t, rows[early.Name], past(limit))
	assert.Equal(t, []string{"Running", "too-old", "would-delete"}, rows[early.Name][3:])

	// The service knows neither pod: only the old one is an orphan, the
	// start in progress is protected by --orphan-min-age.
	ts := knownPodsServer(t, KnownPods{Pods: []string{}})
	_, rows = e.sweepRows("--orphans-from", ts.URL+"/known-pods", "--orphan-min-age", limit.String())
	require.ElementsMatch(t, []string{early.Name}, keys(rows))
	assert.Equal(t, "orphan", rows[early.Name][4])

	out, _, err := e.sweep("--older-than", limit.String(), "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "1 pods matched, 1 deleted, 0 failed (dry run: no)")
	e.requireGone(early)
	e.requirePresent(fresh)
}

func TestEmptyMatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	// An empty namespace, then pods none of which match.
	for _, args := range [][]string{{"--older-than", "4h"}, {"--older-than", "4h", "--delete"}} {
		out, _, err := e.sweep(args...)
		require.NoError(t, err)
		assert.Contains(t, out, "scanned 0 kubespawn pods")
		assert.Contains(t, out, "no pods matched")
	}
	young := e.leakMany("young", 2, leak{running: true})
	out, _, err := e.sweep("--older-than", "4h", "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "scanned 2 kubespawn pods")
	assert.Contains(t, out, "no pods matched")
	assert.Equal(t, 0, exitCode(err, io.Discard))
	e.requirePresent(young...)
}

// proxied is a recording fault proxy in front of the API server, ending
// with the test, and a kubeconfig for the CLI through it. TLS (HTTP/2):
// kubeconfig credentials are only sent over TLS.
func proxied(t *testing.T) (*faultproxy.Proxy, string) {
	t.Helper()
	proxy, err := faultproxy.New(cluster.Config(), faultproxy.Options{HTTP2: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	return proxy, testcluster.KubeConfig(t, proxy.ClientConfig(cluster.Config()))
}

// 8 pods in pages of 3: three list requests (checked at a recording proxy
// in front of the API server), every pod seen and deleted.
func TestPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	proxy, kubeconfig := proxied(t)
	var pods []*corev1.Pod
	e.ageTiers(tier{past(limit), func() { pods = e.leakMany("page", 8, leak{running: true}) }})

	out, _, err := runCLI(t, "--kubeconfig", kubeconfig, "--namespace", e.ns, "--instance", "default", "--older-than", limit.String(), "--page-size", "3", "--delete")
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

// A LIST that never answers (the body held back at a fault proxy) ends the
// CLI with a clear error once --request-timeout has passed; nothing is
// selected or deleted, and the next run lists again.
func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	proxy, kubeconfig := proxied(t)
	pods := e.leakMany("p", 2, leak{running: true})
	lists := faultproxy.Match{Verb: faultproxy.VerbList, Resource: "pods", Namespace: e.ns}
	proxy.Stall(lists)

	args := []string{"--kubeconfig", kubeconfig, "--namespace", e.ns, "--instance", "default", "--older-than", "1s", "--request-timeout", "2s"}
	out, _, err := runCLI(t, append(args, "--delete")...)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "listing pods in "+e.ns)
	require.ErrorContains(t, err, "the list page got no answer within 2s")
	assert.Equal(t, 1, exitCode(err, io.Discard))
	assert.Empty(t, out, "nothing was decided: no table")
	held := 0
	for _, r := range proxy.Records() {
		if lists.Matches(r.RequestInfo) {
			held++
		}
	}
	assert.Positive(t, held, "the LIST went through the proxy")
	e.requirePresent(pods...)

	proxy.Unstall(lists)
	out, _, err = runCLI(t, args...)
	require.NoError(t, err)
	assert.Contains(t, out, "scanned 2 kubespawn pods")
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
	t.Parallel()
	e := newEnv(t, "sweep")
	var known, orphans, starting []*corev1.Pod
	e.ageTiers(
		tier{past(limit), func() {
			known = e.leakMany("known", 2, leak{running: true})
			orphans = e.leakMany("orphan", 3, leak{running: true})
		}},
		// Young pods are protected even though unknown: they may be starting.
		tier{0, func() { starting = e.leakMany("starting", 1, leak{running: true}) }},
	)
	minAge := limit.String()

	for _, body := range []any{
		KnownPods{Namespace: e.ns, Instance: "default", Pods: names(known)},
		names(known), // a bare JSON array works too
	} {
		ts := knownPodsServer(t, body)
		out, errOut, err := e.sweep("--orphans-from", ts.URL+"/known-pods", "--orphan-min-age", minAge)
		require.NoError(t, err)
		assert.Contains(t, errOut, "knows 2 pods")
		rows := table(t, out)
		require.ElementsMatch(t, names(orphans), keys(rows))
		for _, p := range orphans {
			requireAgeAtLeast(t, rows[p.Name], past(limit))
			assert.Equal(t, []string{"Running", "orphan", "would-delete"}, rows[p.Name][3:])
		}
	}
	e.requirePresent(append(append(known, orphans...), starting...)...)

	ts := knownPodsServer(t, KnownPods{Namespace: e.ns, Pods: names(known)})
	out, _, err := e.sweep("--orphans-from", ts.URL+"/known-pods", "--orphan-min-age", minAge, "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "3 pods matched, 3 deleted, 0 failed (dry run: no)")
	e.requireGone(orphans...)
	e.requirePresent(append(known, starting...)...)
}

// Both criteria: too old OR orphan, each row says which. A known pod too
// old is selected as too-old; known pods younger than --older-than, and
// unknown pods younger than --orphan-min-age, are not.
func TestOrphansFromAndOlderThan(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	// The middle tier is past(minAge) old when the sweep starts and must
	// still be younger than maxAge: maxAge-past(minAge)-1s of slack.
	minAge, maxAge := limit, 2*limit
	var ancient, stray, starting *corev1.Pod
	var known []*corev1.Pod
	e.ageTiers(
		tier{past(maxAge), func() { ancient = e.leak("known-ancient", leak{running: true}) }},
		tier{past(minAge), func() {
			known = e.leakMany("known", 2, leak{running: true})
			stray = e.leak("stray", leak{running: true})
		}},
		tier{0, func() { starting = e.leak("starting", leak{running: true}) }},
	)
	ts := knownPodsServer(t, KnownPods{Pods: append(names(known), ancient.Name)})
	_, rows := e.sweepRows("--orphans-from", ts.URL+"/known-pods", "--older-than", maxAge.String(), "--orphan-min-age", minAge.String())
	require.ElementsMatch(t, []string{ancient.Name, stray.Name}, keys(rows))
	assert.Equal(t, "too-old", rows[ancient.Name][4])
	requireAgeAtLeast(t, rows[ancient.Name], past(maxAge))
	assert.Equal(t, "orphan", rows[stray.Name][4])
	requireAgeAtLeast(t, rows[stray.Name], past(minAge))
	e.requirePresent(append(known, ancient, stray, starting)...)
}

// A list from the wrong service (namespace or instance) or a service that
// cannot answer must never turn every pod into an orphan: the pods are old
// enough to be orphans, and --delete is given.
func TestOrphansFromRefusesWrongOrFailingService(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	var pods []*corev1.Pod
	e.ageTiers(tier{past(limit), func() { pods = e.leakMany("p", 2, leak{running: true}) }})
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
			_, _, err := e.sweep("--orphans-from", ts.URL, "--orphan-min-age", limit.String(), "--delete")
			require.ErrorContains(t, err, tc.want)
			assert.Equal(t, 1, exitCode(err, io.Discard))
		})
	}
	e.requirePresent(pods...)
}

func TestNameContainsAndSelector(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	var ipy, bokeh []*corev1.Pod
	var freeBokeh *corev1.Pod
	e.ageTiers(tier{past(limit), func() {
		ipy = e.leakMany("ipython-in-depth", 2, leak{running: true, labels: map[string]string{"tier": "free"}})
		bokeh = e.leakMany("bokeh-notebooks", 2, leak{running: true, labels: map[string]string{"tier": "paid"}})
		freeBokeh = e.leak("bokeh-free", leak{running: true, labels: map[string]string{"tier": "free"}})
	}})
	olderThan := limit.String()

	_, rows := e.sweepRows("--older-than", olderThan, "--name-contains", "ipython")
	assert.ElementsMatch(t, names(ipy), keys(rows))

	_, rows = e.sweepRows("--older-than", olderThan, "--selector", "tier=free")
	assert.ElementsMatch(t, append(names(ipy), freeBokeh.Name), keys(rows))

	// Both, deleting: only the free bokeh pod.
	_, rows = e.sweepRows("--older-than", olderThan, "--selector", "tier=free", "--name-contains", "bokeh", "--delete")
	assert.ElementsMatch(t, []string{freeBokeh.Name}, keys(rows))
	e.requireGone(freeBokeh)
	e.requirePresent(append(ipy, bokeh...)...)
}

func TestInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	var mine, theirs []*corev1.Pod
	var foreign *corev1.Pod
	e.ageTiers(tier{past(limit), func() {
		mine = e.leakMany("a", 2, leak{running: true})
		theirs = e.leakMany("b", 2, leak{running: true, instance: "hub-2"})
		foreign = e.leak("foreign", leak{running: true})
	}})
	// Not kubespawn's: never considered, whatever its age.
	foreign.Labels = map[string]string{"component": "singleuser-server"}
	_, err := e.direct.CoreV1().Pods(e.ns).Update(t.Context(), foreign, metav1.UpdateOptions{})
	require.NoError(t, err)
	olderThan := limit.String()

	_, rows := e.sweepRows("--older-than", olderThan)
	assert.ElementsMatch(t, names(mine), keys(rows))
	_, rows = e.sweepRows("--older-than", olderThan, "--instance", "hub-2")
	assert.ElementsMatch(t, names(theirs), keys(rows))
	out, rows := e.sweepRows("--older-than", olderThan, "--all-instances", "--delete")
	assert.Contains(t, out, "(all instances)")
	assert.ElementsMatch(t, names(mine, theirs), keys(rows))
	e.requireGone(append(mine, theirs...)...)
	e.requirePresent(foreign)
}

// A pod that never goes away (a finalizer nobody removes) fails its
// deletion: the row says so, the others are deleted, and the exit status
// is non-zero.
func TestDeleteFailureExitsNonZero(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "sweep")
	var ok []*corev1.Pod
	var stuck *corev1.Pod
	e.ageTiers(tier{past(limit), func() {
		ok = e.leakMany("ok", 2, leak{running: true})
		stuck = e.leak("stuck", leak{running: true, finalizer: true})
	}})
	olderThan := limit.String()

	out, _, err := e.sweep("--older-than", olderThan, "--delete", "--timeout", "2s")
	require.ErrorIs(t, err, errDeleteFailed)
	assert.Equal(t, 1, exitCode(err, io.Discard))
	rows := table(t, out)
	require.ElementsMatch(t, names(ok, []*corev1.Pod{stuck}), keys(rows))
	assert.Equal(t, "failed:", rows[stuck.Name][5])
	assert.Contains(t, out, "not gone within the stop timeout")
	assert.Contains(t, out, "3 pods matched, 2 deleted, 1 failed (dry run: no)")
	e.requireGone(ok...)

	// The stuck pod is terminating now: a second sweep skips it.
	out, _, err = e.sweep("--older-than", olderThan, "--delete")
	require.NoError(t, err)
	assert.Contains(t, out, "1 already terminating")
	assert.Contains(t, out, "no pods matched")
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
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
		"bad request timeout": {[]string{"--namespace", "u", "--older-than", "4h", "--request-timeout", "5"}, `invalid value "5" for flag -request-timeout`},
		// Validated by the library (SweepPolicy.RequestTimeout), before any request.
		"negative request timeout": {[]string{"--kubeconfig", testcluster.KubeConfig(t, cluster.Config()), "--namespace", "u", "--instance", "hub-1", "--older-than", "4h", "--request-timeout", "-1s"}, "RequestTimeout"},
		// And SweepPolicy.MaxClaimAge.
		"negative max claim age": {[]string{"--kubeconfig", testcluster.KubeConfig(t, cluster.Config()), "--namespace", "u", "--instance", "hub-1", "--max-claim-age", "-1s"}, "MaxClaimAge"},
		"max claim age all":      {[]string{"--namespace", "u", "--all-instances", "--max-claim-age", "720h"}, "--max-claim-age cannot be combined with --all-instances"},
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
