//go:build integration

package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// runbookPath is the runbook whose commands TestRunbookRecovery runs.
const runbookPath = "../RUNBOOK.md"

// runbookStep is one `sweep` invocation of the runbook.
type runbookStep struct {
	name string
	args []string // after "sweep", variables not yet expanded
}

// runbook reads the runbook: the command lines that follow
// "# runbook-step: <name>" inside its fenced code blocks, and the values it
// suggests for its variables, written `NAME=value` in its text.
func runbook(t *testing.T) (steps []runbookStep, suggested map[string]string) {
	t.Helper()
	text, err := os.ReadFile(runbookPath)
	require.NoError(t, err)
	suggested = map[string]string{}
	inCode, pending := false, ""
	for line := range strings.Lines(string(text)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "```"):
			inCode, pending = !inCode, ""
		case !inCode:
			for _, m := range suggestion.FindAllStringSubmatch(line, -1) {
				suggested[m[1]] = m[2]
			}
		case strings.HasPrefix(line, "# runbook-step:"):
			pending = strings.TrimSpace(strings.TrimPrefix(line, "# runbook-step:"))
		case pending != "":
			fields := strings.Fields(line)
			require.Equal(t, "sweep", fields[0], "step %s must be a sweep command: %q", pending, line)
			steps = append(steps, runbookStep{name: pending, args: fields[1:]})
			pending = ""
		}
	}
	return steps, suggested
}

// suggestion is how the runbook's text gives a variable's value: `NS=users`.
var suggestion = regexp.MustCompile("`([A-Z][A-Z_]*)=([^`\\s]+)`")

// expand expands the variables of args with vars; every variable must be
// in vars.
func expand(t *testing.T, step string, args []string, vars map[string]string) []string {
	t.Helper()
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = os.Expand(a, func(k string) string {
			v, ok := vars[k]
			require.True(t, ok, "unknown variable $%s in step %s", k, step)
			return v
		})
	}
	return out
}

