//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// result is one run of the CLI.
type result struct {
	code           int
	stdout, stderr string
	err            error
}

func doctorRun(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	return ended(err, &stdout, &stderr)
}

// ended is the result of a run that returned err, having written stdout
// and stderr: main's exit status for err, its message on stderr.
func ended(err error, stdout, stderr *bytes.Buffer) result {
	code := exitCode(err, stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// requireCode checks a run's exit status, showing its output if it is
// not want.
func requireCode(t *testing.T, want int, res result) {
	t.Helper()
	require.Equal(t, want, res.code, "stdout: %s\nstderr: %s", res.stdout, res.stderr)
}

// direct is a fresh namespace for the canary and a kubeconfig straight to
// the control plane: the start of the tests without a fault proxy.
func direct(t *testing.T) (ns, kubeconfig string) {
	t.Helper()
	return cluster.Namespace(t, "doctor"), testcluster.KubeConfig(t, cluster.Config())
}

// proxiedRun runs the CLI after its configuration is loaded, with cfg
// (through a plain HTTP fault proxy, to which a kubeconfig would give no
// credentials).
func proxiedRun(t *testing.T, cfg *rest.Config, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	o, err := parseFlags(args, &stderr)
	require.NoError(t, err)
	err = runWith(context.Background(), cfg, o, &stdout)
	return ended(err, &stdout, &stderr)
}

// report runs the CLI with -json and decodes its report.
func report(t *testing.T, args ...string) (result, Report) {
	t.Helper()
	return decode(t, doctorRun(t, append(args, "-json")...))
}

// proxiedReport is report through proxiedRun.
func proxiedReport(t *testing.T, cfg *rest.Config, args ...string) (result, Report) {
	t.Helper()
	return decode(t, proxiedRun(t, cfg, append(args, "-json")...))
}

func decode(t *testing.T, res result) (result, Report) {
	t.Helper()
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &rep), "stdout: %s\nstderr: %s", res.stdout, res.stderr)
	return res, rep
}

// proxied is a fault proxy (plain HTTP/1.1) in front of the cluster and
// an admin config through it.
func proxied(t *testing.T) (*faultproxy.Proxy, *rest.Config) {
	t.Helper()
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p, p.ClientConfig(cluster.Config())
}

func canaryLeft(t *testing.T, ns string) []string {
	t.Helper()
	cms, err := cluster.Client(t).CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: labelRun})
	require.NoError(t, err)
	var names []string
	for _, cm := range cms.Items {
		names = append(names, cm.Name)
	}
	return names
}

func detection(rep Report, client, c string) Detection {
	for _, d := range rep.Verdict.Detections {
		if d.Client == client && d.Case == c {
			return d
		}
	}
	return Detection{Client: "missing"}
}

func hasFinding(rep Report, sev, check, substr string) bool {
	for _, f := range rep.Verdict.Findings {
		if f.Severity == sev && f.Check == check && strings.Contains(f.Message, substr) {
			return true
		}
	}
	return false
}

// Directly against the control plane: healthy, HTTP/2, WatchList and
// bookmarks served, the canary delivered and deleted, and the verdict for
// kubespawn from its default options.
func TestHealthyDirect(t *testing.T) {
	t.Parallel()
	ns, kc := direct(t)
	res := doctorRun(t, "-kubeconfig", kc, "-canary-namespace", ns)
	requireCode(t, 0, res)
	assert.Contains(t, res.stdout, "verdict: healthy")
	assert.Contains(t, res.stdout, "HTTP/2.0 on watches")
	assert.Contains(t, res.stdout, "WatchList served")
	assert.Contains(t, res.stdout, "stall: a probe")
	assert.Empty(t, res.stderr)
	assert.Empty(t, canaryLeft(t, ns), "the canary must be deleted")
	t.Log("\n" + res.stdout)
}

