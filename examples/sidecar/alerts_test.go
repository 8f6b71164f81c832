//go:build integration

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// prometheusTool is Debian's prometheus package's program name (promtool
// or prometheus): it fails the test, never skips it, when it is missing.
func prometheusTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		p = "/usr/bin/" + name
		_, err = os.Stat(p)
	}
	require.NoError(t, err, "%s is missing: run 'make prometheus' (Debian's prometheus package, apt-get as root)", name)
	return p
}

// TestAlertRulesCheck: promtool check rules accepts the shipped
// PrometheusRule's groups, extracted as the operator does.
func TestAlertRulesCheck(t *testing.T) {
	t.Parallel()
	promtool := prometheusTool(t, "promtool")
	path := filepath.Join(t.TempDir(), rulesFileName)
	writeRulesFile(t, path, ruleGroups(t, alertsPath))
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	require.NoError(t, err, "promtool check rules:\n%s", out)
	require.Contains(t, string(out), "SUCCESS")
	t.Logf("%s", out)
}

// TestAlertRulesUnitTests runs alerts_test.yaml (promtool test rules) on
// the shipped rules: every alert fires on the series that must make it
// fire, after its for, and not on the ones that must not
// (TestEveryAlertHasBothTests checks both exist).
func TestAlertRulesUnitTests(t *testing.T) {
	t.Parallel()
	promtool := prometheusTool(t, "promtool")
	dir := t.TempDir()
	writeRulesFile(t, filepath.Join(dir, rulesFileName), ruleGroups(t, alertsPath))
	b, err := os.ReadFile(alertTestsPath)
	require.NoError(t, err)
	tests := filepath.Join(dir, filepath.Base(alertTestsPath))
	require.NoError(t, os.WriteFile(tests, b, 0o644))
	out, err := exec.Command(promtool, "test", "rules", tests).CombinedOutput()
	require.NoError(t, err, "promtool test rules:\n%s", out)
	require.Contains(t, string(out), "SUCCESS")
}
