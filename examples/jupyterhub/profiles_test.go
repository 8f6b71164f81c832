//go:build integration

package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestProfilesShapeThePod: the profile a user picks (user_options, as the
// spawn form posts it) changes the pod's image, resources and node
// selection as the API server stores it.
func TestProfilesShapeThePod(t *testing.T) {
	parallelHub(t)
	users := []string{"carol", "dan"}
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute, profiles: true}, users...)
	ctx := t.Context()
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
	assert.Equal(t, hubtest.LargeProfileImage, c.Image, "the profile's image")

	small, err := e.UserPod(ctx, "dan")
	require.NoError(t, err)
	require.NotNil(t, small)
	assert.True(t, small.Spec.Containers[0].Resources.Limits.Cpu().Equal(resource.MustParse("1")))
	assert.Empty(t, small.Spec.NodeSelector)
	assert.NotEqual(t, hubtest.LargeProfileImage, small.Spec.Containers[0].Image, "the default image")
	require.NoError(t, e.StopAll(ctx, users))
}

// TestBadUserOptionsAreOneSentence: bad input, asked through the REST API
// as the spawn form would post it, fails the start with one clear sentence
// for the user (the hub logs it as the spawn's failure; the browser test
// shows one on the page), the spawner service logs the detail where it
// decided, and nothing is left on the API server: an unknown profile, a
// choice outside a profile's, a choice whose override the service's policy
// forbids (the host's network), a claim the cluster refuses (a quota).
func TestBadUserOptionsAreOneSentence(t *testing.T) {
	parallelHub(t)
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute, profiles: true, storage: "1Gi"})
	ctx := t.Context()
	nothingOf := func(t *testing.T, user string) {
		t.Helper()
		ready := waitReady(t, e, []string{user}, "")
		assert.False(t, ready[user])
		pod, err := e.UserPod(ctx, user)
		require.NoError(t, err)
		assert.Nil(t, pod, "no pod")
		_, err = e.Config.Client.CoreV1().PersistentVolumeClaims(e.Config.Namespace).Get(ctx, "claim-"+user, metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "no claim (err %v)", err)
		svcs, err := e.Config.Client.CoreV1().Services(e.Config.Namespace).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		assert.Empty(t, svcs.Items, "no Service")
	}
	start := func(t *testing.T, user string, options map[string]any, sentence string) {
		t.Helper()
		require.NoError(t, e.Hub.CreateUsers(ctx, []string{user}))
		if err := e.Hub.StartNamedServer(ctx, user, "", options); err != nil {
			assert.Contains(t, err.Error(), sentence, "a hub that answers the POST with the failure")
		}
		require.Eventually(t, func() bool { return e.Hub.Count(sentence) > 0 }, 30*time.Second, 100*time.Millisecond,
			"the spawn failed with the sentence %q", sentence)
		nothingOf(t, user)
	}

	t.Run("UnknownProfile", func(t *testing.T) {
		start(t, "erin", map[string]any{"profile": "huge"}, `there is no profile "huge" (choose one of: small, large)`)
	})
	t.Run("ChoiceOutsideTheProfiles", func(t *testing.T) {
		start(t, "finn", map[string]any{"profile": "large", "network": "fast"},
			`the profile "Large" has no choice "fast" for Network (choose one of: pod, host)`)
	})
	t.Run("OverrideThePolicyForbids", func(t *testing.T) {
		before := e.Service.Count("spec.hostNetwork")
		start(t, "gail", map[string]any{"profile": "large", "network": "host"},
			`Your server could not start: the profile "Large" asks for what this hub does not allow: `)
		assert.Positive(t, e.Hub.Count("spec.hostNetwork"), "the sentence names the field")
		assert.Greater(t, e.Service.Count("spec.hostNetwork"), before, "the service logs the refusal with its field")
	})
	t.Run("ClaimTheClusterRefuses", func(t *testing.T) {
		quotas := e.Config.Client.CoreV1().ResourceQuotas(e.Config.Namespace)
		_, err := quotas.Create(ctx, &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "no-claims"},
			Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePersistentVolumeClaims: resource.MustParse("0")}}}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = quotas.Delete(context.Background(), "no-claims", metav1.DeleteOptions{}) })
		require.Eventually(t, func() bool {
			q, err := quotas.Get(ctx, "no-claims", metav1.GetOptions{})
			return err == nil && len(q.Status.Hard) > 0
		}, time.Minute, 100*time.Millisecond, "the quota controller computes the quota's usage")
		before := e.Service.Count("exceeded quota")
		start(t, "hugo", nil, "Your server could not start: its storage volume could not be created.")
		assert.Greater(t, e.Service.Count("exceeded quota"), before, "the service logs the API server's answer")
	})
}
