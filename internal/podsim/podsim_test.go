//go:build integration

package podsim_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/podsim"
)

func TestNodeIsReady(t *testing.T) {
	t.Parallel()
	e := setup(t)
	node, err := e.client.CoreV1().Nodes().Get(e.ctx, e.node, metav1.GetOptions{})
	require.NoError(t, err)
	if !cluster.IsExisting() {
		assert.Equal(t, podsim.DefaultNodeName, node.Name) // an existing cluster's simulator has a Node of its own
	}
	var ready *v1.NodeCondition
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == v1.NodeReady {
			ready = &node.Status.Conditions[i]
		}
	}
	require.NotNil(t, ready, "node has no Ready condition")
	assert.Equal(t, v1.ConditionTrue, ready.Status)
	assert.False(t, node.Status.Capacity.Cpu().IsZero())
	assert.False(t, node.Status.Allocatable.Pods().IsZero())
	require.NotEmpty(t, node.Status.Addresses)
	assert.Equal(t, v1.NodeInternalIP, node.Status.Addresses[0].Type)
}

func TestNormalPodRunsWithEventsInOrder(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.recordPods()
	pod := e.create(newPod("normal"))

	got := e.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
	assert.Equal(t, e.node, got.Spec.NodeName)
	assert.NotEmpty(t, got.Status.PodIP)
	assert.Equal(t, []v1.PodIP{{IP: got.Status.PodIP}}, got.Status.PodIPs)
	assert.NotEmpty(t, got.Status.HostIP)
	assert.NotNil(t, got.Status.StartTime)
	for _, ct := range []v1.PodConditionType{v1.PodScheduled, v1.PodInitialized, v1.ContainersReady, v1.PodReady} {
		assert.True(t, conditionTrue(got, ct), "condition %s not True", ct)
	}
	require.Len(t, got.Status.ContainerStatuses, 1)
	cs := got.Status.ContainerStatuses[0]
	assert.Equal(t, "notebook", cs.Name)
	assert.NotNil(t, cs.State.Running)
	assert.True(t, cs.Ready)
	assert.Equal(t, ptr.To(true), cs.Started)
	assert.Equal(t, pod.Spec.Containers[0].Image, cs.Image)
	assert.True(t, strings.HasPrefix(cs.ImageID, "quay.io/jupyter/base-notebook@sha256:"), cs.ImageID)
	assert.True(t, strings.HasPrefix(cs.ContainerID, "containerd://"), cs.ContainerID)
	assert.Zero(t, cs.RestartCount)

	// Like a real pending pod, the pod is bound before the kubelet first
	// writes its status: some version has a node but no startTime yet, and
	// startTime never precedes binding.
	_, versions := rec.history(pod.UID)
	boundNoStart := false
	for _, p := range versions {
		if p.Spec.NodeName == "" {
			assert.Nil(t, p.Status.StartTime, "startTime set on an unbound pod")
		} else if p.Status.StartTime == nil {
			boundNoStart = true
		}
	}
	assert.True(t, boundNoStart, "no bound version without startTime was seen")

	evs := e.waitEvents(pod.UID, "Scheduled", "Pulling", "Pulled", "Created", "Started")
	order := []string{"Scheduled", "Pulling", "Pulled", "Created", "Started"}
	prev := -1
	for _, r := range order {
		i := firstIndex(evs, r)
		assert.Greater(t, i, prev, "%s out of order in %s", r, eventSummary(evs))
		prev = i
	}
	for _, ev := range evs {
		assert.Equal(t, "Pod", ev.InvolvedObject.Kind)
		assert.Equal(t, e.ns, ev.InvolvedObject.Namespace)
		assert.Equal(t, pod.Name, ev.InvolvedObject.Name)
		assert.Equal(t, pod.UID, ev.InvolvedObject.UID)
		assert.Equal(t, v1.EventTypeNormal, ev.Type, ev.Reason)
	}
	sched := findEvent(t, evs, "Scheduled")
	assert.Equal(t, "default-scheduler", sched.Source.Component)
	assert.Equal(t, "default-scheduler", sched.ReportingController)
	assert.Equal(t, fmt.Sprintf("Successfully assigned %s/%s to %s", e.ns, pod.Name, e.node), sched.Message)
	pulling := findEvent(t, evs, "Pulling")
	assert.Equal(t, "kubelet", pulling.Source.Component)
	assert.Equal(t, e.node, pulling.Source.Host)
	assert.Equal(t, `Pulling image "quay.io/jupyter/base-notebook:2025-01-01"`, pulling.Message)
	assert.Equal(t, "spec.containers{notebook}", pulling.InvolvedObject.FieldPath)
	assert.Equal(t, "Started container notebook", findEvent(t, evs, "Started").Message)
}

