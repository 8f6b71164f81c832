package spawner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/reflector"
)

func TestStopAlwaysSendsDelete(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	f.cache.lie.Store(true) // the cache claims the pod does not exist
	require.NoError(t, f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{}))
	assert.False(t, f.podExists(t, pod.Name))
	assert.Contains(t, verbs(f.client), "delete pods")
}

func TestStopIsIdempotent(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	for range 3 {
		require.NoError(t, f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{UID: pod.UID, GracePeriod: ptr.To(time.Duration(0))}))
	}
	deletes := 0
	for _, a := range f.client.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			deletes++
			assert.Equal(t, int64(0), *d.GetDeleteOptions().GracePeriodSeconds)
		}
	}
	assert.Equal(t, 3, deletes, "every Stop reaches the API server")
}

func TestStopUIDPreconditionProtectsSuccessor(t *testing.T) {
	successor := existing("alice", setReady)
	f := newFixture(t, nil, successor)
	require.NoError(t, f.sp.Stop(t.Context(), testNS, successor.Name, StopOptions{UID: "uid-of-an-older-pod"}))
	got, err := f.client.CoreV1().Pods(testNS).Get(t.Context(), successor.Name, metav1.GetOptions{})
	require.NoError(t, err, "the successor survives")
	assert.Equal(t, successor.UID, got.UID)
}

func TestStopTimesOutWhenPodStays(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	// The API server accepts the DELETE but the pod never goes (a stuck
	// finalizer or kubelet).
	f.client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, nil
	})
	err := f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{UID: pod.UID, Timeout: 200 * time.Millisecond})
	require.ErrorIs(t, err, ErrStopTimeout)
}

func TestStopRetriesTransientDeleteErrors(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	n := 0
	f.client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if n++; n <= 2 {
			return true, nil, apierrors.NewServiceUnavailable("down")
		}
		return false, nil, nil
	})
	require.NoError(t, f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{}))
	assert.False(t, f.podExists(t, pod.Name))
}

// A stop whose time runs out while a retried DELETE is in flight keeps
// the API server's last answer in its error: the request cut by the
// deadline (net/http's error then carries the context's cause) is not an
// answer, and the caller must learn why the pod is still there.
func TestStopTimeoutKeepsTheLastAnswerOfTheAPIServer(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	n := 0
	f.client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if n++; n == 1 {
			return true, nil, apierrors.NewServiceUnavailable("the API server is down")
		}
		time.Sleep(400 * time.Millisecond) // past the stop's timeout: cut in flight
		return true, nil, fmt.Errorf("Delete \"https://api/pods/%s\": %w", pod.Name, ErrStopTimeout)
	})
	err := f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{UID: pod.UID, Timeout: 200 * time.Millisecond})
	require.ErrorIs(t, err, ErrStopTimeout)
	assert.Contains(t, err.Error(), "the API server is down", "the last answer is kept")
}

func TestStopPermanentDeleteErrorIsReturned(t *testing.T) {
	f := newFixture(t, nil, existing("alice", nil))
	f.client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("pods"), "x", errors.New("rbac"))
	})
	err := f.sp.Stop(t.Context(), testNS, existing("alice", nil).Name, StopOptions{})
	assert.True(t, apierrors.IsForbidden(err), "%v", err)
}

// startAliceInBackground runs a Start of alice's pod on a goroutine of its
// own, as a hub does while a Stop of the same name may arrive; it returns
// the pod's name and wait, which returns the Start's answer once Start has
// returned.
func (f *fixture) startAliceInBackground(t *testing.T) (name string, wait func() (*Result, error)) {
	name, _ = PodName("kubespawn", "alice")
	var res *Result
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err = f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	}()
	return name, func() (*Result, error) {
		<-done
		return res, err
	}
}

// Stop during a Start cancels the Start, which deletes its pod; Stop then
// returns with the pod gone.
func TestStopCancelsStart(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.StartTimeout = time.Minute })
	created := make(chan struct{})
	f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		close(created)
		return false, nil, nil
	})
	name, wait := f.startAliceInBackground(t)
	<-created
	require.NoError(t, f.sp.Stop(t.Context(), testNS, name, StopOptions{}))
	_, startErr := wait()
	require.ErrorIs(t, startErr, ErrStopRequested)
	assert.False(t, f.podExists(t, name))
}

