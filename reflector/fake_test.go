package reflector_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubespawn/kubespawn/reflector"
)

// fakeServer is a pod API on a fake clientset that behaves enough like a
// kube-apiserver for the health rules to be driven with a fake clock: it
// numbers resourceVersions, lists with a resourceVersion, streams changes
// to main watches, replaying those after the watch's resourceVersion (a
// test can stall both), and answers probe watches
// (timeoutSeconds=1) the way the test says.
type fakeServer struct {
	t      *testing.T
	client *fake.Clientset

	mu      sync.Mutex
	rv      int
	pods    map[string]*corev1.Pod
	mains   []*watch.RaceFreeFakeWatcher
	stalled bool
	held    []watch.Event
	// history is every change, in order: a main watch gets those after
	// its resourceVersion replayed, as from a real server's watch cache.
	history []watch.Event

	// probe decides how probe watches answer; probeNext, if not empty,
	// how the next ones do (one each, before probe applies again).
	probe     probeMode
	probeNext []probeMode
	// listErr fails lists; listHang blocks them until release is closed.
	listErr  error
	listHang chan struct{}
	// pageSize > 0 makes lists that ask for a limit paginated by at most
	// pageSize objects (a server may return fewer than the limit).
	pageSize int
	// watchErr fails main watch requests.
	watchErr error
	// listOpts records the options of every list request (page).
	listOpts []metav1.ListOptions
	// counters
	lists, mainWatchOpens, probesSeen int
}

type probeMode int

const (
	probeReplay probeMode = iota // replay the changes since the probe's RV, then close: a real server
	probeHang                    // headers, then nothing, never closed
	probeRefuse                  // 429 with Retry-After
	probeEmpty                   // closed at once with nothing replayed: a watch cache that lags behind a write, or events lost on the way
)

func newFakeServer(t *testing.T) *fakeServer {
	f := &fakeServer{t: t, client: fake.NewClientset(), pods: map[string]*corev1.Pod{}, rv: 100}
	f.client.PrependReactor("list", "pods", f.list)
	f.client.PrependWatchReactor("pods", f.watch)
	f.client.PrependReactor("get", "pods", f.get)
	return f
}

func (f *fakeServer) list(a k8stesting.Action) (bool, runtime.Object, error) {
	opts := a.(k8stesting.ListActionImpl).GetListOptions()
	f.mu.Lock()
	hang, err := f.listHang, f.listErr
	f.lists++
	f.listOpts = append(f.listOpts, opts)
	f.mu.Unlock()
	if hang != nil {
		<-hang
		return true, nil, apierrors.NewTimeoutError("released", 1)
	}
	if err != nil {
		return true, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ns := a.GetNamespace()
	out := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: strconv.Itoa(f.rv)}}
	var keys []string
	for key, p := range f.pods {
		if ns == "" || p.Namespace == ns {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	if f.pageSize > 0 && opts.Limit > 0 {
		// The continue token is "<list resourceVersion>/<offset>".
		from := 0
		if opts.Continue != "" {
			rv, off, _ := strings.Cut(opts.Continue, "/")
			out.ResourceVersion = rv
			from, _ = strconv.Atoi(off)
		}
		to := min(from+min(f.pageSize, int(opts.Limit)), len(keys))
		if to < len(keys) {
			out.Continue = out.ResourceVersion + "/" + strconv.Itoa(to)
		}
		keys = keys[min(from, len(keys)):to]
	}
	for _, key := range keys {
		out.Items = append(out.Items, *f.pods[key].DeepCopy())
	}
	return true, out, nil
}

// listed returns the options of the list requests since the n-th.
func (f *fakeServer) listed(n int) []metav1.ListOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.listOpts[min(n, len(f.listOpts)):])
}

func (f *fakeServer) get(a k8stesting.Action) (bool, runtime.Object, error) {
	g := a.(k8stesting.GetAction)
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pods[g.GetNamespace()+"/"+g.GetName()]; ok {
		return true, p.DeepCopy(), nil
	}
	return true, nil, apierrors.NewNotFound(corev1.Resource("pods"), g.GetName())
}

func (f *fakeServer) watch(a k8stesting.Action) (bool, watch.Interface, error) {
	opts := a.(k8stesting.WatchActionImpl).GetListOptions()
	f.mu.Lock()
	defer f.mu.Unlock()
	if opts.TimeoutSeconds != nil && *opts.TimeoutSeconds == 1 {
		f.probesSeen++
		mode := f.probe
		if len(f.probeNext) > 0 {
			mode, f.probeNext = f.probeNext[0], f.probeNext[1:]
		}
		switch mode {
		case probeRefuse:
			return true, nil, apierrors.NewTooManyRequests("priority and fairness", 1)
		case probeHang:
			return true, watch.NewRaceFreeFake(), nil
		case probeEmpty:
			w := watch.NewFake()
			w.Stop() // the server's timeoutSeconds, before the client's timers
			return true, w, nil
		}
		since, _ := strconv.Atoi(opts.ResourceVersion)
		w := watch.NewFakeWithChanSize(len(f.pods)+1, false)
		for _, p := range f.pods {
			if rv, _ := strconv.Atoi(p.ResourceVersion); rv > since {
				w.Modify(p.DeepCopy())
			}
		}
		w.Stop() // the server closes the probe
		return true, w, nil
	}
	if f.watchErr != nil {
		return true, nil, f.watchErr
	}
	f.mainWatchOpens++
	w := watch.NewRaceFreeFake()
	if since, _ := strconv.Atoi(opts.ResourceVersion); since > 0 {
		for _, ev := range f.history {
			if rv, _ := strconv.Atoi(ev.Object.(*corev1.Pod).ResourceVersion); rv > since {
				if f.stalled {
					f.held = append(f.held, ev)
				} else {
					w.Action(ev.Type, ev.Object.DeepCopyObject())
				}
			}
		}
	}
	f.mains = append(f.mains, w)
	return true, w, nil
}

