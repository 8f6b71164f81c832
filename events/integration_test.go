//go:build integration

package events

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/reflector"
	"k8s.io/client-go/rest"
)

func startSim(t *testing.T) { cluster.PodSim(t, podsim.Options{}) }

// simulated is the setting of the pod-lifecycle tests: the pod simulator,
// a direct client, a namespace and a started Index over it with defaults.
func simulated(t *testing.T) (kubernetes.Interface, string, *Index) {
	t.Helper()
	startSim(t)
	ns := newNamespace(t)
	return newClient(t), ns, startIndex(t, cluster.Config(), ns, reflector.Options{}, Options{})
}

// newClient is a direct admin client (QPS -1).
func newClient(t *testing.T) kubernetes.Interface { return cluster.Client(t) }

// newNamespace creates a namespace for one test; its pods and events go
// afterwards.
func newNamespace(t *testing.T) string { return cluster.Namespace(t, "events") }

// startIndex returns the Index of a started factory on cfg (through a
// proxy or direct), scoped to ns.
func startIndex(t *testing.T, cfg *rest.Config, ns string, ro reflector.Options, opts Options) *Index {
	t.Helper()
	f, err := reflector.NewFactory(cfg, ro)
	require.NoError(t, err)
	t.Cleanup(f.Shutdown)
	x, err := IndexFor(f, reflector.Scope{Namespaces: []string{ns}}, opts)
	require.NoError(t, err)
	f.Start(context.Background())
	require.NoError(t, x.WaitForSync(t.Context()))
	return x
}

func newPod(name, scenario string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{podsim.AnnotationScenario: scenario}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{{Name: "notebook", Image: "quay.io/jupyter/base-notebook:2025-01-01"}},
		},
	}
}

func createPod(t *testing.T, client kubernetes.Interface, ns string, pod *corev1.Pod) PodRef {
	t.Helper()
	p, err := client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	require.NoError(t, err)
	return PodRef{Namespace: ns, Name: p.Name, UID: p.UID}
}

// openStream opens a Stream of pod on r for the rest of the test.
func openStream(t *testing.T, r *Index, pod PodRef) <-chan Update {
	t.Helper()
	ch, err := r.Stream(t.Context(), pod)
	require.NoError(t, err)
	return ch
}