// TestLateStopNeverStopsASuccessor: a Stop carrying the UID of an earlier
// pod (late, or retried) arrives while a Start creates the next pod of the
// name: the Start is not cancelled, its pod stays, and the Stop returns at
// once (the earlier pod is gone).
func TestLateStopNeverStopsASuccessor(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.StartTimeout = time.Minute })
	created := make(chan struct{})
	var once sync.Once
	f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() { close(created) })
		return false, nil, nil
	})
	fakeKubelet(t, f.client, 300*time.Millisecond, setReady)
	name, wait := f.startAliceInBackground(t)
	<-created
	stopCtx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, f.sp.Stop(stopCtx, testNS, name, StopOptions{UID: "uid-of-an-earlier-pod"}), "the earlier pod is gone")
	res, startErr := wait()
	require.NoError(t, startErr, "the successor's start goes on")
	assert.True(t, f.podExists(t, name))
	assert.NotEqual(t, types.UID("uid-of-an-earlier-pod"), res.UID)

	// A Stop with the successor's own UID does stop it.
	require.NoError(t, f.sp.Stop(t.Context(), testNS, name, StopOptions{UID: res.UID}))
	assert.False(t, f.podExists(t, name))
}

// TestStopWithTheStartsUIDCancelsIt: a Stop carrying the UID of the pod a
// Start is still waiting for cancels that Start, which deletes its pod.
func TestStopWithTheStartsUIDCancelsIt(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.StartTimeout = time.Minute })
	uids := make(chan types.UID, 1)
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		pod.UID = randUID()
		uids <- pod.UID
		return false, nil, nil
	})
	name, wait := f.startAliceInBackground(t)
	uid := <-uids
	require.Eventually(t, func() bool {
		f.sp.locks.mu.Lock()
		defer f.sp.locks.mu.Unlock()
		nl := f.sp.locks.m[lockKey(testNS, name)]
		return nl != nil && nl.startUID == uid
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, f.sp.Stop(t.Context(), testNS, name, StopOptions{UID: uid}))
	_, startErr := wait()
	require.ErrorIs(t, startErr, ErrStopRequested)
	assert.False(t, f.podExists(t, name))
}

func TestPoll(t *testing.T) {
	running := existing("running", setReady)
	pending := existing("pending", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })
	evicted := existing("evicted", func(p *corev1.Pod) {
		p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
	})
	failed := existing("failed", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodFailed
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "notebook", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}
	})
	completed := existing("completed", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodSucceeded
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "notebook", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}
	})
	f := newFixture(t, nil)
	// Created after the cache's watch started, which never sees them: every
	// answer below comes from the API fallback. (The fake watch replays
	// objects given to the constructor.)
	for _, p := range []*corev1.Pod{running, pending, evicted, failed, completed} {
		f.cache.stalled.Store(true)
		require.NoError(t, f.client.Tracker().Add(p))
	}
	ctx := t.Context()
	st, err := f.sp.Poll(ctx, testNS, running.Name)
	require.NoError(t, err)
	assert.Equal(t, StateRunning, st.State)
	assert.True(t, st.Ready)
	assert.Equal(t, reflector.SourceAPI, st.Source, "a cache miss falls back to the API")

	st, _ = f.sp.Poll(ctx, testNS, pending.Name)
	assert.Equal(t, StatePending, st.State)

	st, _ = f.sp.Poll(ctx, testNS, evicted.Name)
	assert.Equal(t, StateStopped, st.State)
	assert.Equal(t, "Evicted", st.Reason)

	st, _ = f.sp.Poll(ctx, testNS, failed.Name)
	assert.Equal(t, StateStopped, st.State)
	assert.Equal(t, "OOMKilled", st.Reason)
	require.NotNil(t, st.ExitCode)
	assert.Equal(t, int32(137), *st.ExitCode)

	st, _ = f.sp.Poll(ctx, testNS, completed.Name)
	assert.Equal(t, StateStopped, st.State)
	assert.Equal(t, int32(0), *st.ExitCode)

	st, err = f.sp.Poll(ctx, testNS, "kubespawn-nobody-aaaaaaaaaa")
	require.NoError(t, err)
	assert.Equal(t, StateStopped, st.State)
	assert.Equal(t, "NotFound", st.Reason)

	f.client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	st, err = f.sp.Poll(ctx, testNS, "kubespawn-other-aaaaaaaaaa")
	require.Error(t, err)
	assert.Equal(t, StateUnknown, st.State, "an API error is not 'stopped'")
}