// flagValue is the value of flag in args ("" if absent).
func flagValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// TestRunbookRecovery floods a namespace "users-…" with leaked pods and walks
// the recovery of the runbook: every `sweep` command there, in order,
// literally (only its variables expanded), through run(...), checking the
// outcome the runbook states for each step.
//
// Ages are real (the CLI ages pods from creationTimestamp, on the API
// server's clock), so the runbook's durations are variables, $OLDER_THAN
// and $ORPHAN_MIN_AGE, which the runbook suggests in hours and minutes for
// an operator and this test sets to seconds.
func TestRunbookRecovery(t *testing.T) {
	e := newEnv(t, "users")
	steps, suggested := runbook(t)
	var got []string
	for _, s := range steps {
		got = append(got, s.name)
	}
	require.Equal(t, []string{"dry-run-by-age", "delete-worst-first", "delete-by-age", "dry-run-orphans", "delete-orphans", "verify", "report-claims"}, got,
		"the runbook's steps changed: update this test")
	for _, s := range steps {
		// Real pods cannot be hours old in a test: ages must be variables.
		if slices.Contains(s.args, "--older-than") {
			require.Equal(t, "$OLDER_THAN", flagValue(s.args, "--older-than"), "step %s: --older-than must be $OLDER_THAN: the test's pods are seconds old, not hours", s.name)
		}
		if slices.Contains(s.args, "--orphans-from") || slices.Contains(s.args, "--report-claims") {
			require.Equal(t, "$ORPHAN_MIN_AGE", flagValue(s.args, "--orphan-min-age"), "step %s: --orphans-from and --report-claims need --orphan-min-age $ORPHAN_MIN_AGE: the test's pods and claims are seconds old, not minutes", s.name)
		}
		// The values the runbook suggests make valid commands.
		_, _, err := parseFlags(expand(t, s.name, s.args, suggested), io.Discard)
		require.NoError(t, err, "step %s with the runbook's suggested values %v", s.name, suggested)
	}
	// No --kubeconfig in the runbook: the CLI finds $KUBECONFIG (not in a
	// pod here). The environment is the process's: this test is not
	// parallel.
	t.Setenv("KUBECONFIG", e.kubeconfig)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")

	// The ages the test gives the runbook's variables. The orphans and the
	// service's pods are past(orphanMinAge) old at the first step and must
	// stay younger than olderThan until the last (verify): about
	// olderThan-past(orphanMinAge)-1s for the six steps; the young pods must
	// stay younger than orphanMinAge: about orphanMinAge-1s.
	const orphanMinAge, olderThan = limit, 2 * limit

	// The flood: pods running past $OLDER_THAN (two of the most-used
	// image), pods the service lost track of, the service's own pods, a pod
	// starting right now (on a node whose clock is hours behind: its
	// status.startTime says hours, its age is seconds) and one never
	// scheduled.
	var ipython, bokeh, lost, known []*corev1.Pod
	var starting, pending *corev1.Pod
	var lostClaims []*corev1.PersistentVolumeClaim
	var knownClaim *corev1.PersistentVolumeClaim
	e.ageTiers(
		tier{past(olderThan), func() {
			ipython = e.leakMany("ipython-in-depth", 2, leak{running: true, instance: "hub-1"})
			bokeh = e.leakMany("bokeh-notebooks", 4, leak{running: true, instance: "hub-1"})
		}},
		tier{past(orphanMinAge), func() {
			lost = e.leakMany("lost", 3, leak{running: true, instance: "hub-1"})
			known = []*corev1.Pod{e.leak("alice", leak{running: true, instance: "hub-1"}), e.leak("bob", leak{running: true, instance: "hub-1"})}
			// Home directories: the lost users' (whose pods the orphan
			// steps delete) and alice's.
			for i := range lost {
				lostClaims = append(lostClaims, e.claim(fmt.Sprintf("lost-%d", i), "hub-1"))
			}
			knownClaim = e.claim("alice", "hub-1")
		}},
		tier{0, func() {
			starting = e.leak("newcomer", leak{running: true, nodeClock: -5 * time.Hour, instance: "hub-1"})
			pending = e.leak("pending", leak{instance: "hub-1"})
		}},
	)
	survivors := append(append([]*corev1.Pod{}, known...), starting, pending)

	// The service's /known-pods, as the demo spawner serves it.
	spawnerURL := knownPodsServer(t, KnownPods{Namespace: e.ns, Instance: "hub-1", Pods: names(known)}).URL
	vars := map[string]string{"NS": e.ns, "INSTANCE": "hub-1", "SPAWNER": spawnerURL, "OLDER_THAN": olderThan.String(), "ORPHAN_MIN_AGE": orphanMinAge.String()}
	require.ElementsMatch(t, keys(vars), keys(suggested), "the runbook suggests values for other variables than the test sets")

	checks := map[string]func(out, errOut string){
		"dry-run-by-age": func(out, _ string) {
			rows := table(t, out)
			require.ElementsMatch(t, names(ipython, bokeh), keys(rows))
			for _, r := range rows {
				requireAgeAtLeast(t, r, past(olderThan))
				assert.Equal(t, []string{"too-old", "would-delete"}, r[4:])
			}
			assert.Contains(t, out, "6 pods matched, 0 deleted, 0 failed (dry run: yes)")
			e.requirePresent(append(append(append(ipython, bokeh...), lost...), survivors...)...)
		},
		"delete-worst-first": func(out, _ string) {
			rows := table(t, out)
			require.ElementsMatch(t, names(ipython), keys(rows))
			for _, r := range rows {
				assert.Equal(t, "deleted", r[5])
			}
			assert.Contains(t, out, "2 pods matched, 2 deleted, 0 failed (dry run: no)")
			e.requireGone(ipython...)
			e.requirePresent(bokeh...)
		},
		"delete-by-age": func(out, _ string) {
			require.ElementsMatch(t, names(bokeh), keys(table(t, out)))
			assert.Contains(t, out, "4 pods matched, 4 deleted, 0 failed (dry run: no)")
			e.requireGone(bokeh...)
			e.requirePresent(append(lost, survivors...)...)
		},
		"dry-run-orphans": func(out, errOut string) {
			assert.Contains(t, errOut, "knows 2 pods")
			rows := table(t, out)
			require.ElementsMatch(t, names(lost), keys(rows))
			for _, r := range rows {
				requireAgeAtLeast(t, r, past(orphanMinAge))
				assert.Equal(t, []string{"orphan", "would-delete"}, r[4:])
			}
			e.requirePresent(append(lost, survivors...)...)
		},
		"delete-orphans": func(out, _ string) {
			require.ElementsMatch(t, names(lost), keys(table(t, out)))
			assert.Contains(t, out, "3 pods matched, 3 deleted, 0 failed (dry run: no)")
			e.requireGone(lost...)
			e.requirePresent(survivors...)
		},
		"verify": func(out, _ string) {
			assert.Contains(t, out, "no pods matched")
			assert.Contains(t, out, "scanned 4 kubespawn pods in namespace "+e.ns)
			assert.NotContains(t, out, "CLAIM", "claims only with --report-claims")
			e.requirePresent(survivors...)
		},
		"report-claims": func(out, _ string) {
			rows := section(t, out, "CLAIM", 0)
			var want []string
			for _, c := range lostClaims {
				want = append(want, c.Name)
			}
			require.ElementsMatch(t, want, keys(rows), "the lost users' claims: their pods are gone")
			for _, r := range rows {
				assert.Equal(t, []string{"no_pod", "report"}, r[2:4])
			}
			assert.Contains(t, out, "3 claims of keys without a pod, 0 older than --max-claim-age, 0 deleted, 0 failed (dry run: yes)")
			assert.Contains(t, out, "no pods matched")
			for _, c := range append(lostClaims, knownClaim) {
				assert.True(t, e.claimPresent(c), "reported, never deleted: %s", c.Name)
			}
			e.requirePresent(survivors...)
		},
	}
	for _, s := range steps {
		out, errOut, err := runCLI(t, expand(t, s.name, s.args, vars)...)
		require.NoError(t, err, "step %s", s.name)
		checks[s.name](out, errOut)
	}
}