// -json has every field, and the values say what the control plane is.
func TestJSONHasEveryField(t *testing.T) {
	t.Parallel()
	ns, kc := direct(t)
	res := doctorRun(t, "-kubeconfig", kc, "-canary-namespace", ns, "-json")
	requireCode(t, 0, res)

	// Every field of every struct is present in the output.
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &raw))
	for _, key := range jsonKeys(Report{}) {
		assert.True(t, hasPath(raw, key), "field %s missing from -json", key)
	}

	var rep Report
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &rep))
	assert.True(t, rep.Verdict.Healthy)
	assert.Equal(t, "read-write", rep.Mode)
	assert.Regexp(t, `^v1\.`, rep.Server.Version)
	assert.True(t, rep.Server.WatchList)
	assert.True(t, rep.Server.Bookmarks)
	assert.Equal(t, "HTTP/2.0", rep.Watch.Protocol)
	assert.True(t, rep.Watch.HTTP2)
	assert.Empty(t, rep.Watch.ProxyHeaders)
	assert.True(t, rep.Canary.Ran && rep.Canary.Delivered && rep.Canary.Deleted, "%+v", rep.Canary)
	assert.NotEmpty(t, rep.Canary.UID)
	assert.True(t, rep.Priority.Enabled)
	assert.Equal(t, "exempt", rep.Priority.FlowSchema) // the admin is system:masters
	assert.Equal(t, "exempt", rep.Priority.PriorityLevel)
	assert.Equal(t, float32(0), rep.RateLimit.QPS) // a kubeconfig carries none
	assert.Contains(t, rep.RateLimit.Effective, "client-go's default")
	assert.Equal(t, Seconds(198*time.Second), rep.RateLimit.ClassOf1000) // (1000 - 10) / 5

	// The verdict derives from reflector's defaults: StallTimeout 10s,
	// ProbeInterval 5s, grace 2s, probe deadline 3s, CanaryWindow 1s.
	assert.Equal(t, Seconds(7*time.Second), detection(rep, "kubespawn", caseStreamDies).Within)
	assert.Equal(t, Seconds(8*time.Second), detection(rep, "kubespawn", caseAllWatches).Within)
	assert.Equal(t, Seconds(2*time.Second), detection(rep, "kubespawn", caseAfterWrite).Within)
	assert.Equal(t, Seconds(8*time.Second), rep.Verdict.Kubespawn)
	assert.Equal(t, Seconds(45*time.Second), rep.Verdict.Informer) // HTTP/2 ping, 30s + 15s
	assert.Equal(t, never, detection(rep, "informer", caseLiveConn).Within)
	assert.Equal(t, Seconds(30*time.Second), rep.Verdict.Loop)
	assert.Empty(t, canaryLeft(t, ns))
}

// The spawner's options change kubespawn's verdict: the tightest options,
// and probes off (the idle rule then catches it first).
func TestOptionsChangeTheVerdict(t *testing.T) {
	t.Parallel()
	ns, kc := direct(t)
	_, tight := report(t, "-kubeconfig", kc, "-namespace", ns, "-stall-timeout", "4s", "-probe-interval", "2s")
	assert.Equal(t, Seconds(3*time.Second), detection(tight, "kubespawn", caseStreamDies).Within) // 2s + grace 1s
	assert.Equal(t, Seconds(4*time.Second), detection(tight, "kubespawn", caseAllWatches).Within) // 2s + 1s + 1s
	assert.Equal(t, "read-only", tight.Mode)

	_, off := report(t, "-kubeconfig", kc, "-namespace", ns, "-probe-interval", "-1s")
	d := detection(off, "kubespawn", caseStreamDies)
	assert.Equal(t, Seconds(150*time.Second), d.Within)
	assert.Contains(t, d.Rule, "idle")
	assert.Equal(t, Seconds(150*time.Second), off.Verdict.AfterWrite, "canaries need probes")
}

// Through the fault proxy with every watch stalled: the canary is never
// delivered, the probe watches hang: unhealthy, and the canary is still
// deleted.
func TestStalledWatchesAreUnhealthy(t *testing.T) {
	t.Parallel()
	ns := cluster.Namespace(t, "doctor")
	p, cfg := proxied(t)
	p.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch})
	res, rep := proxiedReport(t, cfg, "-canary-namespace", ns, "-canary-timeout", "2s")
	requireCode(t, 1, res)
	assert.False(t, rep.Verdict.Healthy)
	assert.True(t, rep.Watch.Stalled)
	assert.True(t, rep.Canary.Ran)
	assert.False(t, rep.Canary.Delivered)
	assert.True(t, rep.Canary.Deleted)
	assert.True(t, hasFinding(rep, sevFail, "canary", "not delivered by a watch opened before the create within 2s"), "%+v", rep.Verdict.Findings)
	assert.True(t, hasFinding(rep, sevFail, "watch", "stalled"), "%+v", rep.Verdict.Findings)
	assert.Equal(t, "HTTP/1.1", rep.Watch.Protocol) // the headers still come through
	assert.Equal(t, never, rep.Verdict.Informer, "HTTP/1.1: no ping")
	assert.Contains(t, res.stderr, "doctor: unhealthy: ")
	assert.Equal(t, 1, strings.Count(res.stderr, "\n"), "one line: %q", res.stderr)
	assert.Empty(t, canaryLeft(t, ns), "the canary must be deleted")
}

