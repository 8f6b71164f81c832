package spawner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/events"
)

func TestNewValidatesOptions(t *testing.T) {
	client := newFakeClient()
	cache := newFakeCache(t, client)
	neg := -time.Second
	for name, o := range map[string]Options{
		"no client":         {Pods: cache, Instance: "i"},
		"no instance":       {Client: client, Pods: cache},
		"negative start":    {Client: client, Pods: cache, Instance: "i", StartTimeout: -1},
		"negative stop":     {Client: client, Pods: cache, Instance: "i", StopTimeout: -1},
		"negative grace":    {Client: client, Pods: cache, Instance: "i", ImagePullGrace: -1},
		"negative fallback": {Client: client, Pods: cache, Instance: "i", FallbackInterval: -1},
		"negative delete":   {Client: client, Pods: cache, Instance: "i", DeleteGracePeriod: &neg},
		"bad instance":      {Client: client, Pods: cache, Instance: "not a label value!"},
		"bad prefix":        {Client: client, Pods: cache, Instance: "i", NamePrefix: "Upper"},
	} {
		_, err := New(o)
		assert.ErrorIs(t, err, ErrInvalidOptions, name)
	}
	sp, err := New(Options{Client: client, Pods: cache, Instance: "default"})
	require.NoError(t, err)
	assert.Equal(t, 5*time.Minute, sp.opts.StartTimeout)
	assert.Equal(t, time.Minute, sp.opts.StopTimeout)
	assert.Equal(t, 30*time.Second, sp.opts.ImagePullGrace)
	assert.Equal(t, 5*time.Second, sp.opts.FallbackInterval)
	assert.Equal(t, "default", sp.opts.Instance)

	reg := prometheus.NewRegistry()
	_, err = New(Options{Client: client, Pods: cache, Instance: "default", Registerer: reg})
	require.NoError(t, err)
	_, err = New(Options{Client: client, Pods: cache, Instance: "default", Registerer: reg})
	assert.ErrorIs(t, err, ErrInvalidOptions, "duplicate metrics registration")
}

// Bad input: a typed error and nothing sent to the API server.
func TestStartBadInputCreatesNothing(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	noImage := testSpec()
	noImage.Containers[0].Image = ""
	dup := testSpec()
	dup.Containers = append(dup.Containers, dup.Containers[0])
	for name, req := range map[string]Request{
		"empty key":          {Namespace: testNS, Spec: testSpec()},
		"empty namespace":    {Key: "alice", Spec: testSpec()},
		"bad namespace":      {Key: "alice", Namespace: "Users!", Spec: testSpec()},
		"nil spec":           {Key: "alice", Namespace: testNS},
		"no containers":      {Key: "alice", Namespace: testNS, Spec: &corev1.PodSpec{}},
		"no image":           {Key: "alice", Namespace: testNS, Spec: noImage},
		"duplicate names":    {Key: "alice", Namespace: testNS, Spec: dup},
		"negative timeout":   {Key: "alice", Namespace: testNS, Spec: testSpec(), StartTimeout: -time.Second},
		"reserved label":     {Key: "alice", Namespace: testNS, Spec: testSpec(), Labels: map[string]string{LabelManagedBy: "me"}},
		"reserved annot.":    {Key: "alice", Namespace: testNS, Spec: testSpec(), Annotations: map[string]string{AnnotationStartID: "x"}},
		"bad label value":    {Key: "alice", Namespace: testNS, Spec: testSpec(), Labels: map[string]string{"a": "b c"}},
		"bad label key":      {Key: "alice", Namespace: testNS, Spec: testSpec(), Labels: map[string]string{"a b": "c"}},
		"bad annotation key": {Key: "alice", Namespace: testNS, Spec: testSpec(), Annotations: map[string]string{"": "c"}},
	} {
		res, err := f.sp.Start(ctx, req)
		assert.Nil(t, res, name)
		assert.ErrorIs(t, err, ErrInvalidArgument, name)
	}
	for name, call := range map[string]func() error{
		"stop no ns":   func() error { return f.sp.Stop(ctx, "", "x", StopOptions{}) },
		"stop no name": func() error { return f.sp.Stop(ctx, testNS, "", StopOptions{}) },
		"stop bad name": func() error {
			return f.sp.Stop(ctx, testNS, "Not_A_Name", StopOptions{})
		},
		"stop negative timeout": func() error { return f.sp.Stop(ctx, testNS, "x", StopOptions{Timeout: -1}) },
		"stop negative grace": func() error {
			return f.sp.Stop(ctx, testNS, "x", StopOptions{GracePeriod: ptr.To(-time.Second)})
		},
		"poll no name": func() error { _, err := f.sp.Poll(ctx, testNS, ""); return err },
		"sweep no ns": func() error {
			_, err := f.sp.Sweep(ctx, SweepPolicy{MaxAge: time.Hour})
			return err
		},
		"sweep no criterion": func() error { _, err := f.sp.Sweep(ctx, SweepPolicy{Namespace: testNS}); return err },
	} {
		err := call()
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: want a typed error, got %v", name, err)
		}
	}
	assert.Empty(t, verbs(f.client), "no request may reach the API server")
}