func TestInitAndMultipleContainers(t *testing.T) {
	t.Parallel()
	e := setup(t)
	p := newPod("multi")
	p.Spec.InitContainers = []v1.Container{
		{Name: "setup", Image: "busybox:1.36"},
		{Name: "sidecar", Image: "envoyproxy/envoy:v1.30", RestartPolicy: ptr.To(v1.ContainerRestartPolicyAlways)},
	}
	p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: "proxy", Image: "nginx", ImagePullPolicy: v1.PullNever})
	pod := e.create(p)

	got := e.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
	require.Len(t, got.Status.InitContainerStatuses, 2)
	init := got.Status.InitContainerStatuses[0]
	require.NotNil(t, init.State.Terminated)
	assert.Equal(t, int32(0), init.State.Terminated.ExitCode)
	assert.Equal(t, "Completed", init.State.Terminated.Reason)
	sidecar := got.Status.InitContainerStatuses[1]
	assert.NotNil(t, sidecar.State.Running, "a sidecar keeps running")
	assert.True(t, sidecar.Ready)
	assert.True(t, conditionTrue(got, v1.PodInitialized))
	require.Len(t, got.Status.ContainerStatuses, 2)
	for _, cs := range got.Status.ContainerStatuses {
		assert.True(t, cs.Ready, cs.Name)
		assert.NotNil(t, cs.State.Running, cs.Name)
	}
	assert.NotEqual(t, got.Status.ContainerStatuses[0].ContainerID, got.Status.ContainerStatuses[1].ContainerID)

	evs := e.waitEventsFunc(pod.UID, "Started for every container", func(evs []v1.Event) bool {
		return hasEvent(evs, "Started", "spec.initContainers{setup}") &&
			hasEvent(evs, "Started", "spec.containers{notebook}") &&
			hasEvent(evs, "Started", "spec.containers{proxy}")
	})
	// Init container first, then the app containers in order.
	initStarted := slices.IndexFunc(evs, func(ev v1.Event) bool {
		return ev.Reason == "Started" && ev.InvolvedObject.FieldPath == "spec.initContainers{setup}"
	})
	notebookPulling := slices.IndexFunc(evs, func(ev v1.Event) bool {
		return ev.Reason == "Pulling" && ev.InvolvedObject.FieldPath == "spec.containers{notebook}"
	})
	assert.Less(t, initStarted, notebookPulling, eventSummary(evs))
	assert.False(t, hasEvent(evs, "Pulling", "spec.containers{proxy}"), "Pulling for an imagePullPolicy Never container")
	for _, ev := range evs {
		if ev.Reason == "Pulled" && ev.InvolvedObject.FieldPath == "spec.containers{proxy}" {
			assert.Equal(t, `Container image "nginx" already present on machine`, ev.Message)
		}
	}
}