// Latency added by the proxy is reported; below what kubespawn's probes
// can live with, the path is healthy, but over HTTP/1.1 a plain informer
// would never notice a stall.
func TestLatencyIsReported(t *testing.T) {
	t.Parallel()
	ns := cluster.Namespace(t, "doctor")
	p, cfg := proxied(t)
	const lat = 300 * time.Millisecond
	p.SetLatency(faultproxy.Match{}, lat)
	res, rep := proxiedReport(t, cfg, "-canary-namespace", ns)
	requireCode(t, 0, res)
	assert.GreaterOrEqual(t, time.Duration(rep.Latency.Request), lat)
	assert.GreaterOrEqual(t, time.Duration(rep.Latency.WatchOpen), lat)
	assert.GreaterOrEqual(t, time.Duration(rep.Canary.Write), lat)
	assert.GreaterOrEqual(t, time.Duration(rep.Canary.Delivery), lat)
	assert.Equal(t, "HTTP/1.1", rep.Watch.Protocol)
	assert.True(t, hasFinding(rep, sevWarn, "protocol", "HTTP/1.1"))
	assert.Equal(t, never, rep.Verdict.Informer)
	assert.Equal(t, Seconds(7*time.Second), detection(rep, "kubespawn", caseStreamDies).Within)
}

// Watches that take longer to open than kubespawn's probe deadline allows
// (1s on the server plus the open, against 3s): unhealthy, and kubespawn's
// verdict falls back to its idle rule.
func TestSlowWatchOpensMissTheProbeDeadline(t *testing.T) {
	t.Parallel()
	ns := cluster.Namespace(t, "doctor")
	p, cfg := proxied(t)
	p.SetLatency(faultproxy.Match{Verb: faultproxy.VerbWatch}, 2500*time.Millisecond)
	res, rep := proxiedReport(t, cfg, "-namespace", ns)
	requireCode(t, 1, res)
	assert.True(t, hasFinding(rep, sevFail, "latency", "miss their 3s deadline"), "%+v", rep.Verdict.Findings)
	d := detection(rep, "kubespawn", caseStreamDies)
	assert.Equal(t, Seconds(150*time.Second), d.Within)
	assert.Contains(t, d.Rule, "probes miss their 3s deadline")
}

// Short watches (probes) refused with 429: reported, unhealthy, and
// kubespawn's verdict says only the idle rule is left.
func TestRefusedProbesAreReported(t *testing.T) {
	t.Parallel()
	ns := cluster.Namespace(t, "doctor")
	p, cfg := proxied(t)
	p.InjectStatus(faultproxy.Match{Verb: faultproxy.VerbWatch, MaxTimeout: 5 * time.Second}, 429, 100, time.Second)
	res, rep := proxiedReport(t, cfg, "-canary-namespace", ns)
	requireCode(t, 1, res)
	assert.Equal(t, 2, rep.Watch.Refused)
	assert.Equal(t, []int{429, 429}, rep.Watch.RefusedStatus)
	assert.True(t, hasFinding(rep, sevFail, "watch", "2 of 2 short watches"), "%+v", rep.Verdict.Findings)
	assert.True(t, rep.Canary.Delivered, "the canary's long watch is not refused")
	d := detection(rep, "kubespawn", caseStreamDies)
	assert.Equal(t, Seconds(150*time.Second), d.Within)
	assert.Contains(t, d.Rule, "refused")
	assert.Empty(t, canaryLeft(t, ns))
}

// No cluster: the kubeconfig's server refuses connections.
func TestNoCluster(t *testing.T) {
	t.Parallel()
	cfg := cluster.Config()
	cfg.Host = "https://" + servicetest.FreeAddr(t) // nothing listens there now
	res := doctorRun(t, "-kubeconfig", testcluster.KubeConfig(t, cfg), "-namespace", "default")
	assert.Equal(t, 2, res.code)
	assert.Regexp(t, `^doctor: cannot run: cannot reach the API server at https://127\.0\.0\.1:\d+: .*connection refused\n$`, res.stderr)
	assert.Empty(t, res.stdout)
}