func TestStartHappyPathLabelsAndProgress(t *testing.T) {
	ev := &fakeEvents{updates: []events.Update{{Message: "Scheduled", Progress: 10}, {Message: "Pulling", Progress: 40}, {Message: "Started", Progress: 90}}}
	f := newFixture(t, func(o *Options) { o.Events = ev; o.Instance = "hub-1" })
	fakeKubelet(t, f.client, 100*time.Millisecond, setReady)
	var got []events.Update
	res, err := f.sp.Start(t.Context(), Request{
		Key: "Alice@example.com", Namespace: testNS, Spec: testSpec(),
		Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "x"},
		Progress: func(u events.Update) { got = append(got, u) },
	})
	require.NoError(t, err)
	name, _ := PodName("kubespawn", "Alice@example.com")
	assert.Equal(t, name, res.Name)
	assert.Equal(t, "10.0.0.7", res.PodIP)
	assert.False(t, res.Adopted)
	pod, err := f.client.CoreV1().Pods(testNS).Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, res.UID, pod.UID)
	assert.Equal(t, map[string]string{"team": "a", LabelManagedBy: ManagedByValue, LabelInstance: "hub-1", LabelKeyHash: KeyHash("Alice@example.com")}, pod.Labels)
	assert.Equal(t, "Alice@example.com", pod.Annotations[AnnotationKey])
	assert.Equal(t, "x", pod.Annotations["note"])
	require.Len(t, got, 3, "all updates delivered before Start returned")
	for i := 1; i < len(got); i++ {
		assert.GreaterOrEqual(t, got[i].Progress, got[i-1].Progress)
	}
}

func TestStartRetriesTransientCreateErrors(t *testing.T) {
	f := newFixture(t, nil)
	fakeKubelet(t, f.client, 10*time.Millisecond, setReady)
	failures := []error{
		apierrors.NewTooManyRequests("slow down", 1), // Retry-After: 1s
		apierrors.NewInternalError(errors.New("boom")),
		apierrors.NewServiceUnavailable("unavailable"),
		apierrors.NewTimeoutError("gateway timeout", 0),
		&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
	}
	calls := 0
	f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		if calls <= len(failures) {
			return true, nil, failures[calls-1]
		}
		return false, nil, nil
	})
	start := time.Now()
	res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.NoError(t, err)
	assert.Equal(t, len(failures)+1, calls)
	assert.GreaterOrEqual(t, time.Since(start), time.Second, "Retry-After honoured")
	assert.True(t, f.podExists(t, res.Name))
}

func TestStartDoesNotRetryPermanentErrors(t *testing.T) {
	for name, perm := range map[string]error{
		"422 invalid": apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Pod").GroupKind(), "x",
			field.ErrorList{field.Invalid(field.NewPath("spec"), "x", "bad")}),
		"400 bad request": apierrors.NewBadRequest("bad"),
		"403 forbidden":   apierrors.NewForbidden(corev1.Resource("pods"), "x", errors.New("quota")),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, perm
			})
			_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
			require.ErrorIs(t, err, ErrRejected)
			var st apierrors.APIStatus
			require.ErrorAs(t, err, &st, "the API error is kept")
			assert.Equal(t, []string{"create pods"}, verbs(f.client), "one create, no retry, nothing to clean")
		})
	}
}

func TestStartTransientRetriesExhausted(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.CreateBackoff = func() backoff.BackOff {
			return backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Millisecond), 2)
		}
		o.StopTimeout = 600 * time.Millisecond // settle window 300ms
	})
	f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrCreateFailed)
	// A 503 might hide a success: cleanup looks (via the API) before
	// returning, for the whole settle window, since a single NotFound proves
	// nothing while the create may still commit; no pod appeared, so the
	// outcome is reported unconfirmed rather than clean.
	require.ErrorIs(t, err, ErrCleanupFailed)
	v := verbs(f.client)
	require.Greater(t, len(v), 4)
	assert.Equal(t, []string{"create pods", "create pods", "create pods"}, v[:3])
	for _, verb := range v[3:] {
		assert.Equal(t, "get pods", verb)
	}
}

