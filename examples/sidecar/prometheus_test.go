//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/childproc"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/spawner"
)

// forDivisor scales the live test's copy of the rules: every for divided
// by it, nothing else changed (sameButFor). KubespawnReflectorNotSynced's
// 2m becomes 15s.
const forDivisor = 8

// TestPrometheusAlertsOnStall is the 2018 failure seen by a real
// Prometheus (Debian's 2.42) scraping the sidecar and the demo spawner
// service every second with the shipped rules (their for divided by
// forDivisor): every kubespawn metric the rules aggregate exists with the
// labels they group by, and when the fault proxy stalls both services'
// pod watch while pods keep changing, KubespawnReflectorNotSynced goes
// pending, then firing no sooner than its for, for each of them; it
// resolves once the watch recovers. (Without changes a stalled watch is
// only found by the idle check, about 150s, and the cache is synced again
// after its relist: nothing it holds is out of date.)
//
// Not parallel: its pod simulator plays the scheduler for every
// namespace, and the package's other tests expect none (or their own).
func TestPrometheusAlertsOnStall(t *testing.T) {
	promBin := prometheusTool(t, "prometheus")
	e := newEnv(t)
	// Until every pod it bound is gone (the cleanups below run first).
	sim, err := podsim.Start(context.Background(), e.direct, podsim.Options{NodeName: "kubespawn-prometheus-test"})
	require.NoError(t, err)
	t.Cleanup(sim.Stop)
	// TLS (HTTP/2): a kubeconfig's token is only sent over TLS.
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{HTTP2: true})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	viaProxy := p.ClientConfig(cluster.Config())
	dir := t.TempDir()

	// The sidecar, in this process.
	side := startSidecar(t, viaProxy, Config{Namespaces: []string{e.ns}})
	side.waitReady()

	// The demo spawner service, its real binary, through the same proxy.
	svc := startSpawnerService(t, dir, viaProxy, e.ns)
	code, body := svc.do(t, http.MethodPost, "/users/alice/server")
	require.Equal(t, http.StatusOK, code, "start alice: %s", body)
	t.Cleanup(func() {
		code, body := svc.do(t, http.MethodDelete, "/users/alice/server")
		assert.Equal(t, http.StatusOK, code, "stop alice: %s", body)
	})
	// An orphan (this instance's labels, no user): the sweeper deletes it,
	// so that swept_pods_total{reason} exists.
	e.pod("orphan", map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: spawnerInstance})
	e.pod("busy", map[string]string{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: "other"})
	t.Cleanup(func() {
		ctx := context.Background()
		require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(ctx, "busy", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			_, err := e.direct.CoreV1().Pods(e.ns).Get(ctx, "busy", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}, time.Minute, 100*time.Millisecond, "busy deleted before the simulator stops")
	})

	// Prometheus, with the test copy of the rules.
	shipped := ruleGroups(t, alertsPath)
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRulesFile(t, rulesPath, scaleFor(t, shipped, forDivisor))
	sameButFor(t, shipped, readRulesFile(t, rulesPath), forDivisor)
	prom := startPrometheus(t, promBin, dir, rulesPath, map[string]scrapeTarget{
		"kubespawn-sidecar": {url: side.url, namespace: e.ns, pod: "kubespawn-sidecar-0"},
		"kubespawn-spawner": {url: svc.url, namespace: e.ns, pod: "kubespawn-spawner-0"},
	})
	notSyncedFor := 2 * time.Minute / forDivisor
	require.Contains(t, prom.rules(t), loadedRule{"KubespawnReflectorNotSynced", notSyncedFor.Seconds()}, "Prometheus loaded the test copy")

	// Every metric the rules aggregate, with the labels they group by.
	require.Eventually(t, func() bool {
		return len(prom.query(t, `up{job=~"kubespawn-.*"} == 1`)) == 2
	}, time.Minute, 200*time.Millisecond, "both targets up")
	for _, g := range groupedSelectors(t, shipped) {
		q := g.metric + g.selector
		if strings.Contains(g.selector, "result!~") {
			q = g.metric // a failed start's result: none fails here
		}
		var got []map[string]string
		require.Eventually(t, func() bool {
			got = prom.query(t, q)
			return len(got) > 0
		}, time.Minute, 200*time.Millisecond, "%s: %s is scraped", g.alert, q)
		for _, s := range got {
			for _, l := range g.by {
				assert.NotEmpty(t, s[l], "%s: %s has label %s (it groups by %v): %v", g.alert, q, l, g.by, s)
			}
		}
		if strings.HasPrefix(g.metric, "kubespawn_reflector_") {
			jobs := map[string]bool{}
			for _, s := range got {
				jobs[s["job"]] = true
			}
			assert.Len(t, jobs, 2, "%s: %s from both services: %v", g.alert, q, got)
		}
	}
	for _, a := range prom.alerts(t) {
		require.NotEqual(t, "KubespawnReflectorNotSynced", a.Labels["alertname"], "not while healthy: %v", a)
	}

	// The 2018 stall: both services' pod watches go silent.
	p.Stall(faultproxy.Match{Verb: faultproxy.VerbWatch, Resource: "pods"})
	stalled := time.Now()
	// Pods keep changing meanwhile, as users kept starting in 2018: busy,
	// a pod of another instance (which this one's sweeper leaves alone),
	// is relabelled every second.
	writes, stopWrites := context.WithCancel(t.Context())
	writesDone := make(chan struct{})
	go func() {
		defer close(writesDone)
		for i := 0; ; i++ {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"test/write":"%d"}}}`, i)
			_, _ = e.direct.CoreV1().Pods(e.ns).Patch(writes, "busy", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			select {
			case <-writes.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	defer func() { stopWrites(); <-writesDone }()
	pods := map[string]string{"kubespawn-sidecar-0": "", "kubespawn-spawner-0": ""} // pod -> last state seen
	deadline := time.Now().Add(3 * time.Minute)
	lastStates := ""
	for {
		firing := 0
		var states []string
		for _, s := range prom.query(t, `kubespawn_reflector_state{reflector=~"pods.*"} == 1`) {
			states = append(states, s["pod"]+"="+s["state"])
		}
		slices.Sort(states)
		if st := strings.Join(states, " "); st != lastStates {
			t.Logf("%s after the stall: %s", time.Since(stalled).Round(time.Millisecond), st)
			lastStates = st
		}
		for _, a := range prom.alerts(t) {
			if a.Labels["alertname"] != "KubespawnReflectorNotSynced" || !strings.HasPrefix(a.Labels["reflector"], "pods ") {
				continue
			}
			pod := a.Labels["pod"]
			last, ok := pods[pod]
			require.True(t, ok, "alert of an unknown pod: %v", a)
			switch a.State {
			case "pending":
				require.NotEqual(t, "firing", last, "%s: pending after firing", pod)
			case "firing":
				if last != "firing" {
					require.Equal(t, "pending", last, "%s: pending before firing", pod)
					assert.GreaterOrEqual(t, time.Since(a.ActiveAt), notSyncedFor, "%s: fires no sooner than its for after turning pending (active at %s)", pod, a.ActiveAt)
					assert.Equal(t, "degraded", a.Labels["state"])
					assert.Equal(t, e.ns, a.Labels["namespace"])
					assert.Equal(t, "warning", a.Labels["severity"])
					t.Logf("%s: pending at %s, firing %s after the stall began", pod, a.ActiveAt.Format(time.StampMilli), time.Since(stalled).Round(time.Millisecond))
				}
			default:
				require.Fail(t, "unknown alert state", "%v", a)
			}
			pods[pod] = a.State
		}
		for _, s := range pods {
			if s == "firing" {
				firing++
			}
		}
		if firing == len(pods) {
			break
		}
		require.True(t, time.Now().Before(deadline), "KubespawnReflectorNotSynced firing for both services within 3m of the stall (seen: %v; alerts %v)\n%s", pods, prom.alerts(t), prom.Tail(30))
		time.Sleep(200 * time.Millisecond) // polling Prometheus's API, not synchronisation
	}
	for _, a := range prom.alerts(t) {
		t.Logf("active during the stall: %s %v", a.State, a.Labels)
	}

	// Recovery: the alert resolves.
	p.UnstallAll()
	side.waitReady()
	require.Eventually(t, func() bool {
		for _, a := range prom.alerts(t) {
			if a.Labels["alertname"] == "KubespawnReflectorNotSynced" {
				return false
			}
		}
		return true
	}, 2*time.Minute, 200*time.Millisecond, "KubespawnReflectorNotSynced resolves after the stall")
}

// --- the demo spawner service, a child process ---

const spawnerInstance = "prom"

type spawnerService struct {
	*childproc.Process
	url, token string
}

// do sends a request with the service's token.
func (s *spawnerService) do(t *testing.T, method, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startSpawnerService builds examples/spawner (with -race when this binary
// has it, reusing its compiled packages) and runs it against cfg's API
// server in namespace ns, sweeping every 2s, until the test ends.
func startSpawnerService(t *testing.T, dir string, cfg *rest.Config, ns string) *spawnerService {
	t.Helper()
	bin := filepath.Join(dir, "kubespawn-spawner")
	args := []string{"build", "-o", bin}
	if raceBuild() {
		args = append(args, "-race")
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	build := exec.Command(gobin, append(args, "github.com/kubespawn/kubespawn/examples/spawner")...)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build examples/spawner:\n%s", out)

	kubeconfig := filepath.Join(dir, "spawner.kubeconfig")
	require.NoError(t, testcluster.WriteKubeConfig(kubeconfig, cfg))
	token := "prometheus-test-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "spawner-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	port, err := childproc.FreePort()
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	proc, err := childproc.Start("spawner service", filepath.Join(dir, "spawner.log"), childproc.Options{Env: os.Environ(), Dir: dir}, bin,
		"--kubeconfig="+kubeconfig, "--namespace="+ns, "--instance="+spawnerInstance, "--listen="+addr, "--token-file="+tokenFile,
		"--image=example.org/notebook:1", "--start-timeout=1m", "--stop-timeout=30s", "--stall-timeout=4s", "--image-pull-grace=2s",
		"--sweep-interval=2s", "--orphan-min-age=1s", "-v=2")
	require.NoError(t, err)
	s := &spawnerService{Process: proc, url: "http://" + addr, token: token}
	t.Cleanup(func() {
		proc.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s", proc.Tail(40))
		}
	})
	servicetest.AwaitOK(t, s.url+"/readyz", 2*time.Minute, "spawner service ready")
	return s
}

// raceBuild reports whether this test binary was built with -race.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// --- Prometheus, a child process ---

type scrapeTarget struct{ url, namespace, pod string }

type promServer struct {
	*childproc.Process
	url string
}

// startPrometheus runs Prometheus with rules, scraping and evaluating
// every second; each target is a job of its own with the namespace and pod
// labels a ServiceMonitor gives it.
func startPrometheus(t *testing.T, bin, dir, rules string, targets map[string]scrapeTarget) *promServer {
	t.Helper()
	var scrapes []any
	for job, tg := range targets {
		u, err := url.Parse(tg.url)
		require.NoError(t, err)
		scrapes = append(scrapes, map[string]any{
			"job_name": job,
			"static_configs": []any{map[string]any{
				"targets": []string{u.Host},
				"labels":  map[string]string{"namespace": tg.namespace, "pod": tg.pod},
			}},
		})
	}
	cfg, err := json.Marshal(map[string]any{
		"global":         map[string]string{"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
		"rule_files":     []string{rules},
		"scrape_configs": scrapes,
	})
	require.NoError(t, err)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgPath, cfg, 0o644))
	port, err := childproc.FreePort()
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	proc, err := childproc.Start("prometheus", filepath.Join(dir, "prometheus.log"), childproc.Options{Dir: dir}, bin,
		"--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+addr)
	require.NoError(t, err)
	p := &promServer{Process: proc, url: "http://" + addr}
	t.Cleanup(func() {
		proc.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s", proc.Tail(40))
		}
	})
	servicetest.AwaitOK(t, p.url+"/-/ready", time.Minute, "prometheus ready")
	return p
}

// api GETs path of Prometheus's HTTP API into data.
func (p *promServer) api(t *testing.T, path string, data any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, b)
	var r struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(b, &r), "%s: %s", path, b)
	require.Equal(t, "success", r.Status, "%s: %s", path, b)
	require.NoError(t, json.Unmarshal(r.Data, data), "%s: %s", path, b)
}

// query returns the label sets of an instant query's series.
func (p *promServer) query(t *testing.T, q string) []map[string]string {
	t.Helper()
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
		} `json:"result"`
	}
	p.api(t, "/api/v1/query?query="+url.QueryEscape(q), &d)
	var out []map[string]string
	for _, r := range d.Result {
		out = append(out, r.Metric)
	}
	return out
}

type promAlert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"`
	ActiveAt time.Time         `json:"activeAt"`
}

// alerts returns the pending and firing alerts.
func (p *promServer) alerts(t *testing.T) []promAlert {
	t.Helper()
	var d struct {
		Alerts []promAlert `json:"alerts"`
	}
	p.api(t, "/api/v1/alerts", &d)
	return d.Alerts
}

// loadedRule is an alerting rule as Prometheus loaded it: its name and
// for, in seconds.
type loadedRule struct {
	Name     string  `json:"name"`
	Duration float64 `json:"duration"`
}

// rules returns the loaded alerting rules.
func (p *promServer) rules(t *testing.T) []loadedRule {
	t.Helper()
	var d struct {
		Groups []struct {
			Rules []loadedRule `json:"rules"`
		} `json:"groups"`
	}
	p.api(t, "/api/v1/rules?type=alert", &d)
	var out []loadedRule
	for _, g := range d.Groups {
		out = append(out, g.Rules...)
	}
	return out
}