// put creates or updates a pod, with the next resourceVersion, and
// streams it to the main watches unless they are stalled.
func (f *fakeServer) put(ns, name string, labels map[string]string) *corev1.Pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	key := ns + "/" + name
	typ := watch.Modified
	p, ok := f.pods[key]
	if !ok {
		typ = watch.Added
		p = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "test"}}}}
	}
	p = p.DeepCopy()
	p.Labels = labels
	p.ResourceVersion = strconv.Itoa(f.rv)
	f.pods[key] = p
	f.history = append(f.history, watch.Event{Type: typ, Object: p.DeepCopy()})
	f.sendLocked(watch.Event{Type: typ, Object: p.DeepCopy()})
	return p.DeepCopy()
}

// remove deletes a pod and streams the deletion.
func (f *fakeServer) remove(ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	p := f.pods[ns+"/"+name].DeepCopy()
	delete(f.pods, ns+"/"+name)
	p.ResourceVersion = strconv.Itoa(f.rv)
	f.history = append(f.history, watch.Event{Type: watch.Deleted, Object: p.DeepCopy()})
	f.sendLocked(watch.Event{Type: watch.Deleted, Object: p})
}

// bookmark sends a bookmark at the current resourceVersion.
func (f *fakeServer) bookmark() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sendLocked(watch.Event{Type: watch.Bookmark, Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: strconv.Itoa(f.rv)}}})
}

func (f *fakeServer) sendLocked(ev watch.Event) {
	if f.stalled {
		f.held = append(f.held, ev)
		return
	}
	for _, w := range f.mains {
		if !w.IsStopped() {
			w.Action(ev.Type, ev.Object)
		}
	}
}

// stall makes open and new main watches silent; unstall releases nothing
// held (a stalled stream's events are lost with it, as when a connection
// dies) and ends the stalled streams, as a cut connection does.
func (f *fakeServer) stall() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stalled = true
}

func (f *fakeServer) set(fn func(f *fakeServer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeServer) counts() (lists, mainWatches, probes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists, f.mainWatchOpens, f.probesSeen
}

// harness is a factory on a fakeServer with a fake clock.
type harness struct {
	t    *testing.T
	srv  *fakeServer
	clk  *clocktesting.FakeClock
	f    *reflector.Factory
	pods *reflector.PodCache
}

// newHarness starts a factory on a new fake server, after the setup
// functions have prepared the server.
func newHarness(t *testing.T, opts reflector.Options, setup ...func(*fakeServer)) *harness {
	t.Helper()
	h := &harness{t: t, srv: newFakeServer(t), clk: clocktesting.NewFakeClock(time.Now())}
	for _, fn := range setup {
		fn(h.srv)
	}
	opts.Clock = h.clk
	var err error
	h.f, err = reflector.NewFactoryForClient(h.srv.client, opts)
	require.NoError(t, err)
	h.pods, err = h.f.Pods(reflector.Scope{Namespaces: []string{"ns"}})
	require.NoError(t, err)
	_, ctx := ktesting.NewTestContext(t)
	h.f.Start(ctx)
	t.Cleanup(h.f.Shutdown)
	return h
}

// step advances the fake clock by d in steps, letting the monitor and
// client-go run between them (real-time sleeps are only yields here: every
// assertion waits for a condition).
func (h *harness) step(d, by time.Duration) {
	for elapsed := time.Duration(0); elapsed < d; elapsed += by {
		h.clk.Step(by)
		time.Sleep(2 * time.Millisecond)
	}
}

// until steps the clock by `by` until cond holds, failing after max fake
// time.
func (h *harness) until(by, maxFake time.Duration, cond func() bool, msg string, args ...any) {
	h.t.Helper()
	for elapsed := time.Duration(0); ; elapsed += by {
		// Let goroutines react before judging.
		for range 50 {
			if cond() {
				return
			}
			time.Sleep(time.Millisecond)
		}
		if elapsed > maxFake {
			h.t.Fatalf("after %s of fake time: "+msg+"; status %+v", append(append([]any{maxFake}, args...), h.pods.Status())...)
		}
		h.clk.Step(by)
	}
}

// untilBusy is until with the main watch kept busy: a change to pod
// ns/busy before each step.
func (h *harness) untilBusy(by, maxFake time.Duration, cond func() bool, msg string, args ...any) {
	h.t.Helper()
	i := 0
	h.until(by, maxFake, func() bool {
		if cond() {
			return true
		}
		if i%50 == 0 { // once per step of until
			h.srv.put("ns", "busy", map[string]string{"n": strconv.Itoa(i)})
		}
		i++
		return false
	}, msg, args...)
}

// relisted waits, in real time, until the cache has relisted n times for
// reason: client-go's reflector backs off on the real clock before it
// relists, so stepping the fake clock would not hasten it. It asks Status,
// never the cache: a reader's fallback LIST would be recorded by the fake
// server among the relist's.
func (h *harness) relisted(reason reflector.RelistReason, n int) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.pods.Status().Relists[reason] >= n }, 30*time.Second, 5*time.Millisecond,
		"%d %s relist(s): %+v", n, reason, h.pods.Status())
	require.Equal(h.t, n, h.pods.Status().Relists[reason])
}

