//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// shortConfig is a compressed replay: 24 users over 16 s, the watch
// stalling at 6 s, so about 15 launches happen on a frozen cache.
func shortConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.Users = 24
	c.Duration = 16 * time.Second
	c.StallAt = 6 * time.Second
	c.StartTimeout = 8 * time.Second
	c.StopTimeout = 6 * time.Second
	c.StallTimeout = 4 * time.Second
	c.NamespacePrefix = "test-replay-"
	c.Progress = t.Output()
	return c
}

// TestReplay runs the short replay on the real control plane: the baseline
// leaks pods (the point of the demo), kubespawn leaks none; then it checks
// the JSON and SVG outputs of that report.
func TestReplay(t *testing.T) {
	c := shortConfig(t)
	rep, err := replay(t.Context(), cluster.Config(), c)
	require.NoError(t, err)

	for _, r := range []RunResult{rep.Baseline, rep.Kubespawn} {
		assert.Equal(t, c.Users, r.Launches, "%s: every user launched", r.Name)
		assert.Equal(t, r.Launches, r.Started+r.Failed, "%s: every launch ended", r.Name)
		assert.Positive(t, r.APIRequests, "%s: API requests went through the run's proxy", r.Name)
		assert.Positive(t, r.APIBytes, r.Name)
		assert.NotEmpty(t, r.Series, r.Name)
	}

	// The 2018 incident: every launch after the stall leaks its pod.
	assert.Positive(t, rep.Baseline.Leaked, "the baseline leaks pods: %+v", rep.Baseline)
	assert.Nil(t, rep.Baseline.StallDetectedAfter, "nothing notices the stall in the baseline")
	assert.True(t, hasLog(rep.Baseline, "No pod jupyter-user-"), "the baseline skipped DELETEs: %+v", rep.Baseline.Log)
	assert.True(t, hasLog(rep.Baseline, "did not start in 8 seconds!"), "%+v", rep.Baseline.Log)

	// kubespawn: nothing leaks, the stall is detected, starts after the
	// stall still complete.
	assert.Zero(t, rep.Kubespawn.Leaked, "kubespawn leaked %v", rep.Kubespawn.LeakedPods)
	require.NotNil(t, rep.Kubespawn.StallDetectedAfter, "kubespawn's reflector detects the stall")
	assert.Positive(t, *rep.Kubespawn.StallDetectedAfter)
	assert.Greater(t, rep.Kubespawn.Started, rep.Baseline.Started, "kubespawn keeps starting servers on a stalled watch")
	assert.Equal(t, rep.Kubespawn.Running, rep.Kubespawn.PodsOnServer, "kubespawn: every pod on the server is a running server")

	t.Run("JSON", func(t *testing.T) { checkJSON(t, rep) })
	t.Run("SVG", func(t *testing.T) { checkSVG(t, rep) })

	var table bytes.Buffer
	printTable(&table, rep)
	assert.Contains(t, table.String(), "PODS LEAKED on the API server")
	assert.Contains(t, table.String(), "never")
}

func hasLog(r RunResult, substr string) bool {
	for _, l := range r.Log {
		if strings.Contains(l.Text, substr) {
			return true
		}
	}
	return false
}

func checkJSON(t *testing.T, rep *Report) {
	data, err := jsonReport(rep)
	require.NoError(t, err)
	require.False(t, bytes.Contains(bytes.TrimSpace(data), []byte("\n")), "one line, one object")
	var top map[string]map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(data, &top), string(data))
	require.Len(t, top, 2, string(data))
	for _, run := range []string{"baseline", "kubespawn"} {
		obj, ok := top[run]
		require.True(t, ok, "key %q in %s", run, data)
		for _, k := range []string{"launches", "started", "failed", "leaked", "stallDetectedAfterSeconds", "apiRequests", "apiBytes"} {
			_, ok := obj[k]
			assert.True(t, ok, "%s.%s missing in %s", run, k, data)
		}
	}
	assert.Equal(t, "null", string(top["baseline"]["stallDetectedAfterSeconds"]), "never detected is null")
	var after float64
	require.NoError(t, json.Unmarshal(top["kubespawn"]["stallDetectedAfterSeconds"], &after))
	assert.Positive(t, after)
	var leaked int
	require.NoError(t, json.Unmarshal(top["baseline"]["leaked"], &leaked))
	assert.Equal(t, rep.Baseline.Leaked, leaked)
}

func checkSVG(t *testing.T, rep *Report) {
	svg := renderSVG(rep)
	dec := xml.NewDecoder(strings.NewReader(svg))
	ids := map[string]xml.StartElement{}
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "the SVG is well-formed XML")
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
				assert.Equal(t, "http://www.w3.org/2000/svg", se.Name.Space)
			}
			for _, a := range se.Attr {
				if a.Name.Local == "id" {
					ids[a.Value] = se
				}
			}
		}
	}
	assert.Equal(t, "svg", root)
	for _, id := range []string{"series-baseline", "series-kubespawn"} {
		el, ok := ids[id]
		require.True(t, ok, "polyline %s", id)
		assert.Equal(t, "polyline", el.Name.Local)
		points := attr(el, "points")
		assert.Equal(t, len(pick(rep, id).Series), len(strings.Fields(points)), "%s has one point per sample", id)
	}
	marker, ok := ids["stall-marker"]
	require.True(t, ok, "the stall is marked")
	assert.Equal(t, "line", marker.Name.Local)
	assert.Equal(t, attr(marker, "x1"), attr(marker, "x2"), "a vertical line")
	_, ok = ids["legend"]
	assert.True(t, ok, "a legend")
}

func pick(rep *Report, id string) RunResult {
	if strings.HasSuffix(id, "baseline") {
		return rep.Baseline
	}
	return rep.Kubespawn
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}
