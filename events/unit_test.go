package events

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubespawn/kubespawn/internal/slim"
	"github.com/kubespawn/kubespawn/reflector"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// ev builds a Normal event about pod uid at t0+sec seconds.
func ev(uid types.UID, name, reason, message string, sec int) *corev1.Event {
	ts := metav1.NewTime(t0.Add(time.Duration(sec) * time.Second))
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: name, UID: types.UID("ev-" + name), ResourceVersion: "1",
			Labels: map[string]string{"drop": "me"}, Annotations: map[string]string{"drop": "me"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}},
		},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "p", UID: uid},
		Reason:         reason, Message: message, Type: corev1.EventTypeNormal, Count: 1,
		FirstTimestamp: ts, LastTimestamp: ts,
		Source: corev1.EventSource{Component: "kubelet"},
	}
}

func warning(e *corev1.Event) *corev1.Event { e.Type = corev1.EventTypeWarning; return e }

func TestMessageAndProgressRule(t *testing.T) {
	normal := ev("u", "a", "Pulling", "Pulling image \"x\"\n  now", 0)
	assert.Equal(t, `Pulling image "x" now`, Message(normal))
	w := warning(ev("u", "b", "Failed", "Failed to pull image \"x\": not found", 0))
	assert.Equal(t, `[Warning] Failed: Failed to pull image "x": not found`, Message(w))
	assert.Equal(t, "Started", Message(ev("u", "c", "Started", "", 0)), "empty message falls back to the reason")
	long := ev("u", "d", "Pulled", string(make([]byte, 5000)), 0)
	assert.LessOrEqual(t, len(Message(long)), maxMessageLen+len("…"))

	for reason, want := range map[string]int{"Scheduled": 20, "Pulling": 40, "Pulled": 60, "Created": 70, "Started": 90} {
		p, ok := progressOf(ev("u", "x", reason, "", 0))
		assert.True(t, ok, reason)
		assert.Equal(t, want, p, reason)
	}
	_, ok := progressOf(warning(ev("u", "x", "Started", "", 0)))
	assert.False(t, ok, "warnings never advance progress")
	_, ok = progressOf(ev("u", "x", "Killing", "", 0))
	assert.False(t, ok, "unknown reasons do not advance progress")
}

func TestOrdering(t *testing.T) {
	// Same second (the API's resolution): arrival decides.
	a := newItem(ev("u", "a", "Scheduled", "", 0), 1, 1)
	b := newItem(ev("u", "b", "Pulling", "", 0), 2, 2)
	assert.Negative(t, byFirst(a, b))
	// A repeated event (first at 0, last at 10) is delivered at its first
	// occurrence, but is the newest for For and the cap.
	rep := ev("u", "c", "BackOff", "", 0)
	rep.LastTimestamp = metav1.NewTime(t0.Add(10 * time.Second))
	rep.Count = 5
	c := newItem(rep, 3, 3)
	d := newItem(ev("u", "d", "Failed", "", 5), 4, 4)
	assert.Negative(t, byFirst(c, d))
	assert.Positive(t, byLast(c, d))
	// eventTime and series take precedence.
	e := ev("u", "e", "X", "", 0)
	e.EventTime = metav1.NewMicroTime(t0.Add(20 * time.Second))
	e.Series = &corev1.EventSeries{Count: 2, LastObservedTime: metav1.NewMicroTime(t0.Add(30 * time.Second))}
	assert.Equal(t, t0.Add(20*time.Second), firstTime(e))
	assert.Equal(t, t0.Add(30*time.Second), lastTime(e))
}

