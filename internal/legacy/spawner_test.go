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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

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

// actionResources lists the resources of the client's actions of verb, in
// order: what the spawner sent the API server.
func actionResources(client *fake.Clientset, verb string) []string {
	var out []string
	for _, a := range client.Actions() {
		if a.GetVerb() == verb {
			out = append(out, a.GetResource().Resource)
		}
	}
	return out
}

// deletes counts the DELETEs sent.
func deletes(client *fake.Clientset) int { return len(actionResources(client, "delete")) }

// createOnServer creates the user pod name in the API server, not in the
// cache: as a pod the replica has not seen (yet).
func createOnServer(t *testing.T, client *fake.Clientset, name string) {
	t.Helper()
	_, err := client.CoreV1().Pods("ns").Create(t.Context(), userPod(name), metav1.CreateOptions{})
	require.NoError(t, err)
}

// getFromServer gets the pod name from the API server, whatever the cache
// says, and returns the error: nil while the pod exists.
func getFromServer(t *testing.T, client *fake.Clientset, name string) error {
	t.Helper()
	_, err := client.CoreV1().Pods("ns").Get(t.Context(), name, metav1.GetOptions{})
	return err
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
	require.NoError(t, getFromServer(t, client, "jupyter-a"), "the pod was created in the replica's namespace")
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
	require.NoError(t, getFromServer(t, client, "jupyter-b"), "start leaves the pod for the caller to stop")
	assert.Zero(t, deletes(client))
}

// TestLegacyStopSkipsDeleteWhenNotCached is the 2018 bug: the pod exists on
// the server, the cache does not have it, stop sends no DELETE.
func TestLegacyStopSkipsDeleteWhenNotCached(t *testing.T) {
	s, client, _ := newSpawner(t)
	createOnServer(t, client, "jupyter-c")
	require.NoError(t, s.Stop(t.Context(), "jupyter-c"), "Assuming already deleted.")
	assert.Zero(t, deletes(client))
	assert.EqualValues(t, 1, s.SkippedDeletes())
	require.NoError(t, getFromServer(t, client, "jupyter-c"), "the pod leaked")
}

func TestLegacyStopDeletesAndWaitsForTheCache(t *testing.T) {
	s, client, cache := newSpawner(t)
	createOnServer(t, client, "jupyter-d")
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
	createOnServer(t, client, "jupyter-e")
	cache.set(runningPod("jupyter-e"))
	err := s.Stop(t.Context(), "jupyter-e")
	var te *legacy.TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, err.Error(), "pod/jupyter-e did not disappear in")
	require.Error(t, getFromServer(t, client, "jupyter-e"), "the DELETE was sent: the pod is gone from the server even though the cache still has it")
}

func TestLegacyStartCancelled(t *testing.T) {
	s, _, _ := newSpawner(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Start(ctx, userPod("jupyter-f"))
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.Canceled))
}

func homeClaim(user string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "claim-" + user, Labels: map[string]string{"component": "singleuser-storage", "hub.jupyter.org/username": user}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}
}

func extras(user string) legacy.Extras {
	return legacy.Extras{
		Claim:   homeClaim(user),
		Secret:  &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "jupyter-" + user}, StringData: map[string]string{"ssl.key": "k"}},
		Service: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "jupyter-" + user}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8888}}}},
	}
}

// creates lists the resources created, in order.
func creates(client *fake.Clientset) []string { return actionResources(client, "create") }

func withUID(p *corev1.Pod, uid types.UID) *corev1.Pod { p.UID = uid; return p }