func TestGracefulDeleteIsFinalised(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.recordPods()
	pod := e.create(newPod("graceful"))
	e.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)

	start := time.Now()
	e.deleteAndWaitGone(pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](30)})
	// The simulator waits min(30s, MaxGracePeriod=1s) from the moment it saw
	// the deletion, which is after Delete was called.
	assert.GreaterOrEqual(t, time.Since(start), podsim.DefaultMaxGracePeriod)

	// The watch saw the pod terminating (deletionTimestamp set, containers
	// terminated) before it was deleted.
	require.Eventually(t, func() bool {
		types, _ := rec.history(pod.UID)
		return len(types) > 0 && types[len(types)-1] == watch.Deleted
	}, 30*time.Second, 50*time.Millisecond, "no Deleted watch event")
	_, versions := rec.history(pod.UID)
	sawTerminating, sawTerminated := false, false
	for _, p := range versions {
		// The last version, the Deleted one, has grace period 0: the
		// simulator's final delete.
		if p.DeletionTimestamp == nil || ptr.Deref(p.DeletionGracePeriodSeconds, 0) == 0 {
			continue
		}
		sawTerminating = true
		assert.Equal(t, int64(30), *p.DeletionGracePeriodSeconds)
		if len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Terminated != nil {
			sawTerminated = true
			assert.True(t, p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed, p.Status.Phase)
			assert.False(t, conditionTrue(p, v1.PodReady))
		}
	}
	assert.True(t, sawTerminating, "never saw the pod with a deletionTimestamp")
	assert.True(t, sawTerminated, "never saw the containers terminated")

	evs := e.waitEvents(pod.UID, "Killing")
	assert.Equal(t, "Stopping container notebook", findEvent(t, evs, "Killing").Message)
}