func TestSlim(t *testing.T) {
	e := ev("u", "a", "Pulling", "m", 0)
	e.Series = &corev1.EventSeries{Count: 3}
	e.Action = "Pull"
	e.Related = &corev1.ObjectReference{Name: "r"}
	s := slim.Event(e)
	assert.Nil(t, s.Labels)
	assert.Nil(t, s.Annotations)
	assert.Nil(t, s.ManagedFields)
	assert.Nil(t, s.Related)
	assert.Empty(t, s.Action)
	assert.Equal(t, e.InvolvedObject, s.InvolvedObject)
	assert.Equal(t, e.Series, s.Series)
	assert.NotSame(t, e.Series, s.Series)
	assert.Equal(t, []any{e.Name, e.Namespace, e.UID, e.ResourceVersion, e.Reason, e.Message, e.Type, e.Count, e.FirstTimestamp, e.LastTimestamp, e.Source},
		[]any{s.Name, s.Namespace, s.UID, s.ResourceVersion, s.Reason, s.Message, s.Type, s.Count, s.FirstTimestamp, s.LastTimestamp, s.Source})
	assert.Equal(t, s, slim.Event(s), "idempotent")
}

func TestScopeSelector(t *testing.T) {
	f, err := reflector.NewFactoryForClient(fake.NewClientset(), reflector.Options{})
	require.NoError(t, err)
	defer f.Shutdown()
	for in, want := range map[string]string{
		"":                                      "involvedObject.kind=Pod",
		"involvedObject.kind=Pod":               "involvedObject.kind=Pod",
		"type=Warning,involvedObject.kind==Pod": "involvedObject.kind=Pod,type=Warning",
		"type!=Normal,reason=Failed":            "involvedObject.kind=Pod,reason=Failed,type!=Normal",
		"reason=Failed,type!=Normal":            "involvedObject.kind=Pod,reason=Failed,type!=Normal",
	} {
		x, err := IndexFor(f, reflector.Scope{FieldSelector: in}, Options{})
		require.NoError(t, err, in)
		assert.Equal(t, want, x.Scope().FieldSelector, in)
	}
	for _, bad := range []string{"involvedObject.kind=Node", "involvedObject.kind!=Pod", "a=b=c=("} {
		_, err := IndexFor(f, reflector.Scope{FieldSelector: bad}, Options{})
		assert.ErrorIs(t, err, reflector.ErrInvalidOptions, bad)
	}
	_, err = IndexFor(f, reflector.Scope{}, Options{PerPodLimit: -1})
	assert.ErrorIs(t, err, reflector.ErrInvalidOptions)
	_, err = IndexFor(nil, reflector.Scope{}, Options{})
	assert.ErrorIs(t, err, reflector.ErrInvalidArgument)
	// One index per scope: the same Options share it, others are refused.
	a, err := IndexFor(f, reflector.Scope{Namespaces: []string{"ns"}}, Options{})
	require.NoError(t, err)
	b, err := IndexFor(f, reflector.Scope{Namespaces: []string{"ns"}}, Options{PerPodLimit: defaultPerPodLimit})
	require.NoError(t, err)
	assert.Same(t, a, b)
	_, err = IndexFor(f, reflector.Scope{Namespaces: []string{"ns"}}, Options{PerPodLimit: 7})
	assert.ErrorIs(t, err, reflector.ErrInvalidOptions)
}

func TestIndexUIDFilteringAndUpdates(t *testing.T) {
	x := newIndexStore(clocktesting.NewFakeClock(t0), 10, time.Minute)
	h := x.handler()
	h.OnAdd(ev("old", "p.1", "Started", "old pod", 0), false)
	h.OnAdd(ev("new", "p.2", "Scheduled", "new pod", 1), false)
	h.OnAdd(ev("", "p.3", "Scheduled", "no uid", 1), false)
	got := x.list("new")
	require.Len(t, got, 1)
	assert.Equal(t, "new pod", got[0].ev.Message)
	assert.EqualValues(t, 1, x.stats().Ignored)

	// An update with the same resourceVersion (a relist) changes nothing.
	_, v := x.since("new", 0)
	h.OnUpdate(nil, ev("new", "p.2", "Scheduled", "new pod", 1))
	items, v2 := x.since("new", v)
	assert.Empty(t, items)
	assert.Equal(t, v, v2)
	// A real update (count) does, keeping the arrival order.
	upd := ev("new", "p.2", "Scheduled", "new pod", 1)
	upd.ResourceVersion, upd.Count = "2", 2
	h.OnUpdate(nil, upd)
	items, _ = x.since("new", v)
	require.Len(t, items, 1)
	assert.EqualValues(t, 2, items[0].ev.Count)

	// The server deleting an event drops it; the empty entry goes.
	h.OnDelete(upd)
	assert.Empty(t, x.list("new"))
	assert.Equal(t, 1, x.stats().Pods)
	h.OnDelete(ev("old", "p.1", "Started", "old pod", 0))
	assert.Equal(t, IndexStats{Ignored: 1}, x.stats())
}

