//go:build integration

package main

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStartAnswerSaysWhereTheServerIs (issue 22, item 6): a start's
// answer, synchronous or the stream's result, names the namespace (the
// hub's dns_name_template needs it) and, for each Service it created, its
// ClusterIP as the API server allocated it and its DNS name under
// --cluster-domain; the poll names the namespace too.
func TestStartAnswerSaysWhereTheServerIs(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t, func(cfg *Config) {
		cfg.ServicesEnabled = true
		cfg.ClusterDomain = "example.test"
	})

	check := func(res map[string]any, user string) {
		t.Helper()
		name := e.podName(user)
		assert.Equal(t, e.ns, res["namespace"], "%v", res)
		obj := objects(t, res, "objects")
		require.Len(t, obj, 1, "%v", res)
		svc := e.service(name)
		require.NotNil(t, svc)
		require.NotEmpty(t, svc.Spec.ClusterIP)
		assert.Equal(t, svc.Spec.ClusterIP, obj[0]["clusterIP"], "the ClusterIP the API server allocated")
		assert.Equal(t, name+"."+e.ns+".svc.example.test", obj[0]["dnsName"])
	}
	check(d.startUser("ann"), "ann")

	var result map[string]any
	for _, ev := range d.sse(http.MethodPost, "/users/bea/server?progress=sse", nil) {
		if ev.name == "result" {
			require.NoError(t, json.Unmarshal([]byte(ev.data), &result))
		}
	}
	require.NotNil(t, result, "the stream ends with its result")
	require.Equal(t, "running", result["state"], "%v", result)
	check(result, "bea")

	r := d.do(http.MethodGet, "/users/ann/server", nil)
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, e.ns, r.json(t)["namespace"], "the poll names the namespace")

	d.stopUser("ann")
	d.stopUser("bea")
}