// A Start still waiting for the name's lock when Stop comes is cancelled
// too, before it creates anything.
func TestStopCancelsWaitingStart(t *testing.T) {
	f := newFixture(t, nil)
	name, _ := PodName("kubespawn", "alice")
	key := lockKey(testNS, name)
	unlock, err := f.sp.locks.lock(t.Context(), key, nil)
	require.NoError(t, err)
	_, wait := f.startAliceInBackground(t)
	waiters := func() int {
		f.sp.locks.mu.Lock()
		defer f.sp.locks.mu.Unlock()
		return f.sp.locks.m[key].refs
	}
	require.Eventually(t, func() bool { return waiters() == 2 }, 5*time.Second, time.Millisecond)
	stopErr := make(chan error, 1)
	go func() { stopErr <- f.sp.Stop(t.Context(), testNS, name, StopOptions{}) }()
	require.Eventually(t, func() bool { return waiters() == 3 }, 5*time.Second, time.Millisecond)
	unlock()
	require.NoError(t, <-stopErr)
	_, startErr := wait()
	require.ErrorIs(t, startErr, ErrStopRequested)
	assert.NotContains(t, verbs(f.client), "create pods")
}

// Stop's timeout covers waiting for the name's lock: an operation that
// holds it cannot make Stop hang.
func TestStopTimeoutCoversLockWait(t *testing.T) {
	reg := prometheus.NewRegistry()
	pod := existing("alice", setReady)
	f := newFixture(t, func(o *Options) { o.Registerer = reg }, pod)
	unlock, err := f.sp.locks.lock(t.Context(), lockKey(testNS, pod.Name), nil)
	require.NoError(t, err)
	defer unlock()
	done := make(chan error, 1)
	begin := time.Now()
	go func() {
		done <- f.sp.Stop(context.Background(), testNS, pod.Name, StopOptions{Timeout: 200 * time.Millisecond})
	}()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waited for the lock without its timeout")
	}
	require.ErrorIs(t, err, ErrStopTimeout)
	assert.Less(t, time.Since(begin), 5*time.Second)
	assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.stops.WithLabelValues("timeout")))
}

// TestAbsenceIsDecidedOnTheAPIServersWord: every decision that a pod is
// gone is counted with the source of the answer it rests on. A cache that
// lies (claims NotFound for a running pod) changes nothing: the decision
// still rests on the API server.
func TestAbsenceIsDecidedOnTheAPIServersWord(t *testing.T) {
	running := existing("alice", setReady)
	f := newFixture(t, nil, running)
	f.cache.lie.Store(true)
	st, err := f.sp.Poll(t.Context(), testNS, running.Name)
	require.NoError(t, err)
	assert.Equal(t, StateRunning, st.State, "the lie is not believed")
	require.NoError(t, f.sp.Stop(t.Context(), testNS, running.Name, StopOptions{}))
	st, err = f.sp.Poll(t.Context(), testNS, running.Name)
	require.NoError(t, err)
	assert.Equal(t, StateStopped, st.State)
	absence := f.sp.metrics.absence
	assert.Positive(t, testutil.ToFloat64(absence.WithLabelValues(string(reflector.SourceAPI))))
	assert.Equal(t, 1, testutil.CollectAndCount(absence), "no decision rested on another source")
}

// deletes returns the DELETE actions on pods the fake clientset saw.
func deletes(c *fake.Clientset) []k8stesting.DeleteAction {
	var out []k8stesting.DeleteAction
	for _, a := range c.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && d.GetResource().Resource == "pods" {
			out = append(out, d)
		}
	}
	return out
}