// A kubeconfig that points nowhere: a file that does not exist, and one
// without a cluster.
func TestKubeconfigPointsNowhere(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope")
	res := doctorRun(t, "-kubeconfig", missing, "-namespace", "default")
	assert.Equal(t, 2, res.code)
	assert.Regexp(t, `^doctor: cannot run: API server configuration from --kubeconfig .*nope: .*no such file or directory\n$`, res.stderr)

	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, []byte("apiVersion: v1\nkind: Config\n"), 0o600))
	res = doctorRun(t, "-kubeconfig", empty, "-namespace", "default")
	assert.Equal(t, 2, res.code)
	assert.Regexp(t, `^doctor: cannot run: API server configuration from --kubeconfig .*empty: .*\n$`, res.stderr)
	assert.Equal(t, 1, strings.Count(res.stderr, "\n"), "one line: %q", res.stderr)
}

// A namespace that does not exist, to watch or for the canary.
func TestNamespaceDoesNotExist(t *testing.T) {
	t.Parallel()
	kc := testcluster.KubeConfig(t, cluster.Config())
	for _, args := range [][]string{{"-namespace", "no-such-ns"}, {"-namespace", "default", "-canary-namespace", "no-such-ns"}} {
		res := doctorRun(t, append([]string{"-kubeconfig", kc}, args...)...)
		assert.Equal(t, 2, res.code, "%v", args)
		assert.Equal(t, "doctor: cannot run: namespace \"no-such-ns\" does not exist\n", res.stderr, "%v", args)
		assert.Empty(t, res.stdout)
	}
}

// An identity without permission for the canary: the missing verb is
// named, the run falls back to read-only (the other checks still run),
// exits 1 and creates nothing.
func TestCanaryWithoutPermission(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		granted []string
		missing string
	}{
		{"no-create", []string{"list", "watch", "delete"}, "create"},
		{"no-delete", []string{"list", "watch", "create"}, "delete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := cluster.Namespace(t, "doctor")
			cfg := limitedConfig(t, ns, tc.granted)
			res, rep := report(t, "-kubeconfig", testcluster.KubeConfig(t, cfg), "-canary-namespace", ns)
			requireCode(t, 1, res)
			assert.Equal(t, "read-only", rep.Mode)
			assert.False(t, rep.Canary.Ran)
			assert.Equal(t, []string{tc.missing}, rep.Canary.MissingVerbs)
			assert.Equal(t, "doctor: unhealthy: canary: no permission to "+tc.missing+" configmaps in namespace "+ns+" (verb "+tc.missing+" missing): read-only checks only\n", res.stderr)
			// The read-only checks ran with the same identity.
			assert.True(t, rep.Server.WatchList)
			assert.Equal(t, "HTTP/2.0", rep.Watch.Protocol)
			assert.True(t, rep.Priority.Enabled)
			assert.Contains(t, rep.Priority.Note, "no permission to list flowschemas")
			assert.Empty(t, canaryLeft(t, ns), "nothing created")
		})
	}
}

// limitedConfig is a ServiceAccount that may read pods in ns and use the
// given verbs on configmaps there, nothing else.
func limitedConfig(t *testing.T, ns string, verbs []string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	cfg, err := cluster.ServiceAccountConfig(ctx, ns, "doctor")
	require.NoError(t, err)
	client := cluster.Client(t)
	_, err = client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "doctor"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: verbs},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "doctor"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "doctor"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "doctor", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return cfg
}

// A Lease canary works as the ConfigMap does.
func TestLeaseCanary(t *testing.T) {
	t.Parallel()
	ns, kc := direct(t)
	res, rep := report(t, "-kubeconfig", kc, "-canary-namespace", ns, "-canary-kind", "lease")
	requireCode(t, 0, res)
	assert.True(t, rep.Canary.Delivered && rep.Canary.Deleted, "%+v", rep.Canary)
	leases, err := cluster.Client(t).CoordinationV1().Leases(ns).List(context.Background(), metav1.ListOptions{LabelSelector: labelRun})
	require.NoError(t, err)
	assert.Empty(t, leases.Items)
}