// A create that succeeded behind a timeout is recognised as ours on retry,
// not mistaken for a conflict.
func TestStartAmbiguousCreateIsRecognised(t *testing.T) {
	f := newFixture(t, nil)
	fakeKubelet(t, f.client, 10*time.Millisecond, setReady)
	first := true
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if !first {
			return false, nil, nil
		}
		first = false
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		pod.UID = randUID()
		require.NoError(t, f.client.Tracker().Add(pod))
		return true, nil, apierrors.NewServerTimeout(corev1.Resource("pods"), "create", 1)
	})
	res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.NoError(t, err)
	assert.False(t, res.Adopted)
}

// A create that failed ambiguously and was never confirmed is found by its
// start ID and deleted.
func TestStartAmbiguousCreateCleanedUp(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.CreateBackoff = func() backoff.BackOff { return &backoff.StopBackOff{} }
	})
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		pod.UID = randUID()
		require.NoError(t, f.client.Tracker().Add(pod))
		return true, nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	})
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrCreateFailed)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Deleted)
	assert.False(t, f.podExists(t, se.Name))
}

func TestStartFailFastDeletesPod(t *testing.T) {
	for reason, want := range map[string]error{
		"CrashLoopBackOff":           ErrCrashLoop,
		"InvalidImageName":           ErrInvalidImage,
		"CreateContainerConfigError": ErrCreateContainerConfig,
		"CreateContainerError":       ErrCreateContainerConfig, // the runtime could not create it (a bad command, say)
		"ImagePullBackOff":           ErrImagePull,             // after ImagePullGrace (100ms here)
	} {
		t.Run(reason, func(t *testing.T) {
			warn := &corev1.Event{Type: corev1.EventTypeWarning, Reason: "Failed", Message: "simulated"}
			f := newFixture(t, func(o *Options) {
				o.Events = &fakeEvents{events: []*corev1.Event{{Type: corev1.EventTypeNormal, Reason: "Scheduled"}, warn}}
			})
			fakeKubelet(t, f.client, 10*time.Millisecond, setWaiting(reason))
			_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
			require.ErrorIs(t, err, want)
			var se *StartError
			require.ErrorAs(t, err, &se)
			assert.True(t, se.Deleted)
			assert.Equal(t, []*corev1.Event{warn}, se.Events, "only Warning events")
			assert.Contains(t, err.Error(), "simulated")
			assert.False(t, f.podExists(t, se.Name), "pod deleted")
			assertDeletedWithUID(t, f, se.UID)
		})
	}
}

func assertDeletedWithUID(t *testing.T, f *fixture, uid types.UID) {
	t.Helper()
	for _, a := range f.client.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			pre := d.GetDeleteOptions().Preconditions
			require.NotNil(t, pre, "delete without UID precondition")
			require.Equal(t, uid, *pre.UID)
			return
		}
	}
	t.Fatal("no DELETE sent")
}

func TestStartPodFailedAndUnschedulable(t *testing.T) {
	for name, c := range map[string]struct {
		mutate func(*corev1.Pod)
		want   error
	}{
		"failed": {func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "Evicted"
		}, ErrPodFailed},
		"unschedulable": {func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes"}}
		}, ErrUnschedulable},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil)
			fakeKubelet(t, f.client, 10*time.Millisecond, c.mutate)
			_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
			require.ErrorIs(t, err, c.want)
			name, _ := PodName("kubespawn", "alice")
			assert.False(t, f.podExists(t, name))
		})
	}
}

// The 2018 case: the watch is silent, the pod never shows up as ready, the
// start times out; the DELETE must still be sent and confirmed.
func TestStartTimeoutWithStalledCacheDeletesPod(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *Options) { o.StartTimeout = 300 * time.Millisecond; o.Registerer = reg })
	f.cache.stalled.Store(true)
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrStartTimeout)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Deleted)
	assert.False(t, f.podExists(t, se.Name))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.deletedOnFail))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.starts.WithLabelValues("timeout")))
}

// A stalled cache keeps serving a Pending copy; the fallback GET sees the
// pod ready.
func TestStartReadyDuringStallViaFallback(t *testing.T) {
	f := newFixture(t, nil)
	f.cache.stalled.Store(true)
	name, _ := PodName("kubespawn", "alice")
	f.cache.put(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Status: corev1.PodStatus{Phase: corev1.PodPending}})
	fakeKubelet(t, f.client, 50*time.Millisecond, setReady)
	res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.7", res.PodIP)
}