// TestLegacyStartWithClaimAndService is KubeSpawner's order: the claim
// before the pod (an existing one is fine), the Secret and the Service
// once the pod has a UID in the cache, owned by that UID; stop deletes the
// pod only (the garbage collector is to take the rest), and the next start
// replaces the Service and Secret of the name.
func TestLegacyStartWithClaimAndService(t *testing.T) {
	s, client, cache := newSpawner(t)
	ctx := t.Context()
	cache.set(withUID(runningPod("jupyter-g"), "uid-1"))
	_, err := s.StartWith(ctx, userPod("jupyter-g"), extras("g"))
	require.NoError(t, err)
	assert.Equal(t, []string{"persistentvolumeclaims", "pods", "secrets", "services"}, creates(client))
	svc, err := client.CoreV1().Services("ns").Get(ctx, "jupyter-g", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, svc.OwnerReferences, 1)
	assert.Equal(t, metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "jupyter-g", UID: "uid-1"}, svc.OwnerReferences[0])
	assert.Equal(t, map[string]string{"component": "singleuser-server"}, svc.Spec.Selector, "the pod's labels")
	sec, err := client.CoreV1().Secrets("ns").Get(ctx, "jupyter-g", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, types.UID("uid-1"), sec.OwnerReferences[0].UID)

	go func() {
		time.Sleep(50 * time.Millisecond)
		cache.remove("jupyter-g")
	}()
	require.NoError(t, s.Stop(ctx, "jupyter-g"))
	_, err = client.CoreV1().Services("ns").Get(ctx, "jupyter-g", metav1.GetOptions{})
	require.NoError(t, err, "stop deletes the pod only")
	_, err = client.CoreV1().PersistentVolumeClaims("ns").Get(ctx, "claim-g", metav1.GetOptions{})
	require.NoError(t, err)

	client.ClearActions()
	cache.set(withUID(runningPod("jupyter-g"), "uid-2"))
	_, err = s.StartWith(ctx, userPod("jupyter-g"), extras("g"))
	require.NoError(t, err, "an existing claim is fine (409)")
	svc, err = client.CoreV1().Services("ns").Get(ctx, "jupyter-g", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, types.UID("uid-2"), svc.OwnerReferences[0].UID, "the earlier pod's Service was replaced")
	sec, err = client.CoreV1().Secrets("ns").Get(ctx, "jupyter-g", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, types.UID("uid-2"), sec.OwnerReferences[0].UID)
	claims, err := client.CoreV1().PersistentVolumeClaims("ns").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, claims.Items, 1)
}

// TestLegacyStartWithWaitsForTheUIDInTheCache: the pod never shows up in
// the cache, so it never gets its Service; the start times out and stops
// the pod, with the stop that trusts the cache: the pod stays.
func TestLegacyStartWithWaitsForTheUIDInTheCache(t *testing.T) {
	s, client, _ := newSpawner(t)
	_, err := s.StartWith(t.Context(), userPod("jupyter-h"), extras("h"))
	var te *legacy.TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "TimeoutError: pod/jupyter-h does not have a uid!", err.Error())
	assert.Equal(t, []string{"persistentvolumeclaims", "pods"}, creates(client), "no Service, no Secret")
	assert.EqualValues(t, 1, s.SkippedDeletes(), "No pod jupyter-h to delete. Assuming already deleted.")
	require.NoError(t, getFromServer(t, client, "jupyter-h"), "the pod leaked")
}

// TestLegacyStartWithFailedServiceStops: a Service the API server refuses
// fails the start, which stops the pod (in the cache: deleted).
func TestLegacyStartWithFailedServiceStops(t *testing.T) {
	s, client, cache := newSpawner(t)
	client.PrependReactor("create", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), "jupyter-j", nil)
	})
	cache.set(withUID(runningPod("jupyter-j"), "uid-j"))
	// The watch delivers the pod's deletion once the stop deleted it (not
	// after a sleep: the start must find the UID in the cache first,
	// however long its claim and pod creates take).
	client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		cache.remove("jupyter-j")
		return false, nil, nil
	})
	_, err := s.StartWith(t.Context(), userPod("jupyter-j"), extras("j"))
	require.True(t, apierrors.IsInvalid(err), "%v", err)
	assert.Equal(t, []string{"secrets", "services", "pods"}, actionResources(client, "delete"), "none of the name first, then the pod")
	err = getFromServer(t, client, "jupyter-j")
	require.True(t, apierrors.IsNotFound(err), "%v", err)
}

// TestLegacyStartWithFailedClaim: a claim the API server refuses (not a
// 409) fails the start before the pod.
func TestLegacyStartWithFailedClaim(t *testing.T) {
	s, client, _ := newSpawner(t)
	client.PrependReactor("create", "persistentvolumeclaims", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("persistentvolumeclaims"), "claim-i", errors.New("exceeded quota"))
	})
	_, err := s.StartWith(t.Context(), userPod("jupyter-i"), extras("i"))
	require.True(t, apierrors.IsForbidden(err), "%v", err)
	assert.Equal(t, []string{"persistentvolumeclaims"}, creates(client), "no pod")
}
