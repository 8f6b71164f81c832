package legacy_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubespawn/kubespawn/internal/legacy"
)

// mapCache is a cache the test controls, standing in for the reflector.
type mapCache struct {
	mu   sync.Mutex
	pods map[string]*corev1.Pod
}

func (c *mapCache) Get(name string) (*corev1.Pod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[name]
	return p, ok
}

func (c *mapCache) set(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pods[p.Name] = p
}

func (c *mapCache) remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pods, name)
}

func newSpawner(t *testing.T) (*legacy.Spawner, *fake.Clientset, *mapCache) {
	t.Helper()
	client := fake.NewClientset()
	cache := &mapCache{pods: map[string]*corev1.Pod{}}
	s := legacy.NewSpawner(client, cache, legacy.SpawnerOptions{
		Namespace: "ns", StartTimeout: 300 * time.Millisecond, PollInterval: 10 * time.Millisecond,
	})
	return s, client, cache
}

func userPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"component": "singleuser-server"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: "x"}}},
	}
}

func runningPod(name string) *corev1.Pod {
	p := userPod(name)
	p.Namespace = "ns"
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.244.0.1",
		ContainerStatuses: []corev1.ContainerStatus{{Name: "notebook", Ready: true}}}
	return p
}

func deletes(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "delete" {
			n++
		}
	}
	return n
}

func TestLegacyStartWaitsForTheCache(t *testing.T) {
	s, client, cache := newSpawner(t)
	go func() {
		time.Sleep(50 * time.Millisecond)
		cache.set(runningPod("jupyter-a"))
	}()
	pod, err := s.Start(t.Context(), userPod("jupyter-a"))
	require.NoError(t, err)
	assert.Equal(t, "127.244.0.1", pod.Status.PodIP)
	_, err = client.CoreV1().Pods("ns").Get(t.Context(), "jupyter-a", metav1.GetOptions{})
	require.NoError(t, err, "the pod was created in the replica's namespace")
}

func TestLegacyStartTimesOutWithoutDeleting(t *testing.T) {
	s, client, cache := newSpawner(t)
	notReady := runningPod("jupyter-b")
	notReady.Status.ContainerStatuses[0].Ready = false
	cache.set(notReady)
	_, err := s.Start(t.Context(), userPod("jupyter-b"))
	var te *legacy.TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "TimeoutError: pod/jupyter-b did not start in 0 seconds!", err.Error())
	_, err = client.CoreV1().Pods("ns").Get(t.Context(), "jupyter-b", metav1.GetOptions{})
	require.NoError(t, err, "start leaves the pod for the caller to stop")
	assert.Zero(t, deletes(client))
}

// TestLegacyStopSkipsDeleteWhenNotCached is the 2018 bug: the pod exists on
// the server, the cache does not have it, stop sends no DELETE.
func TestLegacyStopSkipsDeleteWhenNotCached(t *testing.T) {
	s, client, _ := newSpawner(t)
	_, err := client.CoreV1().Pods("ns").Create(t.Context(), userPod("jupyter-c"), metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, s.Stop(t.Context(), "jupyter-c"), "Assuming already deleted.")
	assert.Zero(t, deletes(client))
	assert.EqualValues(t, 1, s.SkippedDeletes())
	_, err = client.CoreV1().Pods("ns").Get(t.Context(), "jupyter-c", metav1.GetOptions{})
	require.NoError(t, err, "the pod leaked")
}

func TestLegacyStopDeletesAndWaitsForTheCache(t *testing.T) {
	s, client, cache := newSpawner(t)
	_, err := client.CoreV1().Pods("ns").Create(t.Context(), userPod("jupyter-d"), metav1.CreateOptions{})
	require.NoError(t, err)
	cache.set(runningPod("jupyter-d"))
	go func() {
		time.Sleep(50 * time.Millisecond)
		cache.remove("jupyter-d")
	}()
	require.NoError(t, s.Stop(t.Context(), "jupyter-d"))
	assert.Equal(t, 1, deletes(client))
	assert.EqualValues(t, 1, s.Deletes())
	for _, a := range client.Actions() {
		if a.GetVerb() == "delete" {
			// The fake records the options; the grace period is 1s.
			opts := a.(interface{ GetDeleteOptions() metav1.DeleteOptions }).GetDeleteOptions()
			require.NotNil(t, opts.GracePeriodSeconds)
			assert.EqualValues(t, 1, *opts.GracePeriodSeconds)
		}
	}
}

func TestLegacyStopTimesOutOnAFrozenCache(t *testing.T) {
	s, client, cache := newSpawner(t)
	_, err := client.CoreV1().Pods("ns").Create(t.Context(), userPod("jupyter-e"), metav1.CreateOptions{})
	require.NoError(t, err)
	cache.set(runningPod("jupyter-e"))
	err = s.Stop(t.Context(), "jupyter-e")
	var te *legacy.TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, err.Error(), "pod/jupyter-e did not disappear in")
	_, err = client.CoreV1().Pods("ns").Get(t.Context(), "jupyter-e", metav1.GetOptions{})
	require.Error(t, err, "the DELETE was sent: the pod is gone from the server even though the cache still has it")
}

func TestLegacyStartCancelled(t *testing.T) {
	s, _, _ := newSpawner(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Start(ctx, userPod("jupyter-f"))
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.Canceled))
}