// A cache that claims every pod is absent changes nothing: no decision is
// taken on the cache's word.
func TestLyingCacheDecidesNothing(t *testing.T) {
	f := newFixture(t, nil)
	fakeKubelet(t, f.client, 10*time.Millisecond, setReady)
	f.cache.lie.Store(true)
	res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.NoError(t, err, "a cache miss is not ErrDeletedExternally")
	st, err := f.sp.Poll(t.Context(), testNS, res.Name)
	require.NoError(t, err)
	assert.Equal(t, StateRunning, st.State, "a cache miss is not 'stopped'")
	require.NoError(t, f.sp.Stop(t.Context(), testNS, res.Name, StopOptions{}))
	assert.False(t, f.podExists(t, res.Name), "DELETE sent although the cache said absent")
}

func TestStartCancelledDeletesPod(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	created := make(chan struct{})
	f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		close(created)
		return false, nil, nil
	})
	go func() { <-created; time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := f.sp.Start(ctx, Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrStartCancelled)
	require.ErrorIs(t, err, context.Canceled)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Deleted)
	assert.False(t, f.podExists(t, se.Name))
}

func TestStartCleanupFailureIsReported(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *Options) { o.Registerer = reg; o.StopTimeout = 200 * time.Millisecond })
	fakeKubelet(t, f.client, 10*time.Millisecond, setWaiting("CrashLoopBackOff"))
	f.client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("pods"), "x", errors.New("no delete for you"))
	})
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrCrashLoop)
	require.ErrorIs(t, err, ErrCleanupFailed)
	assert.Contains(t, err.Error(), "no delete for you")
	assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.cleanupFailed))
}

// deleteAfterCreate makes someone else delete every pod 50 ms after its
// create.
func (f *fixture) deleteAfterCreate() {
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		go func() {
			time.Sleep(50 * time.Millisecond)
			_ = f.client.CoreV1().Pods(testNS).Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
		}()
		return false, nil, nil
	})
}

func TestStartDeletedExternally(t *testing.T) {
	f := newFixture(t, nil)
	f.deleteAfterCreate()
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrDeletedExternally)
}

func existing(key string, mutate func(*corev1.Pod)) *corev1.Pod {
	name, _ := PodName("kubespawn", key)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: randUID(), CreationTimestamp: metav1.Now(),
			Labels:      map[string]string{LabelManagedBy: ManagedByValue, LabelInstance: "default", LabelKeyHash: KeyHash(key)},
			Annotations: map[string]string{AnnotationKey: key, AnnotationStartID: "earlier"}},
		Spec: *testSpec(),
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func TestStartAlreadyExists(t *testing.T) {
	t.Run("not ours", func(t *testing.T) {
		other := existing("alice", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "other"} })
		f := newFixture(t, nil, other)
		_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
		require.ErrorIs(t, err, ErrNameConflict)
		require.True(t, f.podExists(t, other.Name), "someone else's pod is never deleted")
		assert.NotContains(t, verbs(f.client), "delete pods")
	})
	t.Run("ours running", func(t *testing.T) {
		running := existing("alice", setReady)
		f := newFixture(t, nil, running)
		_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
		require.ErrorIs(t, err, ErrAlreadyRunning)
		require.True(t, f.podExists(t, running.Name), "the running pod is left alone")
	})
	t.Run("ours running adopted", func(t *testing.T) {
		running := existing("alice", setReady)
		f := newFixture(t, func(o *Options) { o.AdoptRunning = true }, running)
		res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
		require.NoError(t, err)
		assert.True(t, res.Adopted)
		assert.Equal(t, running.UID, res.UID)
	})
	t.Run("ours terminating", func(t *testing.T) {
		old := existing("alice", func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.Now()); setReady(p) })
		f := newFixture(t, nil, old)
		fakeKubelet(t, f.client, 10*time.Millisecond, setReady)
		go func() {
			time.Sleep(200 * time.Millisecond)
			_ = f.client.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), testNS, old.Name)
		}()
		res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
		require.NoError(t, err)
		assert.NotEqual(t, old.UID, res.UID)
		assert.False(t, res.Adopted)
	})
	t.Run("ours evicted", func(t *testing.T) {
		old := existing("alice", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed; p.Status.Reason = "Evicted" })
		f := newFixture(t, nil, old)
		fakeKubelet(t, f.client, 10*time.Millisecond, setReady)
		res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
		require.NoError(t, err)
		assert.NotEqual(t, old.UID, res.UID)
		assertDeletedWithUID(t, f, old.UID)
	})
}

