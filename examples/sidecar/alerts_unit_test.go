package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The shipped rules and their promtool unit tests.
const (
	alertsPath     = "deploy/alerts.yaml"
	alertTestsPath = "deploy/alerts_test.yaml"
	// rulesFileName is what alerts_test.yaml's rule_files names.
	rulesFileName = "alerts.rules.yaml"
)

// ruleGroups extracts spec.groups of the PrometheusRule at path as a
// Prometheus operator does: verbatim, every field kept.
func ruleGroups(t testing.TB, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var pr struct {
		Kind string `json:"kind"`
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	require.NoError(t, utilyaml.Unmarshal(b, &pr))
	require.Equal(t, "PrometheusRule", pr.Kind)
	require.NotEmpty(t, pr.Spec.Groups)
	return pr.Spec.Groups
}

// writeRulesFile writes groups as a Prometheus rules file (JSON, which is
// YAML) at path.
func writeRulesFile(t testing.TB, path string, groups []any) {
	t.Helper()
	b, err := json.MarshalIndent(map[string]any{"groups": groups}, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// readRulesFile reads a rules file written by writeRulesFile.
func readRulesFile(t testing.TB, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var f struct {
		Groups []any `json:"groups"`
	}
	require.NoError(t, utilyaml.Unmarshal(b, &f))
	return f.Groups
}

// rules returns every rule of groups (each a map, as decoded).
func rules(t testing.TB, groups []any) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, g := range groups {
		gm, ok := g.(map[string]any)
		require.True(t, ok, "group %v", g)
		rs, ok := gm["rules"].([]any)
		require.True(t, ok, "group %v has rules", gm["name"])
		for _, r := range rs {
			rm, ok := r.(map[string]any)
			require.True(t, ok, "rule %v", r)
			out = append(out, rm)
		}
	}
	return out
}

// alertNames lists the alerts of groups.
func alertNames(t testing.TB, groups []any) []string {
	t.Helper()
	var out []string
	for _, r := range rules(t, groups) {
		if a, ok := r["alert"].(string); ok {
			out = append(out, a)
		}
	}
	return out
}

// ruleFor is a rule's "for" (0 without one). Only Go-parsable durations
// (h, m, s, ms) are accepted, so that scaling them is exact.
func ruleFor(t testing.TB, r map[string]any) time.Duration {
	t.Helper()
	s, ok := r["for"].(string)
	if !ok {
		require.Nil(t, r["for"], "rule %v: for is a string", r["alert"])
		return 0
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err, "rule %v", r["alert"])
	return d
}

// scaleFor returns a deep copy of groups whose every "for" is divided by
// div (written in whole milliseconds, a Prometheus duration): the only
// difference, which sameButFor checks.
func scaleFor(t testing.TB, groups []any, div int) []any {
	t.Helper()
	b, err := json.Marshal(groups)
	require.NoError(t, err)
	var out []any
	require.NoError(t, json.Unmarshal(b, &out))
	for _, r := range rules(t, out) {
		if d := ruleFor(t, r); d > 0 {
			require.Zero(t, d%(time.Duration(div)*time.Millisecond), "rule %v: for %s is not a whole number of ms once divided by %d", r["alert"], d, div)
			r["for"] = fmt.Sprintf("%dms", (d / time.Duration(div)).Milliseconds())
		}
	}
	return out
}

// sameButFor checks that scaled is shipped with every "for" divided by div,
// and nothing else changed.
func sameButFor(t testing.TB, shipped, scaled []any, div int) {
	t.Helper()
	a, b := rules(t, shipped), rules(t, scaled)
	require.Len(t, b, len(a))
	for i := range a {
		require.Equal(t, ruleFor(t, a[i])/time.Duration(div), ruleFor(t, b[i]), "rule %v: the for is the shipped one divided by %d", a[i]["alert"], div)
	}
	strip := func(groups []any) []any {
		b, err := json.Marshal(groups)
		require.NoError(t, err)
		var out []any
		require.NoError(t, json.Unmarshal(b, &out))
		for _, r := range rules(t, out) {
			delete(r, "for")
		}
		return out
	}
	require.True(t, reflect.DeepEqual(strip(shipped), strip(scaled)), "the test copy differs from the shipped rules in more than their for")
}

// TestScaledRulesDifferOnlyInFor: the live test's copy of the rules
// (scaleFor) keeps every rule but its for, and the check that says so
// catches any other change.
func TestScaledRulesDifferOnlyInFor(t *testing.T) {
	shipped := ruleGroups(t, alertsPath)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeRulesFile(t, path, scaleFor(t, shipped, 8))
	scaled := readRulesFile(t, path)
	sameButFor(t, shipped, scaled, 8)
	for _, r := range rules(t, scaled) {
		if r["alert"] == "KubespawnReflectorNotSynced" {
			assert.Equal(t, "15000ms", r["for"])
		}
	}

	// The check itself: a changed threshold is caught.
	tampered := scaleFor(t, shipped, 8)
	rules(t, tampered)[0]["expr"] = "vector(1)"
	ft := &fakeT{}
	func() {
		defer func() { _ = recover() }()
		sameButFor(ft, shipped, tampered, 8)
	}()
	assert.True(t, ft.failed, "a changed expr is caught")
}

// fakeT records a failure of a helper under test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()                  {}
func (f *fakeT) Errorf(string, ...any)    { f.failed = true }
func (f *fakeT) FailNow()                 { f.failed = true; panic("FailNow") }
func (f *fakeT) Fatalf(string, ...any)    { f.FailNow() }
func (f *fakeT) Logf(string, ...any)      {}
func (f *fakeT) Cleanup(func())           {}
func (f *fakeT) Name() string             { return "fake" }
func (f *fakeT) Context() context.Context { return context.Background() }

// TestEveryAlertHasBothTests: alerts_test.yaml has, for every shipped
// alert, a case where it must fire and one where it must not, and names
// no alert that does not exist.
func TestEveryAlertHasBothTests(t *testing.T) {
	names := alertNames(t, ruleGroups(t, alertsPath))
	b, err := os.ReadFile(alertTestsPath)
	require.NoError(t, err)
	var f struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			Name  string `json:"name"`
			Cases []struct {
				Alert     string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	require.NoError(t, utilyaml.Unmarshal(b, &f))
	assert.Equal(t, []string{rulesFileName}, f.RuleFiles)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, c := range tc.Cases {
			require.Contains(t, names, c.Alert, "test %q", tc.Name)
			if len(c.ExpAlerts) > 0 {
				fires[c.Alert] = true
			} else {
				quiet[c.Alert] = true
			}
		}
	}
	for _, n := range names {
		assert.True(t, fires[n], "%s has a test where it fires", n)
		assert.True(t, quiet[n], "%s has a test where it must not fire", n)
	}
}

// groupedSelector is a kubespawn metric an alert's expr aggregates, the
// selector it uses and the labels it groups by.
type groupedSelector struct {
	alert, metric, selector string
	by                      []string
}

var (
	groupedRE = regexp.MustCompile(`by \(([^)]*)\)\s*\(\s*(?:\w+\(\s*)?(kubespawn_\w+)(\{[^}]*\})?`)
	metricRE  = regexp.MustCompile(`kubespawn_\w+`)
)

// groupedSelectors finds every kubespawn metric of the rules' exprs with
// the labels its aggregation keeps; it fails if one is used outside a
// "by (...)" aggregation, so that none goes unchecked.
func groupedSelectors(t testing.TB, groups []any) []groupedSelector {
	t.Helper()
	var out []groupedSelector
	for _, r := range rules(t, groups) {
		expr, _ := r["expr"].(string)
		alert, _ := r["alert"].(string)
		matches := groupedRE.FindAllStringSubmatch(expr, -1)
		require.Len(t, matches, len(metricRE.FindAllString(expr, -1)), "%s: every kubespawn metric is aggregated by (...): %s", alert, expr)
		for _, m := range matches {
			var by []string
			for l := range strings.SplitSeq(m[1], ",") {
				by = append(by, strings.TrimSpace(l))
			}
			slices.Sort(by)
			out = append(out, groupedSelector{alert: alert, metric: m[2], selector: m[3], by: by})
		}
	}
	return out
}

func TestGroupedSelectors(t *testing.T) {
	gs := groupedSelectors(t, ruleGroups(t, alertsPath))
	assert.Contains(t, gs, groupedSelector{alert: "KubespawnReflectorNotSynced", metric: "kubespawn_reflector_state", selector: `{state!="synced"}`, by: []string{"namespace", "pod", "reflector", "state"}})
	assert.Contains(t, gs, groupedSelector{alert: "KubespawnLeakedPodsSwept", metric: "kubespawn_spawner_swept_pods_total", by: []string{"job", "namespace", "reason"}})
}
