//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/internal/podsim"
)

// TestRealSingleUserServers: users started through the hub's REST API get
// a real jupyterhub-singleuser (Debian's JupyterHub 3.0, notebook 6.4) as
// their pod's process; each answers GET /user/<name>/api/status through
// the hub's proxy with the user's token, so the hub's environment, the
// service prefix and the OAuth wiring reached the pod. A named server too.
func TestRealSingleUserServers(t *testing.T) {
	parallelHub(t)
	users := []string{"ada", "bob"}
	e := newHubEnv(t, hubConfig{startTimeout: 90 * time.Second, sweep: time.Minute, realServers: true}, users...)
	ctx := t.Context()
	t.Cleanup(func() {
		if t.Failed() {
			logProcessPods(t, e)
		}
	})
	require.NoError(t, hubtest.Parallel(users, len(users), func(name string) error {
		return e.Hub.StartNamedServer(ctx, name, "", nil)
	}))
	ready := waitReady(t, e, users, "")
	for _, name := range users {
		require.True(t, ready[name], "%s's server is ready in the hub", name)
		status(t, e, name, "/user/"+name+"/api/status")

		pod, err := e.UserPod(ctx, name)
		require.NoError(t, err)
		require.NotNil(t, pod)
		assert.Equal(t, podsim.DefaultProcessRuntimeClass, *pod.Spec.RuntimeClassName)
		c := pod.Spec.Containers[0]
		assert.Equal(t, hubtest.SingleUserImage, c.Image)
		assert.Contains(t, c.Args, "jupyterhub-singleuser", "KubeSpawner's cmd")
		assert.Equal(t, "/user/"+name+"/", envValue(c.Env, "JUPYTERHUB_SERVICE_PREFIX"), "the hub's get_env()")
		assert.NotEmpty(t, envValue(c.Env, "JUPYTERHUB_API_TOKEN"))
		assert.NotEqual(t, "127.0.0.1", pod.Status.PodIP, "a real server listens at its pod's own IP")
	}

	// A named server of ada's: its own pod, its own prefix.
	require.NoError(t, e.Hub.StartNamedServer(ctx, "ada", "lab", nil))
	waitReady(t, e, []string{"ada"}, "lab")
	status(t, e, "ada", "/user/ada/lab/api/status")

	_, err := e.Hub.StopNamedServer(ctx, "ada", "lab")
	require.NoError(t, err)
	require.NoError(t, e.StopAll(ctx, users))
}

// waitReady waits until no server (of each user) is pending in the hub,
// and says which are ready. Call it after the start was accepted.
func waitReady(t *testing.T, e *hubtest.Env, users []string, server string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	require.Eventually(t, func() bool {
		for _, name := range users {
			u, err := e.Hub.User(t.Context(), name)
			if err != nil {
				return false
			}
			s, ok := u.Servers[server]
			if ok && s.Pending != nil {
				return false
			}
			out[name] = ok && s.Ready // a failed start leaves no server
		}
		return true
	}, 3*time.Minute, 250*time.Millisecond, "the hub settles the servers %q of %v", server, users)
	return out
}

// status GETs the notebook server's /api/status through the hub's proxy
// with the user's own token: 200 and the server's JSON.
func status(t *testing.T, e *hubtest.Env, name, path string) {
	t.Helper()
	token, err := e.Hub.Token(t.Context(), name)
	require.NoError(t, err)
	code, body, err := e.Hub.Get(t.Context(), path, token)
	require.NoError(t, err)
	require.Equal(t, 200, code, "GET %s: %s", path, body)
	var st map[string]any
	require.NoError(t, json.Unmarshal(body, &st), "%s", body)
	assert.Contains(t, st, "started", "the notebook server's status: %s", body)
}

func envValue(env []corev1.EnvVar, name string) string {
	i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == name })
	if i < 0 {
		return ""
	}
	return env[i].Value
}

// logProcessPods prints the tail of every process pod's log.
func logProcessPods(t *testing.T, e *hubtest.Env) {
	sim := cluster.PodSim(t, podsim.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := e.Pods(ctx)
	if err != nil {
		return
	}
	var b strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&b, "--- pod %s (%s, %s) ---\n%s\n", p.Name, p.Status.Phase, p.Status.PodIP, sim.ProcessLogTail(p.Namespace, p.Name, 40))
	}
	t.Logf("process pods:\n%s", b.String())
}