func TestClassifyPod(t *testing.T) {
	now := time.Now()
	pod := func(mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{Spec: *testSpec()}
		mutate(p)
		return p
	}
	for name, c := range map[string]struct {
		pod   *corev1.Pod
		want  error
		ready bool
	}{
		"ready":             {pod: pod(setReady), ready: true},
		"pending":           {pod: pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })},
		"running no ip":     {pod: pod(func(p *corev1.Pod) { setReady(p); p.Status.PodIP = "" })},
		"running not ready": {pod: pod(func(p *corev1.Pod) { setReady(p); p.Status.ContainerStatuses[0].Ready = false })},
		"terminating":       {pod: pod(func(p *corev1.Pod) { setReady(p); p.DeletionTimestamp = ptr.To(metav1.Now()) })},
		"crash loop":        {pod: pod(setWaiting("CrashLoopBackOff")), want: ErrCrashLoop},
		"invalid image":     {pod: pod(setWaiting("InvalidImageName")), want: ErrInvalidImage},
		"config error":      {pod: pod(setWaiting("CreateContainerConfigError")), want: ErrCreateContainerConfig},
		"create error":      {pod: pod(setWaiting("CreateContainerError")), want: ErrCreateContainerConfig},
		"never pull":        {pod: pod(setWaiting("ErrImageNeverPull")), want: ErrImagePull},
		"init crash loop": {pod: pod(func(p *corev1.Pod) {
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}
		}), want: ErrCrashLoop},
		"failed":    {pod: pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), want: ErrPodFailed},
		"succeeded": {pod: pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), want: ErrPodFailed},
		"unschedulable": {pod: pod(func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}
		}), want: ErrUnschedulable},
		"scheduling pending": {pod: pod(func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "SchedulingGated"}}
		})},
	} {
		var since time.Time
		v := classifyPod(c.pod, now, &since, time.Minute)
		assert.Equal(t, c.ready, v.ready, name)
		assert.Equal(t, c.want, v.reason, name)
	}

	// Image pull errors get a grace period, measured from the first sighting.
	var since time.Time
	p := pod(setWaiting("ErrImagePull"))
	v := classifyPod(p, now, &since, time.Minute)
	assert.Nil(t, v.reason)
	assert.Equal(t, time.Minute, v.recheck)
	v = classifyPod(pod(setWaiting("ImagePullBackOff")), now.Add(30*time.Second), &since, time.Minute)
	assert.Nil(t, v.reason)
	assert.Equal(t, 30*time.Second, v.recheck)
	v = classifyPod(p, now.Add(time.Minute), &since, time.Minute)
	assert.Equal(t, ErrImagePull, v.reason)
	// A pull that recovers resets the grace.
	since = now
	classifyPod(pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), now.Add(time.Second), &since, time.Minute)
	assert.True(t, since.IsZero())
}

func TestIsTransient(t *testing.T) {
	for _, err := range []error{
		apierrors.NewTooManyRequests("x", 1), apierrors.NewInternalError(errors.New("x")),
		apierrors.NewServiceUnavailable("x"), apierrors.NewServerTimeout(corev1.Resource("pods"), "create", 1),
		apierrors.NewTimeoutError("x", 1), apierrors.NewGenericServerResponse(504, "POST", corev1.Resource("pods"), "x", "", 0, false),
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, syscall.ECONNRESET,
	} {
		assert.True(t, isTransient(err), "%v", err)
	}
	for _, err := range []error{
		apierrors.NewBadRequest("x"), apierrors.NewForbidden(corev1.Resource("pods"), "x", errors.New("x")),
		apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Pod").GroupKind(), "x", nil),
		apierrors.NewUnauthorized("x"), errors.New("something else"),
	} {
		assert.False(t, isTransient(err), "%v", err)
	}
}

// Invariant 3: the spawner opens no watches of its own (no per-pod watch);
// it relies on the shared cache's notifications.
func TestSpawnerOpensNoWatches(t *testing.T) {
	f := newFixture(t, nil)
	fakeKubelet(t, f.client, 10*time.Millisecond, setReady)
	watches := func() int {
		n := 0
		for _, a := range f.client.Actions() {
			if a.GetVerb() == "watch" {
				n++
			}
		}
		return n
	}
	before := watches()
	res, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.NoError(t, err)
	_, err = f.sp.Poll(t.Context(), testNS, res.Name)
	require.NoError(t, err)
	require.NoError(t, f.sp.Stop(t.Context(), testNS, res.Name, StopOptions{UID: res.UID}))
	_, err = f.sp.Sweep(t.Context(), SweepPolicy{Namespace: testNS, MaxAge: time.Nanosecond, Delete: true})
	require.NoError(t, err)
	assert.Equal(t, before, watches(), "no watch opened by the spawner")
}

// fakeStreamError stands for golang.org/x/net/http2.StreamError.
type fakeStreamError struct{}

func (fakeStreamError) Error() string {
	return "stream error: stream ID 3; INTERNAL_ERROR; received from peer"
}

