package main

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// runbookStep is one `sweep` invocation of ../RUNBOOK.md.
type runbookStep struct {
	name string
	args []string // after "sweep", variables not yet expanded
}

// runbookSteps reads the command lines that follow "# runbook-step: <name>"
// inside the runbook's fenced code blocks.
func runbookSteps(t *testing.T) []runbookStep {
	t.Helper()
	f, err := os.Open("../RUNBOOK.md")
	require.NoError(t, err)
	defer f.Close()
	var steps []runbookStep
	inCode, pending := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "```"):
			inCode, pending = !inCode, ""
		case !inCode:
		case strings.HasPrefix(line, "# runbook-step:"):
			pending = strings.TrimSpace(strings.TrimPrefix(line, "# runbook-step:"))
		case pending != "":
			fields := strings.Fields(line)
			require.Equal(t, "sweep", fields[0], "step %s must be a sweep command: %q", pending, line)
			steps = append(steps, runbookStep{name: pending, args: fields[1:]})
			pending = ""
		}
	}
	require.NoError(t, sc.Err())
	return steps
}

// TestRunbookRecovery floods a namespace "users-…" with leaked pods and walks
// the recovery of ../RUNBOOK.md: every `sweep` command there, in order,
// literally (only $NS, $INSTANCE and $SPAWNER expanded), through run(...), checking
// the outcome the runbook states for each step.
func TestRunbookRecovery(t *testing.T) {
	e := newEnv(t, "users")
	// No --kubeconfig in the runbook: the CLI finds $KUBECONFIG (not in a
	// pod here).
	t.Setenv("KUBECONFIG", e.kubeconfig)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")

	// The flood: pods running for hours (two of the most-used image), pods
	// the service lost track of, the service's own pods, a pod starting
	// right now and one never scheduled.
	ipython := e.leakMany("ipython-in-depth", 2, leak{startedAgo: 5 * time.Hour, instance: "hub-1"})
	bokeh := e.leakMany("bokeh-notebooks", 4, leak{startedAgo: 5 * time.Hour, instance: "hub-1"})
	lost := e.leakMany("lost", 3, leak{startedAgo: time.Hour, instance: "hub-1"})
	known := []*corev1.Pod{e.leak("alice", leak{startedAgo: time.Hour, instance: "hub-1"}), e.leak("bob", leak{startedAgo: time.Hour, instance: "hub-1"})}
	starting := e.leak("newcomer", leak{startedAgo: time.Minute, instance: "hub-1"})
	pending := e.leak("pending", leak{instance: "hub-1"})
	survivors := append(append([]*corev1.Pod{}, known...), starting, pending)

	// The service's /known-pods, as the demo spawner serves it.
	spawnerURL := knownPodsServer(t, KnownPods{Namespace: e.ns, Instance: "hub-1", Pods: names(known)}).URL
	vars := map[string]string{"NS": e.ns, "INSTANCE": "hub-1", "SPAWNER": spawnerURL}

	checks := map[string]func(out, errOut string){
		"dry-run-by-age": func(out, _ string) {
			rows := table(t, out)
			require.ElementsMatch(t, names(ipython, bokeh), keys(rows))
			for _, r := range rows {
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
			e.requirePresent(survivors...)
		},
	}

	steps := runbookSteps(t)
	var got []string
	for _, s := range steps {
		got = append(got, s.name)
	}
	require.Equal(t, []string{"dry-run-by-age", "delete-worst-first", "delete-by-age", "dry-run-orphans", "delete-orphans", "verify"}, got,
		"the runbook's steps changed: update this test")
	for _, s := range steps {
		args := make([]string, len(s.args))
		for i, a := range s.args {
			args[i] = os.Expand(a, func(k string) string {
				v, ok := vars[k]
				require.True(t, ok, "unknown variable $%s in step %s", k, s.name)
				return v
			})
		}
		out, errOut, err := runCLI(t, args...)
		require.NoError(t, err, "step %s", s.name)
		checks[s.name](out, errOut)
	}
}