// reason is the reason of active problem p ("" if not active).
func (h *harness) reason(p reflector.Problem) string {
	for _, ps := range h.pods.Status().Problems {
		if ps.Problem == p {
			return ps.Reason
		}
	}
	return ""
}

func (h *harness) has(p reflector.Problem) bool {
	for _, ps := range h.pods.Status().Problems {
		if ps.Problem == p {
			return true
		}
	}
	return false
}

func (h *harness) state() reflector.State { return h.pods.State() }

func (h *harness) cached(name string) bool {
	pods, src, err := h.pods.List(h.t.Context(), "ns", nil)
	if err != nil || src != reflector.SourceCache {
		return false
	}
	for _, p := range pods {
		if p.Name == name {
			return true
		}
	}
	return false
}

// untilProblem is until with problem p active as the condition: how the
// rule tests wait for a rule to fire.
func (h *harness) untilProblem(by, maxFake time.Duration, p reflector.Problem, msg string) {
	h.t.Helper()
	h.until(by, maxFake, func() bool { return h.has(p) }, msg)
}

// untilState is until with the cache in state s as the condition: how the
// rule tests wait for a cache to fail or to recover.
func (h *harness) untilState(by, maxFake time.Duration, s reflector.State, msg string) {
	h.t.Helper()
	h.until(by, maxFake, func() bool { return h.state() == s }, msg)
}

func (h *harness) synced() {
	h.t.Helper()
	h.untilState(100*time.Millisecond, 30*time.Second, reflector.StateSynced, "synced")
}

// writeExpected puts pod ns/name and reports it with ExpectWrite, as a
// writer does after its own write: the canary the tests stall a watch
// under.
func (h *harness) writeExpected(name string) *corev1.Pod {
	h.t.Helper()
	p := h.srv.put("ns", name, nil)
	h.pods.ExpectWrite(p)
	return p
}

// stallAfterFirstProbe lets the cache's first probe finish, then stalls
// the main watches: where the canary tests begin, with the next routine
// probe not yet due.
func (h *harness) stallAfterFirstProbe() {
	h.t.Helper()
	h.step(time.Second, 100*time.Millisecond)
	h.srv.stall()
}

// syncedHarness is newHarness with pods ns/<name> on the server and the
// cache synced: where the rule tests that break a healthy cache begin.
func syncedHarness(t *testing.T, opts reflector.Options, names ...string) *harness {
	t.Helper()
	h := newHarness(t, opts)
	for _, name := range names {
		h.srv.put("ns", name, nil)
	}
	h.synced()
	return h
}

func (h *harness) noFailure() {
	h.t.Helper()
	select {
	case <-h.f.Failed():
		h.t.Fatalf("the factory's Failed closed: %v", h.f.Err())
	default:
	}
}

var _ = fmt.Sprint

// TestFakeServerReplaysChangesSinceTheWatchVersion: like a kube-apiserver,
// the fake server replays to a main watch the changes after the
// resourceVersion it starts from. A change made between a cache's list and
// its watch (real time, even with a fake clock: long on a loaded machine)
// is then not lost, which a test would see as a stall it never caused.
func TestFakeServerReplaysChangesSinceTheWatchVersion(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	f.put("ns", "before", nil)
	list, err := f.client.CoreV1().Pods("ns").List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	f.put("ns", "a", nil)
	f.remove("ns", "a")
	f.put("ns", "b", nil)
	w, err := f.client.CoreV1().Pods("ns").Watch(t.Context(), metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	require.NoError(t, err)
	defer w.Stop()
	for _, want := range []struct {
		typ  watch.EventType
		name string
	}{{watch.Added, "a"}, {watch.Deleted, "a"}, {watch.Added, "b"}} {
		select {
		case ev := <-w.ResultChan():
			require.Equal(t, want.typ, ev.Type, "%+v", ev)
			require.Equal(t, want.name, ev.Object.(*corev1.Pod).Name)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s, made after the list, was not replayed to the watch", want.typ, want.name)
		}
	}
	select {
	case ev := <-w.ResultChan():
		t.Fatalf("replayed a change the list already had: %+v", ev)
	default:
	}
}