// newProxy is a fault proxy in front of the package's cluster, closed when
// the test ends: the tests that stall or count watches give its
// ClientConfig to the factory.
func newProxy(t *testing.T) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(cluster.Config(), faultproxy.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// createEvent creates e in its namespace through client, as a kubelet or
// the scheduler would, and returns it as stored.
func createEvent(t *testing.T, client kubernetes.Interface, e *corev1.Event) *corev1.Event {
	t.Helper()
	out, err := client.CoreV1().Events(e.Namespace).Create(t.Context(), e, metav1.CreateOptions{})
	require.NoError(t, err)
	return out
}

// until reads updates until done returns true for one, and returns them
// all. It fails the test if the stream closes or stays silent for a long
// time (a guard against hanging, not a performance bound).
func until(t *testing.T, ch <-chan Update, done func(Update) bool) []Update {
	t.Helper()
	var got []Update
	for {
		select {
		case u, ok := <-ch:
			require.True(t, ok, "stream closed; got so far: %v", messages(got))
			got = append(got, u)
			if done(u) {
				return got
			}
		case <-time.After(2 * time.Minute):
			require.FailNow(t, "no update for 2 minutes", "got so far: %v", messages(got))
		}
	}
}

func messages(us []Update) []string {
	var out []string
	for _, u := range us {
		reason := ""
		if u.Event != nil {
			reason = u.Event.Reason + " "
		}
		out = append(out, fmt.Sprintf("%s%q p=%d w=%v d=%v", reason, u.Message, u.Progress, u.Warning, u.Degraded))
	}
	return out
}

func reasons(us []Update) []string {
	var out []string
	for _, u := range us {
		if u.Event != nil {
			out = append(out, u.Event.Reason)
		}
	}
	return out
}

func hasReason(reason string) func(Update) bool {
	return func(u Update) bool { return u.Event != nil && u.Event.Reason == reason }
}

func assertMonotonic(t *testing.T, us []Update) {
	t.Helper()
	for i := 1; i < len(us); i++ {
		assert.GreaterOrEqual(t, us[i].Progress, us[i-1].Progress, "progress decreased: %v", messages(us))
	}
}

func TestPodLifecycleProgress(t *testing.T) {
	t.Parallel()
	client, ns, r := simulated(t)
	pod := createPod(t, client, ns, newPod("lifecycle", podsim.ScenarioNormal))
	ch := openStream(t, r, pod)
	got := until(t, ch, hasReason("Started"))
	assert.Equal(t, []string{"Scheduled", "Pulling", "Pulled", "Created", "Started"}, reasons(got), messages(got))
	assertMonotonic(t, got)
	assert.Equal(t, 90, got[len(got)-1].Progress)
	for _, u := range got {
		assert.False(t, u.Degraded)
		assert.False(t, u.Warning)
		assert.Equal(t, pod.UID, u.Event.InvolvedObject.UID)
		assert.NotEmpty(t, u.Message)
	}
	assert.Equal(t, `Pulling image "quay.io/jupyter/base-notebook:2025-01-01"`, got[1].Message)

	// A second Stream opened afterwards replays the same history.
	ctx, cancel := context.WithCancel(t.Context())
	ch2, err := r.Stream(ctx, pod)
	require.NoError(t, err)
	replay := until(t, ch2, hasReason("Started"))
	assert.Equal(t, reasons(got), reasons(replay))
	cancel()
	for range ch2 { //nolint:revive // closed when ctx ends
	}
	assert.Equal(t, reasons(got), reasons(updatesOf(r.Events(pod))))
}

func updatesOf(evs []*corev1.Event) []Update {
	var out []Update
	for _, e := range evs {
		out = append(out, Update{Event: e})
	}
	return out
}

func TestImagePullFailureWarnings(t *testing.T) {
	t.Parallel()
	client, ns, r := simulated(t)
	pod := createPod(t, client, ns, newPod("pullfail", podsim.ScenarioImagePullFailure))
	ch := openStream(t, r, pod)
	// Pulling, Warning Failed (the pull error), Warning Failed
	// (ErrImagePull), Normal BackOff, Warning Failed (ImagePullBackOff).
	got := until(t, ch, func(u Update) bool { return u.Message == "[Warning] Failed: Error: ImagePullBackOff" })
	assertMonotonic(t, got)
	var warnings []string
	for _, u := range got {
		if u.Warning {
			assert.Equal(t, corev1.EventTypeWarning, u.Event.Type)
			warnings = append(warnings, u.Message)
		}
	}
	require.Len(t, warnings, 3, messages(got))
	assert.Regexp(t, `^\[Warning\] Failed: Failed to pull image "quay.io/jupyter/base-notebook:2025-01-01": `, warnings[0])
	assert.Equal(t, "[Warning] Failed: Error: ErrImagePull", warnings[1])
	assert.Contains(t, reasons(got), "BackOff")
	assert.Equal(t, 40, got[len(got)-1].Progress, "warnings do not advance past Pulling")
	assert.Contains(t, reasons(got), "Pulling")
	assert.NotContains(t, reasons(got), "Started")

	// For: the last Warning events are at the end.
	evs := r.Events(pod)
	require.NotEmpty(t, evs)
	assert.Equal(t, corev1.EventTypeWarning, evs[len(evs)-1].Type)
}

func TestRecreatedPodNeverSeesOldEvents(t *testing.T) {
	t.Parallel()
	client, ns, r := simulated(t)
	old := createPod(t, client, ns, newPod("same-name", podsim.ScenarioNormal))
	ch := openStream(t, r, old)
	until(t, ch, hasReason("Started"))
	require.NoError(t, client.CoreV1().Pods(ns).Delete(t.Context(), old.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	require.Eventually(t, func() bool {
		_, err := client.CoreV1().Pods(ns).Get(t.Context(), old.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 2*time.Minute, 50*time.Millisecond)

	// The new pod fails to pull: its history differs from the old one's.
	pod := createPod(t, client, ns, newPod("same-name", podsim.ScenarioImagePullFailure))
	require.NotEqual(t, old.UID, pod.UID)
	ch2 := openStream(t, r, pod)
	got := until(t, ch2, func(u Update) bool { return u.Message == "[Warning] Failed: Error: ImagePullBackOff" })
	for _, u := range got {
		assert.Equal(t, pod.UID, u.Event.InvolvedObject.UID, messages(got))
	}
	assert.Equal(t, "Scheduled", got[0].Event.Reason, "the new pod's stream starts with its own scheduling")
	assert.NotContains(t, reasons(got), "Started")
	for _, e := range r.Events(pod) {
		assert.Equal(t, pod.UID, e.InvolvedObject.UID)
	}
	assert.NotEmpty(t, r.Events(old), "the old pod's events stay under its own UID until TTL or ForgetPod")
	r.ForgetPod(old.UID)
	assert.Empty(t, r.Events(old))
}

// podEvent is an Event about a pod (which need not exist) at time at.
func podEvent(ns, pod string, uid types.UID, name, typ, reason, message string, at time.Time) *corev1.Event {
	ts := metav1.NewTime(at)
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: name},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: ns, Name: pod, UID: uid},
		Type:           typ, Reason: reason, Message: message,
		Count: 1, FirstTimestamp: ts, LastTimestamp: ts,
		Source: corev1.EventSource{Component: "events-test"},
	}
}

func TestDuplicateAndCountUpdatedEventsArriveOnce(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	ns := newNamespace(t)
	r := startIndex(t, cluster.Config(), ns, reflector.Options{}, Options{})
	pod := PodRef{Namespace: ns, Name: "dup", UID: "dup-uid-1"}
	ctx := t.Context()
	now := time.Now()
	ch := openStream(t, r, pod)
	backoff := createEvent(t, client, podEvent(ns, pod.Name, pod.UID, "dup.1", corev1.EventTypeWarning, "BackOff", "Back-off pulling image", now))
	u := until(t, ch, func(Update) bool { return true })[0]
	assert.Equal(t, "BackOff", u.Event.Reason)
	assert.EqualValues(t, 1, u.Event.Count)

	// The same event, counted again twice, as a kubelet does.
	for i := int32(2); i <= 3; i++ {
		backoff.Count = i
		backoff.LastTimestamp = metav1.NewTime(now.Add(time.Duration(i) * time.Second))
		var err error
		backoff, err = client.CoreV1().Events(ns).Update(ctx, backoff, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	// The same reason and message as another object is a duplicate too.
	createEvent(t, client, podEvent(ns, pod.Name, pod.UID, "dup.2", corev1.EventTypeWarning, "BackOff", "Back-off pulling image", now.Add(4*time.Second)))
	// The watch delivers in resourceVersion order: the sentinel comes after
	// all of the above, so nothing else may arrive before it.
	createEvent(t, client, podEvent(ns, pod.Name, pod.UID, "dup.3", corev1.EventTypeNormal, "Pulling", "sentinel", now.Add(5*time.Second)))
	u = until(t, ch, func(Update) bool { return true })[0]
	assert.Equal(t, "sentinel", u.Event.Message, "the count updates and the duplicate were suppressed")

	require.Eventually(t, func() bool {
		for _, e := range r.Events(pod) {
			if e.Name == "dup.1" {
				return e.Count == 3
			}
		}
		return false
	}, time.Minute, 20*time.Millisecond, "the index holds the latest count")
	assert.Len(t, r.Events(pod), 3)
}

// offsetClock is the real clock (tickers included) with a settable offset
// on Now, to make the TTL run out without waiting for it.
type offsetClock struct {
	clock.RealClock
	off atomic.Int64
}

func (c *offsetClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *offsetClock) advance(d time.Duration)         { c.off.Add(int64(d)) }

// Flood size: 500 pods × 100 events = 50,000 events, created by 16
// goroutines through a client without rate limit.
const (
	floodPods       = 500
	floodPerPod     = 100
	floodWorkers    = 16
	floodCap        = 20
	floodTTL        = 10 * time.Minute
	floodEventTotal = floodPods * floodPerPod
)

func TestFloodRespectsCapAndTTL(t *testing.T) {
	t.Parallel()
	setupStart := time.Now()
	ns := cluster.Namespace(t, "events", testcluster.KeepEvents())
	// The flood goes through its own protobuf client: cheaper to encode on
	// both sides than JSON.
	cfg := cluster.Config()
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	floodClient, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	clk := &offsetClock{}
	r := startIndex(t, cluster.Config(), ns, reflector.Options{Clock: clk, IdleTimeout: -1, AuditInterval: -1},
		// The TTL is long: it must not run out during the flood.
		Options{PerPodLimit: floodCap, TTL: floodTTL})
	// One pod is streamed during the flood.
	watched := PodRef{Namespace: ns, Name: "flood-0", UID: "flood-uid-0"}
	sctx, cancelStream := context.WithCancel(t.Context())
	ch, err := r.Stream(sctx, watched)
	require.NoError(t, err)
	t.Logf("setup: %s", time.Since(setupStart).Round(time.Millisecond))
	var streamed atomic.Int64
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for range ch {
			streamed.Add(1)
		}
	}()

	var maxSeen atomic.Int64
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() { // the cap holds at all times, not only at the end
		defer close(sampleDone)
		for {
			if m := int64(r.Stats().MaxPerPod); m > maxSeen.Load() {
				maxSeen.Store(m)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	base := time.Now().Add(-time.Hour)
	work := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range floodWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				p, i := n%floodPods, n/floodPods // pods interleaved
				e := podEvent(ns, fmt.Sprintf("flood-%d", p), types.UID(fmt.Sprintf("flood-uid-%d", p)),
					fmt.Sprintf("flood-%d.%d", p, i), corev1.EventTypeNormal, "Pulling", fmt.Sprintf("step %d", i), base.Add(time.Duration(i)*time.Second))
				if _, err := floodClient.CoreV1().Events(ns).Create(context.Background(), e, metav1.CreateOptions{}); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	for n := range floodEventTotal {
		work <- n
	}
	close(work)
	wg.Wait()
	created := time.Since(start)
	require.Zero(t, failed.Load(), "event creations failed")

	require.Eventually(t, func() bool {
		st := r.Stats()
		return st.Pods == floodPods && st.EvictedEvents == floodEventTotal-floodPods*floodCap
	}, 2*time.Minute, 50*time.Millisecond, "the index saw every event: %+v", r.Stats())
	t.Logf("created %d events for %d pods in %s (%.0f/s); index caught up after %s: %+v",
		floodEventTotal, floodPods, created.Round(time.Millisecond), float64(floodEventTotal)/created.Seconds(), time.Since(start).Round(time.Millisecond), r.Stats())
	close(stopSampling)
	<-sampleDone
	st := r.Stats()
	assert.Equal(t, floodPods*floodCap, st.Events)
	assert.Equal(t, floodCap, st.MaxPerPod)
	assert.LessOrEqual(t, maxSeen.Load(), int64(floodCap), "the per-pod cap held during the flood")
	for _, pod := range []int{0, 250, 499} {
		evs := r.Events(PodRef{Namespace: ns, Name: fmt.Sprintf("flood-%d", pod), UID: types.UID(fmt.Sprintf("flood-uid-%d", pod))})
		require.Len(t, evs, floodCap)
		assert.Equal(t, fmt.Sprintf("step %d", floodPerPod-floodCap), evs[0].Message, "the newest are kept")
		assert.Equal(t, fmt.Sprintf("step %d", floodPerPod-1), evs[floodCap-1].Message)
	}
	assert.Positive(t, streamed.Load())
	assert.LessOrEqual(t, streamed.Load(), int64(floodPerPod))

	// TTL: advance the clock past it. The streamed pod is kept while its
	// Stream is open, and goes one TTL after it closes.
	clk.advance(floodTTL + time.Second)
	require.Eventually(t, func() bool { return r.Stats().Pods == 1 }, time.Minute, 50*time.Millisecond, "%+v", r.Stats())
	assert.Len(t, r.Events(watched), floodCap)
	cancelStream()
	<-streamDone
	clk.advance(floodTTL + time.Second)
	require.Eventually(t, func() bool { st := r.Stats(); return st.Pods == 0 && st.Events == 0 }, time.Minute, 50*time.Millisecond, "%+v", r.Stats())
	assert.EqualValues(t, floodPods, r.Stats().EvictedPods)
	t.Logf("whole test (without cleanup): %s", time.Since(start).Round(time.Millisecond))
}

func TestStalledWatchFallsBackAndRecovers(t *testing.T) {
	t.Parallel()
	direct := newClient(t)
	ns := newNamespace(t)
	p := newProxy(t)
	r := startIndex(t, p.ClientConfig(cluster.Config()), ns, reflector.Options{StallTimeout: 5 * time.Second},
		Options{FallbackInterval: 200 * time.Millisecond})
	pod := PodRef{Namespace: ns, Name: "stall", UID: "stall-uid-1"}
	create := func(name, reason, msg string) {
		t.Helper()
		createEvent(t, direct, podEvent(ns, pod.Name, pod.UID, name, corev1.EventTypeNormal, reason, msg, time.Now()))
	}
	ch := openStream(t, r, pod)
	create("stall.1", "Scheduled", "before the stall")
	u := until(t, ch, hasReason("Scheduled"))
	assert.False(t, u[len(u)-1].Degraded)

	// A stalled watch looks idle until the server holds a change it does
	// not deliver: the event created during the stall is that change.
	p.Stall(faultproxy.Match{Verb: "watch", Resource: "events"})
	create("stall.2", "Pulling", "during the stall")
	require.Eventually(t, func() bool { return !r.Status().Healthy() }, 2*time.Minute, 50*time.Millisecond, "the stall is detected")
	// The stream says it is degraded and still delivers the event. Which
	// comes first depends on whether the relist after the stall (a plain
	// LIST) or the fallback poll brings the event in; every update after the
	// notice is marked degraded.
	got := until(t, ch, hasReason("Pulling"))
	if !slices.ContainsFunc(got, func(u Update) bool { return u.Event == nil && u.Degraded }) {
		got = append(got, until(t, ch, func(u Update) bool { return u.Event == nil && u.Degraded })...)
	}
	notice := slices.IndexFunc(got, func(u Update) bool { return u.Event == nil && u.Degraded })
	require.GreaterOrEqual(t, notice, 0, messages(got))
	degraded := got[notice]
	assert.Equal(t, MessageDegraded, degraded.Message)
	assert.GreaterOrEqual(t, degraded.Progress, 20)
	for _, u := range got[notice:] {
		assert.True(t, u.Degraded, "after the notice every update is degraded: %v", messages(got))
	}
	pulling := got[slices.IndexFunc(got, hasReason("Pulling"))]
	assert.Equal(t, "during the stall", pulling.Message)
	assert.Equal(t, 40, pulling.Progress)
	create("stall.3", "Pulled", "still stalled")
	got = until(t, ch, hasReason("Pulled"))
	assert.True(t, got[len(got)-1].Degraded, messages(got))
	assert.False(t, r.Status().Healthy(), "still stalled: the updates came from the fallback")

	p.UnstallAll()
	got = until(t, ch, func(u Update) bool { return u.Event == nil })
	recovered := got[len(got)-1]
	assert.Equal(t, MessageRecovered, recovered.Message)
	assert.False(t, recovered.Degraded)
	assert.Empty(t, reasons(got), "the events seen by the fallback are not delivered again")
	create("stall.4", "Created", "after recovery")
	got = until(t, ch, hasReason("Created"))
	assert.Len(t, got, 1, messages(got))
	assert.False(t, got[0].Degraded)
	assert.Equal(t, 70, got[0].Progress)
	assert.True(t, r.Status().Healthy())
	assert.Len(t, r.Events(pod), 4)
}

// TestForSharesOneWatch: every For of a scope in a factory shares one
// event watch and one index; another field selector is another scope.
func TestForSharesOneWatch(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	ns := newNamespace(t)
	p := newProxy(t)
	f, err := reflector.NewFactory(p.ClientConfig(cluster.Config()), reflector.Options{})
	require.NoError(t, err)
	t.Cleanup(f.Shutdown)
	scope := reflector.Scope{Namespaces: []string{ns}}
	r1, err := IndexFor(f, scope, Options{})
	require.NoError(t, err)
	r2, err := IndexFor(f, scope, Options{})
	require.NoError(t, err)
	assert.Same(t, r1, r2)
	r3, err := IndexFor(f, reflector.Scope{Namespaces: []string{ns}, FieldSelector: "type=Warning"}, Options{})
	require.NoError(t, err)
	assert.NotSame(t, r1, r3)
	f.Start(context.Background())
	require.NoError(t, f.WaitForCacheSync(t.Context()))
	require.NoError(t, r1.WaitForSync(t.Context()))
	assert.Equal(t, "involvedObject.kind=Pod", r1.Status().Scope.FieldSelector)
	require.NoError(t, f.Readyz(nil))

	pod := PodRef{Namespace: ns, Name: "shared", UID: "shared-uid"}
	ch := openStream(t, r1, pod)
	createEvent(t, client, podEvent(ns, pod.Name, pod.UID, "shared.1", corev1.EventTypeNormal, "Scheduled", "m", time.Now()))
	until(t, ch, hasReason("Scheduled"))
	require.Eventually(t, func() bool { return longWatches(p, "events") == 2 }, 10*time.Second, 20*time.Millisecond, "one watch per scope: two scopes")
	time.Sleep(time.Second)
	assert.Equal(t, 2, longWatches(p, "events"))

	f.Shutdown()
	_, ok := <-ch
	assert.False(t, ok, "Shutdown closes the streams")
	assert.Equal(t, reflector.StateStopped, r1.Status().State)
	_, err = r1.Stream(t.Context(), pod)
	assert.ErrorIs(t, err, reflector.ErrStopped)
	require.Eventually(t, func() bool { return longWatches(p, "events") == 0 }, 10*time.Second, 20*time.Millisecond, "Shutdown stops the watches")
}

// longWatches counts the long-running watches of resource open through p:
// client-go asks for 5-10 minutes; probes for 1 second.
func longWatches(p *faultproxy.Proxy, resource string) int {
	n := 0
	for _, rec := range p.Records() {
		if rec.Verb != faultproxy.VerbWatch || rec.Resource != resource || !rec.End.IsZero() {
			continue
		}
		q, _ := url.ParseQuery(rec.RawQuery)
		if secs, _ := strconv.Atoi(q.Get("timeoutSeconds")); secs >= 60 {
			n++
		}
	}
	return n
}
