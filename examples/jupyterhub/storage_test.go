//go:build integration

package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestUserClaimSurvivesStopsAndGoesWithTheUser: z2jh's per-user storage
// through the real hub. The first start creates the user's claim, a stop
// keeps it, the next start mounts the same claim (same UID: KubeSpawner
// #937's forgotten claim cannot happen), and deleting the user
// (delete_forever) deletes it, as the API server confirms.
func TestUserClaimSurvivesStopsAndGoesWithTheUser(t *testing.T) {
	parallelHub(t)
	e := newHubEnv(t, hubConfig{startTimeout: 60 * time.Second, sweep: time.Minute, storage: "1Gi"}, "fay")
	ctx := t.Context()
	claims := e.Config.Client.CoreV1().PersistentVolumeClaims(e.Config.Namespace)
	userClaim := func() *corev1.PersistentVolumeClaim {
		t.Helper()
		l, err := claims.List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		require.Len(t, l.Items, 1, "one claim for the user")
		return &l.Items[0]
	}
	start := func() {
		t.Helper()
		require.NoError(t, e.Hub.StartNamedServer(ctx, "fay", "", nil))
		require.True(t, waitReady(t, e, []string{"fay"}, "")["fay"], "fay's server is ready")
		pod, err := e.UserPod(ctx, "fay")
		require.NoError(t, err)
		require.NotNil(t, pod)
		mounted := ""
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				mounted = v.PersistentVolumeClaim.ClaimName
			}
		}
		assert.Equal(t, userClaim().Name, mounted, "the pod mounts the user's claim")
	}

	start()
	first := userClaim()
	assert.Equal(t, "1Gi", first.Spec.Resources.Requests.Storage().String())
	require.NoError(t, e.StopAll(ctx, []string{"fay"}))
	assert.Equal(t, first.UID, userClaim().UID, "a stop keeps the claim")

	start()
	assert.Equal(t, first.UID, userClaim().UID, "the next start mounts the same claim")
	require.NoError(t, e.StopAll(ctx, []string{"fay"}))

	require.NoError(t, e.Hub.DeleteUser(ctx, "fay"))
	require.Eventually(t, func() bool {
		_, err := claims.Get(ctx, first.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 200*time.Millisecond, "delete_forever deletes the claim")
	assert.Positive(t, e.Hub.Count("claim "+first.Name+" (uid "+string(first.UID)+") of fay deleted"), "the class logs what it deleted")
}