// TestStopWithoutUIDChecksOwnership: a Stop without a UID (a start in
// progress, or no pod known) reads the pod from the API server and deletes
// it only if it is this instance's, with its UID as precondition. Pod names
// do not name the instance, so a pod of another instance, or of no spawner
// at all, may hold the name: it is never deleted (ErrNotOwned).
func TestStopWithoutUIDChecksOwnership(t *testing.T) {
	for name, mutate := range map[string]func(*corev1.Pod){
		"another instance": func(p *corev1.Pod) { p.Labels[LabelInstance] = "hub-b" },
		"not a spawner's":  func(p *corev1.Pod) { p.Labels = map[string]string{"app": "x"} },
		"no labels":        func(p *corev1.Pod) { p.Labels = nil },
	} {
		t.Run(name, func(t *testing.T) {
			other := existing("alice", func(p *corev1.Pod) { setReady(p); mutate(p) })
			f := newFixture(t, nil, other)
			err := f.sp.Stop(t.Context(), testNS, other.Name, StopOptions{})
			require.ErrorIs(t, err, ErrNotOwned)
			got, gerr := f.client.CoreV1().Pods(testNS).Get(t.Context(), other.Name, metav1.GetOptions{})
			require.NoError(t, gerr, "the other pod is still there")
			assert.Equal(t, other.UID, got.UID)
			assert.Empty(t, deletes(f.client), "nothing deleted")
		})
	}
}

// TestStopWithoutUIDDeletesOurPodByItsLiveUID: the pod is read live (not
// from the cache, which may hold an earlier incarnation) and deleted with
// the UID it has on the API server as precondition.
func TestStopWithoutUIDDeletesOurPodByItsLiveUID(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	stale := pod.DeepCopy()
	stale.UID = "uid-of-an-earlier-pod"
	f.cache.stalled.Store(true)
	f.cache.put(stale)
	require.NoError(t, f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{}))
	assert.False(t, f.podExists(t, pod.Name))
	ds := deletes(f.client)
	require.NotEmpty(t, ds)
	for _, d := range ds {
		pre := d.GetDeleteOptions().Preconditions
		require.NotNil(t, pre, "never a bare DELETE by name")
		require.NotNil(t, pre.UID)
		assert.Equal(t, pod.UID, *pre.UID, "the live UID, not the cached one")
	}

	// Gone already: nothing to delete, no error.
	require.NoError(t, f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{}))
}

// TestStopWithoutUIDRereadsOnConflict: the pod is replaced between the
// read and the DELETE; the precondition fails, the name is read again, and
// the successor (another instance's here) is left alone.
func TestStopWithoutUIDRereadsOnConflict(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	gvr := corev1.SchemeGroupVersion.WithResource("pods")
	successor := existing("alice", func(p *corev1.Pod) { setReady(p); p.Labels[LabelInstance] = "hub-b" })
	var once sync.Once
	f.client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() {
			require.NoError(t, f.client.Tracker().Delete(gvr, testNS, pod.Name))
			require.NoError(t, f.client.Tracker().Add(successor))
		})
		return false, nil, nil // on to the precondition check
	})
	err := f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{})
	require.ErrorIs(t, err, ErrNotOwned)
	got, gerr := f.client.CoreV1().Pods(testNS).Get(t.Context(), pod.Name, metav1.GetOptions{})
	require.NoError(t, gerr)
	assert.Equal(t, successor.UID, got.UID, "the successor survives")
	for _, d := range deletes(f.client) {
		assert.Equal(t, pod.UID, *d.GetDeleteOptions().Preconditions.UID)
	}
}

// TestStopWithoutUIDReadFailsUntilTimeout: while the read fails, nothing
// is deleted; Stop gives up at its timeout.
func TestStopWithoutUIDReadFailsUntilTimeout(t *testing.T) {
	pod := existing("alice", setReady)
	f := newFixture(t, nil, pod)
	f.client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	err := f.sp.Stop(t.Context(), testNS, pod.Name, StopOptions{Timeout: 300 * time.Millisecond})
	require.ErrorIs(t, err, ErrStopTimeout)
	assert.Empty(t, deletes(f.client), "no DELETE without a successful read")
	_, err = f.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), testNS, pod.Name)
	assert.NoError(t, err, "the pod is still there")
}
