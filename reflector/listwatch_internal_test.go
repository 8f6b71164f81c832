package reflector

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

// podListWatch builds, without starting it, the pod cache of namespace ns
// on client with opts (defaults applied) and returns it, those options and
// its one shard's list-watcher: what these tests drive by hand, in place
// of the informer.
func podListWatch(t *testing.T, client kubernetes.Interface, opts Options) (*cache[*corev1.Pod], Options, *listWatcher[*corev1.Pod]) {
	t.Helper()
	opts, err := opts.withDefaults()
	require.NoError(t, err)
	c, err := newCache(podKind, opts, Scope{Namespaces: []string{"ns"}}, client, nil, klog.Background())
	require.NoError(t, err)
	return c, opts, c.shards[0].lw
}

// TestForcedRelistAfterNaturalCloseIsApplied: a relist forced in the gap
// between a watch that ended by itself and the next watch request is
// applied to that request (issue: it used to be sent to the dead watch and
// lost).
func TestForcedRelistAfterNaturalCloseIsApplied(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}})
	server := watch.NewRaceFreeFake()
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) { return true, server, nil })
	c, _, lw := podListWatch(t, client, Options{ProbeInterval: -1})

	w, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	server.Stop() // the server ends the watch (its timeout)
	for range w.ResultChan() {
	}
	require.Eventually(t, func() bool {
		lw.mu.Lock()
		defer lw.mu.Unlock()
		return lw.current == nil
	}, 5*time.Second, time.Millisecond, "an ended watch is no longer current")

	lw.forceRelist(RelistDrift, false, false) // between the close and the re-watch

	_, err = lw.WatchWithContext(t.Context(), metav1.ListOptions{})
	require.True(t, apierrors.IsResourceExpired(err), "the next watch request pays the relist: %v", err)
	_, err = lw.WatchWithContext(t.Context(), metav1.ListOptions{})
	require.True(t, apierrors.IsResourceExpired(err), "until a list has been made: %v", err)
	_, err = lw.ListWithContext(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, c.stats.relists[RelistDrift])

	server = watch.NewRaceFreeFake()
	w, err = lw.WatchWithContext(t.Context(), metav1.ListOptions{})
	require.NoError(t, err, "paid: watches open again")
	w.Stop()
}

// TestForcedRelistDuringWatchOpen: a relist forced while a watch request
// is in flight expires that watch as soon as it opens.
func TestForcedRelistDuringWatchOpen(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	opened := make(chan struct{})
	proceed := make(chan struct{})
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		close(opened)
		<-proceed
		return true, watch.NewRaceFreeFake(), nil
	})
	_, _, lw := podListWatch(t, client, Options{ProbeInterval: -1})
	type res struct {
		w   watch.Interface
		err error
	}
	done := make(chan res, 1)
	go func() {
		w, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{})
		done <- res{w, err}
	}()
	<-opened
	lw.forceRelist(RelistStall, true, false)
	close(proceed)
	r := <-done
	require.NoError(t, r.err)
	ev, ok := <-r.w.ResultChan()
	require.True(t, ok)
	require.Equal(t, watch.Error, ev.Type)
	require.True(t, apierrors.IsResourceExpired(apierrors.FromObject(ev.Object)))
}

// TestWatchListDeadlineGrowsWithTheState: the initial events of a WatchList
// are cut at the list deadline, plus one more for every 10,000 objects
// received: a large state streaming steadily is not cut and relisted
// from scratch; the bound still holds.
func TestWatchListDeadlineGrowsWithTheState(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	client := fake.NewClientset()
	server := watch.NewRaceFreeFake()
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) { return true, server, nil })
	c, opts, lw := podListWatch(t, client, Options{ProbeInterval: -1, StallTimeout: 4 * time.Second, Clock: clk})
	deadline := opts.listDeadline() // 24 s

	start := clk.Now()
	w, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{SendInitialEvents: ptr.To(true)})
	require.NoError(t, err)
	defer w.Stop()
	send := func(i int) {
		server.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("p-%d", i), ResourceVersion: strconv.Itoa(i + 1)}})
		ev := <-w.ResultChan()
		require.Equal(t, watch.Added, ev.Type, "event %d: %v", i, ev.Object)
	}
	i := 0
	for ; i < 10_000; i++ { // initialEventsPerDeadline, as documented
		send(i)
	}
	// Steady progress for longer than one deadline: not cut.
	step := opts.StallTimeout / 2
	for elapsed := time.Duration(0); elapsed < deadline+deadline/2; elapsed += step {
		clk.Step(step)
		send(i)
		i++
	}
	hung := func() int { c.stats.mu.Lock(); defer c.stats.mu.Unlock(); return c.stats.gaps[GapHungRequest] }
	// A timer's function runs on a goroutine of its own: give a cut at
	// the first deadline time to be counted.
	time.Sleep(200 * time.Millisecond)
	require.Zero(t, hung(), "10,000 objects earned a second deadline")

	// Until the second deadline, events flow; past it the stream is cut.
	for clk.Since(start) < 2*deadline-step {
		clk.Step(step)
		send(i)
		i++
	}
	require.Zero(t, hung())
	clk.Step(2 * step)
	select {
	case ev, ok := <-w.ResultChan():
		require.True(t, ok)
		require.Equal(t, watch.Error, ev.Type)
		require.True(t, apierrors.IsResourceExpired(apierrors.FromObject(ev.Object)), "cut: the informer relists")
	case <-time.After(10 * time.Second):
		t.Fatal("the initial events were not cut at their second deadline")
	}
	require.Eventually(t, func() bool { return hung() == 1 }, 5*time.Second, time.Millisecond)
}

// TestRelistAfterRepeated410IsLabelledExpired: a WatchList answered 410
// is retried by client-go at once; the failed attempt's end, arriving
// after the retry began, must not give its reason back (it used to, so
// the relist that finally succeeded was labelled by a stale reason rather
// than "expired").
func TestRelistAfterRepeated410IsLabelledExpired(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	servers := []*watch.RaceFreeFakeWatcher{watch.NewRaceFreeFake(), watch.NewRaceFreeFake(), watch.NewRaceFreeFake()}
	n := 0
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		w := servers[n]
		n++
		return true, w, nil
	})
	c, _, lw := podListWatch(t, client, Options{ProbeInterval: -1})
	watchList := metav1.ListOptions{SendInitialEvents: ptr.To(true)}
	gone := &metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"}
	drain := func(w watch.Interface) {
		w.Stop()
		for range w.ResultChan() {
		}
	}

	w1, err := lw.WatchWithContext(t.Context(), watchList)
	require.NoError(t, err)
	servers[0].Error(gone)
	require.Equal(t, watch.Error, (<-w1.ResultChan()).Type)
	w2, err := lw.WatchWithContext(t.Context(), watchList) // client-go's retry
	require.NoError(t, err)
	drain(w1) // the first attempt ends after the retry began
	servers[1].Error(gone)
	require.Equal(t, watch.Error, (<-w2.ResultChan()).Type)
	drain(w2)

	w3, err := lw.WatchWithContext(t.Context(), watchList)
	require.NoError(t, err)
	defer w3.Stop()
	servers[2].Action(watch.Bookmark, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "10",
		Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
	require.Equal(t, watch.Bookmark, (<-w3.ResultChan()).Type)
	c.stats.mu.Lock()
	defer c.stats.mu.Unlock()
	require.Equal(t, map[RelistReason]int{RelistExpired: 1}, c.stats.relists)
}
