//go:build integration

package podsim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	// Lets `go test ./internal/podsim/ -args -v=4` show the simulator's logs.
	klog.InitFlags(nil)
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// sim is the package's shared simulator with the default options (two
// simulators would compete to schedule the same unbound pods); Run stops it.
func sim(t *testing.T) *podsim.Simulator {
	t.Helper()
	return cluster.PodSim(t, podsim.Options{})
}

func newClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	require.NotNil(t, cluster, "testcluster did not start")
	client, err := kubernetes.NewForConfig(cluster.Config())
	require.NoError(t, err)
	return client
}

// testEnv is one test's client, namespace and context.
type testEnv struct {
	t      *testing.T
	ctx    context.Context
	client kubernetes.Interface
	ns     string
	node   string
}

func setup(t *testing.T) *testEnv {
	t.Helper()
	s := sim(t)
	client := newClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	t.Cleanup(cancel)
	ns, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "podsim-test-"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		// No namespace controller runs, so delete the pods explicitly:
		// crash-looping pods would otherwise keep the simulator busy.
		_ = client.CoreV1().Pods(ns.Name).DeleteCollection(context.Background(),
			metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
	})
	return &testEnv{t: t, ctx: ctx, client: client, ns: ns.Name, node: s.NodeName()}
}

type podOpt func(*v1.Pod)

func withScenario(s string) podOpt {
	return func(p *v1.Pod) { p.Annotations[podsim.AnnotationScenario] = s }
}

func withStartDelay(d string) podOpt {
	return func(p *v1.Pod) { p.Annotations[podsim.AnnotationStartDelay] = d }
}

func newPod(name string, opts ...podOpt) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			Containers:                    []v1.Container{{Name: "notebook", Image: "quay.io/jupyter/base-notebook:2025-01-01"}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func (e *testEnv) create(pod *v1.Pod) *v1.Pod {
	e.t.Helper()
	created, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, pod, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return created
}

// waitPod polls the pod until cond holds and returns it; on timeout it fails
// the test with the last status seen.
func (e *testEnv) waitPod(name string, timeout time.Duration, what string, cond func(*v1.Pod) bool) *v1.Pod {
	e.t.Helper()
	var (
		mu      sync.Mutex
		last    *v1.Pod
		lastErr error
	)
	ok := assert.Eventually(e.t, func() bool {
		p, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, name, metav1.GetOptions{})
		mu.Lock()
		defer mu.Unlock()
		last, lastErr = p, err
		return err == nil && cond(p)
	}, timeout, 50*time.Millisecond, "pod %s/%s: %s", e.ns, name, what)
	mu.Lock()
	defer mu.Unlock()
	if !ok {
		e.t.Fatalf("pod %s/%s never reached %q; last error %v; last status:\n%s", e.ns, name, what, lastErr, dump(last))
	}
	return last
}

func dump(p *v1.Pod) string {
	if p == nil {
		return "<none>"
	}
	b, _ := json.MarshalIndent(struct {
		NodeName string
		Status   v1.PodStatus
	}{p.Spec.NodeName, p.Status}, "", "  ")
	return string(b)
}

// podEvents lists the events about one pod incarnation, in the order they
// happened: by firstTimestamp (which has only second precision), then by
// resourceVersion (etcd's creation order on this single-etcd test cluster).
func (e *testEnv) podEvents(uid types.UID) []v1.Event {
	e.t.Helper()
	list, err := e.client.CoreV1().Events(e.ns).List(e.ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.uid", string(uid)).String(),
	})
	require.NoError(e.t, err)
	evs := list.Items
	sort.SliceStable(evs, func(i, j int) bool {
		if !evs[i].FirstTimestamp.Equal(&evs[j].FirstTimestamp) {
			return evs[i].FirstTimestamp.Before(&evs[j].FirstTimestamp)
		}
		ri, _ := strconv.ParseUint(evs[i].ResourceVersion, 10, 64)
		rj, _ := strconv.ParseUint(evs[j].ResourceVersion, 10, 64)
		return ri < rj
	})
	return evs
}

// waitEvents waits until the pod has events with all the given reasons and
// returns all its events in order. Events are written asynchronously, so
// they may trail the status they go with.
func (e *testEnv) waitEvents(uid types.UID, reasons ...string) []v1.Event {
	e.t.Helper()
	return e.waitEventsFunc(uid, fmt.Sprintf("events %v", reasons), func(evs []v1.Event) bool {
		have := map[string]bool{}
		for _, ev := range evs {
			have[ev.Reason] = true
		}
		for _, r := range reasons {
			if !have[r] {
				return false
			}
		}
		return true
	})
}

// waitEventsFunc waits until cond holds for the pod's events (in order).
func (e *testEnv) waitEventsFunc(uid types.UID, what string, cond func([]v1.Event) bool) []v1.Event {
	e.t.Helper()
	var (
		mu   sync.Mutex
		last []v1.Event
	)
	ok := assert.Eventually(e.t, func() bool {
		evs := e.podEvents(uid)
		mu.Lock()
		last = evs
		mu.Unlock()
		return cond(evs)
	}, time.Minute, 100*time.Millisecond, what)
	mu.Lock()
	defer mu.Unlock()
	if !ok {
		e.t.Fatalf("pod %s: %s never appeared; got %s", uid, what, eventSummary(last))
	}
	return last
}