func TestIndexCapKeepsNewest(t *testing.T) {
	x := newIndexStore(clocktesting.NewFakeClock(t0), 5, time.Minute)
	h := x.handler()
	// Arrive out of order: 20 events at seconds 19..0.
	for i := 19; i >= 0; i-- {
		h.OnAdd(ev("u", fmt.Sprintf("e%02d", i), "R", fmt.Sprint(i), i), false)
	}
	got := x.list("u")
	require.Len(t, got, 5)
	for i, it := range got {
		assert.Equal(t, fmt.Sprint(15+i), it.ev.Message, "the newest five, oldest first")
	}
	st := x.stats()
	assert.Equal(t, IndexStats{Pods: 1, Events: 5, MaxPerPod: 5, EvictedEvents: 15}, st)
}

func TestIndexTTL(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	x := newIndexStore(clk, 5, 10*time.Minute)
	h := x.handler()
	h.OnAdd(ev("a", "a.1", "R", "m", 0), false)
	h.OnAdd(ev("b", "b.1", "R", "m", 0), false)
	h.OnAdd(ev("c", "c.1", "R", "m", 0), false)
	_, cancel := x.subscribe("b")
	clk.Step(9 * time.Minute)
	h.OnAdd(ev("c", "c.2", "R", "m2", 1), false) // c stays active
	assert.Zero(t, x.expire())
	clk.Step(time.Minute)
	assert.Equal(t, 1, x.expire(), "a idle for the TTL goes; b has a Stream; c had an event")
	assert.Empty(t, x.list("a"))
	assert.Len(t, x.list("b"), 1)
	cancel() // the TTL restarts when the last Stream closes
	clk.Step(9 * time.Minute)
	assert.Equal(t, 1, x.expire(), "c's TTL ran out; b's restarted")
	assert.Len(t, x.list("b"), 1)
	clk.Step(time.Minute)
	assert.Equal(t, 1, x.expire())
	assert.Equal(t, 0, x.stats().Pods)
	assert.Equal(t, 0, x.stats().Events)

	h.OnAdd(ev("d", "d.1", "R", "m", 0), false)
	x.forget("d")
	assert.Equal(t, IndexStats{EvictedPods: 4}, x.stats())
}

// startIndex returns a started Index on a fake clientset (probes off:
// the fake cannot answer them) and the factory.
func startFakeIndex(t *testing.T, client *fake.Clientset, ro reflector.Options, scope reflector.Scope, opts Options) (*Index, *reflector.Factory) {
	t.Helper()
	ro.ProbeInterval, ro.AuditInterval = -1, -1
	f, err := reflector.NewFactoryForClient(client, ro)
	require.NoError(t, err)
	t.Cleanup(f.Shutdown)
	x, err := IndexFor(f, scope, opts)
	require.NoError(t, err)
	return x, f
}

// TestEvictionWithFakeClock runs a whole Index on a fake clientset and a
// fake clock: idle entries are evicted after the TTL, with no goroutine of
// the index's own.
func TestEvictionWithFakeClock(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	client := fake.NewClientset()
	x, f := startFakeIndex(t, client, reflector.Options{Clock: clk, IdleTimeout: -1}, reflector.Scope{}, Options{TTL: time.Minute})
	f.Start(t.Context())
	_, err := client.CoreV1().Events("ns").Create(t.Context(), ev("u", "e1", "Scheduled", "m", 0), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(x.Events(PodRef{"ns", "p", "u"})) == 1 }, time.Minute, 10*time.Millisecond)
	clk.Step(61 * time.Second)
	assert.Equal(t, 0, x.Stats().Pods, "evicted when the index is next used")
	assert.EqualValues(t, 1, x.Stats().EvictedPods)
}

