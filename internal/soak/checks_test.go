package soak

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubespawn/kubespawn/spawner"
)

func owned(kind, name string, pod types.UID) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Namespace: "ns"}
	if pod != "" {
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "p", UID: pod}}
	}
	return m
}

// TestObjectLeaks: a Service or Secret is left over unless its owner pod
// exists and is believed running.
func TestObjectLeaks(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "running", Namespace: "ns", UID: "uid-run"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "leaked", Namespace: "ns", UID: "uid-leak"}},
		&corev1.Service{ObjectMeta: owned("Service", "of-running", "uid-run")},
		&corev1.Secret{ObjectMeta: owned("Secret", "of-running", "uid-run")},
		&corev1.Service{ObjectMeta: owned("Service", "of-leaked", "uid-leak")},
		&corev1.Secret{ObjectMeta: owned("Secret", "of-gone", "uid-gone")},
		&corev1.Service{ObjectMeta: owned("Service", "of-none", "")},
	)
	w := newWorld(&kubespawnBackend{})
	w.believeRunning("u1", "uid-run")
	got := w.objectLeaks(t.Context(), client, "ns")
	assert.Equal(t, []ObjectLeak{
		{Kind: "Secret", Name: "of-gone", PodUID: "uid-gone", PodGone: true},
		{Kind: "Service", Name: "of-leaked", PodUID: "uid-leak"},
		{Kind: "Service", Name: "of-none"},
	}, got)
	assert.Equal(t, "3 (1 for a GC, 1 of leaked pods, 1 of no pod)", objectSummary(got))
	assert.Equal(t, "0", objectSummary(nil))

	w.stopping("u1")
	assert.Len(t, w.objectLeaks(t.Context(), client, "ns"), 5, "a stopped user's objects are left over too")
}

func userClaim(name, user string, uid types.UID) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: uid,
		Annotations: map[string]string{spawner.AnnotationKey: user}}}
}

// TestClaimsWatched: a claim deleted (Terminating counts) is lost, two of
// one user are duplicated, whether the watch saw it happen or the read at
// the end finds it.
func TestClaimsWatched(t *testing.T) {
	ctx := t.Context()
	client := fake.NewClientset()
	claims := client.CoreV1().PersistentVolumeClaims("ns")
	w := newWorld(&kubespawnBackend{})
	stop, err := w.watch(ctx, client, "ns")
	require.NoError(t, err)
	defer stop()

	for _, c := range []*corev1.PersistentVolumeClaim{userClaim("claim-a", "a", "uid-a"), userClaim("claim-b", "b", "uid-b"), userClaim("claim-c", "c", "uid-c")} {
		_, err := claims.Create(ctx, c, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		n, lost, dup := w.checkClaims(ctx, client, "ns")
		return n == 3 && lost == nil && dup == nil
	},
		10*time.Second, 10*time.Millisecond, "three users, one claim each")

	// b's claim Terminating, c's removed, a second claim for a.
	terminating := userClaim("claim-b", "b", "uid-b")
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	terminating.Finalizers = []string{"kubernetes.io/pvc-protection"}
	_, err = claims.Update(ctx, terminating, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, claims.Delete(ctx, "claim-c", metav1.DeleteOptions{}))
	_, err = claims.Create(ctx, userClaim("claim-a2", "a", "uid-a2"), metav1.CreateOptions{})
	require.NoError(t, err)
	var lost, dup []string
	require.Eventually(t, func() bool {
		_, lost, dup = w.checkClaims(ctx, client, "ns")
		return len(lost) == 2 && len(dup) == 2
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{"claim-b (user b, uid uid-b) deleted", "claim-c (user c, uid uid-c) removed"}, lost)
	assert.Equal(t, []string{"user a: claims [claim-a claim-a2] at once", "user a: claims [claim-a claim-a2] at the end"}, dup)

	// Gone without the watch seeing it (it was stopped): the read finds it.
	stop()
	require.NoError(t, claims.Delete(ctx, "claim-a", metav1.DeleteOptions{}))
	_, lost, _ = w.checkClaims(context.Background(), client, "ns")
	assert.Contains(t, lost, "user a: claim uid uid-a gone")
	stop() // idempotent
}