// hasEvent reports whether evs has an event with the reason about the
// container field path.
func hasEvent(evs []v1.Event, reason, fieldPath string) bool {
	return slices.ContainsFunc(evs, func(ev v1.Event) bool {
		return ev.Reason == reason && ev.InvolvedObject.FieldPath == fieldPath
	})
}

func eventSummary(evs []v1.Event) string {
	s := ""
	for _, ev := range evs {
		s += fmt.Sprintf("\n  %s %s/%s %s %q (x%d, %s)", ev.FirstTimestamp.Format(time.RFC3339), ev.Source.Component, ev.Type, ev.Reason, ev.Message, ev.Count, ev.InvolvedObject.FieldPath)
	}
	return s
}

// firstIndex returns the index of the first event with the reason, or -1.
func firstIndex(evs []v1.Event, reason string) int {
	return slices.IndexFunc(evs, func(ev v1.Event) bool { return ev.Reason == reason })
}

func findEvent(t *testing.T, evs []v1.Event, reason string) v1.Event {
	t.Helper()
	i := firstIndex(evs, reason)
	require.GreaterOrEqual(t, i, 0, "no %s event in %s", reason, eventSummary(evs))
	return evs[i]
}

// podRecorder records every version of the namespace's pods seen by a watch
// started before the pods are created.
type podRecorder struct {
	mu   sync.Mutex
	seen []watch.Event
}

func (e *testEnv) recordPods() *podRecorder {
	e.t.Helper()
	w, err := e.client.CoreV1().Pods(e.ns).Watch(e.ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	r := &podRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			r.mu.Lock()
			r.seen = append(r.seen, ev)
			r.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() { w.Stop(); <-done })
	return r
}

// history returns the versions of pod uid seen so far, with their watch event
// types.
func (r *podRecorder) history(uid types.UID) (types_ []watch.EventType, pods []*v1.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.seen {
		if p, ok := ev.Object.(*v1.Pod); ok && p.UID == uid {
			types_ = append(types_, ev.Type)
			pods = append(pods, p)
		}
	}
	return types_, pods
}

func condition(p *v1.Pod, t v1.PodConditionType) *v1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func conditionTrue(p *v1.Pod, t v1.PodConditionType) bool {
	c := condition(p, t)
	return c != nil && c.Status == v1.ConditionTrue
}

func runningAndReady(p *v1.Pod) bool {
	return p.Status.Phase == v1.PodRunning && conditionTrue(p, v1.PodReady)
}

func waitingReason(p *v1.Pod, reason string) bool {
	if len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting == nil || cs.State.Waiting.Reason != reason {
			return false
		}
	}
	return true
}

// terminated is the state of the pod's first container if it terminated,
// or nil.
func terminated(p *v1.Pod) *v1.ContainerStateTerminated {
	if len(p.Status.ContainerStatuses) == 0 {
		return nil
	}
	return p.Status.ContainerStatuses[0].State.Terminated
}

// requireTerminated requires that the pod's first container terminated,
// asserts its exit code and reason, and returns its state: how a pod that
// ran to its end is checked.
func requireTerminated(t *testing.T, p *v1.Pod, code int32, reason string) *v1.ContainerStateTerminated {
	t.Helper()
	term := terminated(p)
	require.NotNil(t, term, dump(p))
	assert.Equal(t, code, term.ExitCode)
	assert.Equal(t, reason, term.Reason)
	return term
}

// assertNoEvent asserts that evs have no event with any of the reasons;
// where says where such an event would be wrong.
func assertNoEvent(t *testing.T, evs []v1.Event, reasons []string, where string) {
	t.Helper()
	for _, r := range reasons {
		assert.Equal(t, -1, firstIndex(evs, r), "a %s event %s: %s", r, where, eventSummary(evs))
	}
}

// inPhase is the waitPod condition that the pod is in phase.
func inPhase(phase v1.PodPhase) func(*v1.Pod) bool {
	return func(p *v1.Pod) bool { return p.Status.Phase == phase }
}

// waitingFor is waitingReason as a waitPod condition: the pod's containers
// all wait with reason.
func waitingFor(reason string) func(*v1.Pod) bool {
	return func(p *v1.Pod) bool { return waitingReason(p, reason) }
}

// waitWaiting waits until the pod's containers all wait with reason, the
// state a scenario or a failure that keeps them from starting leaves.
func (e *testEnv) waitWaiting(name, reason string) *v1.Pod {
	e.t.Helper()
	return e.waitPod(name, time.Minute, reason, waitingFor(reason))
}

// pendingWaitMessage asserts that the pod is Pending and returns its first
// container's waiting message: what a pod kept from starting is checked
// by.
func pendingWaitMessage(t *testing.T, p *v1.Pod) string {
	t.Helper()
	assert.Equal(t, v1.PodPending, p.Status.Phase)
	return p.Status.ContainerStatuses[0].State.Waiting.Message
}

// waitGone waits until the pod is NotFound: deleted and, for a graceful
// delete, finalised by the simulator.
func (e *testEnv) waitGone(name string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		_, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, name, metav1.GetOptions{})
		return isNotFound(err)
	}, time.Minute, 20*time.Millisecond, "pod %s/%s never deleted", e.ns, name)
}

// deleteAndWaitGone deletes the pod with opts and waits until it is gone,
// as a spawner's stop does.
func (e *testEnv) deleteAndWaitGone(name string, opts metav1.DeleteOptions) {
	e.t.Helper()
	require.NoError(e.t, e.client.CoreV1().Pods(e.ns).Delete(e.ctx, name, opts))
	e.waitGone(name)
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