// The server answers 201 but the connection drops while the body is read:
// client-go returns a plain wrapped error (rest/request.go) that is neither
// an API status nor recognised as transient. The pod exists: it must be
// found, deleted and confirmed gone, and the error is not a rejection.
func TestStartReadErrorAfterCreateIsCleanedUp(t *testing.T) {
	for name, readErr := range map[string]error{
		"stream error":     fmt.Errorf("stream error when reading response body, may be caused by closed connection. Please retry. Original error: %w", fakeStreamError{}),
		"unexpected error": fmt.Errorf("unexpected error when reading response body. Please retry. Original error: %w", io.ErrUnexpectedEOF),
	} {
		t.Run(name, func(t *testing.T) {
			require.False(t, isTransient(readErr), "the case the fix is about")
			reg := prometheus.NewRegistry()
			warn := &corev1.Event{Type: corev1.EventTypeWarning, Reason: "Failed", Message: "simulated"}
			f := newFixture(t, func(o *Options) { o.Registerer = reg; o.Events = &fakeEvents{events: []*corev1.Event{warn}} })
			var uid types.UID
			f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
				pod.UID = randUID()
				uid = pod.UID
				require.NoError(t, f.client.Tracker().Add(pod))
				return true, nil, readErr
			})
			_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
			require.ErrorIs(t, err, ErrCreateFailed)
			assert.NotErrorIs(t, err, ErrRejected, "the server did not refuse the pod")
			assert.NotErrorIs(t, err, ErrCleanupFailed)
			var se *StartError
			require.ErrorAs(t, err, &se)
			assert.True(t, se.Deleted, "pod deleted and confirmed gone")
			assert.False(t, f.podExists(t, se.Name), "no leak")
			assertDeletedWithUID(t, f, uid)
			assert.Equal(t, uid, se.UID, "the UID found by the cleanup is reported")
			assert.Equal(t, []*corev1.Event{warn}, se.Events, "warning events of the pod found by the cleanup")
			assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.deletedOnFail))
			assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.starts.WithLabelValues("create_failed")))
		})
	}
}

func TestMaybeCreated(t *testing.T) {
	for code := 400; code < 500; code++ {
		err := apierrors.NewGenericServerResponse(code, "POST", corev1.Resource("pods"), "x", "", 0, false)
		assert.False(t, maybeCreated(err, sent), "%d: the API server refused", code)
	}
	for _, err := range []error{
		apierrors.NewInternalError(errors.New("x")), apierrors.NewServiceUnavailable("x"),
		apierrors.NewServerTimeout(corev1.Resource("pods"), "create", 1), apierrors.NewTimeoutError("x", 1),
		errors.New("unexpected error when reading response body"), syscall.ECONNRESET,
	} {
		assert.True(t, maybeCreated(err, sent), "%v", err)
		assert.True(t, maybeCreated(err, sentUnknown), "%v", err)
	}
	// Never written: a cancel or a refused dial before the request left.
	for _, err := range []error{context.Canceled, context.DeadlineExceeded, &url.Error{Op: "Post", URL: "https://x", Err: syscall.ECONNREFUSED}} {
		assert.False(t, maybeCreated(err, notSent), "%v", err)
		assert.True(t, maybeCreated(err, sent), "%v: written, so it may have arrived", err)
	}
	// Transport errors that never reach the server, sent or not.
	for _, err := range permanentTransportErrors() {
		assert.False(t, maybeCreated(err, sentUnknown), "%v", err)
	}
}

// permanentTransportErrors are errors no retry can fix: the request never
// reached the API server.
func permanentTransportErrors() []error {
	return []error{
		&url.Error{Op: "Post", URL: "https://api", Err: x509.UnknownAuthorityError{}},
		&url.Error{Op: "Post", URL: "https://api", Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "api"}},
		&url.Error{Op: "Post", URL: "https://api", Err: &tls.CertificateVerificationError{Err: errors.New("expired")}},
		&url.Error{Op: "Post", URL: "https://api", Err: &net.DNSError{Err: "no such host", Name: "api", IsNotFound: true}},
		&url.Error{Op: "Post", URL: "ftp://api", Err: errors.New("unsupported protocol scheme \"ftp\"")},
	}
}

// TestPermanentTransportErrorsAreNotRetried: a certificate or DNS error is
// neither retried for the create's whole budget nor taken for an
// ambiguous create: the start fails at once, with nothing to clean up.
func TestPermanentTransportErrorsAreNotRetried(t *testing.T) {
	for _, perm := range permanentTransportErrors() {
		assert.False(t, isTransient(perm), "%v", perm)
		creates := 0
		f := newFixture(t, nil)
		f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			creates++
			return true, nil, perm
		})
		_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
		require.ErrorIs(t, err, ErrRejected, "%v", perm)
		assert.NotErrorIs(t, err, ErrCleanupFailed)
		assert.Equal(t, 1, creates, "not retried: %v", perm)
	}
	for _, tr := range []error{syscall.ECONNRESET, &url.Error{Op: "Post", URL: "https://x", Err: syscall.ECONNREFUSED}, &net.OpError{Op: "dial", Err: errors.New("i/o timeout")}} {
		assert.True(t, isTransient(tr), "%v", tr)
	}
}