// TestScenarios checks each scenario's status and events.
func TestScenarios(t *testing.T) {
	t.Parallel()
	const image = "quay.io/jupyter/base-notebook:2025-01-01"
	cases := []struct {
		scenario string
		what     string
		reached  func(*v1.Pod) bool
		check    func(t *testing.T, p *v1.Pod)
		events   []string
		// absent event reasons
		absent []string
		// a waiting reason that must have been seen on the way
		via string
		// checks on the events
		checkEvents func(t *testing.T, evs []v1.Event)
		// {reason, message} of events to wait for beyond the reasons in
		// events: one step's events are written asynchronously, so the
		// second of a step's two Failed events may trail the first.
		messages [][2]string
	}{
		{
			scenario: podsim.ScenarioImagePullFailure,
			what:     "ImagePullBackOff",
			reached:  waitingFor("ImagePullBackOff"),
			check: func(t *testing.T, p *v1.Pod) {
				assert.Contains(t, pendingWaitMessage(t, p), `Back-off pulling image "`+image+`"`)
			},
			via:      "ErrImagePull",
			events:   []string{"Scheduled", "Pulling", "Failed", "BackOff"},
			messages: [][2]string{{"Failed", "Error: ErrImagePull"}, {"Failed", "Error: ImagePullBackOff"}},
			absent:   []string{"Pulled", "Started"},
			checkEvents: func(t *testing.T, evs []v1.Event) {
				failed := findEvent(t, evs, "Failed")
				assert.Equal(t, v1.EventTypeWarning, failed.Type)
				assert.True(t, strings.HasPrefix(failed.Message, `Failed to pull image "`+image+`": `), failed.Message)
				backoff := findEvent(t, evs, "BackOff")
				assert.Equal(t, `Back-off pulling image "`+image+`"`, backoff.Message)
				assert.Greater(t, firstIndex(evs, "Failed"), firstIndex(evs, "Pulling"))
				assert.True(t, hasMessage(evs, "Failed", "Error: ErrImagePull"), eventSummary(evs))
				assert.True(t, hasMessage(evs, "Failed", "Error: ImagePullBackOff"), eventSummary(evs))
			},
		},
		{
			scenario: podsim.ScenarioInvalidImageName,
			what:     "InvalidImageName",
			reached:  waitingFor("InvalidImageName"),
			check: func(t *testing.T, p *v1.Pod) {
				assert.Contains(t, pendingWaitMessage(t, p), "invalid reference format")
			},
			events: []string{"Scheduled", "InspectFailed", "Failed"},
			absent: []string{"Pulling", "Started"},
			checkEvents: func(t *testing.T, evs []v1.Event) {
				assert.Equal(t, v1.EventTypeWarning, findEvent(t, evs, "InspectFailed").Type)
				assert.True(t, hasMessage(evs, "Failed", "Error: InvalidImageName"), eventSummary(evs))
			},
		},
		{
			scenario: podsim.ScenarioCreateContainerConfigError,
			what:     "CreateContainerConfigError",
			reached:  waitingFor("CreateContainerConfigError"),
			check: func(t *testing.T, p *v1.Pod) {
				assert.NotEmpty(t, pendingWaitMessage(t, p))
			},
			events: []string{"Scheduled", "Pulling", "Pulled", "Failed"},
			absent: []string{"Created", "Started"},
			checkEvents: func(t *testing.T, evs []v1.Event) {
				failed := findEvent(t, evs, "Failed")
				assert.Equal(t, v1.EventTypeWarning, failed.Type)
				assert.True(t, strings.HasPrefix(failed.Message, "Error: "), failed.Message)
			},
		},
		{
			scenario: podsim.ScenarioCrashLoop,
			what:     "CrashLoopBackOff after two restarts",
			reached: func(p *v1.Pod) bool {
				return waitingReason(p, "CrashLoopBackOff") && p.Status.ContainerStatuses[0].RestartCount >= 2
			},
			check: func(t *testing.T, p *v1.Pod) {
				assert.Equal(t, v1.PodRunning, p.Status.Phase)
				assert.False(t, conditionTrue(p, v1.PodReady))
				cs := p.Status.ContainerStatuses[0]
				assert.False(t, cs.Ready)
				require.NotNil(t, cs.LastTerminationState.Terminated)
				assert.Equal(t, int32(1), cs.LastTerminationState.Terminated.ExitCode)
				assert.Equal(t, "Error", cs.LastTerminationState.Terminated.Reason)
			},
			events: []string{"Scheduled", "Pulling", "Pulled", "Created", "Started", "BackOff"},
			checkEvents: func(t *testing.T, evs []v1.Event) {
				backoff := findEvent(t, evs, "BackOff")
				assert.Equal(t, v1.EventTypeWarning, backoff.Type)
				assert.True(t, strings.HasPrefix(backoff.Message, "Back-off restarting failed container notebook in pod "), backoff.Message)
				assert.Greater(t, firstIndex(evs, "BackOff"), firstIndex(evs, "Started"))
			},
		},
		{
			scenario: podsim.ScenarioUnschedulable,
			what:     "PodScheduled=False",
			reached: func(p *v1.Pod) bool {
				c := condition(p, v1.PodScheduled)
				return c != nil && c.Status == v1.ConditionFalse
			},
			check: func(t *testing.T, p *v1.Pod) {
				c := condition(p, v1.PodScheduled)
				assert.Equal(t, v1.PodReasonUnschedulable, c.Reason)
				assert.Equal(t, "0/1 nodes are available: 1 Insufficient cpu.", c.Message)
				assert.Empty(t, p.Spec.NodeName)
				assert.Equal(t, v1.PodPending, p.Status.Phase)
				assert.Nil(t, p.Status.StartTime)
			},
			events: []string{"FailedScheduling"},
			absent: []string{"Scheduled", "Pulling"},
			checkEvents: func(t *testing.T, evs []v1.Event) {
				ev := findEvent(t, evs, "FailedScheduling")
				assert.Equal(t, v1.EventTypeWarning, ev.Type)
				assert.Equal(t, "default-scheduler", ev.Source.Component)
				assert.Equal(t, "0/1 nodes are available: 1 Insufficient cpu.", ev.Message)
			},
		},
		{
			scenario: podsim.ScenarioNeverReady,
			what:     "Running but not Ready",
			reached: func(p *v1.Pod) bool {
				return p.Status.Phase == v1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
			},
			check: func(t *testing.T, p *v1.Pod) {
				ready := condition(p, v1.PodReady)
				require.NotNil(t, ready)
				assert.Equal(t, v1.ConditionFalse, ready.Status)
				assert.Equal(t, "ContainersNotReady", ready.Reason)
				assert.False(t, p.Status.ContainerStatuses[0].Ready)
				assert.Equal(t, ptr.To(true), p.Status.ContainerStatuses[0].Started)
				assert.NotEmpty(t, p.Status.PodIP)
			},
			events: []string{"Scheduled", "Started", "Unhealthy"},
		},
		{
			scenario: podsim.ScenarioEvict,
			what:     "Evicted",
			reached:  inPhase(v1.PodFailed),
			check: func(t *testing.T, p *v1.Pod) {
				assert.Equal(t, "Evicted", p.Status.Reason)
				assert.Equal(t, "The node was low on resource: memory.", p.Status.Message)
				assert.True(t, conditionTrue(p, v1.DisruptionTarget))
				assert.False(t, conditionTrue(p, v1.PodReady))
				require.NotNil(t, p.Status.ContainerStatuses[0].State.Terminated)
			},
			events: []string{"Scheduled", "Started", "Evicted", "Killing"},
			checkEvents: func(t *testing.T, evs []v1.Event) {
				ev := findEvent(t, evs, "Evicted")
				assert.Equal(t, v1.EventTypeWarning, ev.Type)
				assert.Equal(t, "The node was low on resource: memory.", ev.Message)
				assert.Greater(t, firstIndex(evs, "Evicted"), firstIndex(evs, "Started"))
			},
		},
		{
			scenario: podsim.ScenarioFail,
			what:     "Failed",
			reached:  inPhase(v1.PodFailed),
			check: func(t *testing.T, p *v1.Pod) {
				requireTerminated(t, p, 1, "Error")
				assert.Empty(t, p.Status.Reason)
			},
			events: []string{"Scheduled", "Pulling", "Pulled", "Created", "Started"},
		},
		{
			scenario: podsim.ScenarioComplete,
			what:     "Succeeded",
			reached:  inPhase(v1.PodSucceeded),
			check: func(t *testing.T, p *v1.Pod) {
				requireTerminated(t, p, 0, "Completed")
				ready := condition(p, v1.PodReady)
				require.NotNil(t, ready)
				assert.Equal(t, "PodCompleted", ready.Reason)
			},
			events: []string{"Scheduled", "Pulling", "Pulled", "Created", "Started"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.scenario, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			rec := e.recordPods()
			pod := e.create(newPod("p", withScenario(tc.scenario)))
			got := e.waitPod(pod.Name, time.Minute, tc.what, tc.reached)
			tc.check(t, got)
			evs := e.waitEvents(pod.UID, tc.events...)
			for _, m := range tc.messages {
				evs = e.waitEventsFunc(pod.UID, fmt.Sprintf("a %s event %q", m[0], m[1]), func(evs []v1.Event) bool { return hasMessage(evs, m[0], m[1]) })
			}
			assertNoEvent(t, evs, tc.absent, "in scenario "+tc.scenario)
			if tc.checkEvents != nil {
				tc.checkEvents(t, evs)
			}
			if tc.via != "" {
				_, versions := rec.history(pod.UID)
				seen := false
				for _, p := range versions {
					seen = seen || waitingReason(p, tc.via)
				}
				assert.True(t, seen, "never saw waiting reason %s", tc.via)
			}
		})
	}
}