// next returns the next Update, failing the test if none comes for a long
// time (a guard against hanging, not a performance bound).
func next(t *testing.T, ch <-chan Update) Update {
	t.Helper()
	select {
	case u, ok := <-ch:
		require.True(t, ok, "stream closed")
		return u
	case <-time.After(2 * time.Minute):
		t.Fatal("no update for 2 minutes")
		return Update{}
	}
}

// TestStreamWithFakeClient checks replay, order, dedup, UID filtering and
// progress through a whole Reflector on a fake clientset.
func TestStreamWithFakeClient(t *testing.T) {
	client := fake.NewClientset()
	r, f := startFakeIndex(t, client, reflector.Options{}, reflector.Scope{}, Options{})
	ctx := t.Context()
	f.Start(ctx)
	create := func(e *corev1.Event) {
		_, err := client.CoreV1().Events("ns").Create(ctx, e, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	create(ev("old", "p.0", "Started", "old pod started", 0))
	create(ev("new", "p.1", "Scheduled", "Successfully assigned ns/p", 1))
	create(ev("new", "p.2", "Pulling", `Pulling image "x"`, 1))
	require.NoError(t, r.WaitForSync(ctx))

	sctx, cancel := context.WithCancel(ctx)
	ch, err := r.Stream(sctx, PodRef{"ns", "p", "new"})
	require.NoError(t, err)
	u := next(t, ch)
	assert.Equal(t, "Scheduled", u.Event.Reason)
	assert.Equal(t, 20, u.Progress)
	assert.False(t, u.Degraded)
	u = next(t, ch)
	assert.Equal(t, "Pulling", u.Event.Reason)
	assert.Equal(t, 40, u.Progress)

	// A count update of a delivered event is suppressed; a warning does
	// not advance progress; a sentinel proves nothing came in between.
	dup := ev("new", "p.2", "Pulling", `Pulling image "x"`, 1)
	dup.Count, dup.LastTimestamp = 2, metav1.NewTime(t0.Add(5*time.Second))
	_, err = client.CoreV1().Events("ns").Update(ctx, dup, metav1.UpdateOptions{})
	require.NoError(t, err)
	create(warning(ev("new", "p.3", "Failed", "pull failed", 2)))
	u = next(t, ch)
	assert.Equal(t, "Failed", u.Event.Reason)
	assert.True(t, u.Warning)
	assert.Equal(t, 40, u.Progress)
	assert.Equal(t, "[Warning] Failed: pull failed", u.Message)
	create(ev("new", "p.4", "Pulled", "pulled", 3))
	u = next(t, ch)
	assert.Equal(t, "Pulled", u.Event.Reason)
	assert.Equal(t, 60, u.Progress)
	for _, e := range r.Events(PodRef{"ns", "p", "new"}) {
		assert.Equal(t, types.UID("new"), e.InvolvedObject.UID)
	}
	assert.Len(t, r.Events(PodRef{"ns", "p", "new"}), 4)
	cancel()
	for range ch { //nolint:revive // drain until closed
	}
	require.Eventually(t, func() bool { return r.Stats().Streams == 0 }, time.Minute, 10*time.Millisecond)
}

func TestStreamErrorsAndStop(t *testing.T) {
	client := fake.NewClientset()
	r, f := startFakeIndex(t, client, reflector.Options{}, reflector.Scope{Namespaces: []string{"ns"}}, Options{})
	f.Start(t.Context())
	for _, bad := range []PodRef{{}, {Namespace: "ns", Name: "p"}, {Namespace: "ns", UID: "u"}, {Name: "p", UID: "u"}} {
		_, err := r.Stream(t.Context(), bad)
		assert.True(t, errors.Is(err, reflector.ErrInvalidArgument), "%+v: %v", bad, err)
		assert.Nil(t, r.Events(bad))
	}
	_, err := r.Stream(t.Context(), PodRef{"other", "p", "u"})
	assert.ErrorIs(t, err, reflector.ErrOutOfScope)
	ch, err := r.Stream(t.Context(), PodRef{"ns", "p", "u"})
	require.NoError(t, err)
	f.Shutdown() // waits for the Stream's goroutine too
	select {
	case _, ok := <-ch:
		assert.False(t, ok, "closed by the factory's Shutdown")
	default:
		t.Fatal("the Stream is still open after Shutdown returned")
	}
	_, err = r.Stream(t.Context(), PodRef{"ns", "p", "u"})
	assert.ErrorIs(t, err, reflector.ErrStopped)
	assert.Equal(t, reflector.StateStopped, r.Status().State)
}

// TestStreamBeforeSyncPolls: before the watch has synced, a Stream is fed
// by the fallback list (Degraded, without the degraded notice), then by
// the index once synced, without delivering anything twice.
func TestStreamBeforeSyncPolls(t *testing.T) {
	client := fake.NewClientset()
	r, f := startFakeIndex(t, client, reflector.Options{}, reflector.Scope{}, Options{FallbackInterval: 20 * time.Millisecond})
	ctx := t.Context()
	pod := PodRef{"ns", "p", "u"}
	ch, err := r.Stream(ctx, pod) // not started yet
	require.NoError(t, err)
	_, err = client.CoreV1().Events("ns").Create(ctx, ev("u", "p.1", "Scheduled", "m1", 0), metav1.CreateOptions{})
	require.NoError(t, err)
	u := next(t, ch)
	assert.Equal(t, "Scheduled", u.Event.Reason)
	assert.True(t, u.Degraded)
	assert.Equal(t, 20, u.Progress)
	assert.Equal(t, t0, u.Time, "the event's first occurrence")
	events, src, err := r.ListEvents(ctx, pod)
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceAPI, src)
	assert.Len(t, events, 1)

	require.EqualValues(t, 1, r.metrics.polling.Load(), "the Stream polls before the sync")
	f.Start(ctx)
	require.NoError(t, r.WaitForSync(ctx))
	// Until the Stream has seen the sync it may list once more and would
	// deliver p.2 as Degraded: wait until it has left polling. (Waiting
	// for the poll count to stand still for 200 ms was not enough on a
	// loaded machine, where the Stream's goroutine can wait that long.)
	require.Eventually(t, func() bool { return r.metrics.polling.Load() == 0 },
		10*time.Second, 5*time.Millisecond, "the Stream keeps polling after the sync")
	_, err = client.CoreV1().Events("ns").Create(ctx, ev("u", "p.2", "Pulling", "m2", 1), metav1.CreateOptions{})
	require.NoError(t, err)
	u = next(t, ch)
	assert.Equal(t, "Pulling", u.Event.Reason, "no recovered notice: none was announced; p.1 not repeated")
	assert.False(t, u.Degraded)
	events, src, err = r.ListEvents(ctx, pod)
	require.NoError(t, err)
	assert.Equal(t, reflector.SourceCache, src)
	assert.Len(t, events, 2)
}

// TestIndexMetricsLiveWithTheFactory: the index's metrics go to the
// factory's Registerer and leave it when the factory stops.
func TestIndexMetricsLiveWithTheFactory(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	_, f := startFakeIndex(t, fake.NewClientset(), reflector.Options{Registerer: reg}, reflector.Scope{}, Options{})
	f.Start(t.Context())
	n, err := testutil.GatherAndCount(reg, "kubespawn_events_streams", "kubespawn_events_index_pods")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	f.Shutdown()
	n, err = testutil.GatherAndCount(reg)
	require.NoError(t, err)
	assert.Zero(t, n, "unregistered when the factory stops")
}