// The start timeout fires while the create is stuck in a slow API server;
// the create commits only after the cleanup's first GET said NotFound. The
// cleanup keeps looking for the settle window, and deletes the pod.
func TestStartAmbiguousCreateCommittingLateIsCleanedUp(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *Options) {
		o.StartTimeout = 200 * time.Millisecond
		o.StopTimeout = 5 * time.Second
		o.Registerer = reg
	})
	firstGet := make(chan struct{})
	added := make(chan types.UID, 1)
	var gets atomic.Int32
	f.client.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if gets.Add(1) == 1 {
			close(firstGet)
		}
		return false, nil, nil
	})
	f.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		pod.UID = randUID()
		go func() {
			<-firstGet
			time.Sleep(50 * time.Millisecond)
			assert.NoError(t, f.client.Tracker().Add(pod))
			added <- pod.UID
		}()
		time.Sleep(300 * time.Millisecond) // stuck past the start timeout
		return true, nil, apierrors.NewServerTimeout(corev1.Resource("pods"), "create", 1)
	})
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrStartTimeout)
	var uid types.UID
	select {
	case uid = <-added:
	case <-time.After(10 * time.Second):
		t.Fatal("the late create never happened")
	}
	assert.NotErrorIs(t, err, ErrCleanupFailed)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Deleted)
	assert.Equal(t, uid, se.UID)
	assert.False(t, f.podExists(t, se.Name), "the late pod was deleted before Start returned")
	assertDeletedWithUID(t, f, uid)
	assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.deletedOnFail))
	assert.Zero(t, testutil.ToFloat64(f.sp.metrics.cleanupFailed))
}

// An ambiguous create whose pod never shows up within the settle window is
// not reported clean: the outcome is unconfirmed.
func TestStartAmbiguousCreateUnconfirmed(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *Options) {
		o.CreateBackoff = func() backoff.BackOff { return &backoff.StopBackOff{} }
		o.StopTimeout = 600 * time.Millisecond // settle window 300ms
		o.Registerer = reg
	})
	f.client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServerTimeout(corev1.Resource("pods"), "create", 1)
	})
	begin := time.Now()
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrCreateFailed)
	require.ErrorIs(t, err, ErrCleanupFailed)
	assert.Contains(t, err.Error(), "unconfirmed")
	assert.GreaterOrEqual(t, time.Since(begin), 300*time.Millisecond, "looked for the settle window")
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.False(t, se.Deleted)
	v := verbs(f.client)
	assert.NotContains(t, v, "delete pods")
	assert.Greater(t, countOf(v, "get pods"), 1, "re-checked, not one GET")
	assert.Equal(t, 1.0, testutil.ToFloat64(f.sp.metrics.cleanupFailed))
	assert.Zero(t, testutil.ToFloat64(f.sp.metrics.deletedOnFail))
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// blockingProgress returns a Progress callback that blocks until the test
// ends, and a channel closed at its first call.
func blockingProgress(t *testing.T) (func(events.Update), <-chan struct{}, *atomic.Int32) {
	release, called := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	t.Cleanup(func() { close(release) })
	return func(events.Update) {
		if calls.Add(1) == 1 {
			close(called)
		}
		<-release
	}, called, &calls
}

// A Progress callback that blocks forever cannot keep a failed start from
// cleaning up and returning.
func TestStartBlockedProgressDoesNotBlockCleanup(t *testing.T) {
	ev := &fakeEvents{updates: []events.Update{{Message: "Scheduled", Progress: 10}, {Message: "Pulling", Progress: 40}}}
	f := newFixture(t, func(o *Options) { o.Events = ev })
	progress, called, calls := blockingProgress(t)
	fakeKubelet(t, f.client, 100*time.Millisecond, setWaiting("CrashLoopBackOff"))
	done := make(chan error, 1)
	begin := time.Now()
	go func() {
		_, err := f.sp.Start(context.Background(), Request{Key: "alice", Namespace: testNS, Spec: testSpec(), Progress: progress})
		done <- err
	}()
	<-called
	var err error
	select {
	case err = <-done:
	case <-time.After(progressWait + 10*time.Second):
		t.Fatal("Start blocked by its Progress callback")
	}
	require.ErrorIs(t, err, ErrCrashLoop)
	assert.Less(t, time.Since(begin), progressWait+5*time.Second)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Deleted)
	assert.False(t, f.podExists(t, se.Name))
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, int32(1), calls.Load(), "an abandoned callback gets no further updates")
}