func hasMessage(evs []v1.Event, reason, msg string) bool {
	for _, ev := range evs {
		if ev.Reason == reason && ev.Message == msg {
			return true
		}
	}
	return false
}

func TestSlowStartHonoursAnnotation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		opts  []podOpt
		delay time.Duration
	}{
		{"annotation", []podOpt{withStartDelay("2s")}, 2 * time.Second},
		{"slow-start-default", []podOpt{withScenario(podsim.ScenarioSlowStart)}, podsim.DefaultSlowStartDelay},
		{"slow-start-with-annotation", []podOpt{withScenario(podsim.ScenarioSlowStart), withStartDelay("1500ms")}, 1500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			rec := e.recordPods()
			start := time.Now()
			pod := e.create(newPod("slow", tc.opts...))
			e.waitPod(pod.Name, 2*time.Minute, "Running and Ready", runningAndReady)
			assert.GreaterOrEqual(t, time.Since(start), tc.delay)

			// Lower bound between binding and Running as seen by the watch:
			// the first bound version and the first Running version carry the
			// times they were observed, which are at least delay apart.
			_, versions := rec.history(pod.UID)
			var bound *v1.Pod
			for _, p := range versions {
				if p.Spec.NodeName != "" {
					bound = p
					break
				}
			}
			require.NotNil(t, bound)
			ready := condition(e.waitPod(pod.Name, time.Minute, "Ready", runningAndReady), v1.PodReady)
			sched := condition(bound, v1.PodScheduled)
			require.NotNil(t, sched)
			// Condition times have second precision: allow one second.
			assert.GreaterOrEqual(t, ready.LastTransitionTime.Sub(sched.LastTransitionTime.Time), tc.delay-time.Second)
		})
	}
}

