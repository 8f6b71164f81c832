//go:build integration

package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestProfilesShapeThePod: the profile a user picks (user_options, as the
// spawn form posts it) changes the pod's resources and node selection as
// the API server stores it.
func TestProfilesShapeThePod(t *testing.T) {
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute, profiles: true})
	ctx := t.Context()
	users := []string{"carol", "dan"}
	require.NoError(t, e.Hub.CreateUsers(ctx, users))
	require.NoError(t, e.Hub.StartNamedServer(ctx, "carol", "", map[string]any{"profile": "large"}))
	require.NoError(t, e.Hub.StartNamedServer(ctx, "dan", "", map[string]any{"profile": "small"}))
	ready := waitReady(t, e, users, "")
	require.True(t, ready["carol"] && ready["dan"], "both servers ready: %v", ready)

	large, err := e.UserPod(ctx, "carol")
	require.NoError(t, err)
	require.NotNil(t, large)
	c := large.Spec.Containers[0]
	assert.True(t, c.Resources.Limits.Cpu().Equal(resource.MustParse("4")), "cpu limit %s", c.Resources.Limits.Cpu())
	assert.True(t, c.Resources.Requests.Cpu().Equal(resource.MustParse("2")), "cpu guarantee %s", c.Resources.Requests.Cpu())
	assert.True(t, c.Resources.Limits.Memory().Equal(resource.MustParse("8Gi")), "memory limit %s (KubeSpawner's 8G is 8 GiB)", c.Resources.Limits.Memory())
	assert.Equal(t, map[string]string{"kubespawn.test/size": "large"}, large.Spec.NodeSelector)

	small, err := e.UserPod(ctx, "dan")
	require.NoError(t, err)
	require.NotNil(t, small)
	assert.True(t, small.Spec.Containers[0].Resources.Limits.Cpu().Equal(resource.MustParse("1")))
	assert.Empty(t, small.Spec.NodeSelector)
	require.NoError(t, e.StopAll(ctx, users))
}

// TestBadUserOptionsAreOneSentence: an unknown profile, asked through the
// REST API, fails the start with one clear sentence (the hub logs it as the
// spawn's failure; the browser test shows it on the page), and nothing
// reaches the API server.
func TestBadUserOptionsAreOneSentence(t *testing.T) {
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute, profiles: true})
	ctx := t.Context()
	require.NoError(t, e.Hub.CreateUsers(ctx, []string{"erin"}))
	const sentence = `there is no profile "huge" (choose one of: small, large)`
	if err := e.Hub.StartNamedServer(ctx, "erin", "", map[string]any{"profile": "huge"}); err != nil {
		assert.Contains(t, err.Error(), sentence, "a hub that answers the POST with the failure")
	}
	require.Eventually(t, func() bool { return e.Hub.Count(sentence) > 0 }, 30*time.Second, 100*time.Millisecond,
		"the spawn failed with the sentence")
	ready := waitReady(t, e, []string{"erin"}, "")
	assert.False(t, ready["erin"])
	pod, err := e.UserPod(ctx, "erin")
	require.NoError(t, err)
	assert.Nil(t, pod, "nothing was created")
	claims, err := e.Config.Client.CoreV1().PersistentVolumeClaims(e.Config.Namespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, claims.Items, "no claim either")
}