// A Stop while the Start's Progress callback blocks returns within its
// timeout, with the pod gone.
func TestStopNotBlockedByBlockedProgress(t *testing.T) {
	ev := &fakeEvents{updates: []events.Update{{Message: "Scheduled", Progress: 10}}}
	f := newFixture(t, func(o *Options) { o.Events = ev; o.StartTimeout = time.Minute })
	progress, called, _ := blockingProgress(t)
	name, _ := PodName("kubespawn", "alice")
	startErr := make(chan error, 1)
	go func() {
		// No kubelet: the pod stays Pending.
		_, err := f.sp.Start(context.Background(), Request{Key: "alice", Namespace: testNS, Spec: testSpec(), Progress: progress})
		startErr <- err
	}()
	<-called
	stopTimeout := progressWait + 3*time.Second
	stopped := make(chan error, 1)
	begin := time.Now()
	go func() { stopped <- f.sp.Stop(context.Background(), testNS, name, StopOptions{Timeout: stopTimeout}) }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(stopTimeout + 5*time.Second):
		t.Fatal("Stop did not return within its timeout")
	}
	assert.Less(t, time.Since(begin), stopTimeout+time.Second)
	assert.False(t, f.podExists(t, name))
	select {
	case err := <-startErr:
		require.ErrorIs(t, err, ErrStopRequested)
		var se *StartError
		require.ErrorAs(t, err, &se)
		assert.True(t, se.Deleted)
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return")
	}
}

// For a pod deleted by someone else the cleanup finds nothing to delete: it
// is not reported as deleted by the start.
func TestStartDeletedExternallyIsNotReportedDeleted(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(o *Options) { o.Registerer = reg })
	f.deleteAfterCreate()
	_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
	require.ErrorIs(t, err, ErrDeletedExternally)
	var se *StartError
	require.ErrorAs(t, err, &se)
	assert.False(t, se.Deleted)
	assert.NotEmpty(t, se.UID)
	assert.Zero(t, testutil.ToFloat64(f.sp.metrics.deletedOnFail))
	assert.Zero(t, testutil.ToFloat64(f.sp.metrics.cleanupFailed))
}

func TestMaxStartTimeout(t *testing.T) {
	client := newFakeClient()
	cache := newFakeCache(t, client)
	for name, o := range map[string]Options{
		"negative":    {Client: client, Pods: cache, Instance: "i", MaxStartTimeout: -1},
		"below start": {Client: client, Pods: cache, Instance: "i", StartTimeout: time.Minute, MaxStartTimeout: time.Second},
	} {
		_, err := New(o)
		assert.ErrorIs(t, err, ErrInvalidOptions, name)
	}
	sp, err := New(Options{Client: client, Pods: cache, Instance: "i", StartTimeout: time.Minute})
	require.NoError(t, err)
	assert.Equal(t, time.Minute, sp.opts.MaxStartTimeout, "default: StartTimeout")

	f := newFixture(t, func(o *Options) { o.MaxStartTimeout = time.Hour })
	_, err = f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec(), StartTimeout: 2 * time.Hour})
	require.ErrorIs(t, err, ErrInvalidArgument)
	assert.Empty(t, verbs(f.client))
}

// TestFailedStartKeepsTheEventsOfAPodItDidNotCreate: a Start that fails
// because the name is taken (our pod already running, or a pod not ours)
// created nothing and deleted nothing: the existing pod's event history
// stays in the event index.
func TestFailedStartKeepsTheEventsOfAPodItDidNotCreate(t *testing.T) {
	for name, c := range map[string]struct {
		mutate func(*corev1.Pod)
		reason error
	}{
		"already running": {setReady, ErrAlreadyRunning},
		"name conflict":   {func(p *corev1.Pod) { setReady(p); p.Labels = map[string]string{"app": "other"} }, ErrNameConflict},
	} {
		t.Run(name, func(t *testing.T) {
			running := existing("alice", c.mutate)
			evs := &fakeEvents{}
			f := newFixture(t, func(o *Options) { o.Events = evs }, running)
			_, err := f.sp.Start(t.Context(), Request{Key: "alice", Namespace: testNS, Spec: testSpec()})
			require.ErrorIs(t, err, c.reason)
			require.True(t, f.podExists(t, running.Name))
			evs.mu.Lock()
			defer evs.mu.Unlock()
			assert.NotContains(t, evs.forgotten, running.UID, "the running pod's events are kept")
		})
	}
}