func TestRecreatedPodGetsFreshLifecycle(t *testing.T) {
	t.Parallel()
	t.Run("after graceful delete", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		old := e.create(newPod("same"))
		e.waitPod(old.Name, time.Minute, "Running and Ready", runningAndReady)
		e.deleteAndWaitGone(old.Name, metav1.DeleteOptions{})

		fresh := e.create(newPod("same", withScenario(podsim.ScenarioNeverReady)))
		require.NotEqual(t, old.UID, fresh.UID)
		got := e.waitPod(fresh.Name, time.Minute, "Running (never ready)", func(p *v1.Pod) bool {
			return p.UID == fresh.UID && p.Status.Phase == v1.PodRunning
		})
		assert.False(t, conditionTrue(got, v1.PodReady), "the new pod follows its own scenario")
		assert.Zero(t, got.Status.ContainerStatuses[0].RestartCount)
		evs := e.waitEvents(fresh.UID, "Scheduled", "Pulling", "Pulled", "Created", "Started", "Unhealthy")
		assert.Equal(t, 1, countReason(evs, "Scheduled"))
	})

	t.Run("replaced mid-lifecycle", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		rec := e.recordPods()
		// The old pod would become Running and Ready 3s after binding; it is
		// force-deleted once bound and replaced by a pod that fails 4s after
		// its binding without ever running: if anything of the old plan were
		// applied to the new pod, the watch would see it Running.
		old := e.create(newPod("same", withStartDelay("3s")))
		e.waitPod(old.Name, time.Minute, "bound", func(p *v1.Pod) bool { return p.Spec.NodeName != "" })
		require.NoError(t, e.client.CoreV1().Pods(e.ns).Delete(e.ctx, old.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
		fresh := e.create(newPod("same", withScenario(podsim.ScenarioFail), withStartDelay("4s")))

		got := e.waitPod(fresh.Name, time.Minute, "Failed", inPhase(v1.PodFailed))
		assert.Equal(t, fresh.UID, got.UID)
		_, versions := rec.history(fresh.UID)
		require.NotEmpty(t, versions)
		for _, p := range versions {
			assert.NotEqual(t, v1.PodRunning, p.Status.Phase, dump(p))
			assert.False(t, conditionTrue(p, v1.PodReady), dump(p))
		}
		evs := e.waitEvents(fresh.UID, "Scheduled", "Started")
		assert.Equal(t, 1, countReason(evs, "Scheduled"))
		for _, ev := range e.podEvents(old.UID) {
			assert.NotEqual(t, "Started", ev.Reason, "the replaced pod's plan went on: %s", eventSummary(e.podEvents(old.UID)))
		}
	})
}

func countReason(evs []v1.Event, reason string) int {
	n := 0
	for _, ev := range evs {
		if ev.Reason == reason {
			n++
		}
	}
	return n
}

func TestPodOfAnotherNodeIsIgnored(t *testing.T) {
	t.Parallel()
	e := setup(t)
	p := newPod("elsewhere")
	p.Spec.NodeName = "some-other-node"
	pod := e.create(p)
	assert.Never(t, func() bool {
		got, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, pod.Name, metav1.GetOptions{})
		return err != nil || got.Status.StartTime != nil || len(got.Status.ContainerStatuses) > 0
	}, 2*time.Second, 100*time.Millisecond)
	assert.Empty(t, e.podEvents(pod.UID))
}

func TestHundredPodsReachRunning(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 10)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, newPod(fmt.Sprintf("pod-%03d", i)), metav1.CreateOptions{})
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	var (
		mu   sync.Mutex
		last string
	)
	ok := assert.Eventually(t, func() bool {
		list, err := e.client.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		ready := 0
		ips := map[string]bool{}
		for i := range list.Items {
			p := &list.Items[i]
			if runningAndReady(p) {
				ready++
				ips[p.Status.PodIP] = true
			}
		}
		mu.Lock()
		last = fmt.Sprintf("%d/%d Running and Ready, %d distinct IPs", ready, len(list.Items), len(ips))
		mu.Unlock()
		return ready == n && len(ips) == n
	}, 3*time.Minute, 250*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.True(t, ok, "not all pods Running and Ready with unique IPs: %s", last)

	// No event was dropped on the way: every pod got its Started event.
	require.Eventually(t, func() bool {
		list, err := e.client.CoreV1().Events(e.ns).List(e.ctx, metav1.ListOptions{FieldSelector: "reason=Started"})
		if err != nil {
			return false
		}
		uids := map[string]bool{}
		for _, ev := range list.Items {
			uids[string(ev.InvolvedObject.UID)] = true
		}
		return len(uids) == n
	}, time.Minute, 250*time.Millisecond, "not every pod has a Started event")
}

// TestStartStop checks Start's node handling and that Stop and context
// cancellation end a simulator. It creates no pod, so the second simulator
// competes with the shared one for nothing; it is not parallel.
func TestStartStop(t *testing.T) {
	client := newClient(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	_, err := podsim.Start(ctx, client, podsim.Options{StartDelay: -time.Second})
	require.Error(t, err, "negative delay accepted")

	const name = "podsim-start-stop"
	s1, err := podsim.Start(ctx, client, podsim.Options{NodeName: name})
	require.NoError(t, err)
	assert.Equal(t, name, s1.NodeName())
	s1.Stop()
	s1.Stop() // idempotent

	// A second start reuses the node.
	ctx2, cancel2 := context.WithCancel(ctx)
	s2, err := podsim.Start(ctx2, client, podsim.Options{NodeName: name})
	require.NoError(t, err)
	node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotEmpty(t, node.Status.Conditions)
	cancel2()
	done := make(chan struct{})
	go func() { s2.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop did not return after the context was cancelled")
	}
	require.NoError(t, client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}))
}

func TestBadAnnotationsFallBackToNormal(t *testing.T) {
	t.Parallel()
	e := setup(t)
	pod := e.create(newPod("bad", withScenario("no-such-scenario"), withStartDelay("soon")))
	e.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
}

// TestRestartedSimulatorAdoptsPods runs a pod on a simulator of its own,
// replaces that simulator and checks that the new one leaves the running
// pod's status alone but still carries out its graceful deletion. The pod
// is created with spec.nodeName set, so it is never scheduled. Not parallel:
// a second simulator would compete for other tests' unbound pods.
func TestRestartedSimulatorAdoptsPods(t *testing.T) {
	e := setup(t)
	const node = "podsim-adopt"
	t.Cleanup(func() { _ = e.client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	s1, err := podsim.Start(e.ctx, e.client, podsim.Options{NodeName: node})
	require.NoError(t, err)
	defer s1.Stop()

	p := newPod("adopted")
	p.Spec.NodeName = node
	pod := e.create(p)
	before := e.waitPod(pod.Name, time.Minute, "Running and Ready", runningAndReady)
	evs := e.waitEvents(pod.UID, "Pulling", "Started")
	assert.Equal(t, -1, firstIndex(evs, "Scheduled"), "a pod created bound was scheduled")
	assert.Equal(t, node, findEvent(t, evs, "Started").Source.Host)
	s1.Stop()

	s2, err := podsim.Start(e.ctx, e.client, podsim.Options{NodeName: node})
	require.NoError(t, err)
	defer s2.Stop()
	assert.Never(t, func() bool {
		got, err := e.client.CoreV1().Pods(e.ns).Get(e.ctx, pod.Name, metav1.GetOptions{})
		return err != nil || got.ResourceVersion != before.ResourceVersion
	}, time.Second, 100*time.Millisecond, "the new simulator rewrote an adopted pod")

	e.deleteAndWaitGone(pod.Name, metav1.DeleteOptions{})
	evs = e.waitEvents(pod.UID, "Killing")
	assert.Equal(t, "Stopping container notebook", findEvent(t, evs, "Killing").Message)
}
