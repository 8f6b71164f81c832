package slim_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/slim"
)

// terminating is a realistic pod that is being deleted, with an owner, a
// failed container and a waiting one, so that every kept field is set.
func terminating() *corev1.Pod {
	p := benchpod.Realistic("users", 7)
	now := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	p.GenerateName = "jupyter-"
	p.Generation = 2
	p.DeletionTimestamp = &now
	p.DeletionGracePeriodSeconds = ptr.To(int64(30))
	p.Finalizers = []string{"example.org/keep"}
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "n", UID: "u"}}
	p.Spec.HostNetwork = true
	p.Status.Reason, p.Status.Message = "Evicted", "The node was low on resource: memory."
	p.Status.NominatedNodeName = "other-node"
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled", Message: "killed"}}
	p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}
	p.Status.ContainerStatuses[0].RestartCount = 3
	p.Status.ContainerStatuses[1].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}
	p.Status.ContainerStatuses[1].AllocatedResources = corev1.ResourceList{corev1.ResourceCPU: p.Spec.Containers[1].Resources.Requests[corev1.ResourceCPU]}
	p.Status.ContainerStatuses[1].Resources = &p.Spec.Containers[1].Resources
	p.Status.ContainerStatuses[1].VolumeMounts = []corev1.VolumeMountStatus{{Name: "home", MountPath: "/home/jovyan"}}
	p.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{{Name: "debug"}}
	p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "busybox"}}}
	return p
}

// selectable are the fields the API server lets pods be selected by (as
// reflector's podFields, which a test compares with the API server).
func selectable(p *corev1.Pod) fields.Set {
	ip := ""
	if len(p.Status.PodIPs) > 0 {
		ip = p.Status.PodIPs[0].IP
	}
	return fields.Set{
		"metadata.name": p.Name, "metadata.namespace": p.Namespace,
		"spec.nodeName": p.Spec.NodeName, "spec.restartPolicy": string(p.Spec.RestartPolicy),
		"spec.schedulerName": p.Spec.SchedulerName, "spec.serviceAccountName": p.Spec.ServiceAccountName,
		"spec.hostNetwork": strconv.FormatBool(p.Spec.HostNetwork), "status.phase": string(p.Status.Phase),
		"status.podIP": ip, "status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

func TestSlimPodIsIdempotent(t *testing.T) {
	t.Parallel()
	p := terminating()
	once := slim.Pod(p)
	twice := slim.Pod(once)
	assert.Equal(t, once, twice)
	out, err := slim.PodTransform(once)
	require.NoError(t, err)
	assert.Equal(t, once, out)
	assert.Nil(t, slim.Pod(nil))
	// The input is not modified.
	assert.Equal(t, terminating(), p)
}

func TestSlimPodTransformLeavesOtherObjectsAlone(t *testing.T) {
	t.Parallel()
	full := terminating()
	tomb := toolscache.DeletedFinalStateUnknown{Key: "users/jupyter-user-000007", Obj: full}
	out, err := slim.PodTransform(tomb)
	require.NoError(t, err)
	assert.Equal(t, tomb, out)
	for _, obj := range []any{"not an object", &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e"}}, (*corev1.Pod)(nil), nil} {
		out, err := slim.PodTransform(obj)
		require.NoError(t, err)
		assert.Equal(t, obj, out)
	}
}

func TestSlimPodKeepsWhatSpawnersRead(t *testing.T) {
	t.Parallel()
	p := terminating()
	s := slim.Pod(p)

	assert.Equal(t, p.TypeMeta, s.TypeMeta)
	m, sm := p.ObjectMeta, s.ObjectMeta
	assert.Equal(t, m.Name, sm.Name)
	assert.Equal(t, m.GenerateName, sm.GenerateName)
	assert.Equal(t, m.Namespace, sm.Namespace)
	assert.Equal(t, m.UID, sm.UID)
	assert.Equal(t, m.ResourceVersion, sm.ResourceVersion)
	assert.Equal(t, m.Generation, sm.Generation)
	assert.Equal(t, m.CreationTimestamp, sm.CreationTimestamp)
	assert.Equal(t, m.DeletionTimestamp, sm.DeletionTimestamp)
	assert.Equal(t, m.DeletionGracePeriodSeconds, sm.DeletionGracePeriodSeconds)
	assert.Equal(t, m.Labels, sm.Labels)
	assert.Len(t, sm.Labels, 9)
	assert.Equal(t, m.OwnerReferences, sm.OwnerReferences)
	wantAnn := map[string]string{}
	for k, v := range m.Annotations {
		if k != corev1.LastAppliedConfigAnnotation {
			wantAnn[k] = v
		}
	}
	assert.Equal(t, wantAnn, sm.Annotations)
	assert.Len(t, sm.Annotations, 5)

	assert.Equal(t, selectable(p), selectable(s), "every field selector must keep working on the slim view")
	assert.Equal(t, p.Spec.TerminationGracePeriodSeconds, s.Spec.TerminationGracePeriodSeconds)
	require.Len(t, s.Spec.InitContainers, 1)
	require.Len(t, s.Spec.Containers, 2)
	for i, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		got := append(append([]corev1.Container{}, s.Spec.InitContainers...), s.Spec.Containers...)[i]
		assert.Equal(t, corev1.Container{Name: c.Name, Image: c.Image, Ports: c.Ports}, got)
	}
	assert.Equal(t, []corev1.ContainerPort{{Name: "notebook-port", ContainerPort: 8888, Protocol: corev1.ProtocolTCP}}, s.Spec.Containers[0].Ports)

	st, ss := p.Status, s.Status
	assert.Equal(t, st.Phase, ss.Phase)
	assert.Equal(t, st.Conditions, ss.Conditions)
	assert.Len(t, ss.Conditions, 5)
	assert.Equal(t, st.Reason, ss.Reason)
	assert.Equal(t, st.Message, ss.Message)
	assert.Equal(t, st.NominatedNodeName, ss.NominatedNodeName)
	assert.Equal(t, st.HostIP, ss.HostIP)
	assert.Equal(t, st.HostIPs, ss.HostIPs)
	assert.Equal(t, st.PodIP, ss.PodIP)
	assert.Equal(t, st.PodIPs, ss.PodIPs)
	assert.Equal(t, st.StartTime, ss.StartTime)
	require.Len(t, ss.InitContainerStatuses, 1)
	require.Len(t, ss.ContainerStatuses, 2)
	all := append(append([]corev1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...)
	got := append(append([]corev1.ContainerStatus{}, ss.InitContainerStatuses...), ss.ContainerStatuses...)
	for i, c := range all {
		assert.Equal(t, corev1.ContainerStatus{
			Name: c.Name, State: c.State, LastTerminationState: c.LastTerminationState, Ready: c.Ready,
			RestartCount: c.RestartCount, Image: c.Image, ImageID: c.ImageID, ContainerID: c.ContainerID, Started: c.Started,
		}, got[i])
	}
	assert.Equal(t, int32(137), ss.ContainerStatuses[0].State.Terminated.ExitCode)
	assert.Equal(t, "OOMKilled", ss.ContainerStatuses[0].State.Terminated.Reason)
	assert.Equal(t, "Error", ss.ContainerStatuses[0].LastTerminationState.Terminated.Reason)
	assert.Equal(t, "ImagePullBackOff", ss.ContainerStatuses[1].State.Waiting.Reason)
	assert.Equal(t, "Completed", ss.InitContainerStatuses[0].State.Terminated.Reason)
}

func TestSlimPodDropsTheRest(t *testing.T) {
	t.Parallel()
	p := terminating()
	s := slim.Pod(p)
	assert.Nil(t, s.ManagedFields)
	assert.Nil(t, s.Finalizers)
	assert.NotContains(t, s.Annotations, corev1.LastAppliedConfigAnnotation)
	for _, c := range append(append([]corev1.Container{}, s.Spec.InitContainers...), s.Spec.Containers...) {
		assert.Nil(t, c.Env, c.Name)
		assert.Nil(t, c.Command, c.Name)
		assert.Nil(t, c.Args, c.Name)
		assert.Empty(t, c.Resources, c.Name)
		assert.Nil(t, c.VolumeMounts, c.Name)
		assert.Nil(t, c.ReadinessProbe, c.Name)
		assert.Nil(t, c.Lifecycle, c.Name)
		assert.Nil(t, c.SecurityContext, c.Name)
		assert.Empty(t, c.TerminationMessagePath, c.Name)
		assert.Empty(t, c.ImagePullPolicy, c.Name)
	}
	assert.Nil(t, s.Spec.Volumes)
	assert.Nil(t, s.Spec.SecurityContext)
	assert.Nil(t, s.Spec.Tolerations)
	assert.Nil(t, s.Spec.Affinity)
	assert.Nil(t, s.Spec.EphemeralContainers)
	assert.Nil(t, s.Spec.AutomountServiceAccountToken)
	assert.Empty(t, s.Spec.DNSPolicy)
	assert.Empty(t, s.Status.QOSClass)
	assert.Nil(t, s.Status.EphemeralContainerStatuses)
	for _, c := range s.Status.ContainerStatuses {
		assert.Nil(t, c.AllocatedResources, c.Name)
		assert.Nil(t, c.Resources, c.Name)
		assert.Nil(t, c.VolumeMounts, c.Name)
	}
	// Nothing of the environment survives, in any form.
	b, err := json.Marshal(s)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "JUPYTERHUB_API_TOKEN")
	assert.NotContains(t, string(b), "5f2c0e4b8a9d4c7f9e1b3a6d8c0f2e4a")
}

func TestSlimPodShrinksARealisticPod(t *testing.T) {
	t.Parallel()
	p := benchpod.Realistic("users", 42)
	s := slim.Pod(p)
	full, slimmed := p.Size(), s.Size() // protobuf bytes
	stripped, err := slim.StripManagedFields(p.DeepCopy())
	require.NoError(t, err)
	t.Logf("protobuf: full %d B, managedFields stripped %d B, slim %d B", full, stripped.(*corev1.Pod).Size(), slimmed)
	assert.Greater(t, full, 8000, "the realistic pod is realistic")
	assert.Less(t, slimmed*4, full, "the slim view is under a quarter of the full pod")
}

// TestSlimPodTransformEqualsSlimPod: the caches' transform, which works in
// place on the informer's own object, gives what SlimPod gives.
func TestSlimPodTransformEqualsSlimPod(t *testing.T) {
	t.Parallel()
	want := slim.Pod(terminating())
	out, err := slim.PodTransform(terminating())
	require.NoError(t, err)
	assert.Equal(t, want, out)
	assert.NotContains(t, out.(*corev1.Pod).Annotations, corev1.LastAppliedConfigAnnotation)
}

// TestSlimPodSharesStringsAmongPods: two pods decoded apart (as from a
// LIST) hold one copy of the strings they have in common once slimmed;
// the values themselves are unchanged.
func TestSlimPodSharesStringsAmongPods(t *testing.T) {
	t.Parallel()
	decoded := func(i int) *corev1.Pod {
		b, err := benchpod.Realistic("users", i).Marshal()
		require.NoError(t, err)
		var p corev1.Pod
		require.NoError(t, p.Unmarshal(b))
		return &p
	}
	a, b := decoded(1), decoded(2)
	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	require.False(t, same(a.Namespace, b.Namespace), "decoding gives each pod its own copy")
	sa, sb := slim.Pod(a), slim.Pod(b)
	assert.Equal(t, a.Labels, sa.Labels)
	assert.True(t, same(sa.Namespace, sb.Namespace), "namespace")
	assert.True(t, same(sa.Spec.NodeName, sb.Spec.NodeName), "node")
	assert.True(t, same(sa.Labels["app"], sb.Labels["app"]), "label value")
	for k := range sa.Labels {
		for k2 := range sb.Labels {
			if k == k2 {
				assert.True(t, same(k, k2), "label key %s", k)
			}
		}
	}
	assert.True(t, same(sa.Spec.Containers[0].Image, sb.Spec.Containers[0].Image), "image")
	assert.True(t, same(sa.Status.ContainerStatuses[0].ImageID, sb.Status.ContainerStatuses[0].ImageID), "image ID")
	assert.True(t, same(string(sa.Status.Conditions[0].Type), string(sb.Status.Conditions[0].Type)), "condition type")
	// Within a pod, a terminated state's container ID is the status's.
	init := sa.Status.InitContainerStatuses[0]
	assert.True(t, same(init.ContainerID, init.State.Terminated.ContainerID), "container ID")
	assert.Equal(t, a.Status.InitContainerStatuses[0].State.Terminated, init.State.Terminated)
}

// decodedPod is p as a cache gets it: decoded from protobuf, with strings
// and slices of its own.
func decodedPod(tb testing.TB, p *corev1.Pod) *corev1.Pod {
	tb.Helper()
	b, err := p.Marshal()
	require.NoError(tb, err)
	var out corev1.Pod
	require.NoError(tb, out.Unmarshal(b))
	return &out
}

// slimByHand is the slim view of p's containers and IPs written out
// field by field, as a reference for the shared values.
func slimByHand(p *corev1.Pod) (init, containers []corev1.Container, hostIPs []corev1.HostIP, podIP string) {
	cs := func(in []corev1.Container) []corev1.Container {
		if len(in) == 0 {
			return nil
		}
		out := make([]corev1.Container, len(in))
		for i, c := range in {
			out[i] = corev1.Container{Name: c.Name, Image: c.Image, Ports: slices.Clone(c.Ports)}
		}
		return out
	}
	return cs(p.Spec.InitContainers), cs(p.Spec.Containers), slices.Clone(p.Status.HostIPs), p.Status.PodIP
}

// TestSlimPodSharesContainersAmongPods: pods with the same containers
// (every pod of a profile) hold one copy of their slim containers, and a
// node's pods one copy of its host IPs; the values are the pod's own. Not
// parallel: the tables are the process's, and other tests' pods must not
// take over a slot between the two pods here.
func TestSlimPodSharesContainersAmongPods(t *testing.T) {
	a, b := decodedPod(t, benchpod.Realistic("users", 1)), decodedPod(t, benchpod.Realistic("users", 2))
	sa, sb := slim.Pod(a), slim.Pod(b)
	for _, x := range []struct {
		p, s *corev1.Pod
	}{{a, sa}, {b, sb}} {
		init, containers, hostIPs, podIP := slimByHand(x.p)
		assert.Equal(t, init, x.s.Spec.InitContainers)
		assert.Equal(t, containers, x.s.Spec.Containers)
		assert.Equal(t, hostIPs, x.s.Status.HostIPs)
		assert.Equal(t, podIP, x.s.Status.PodIP)
	}
	assert.Same(t, &sa.Spec.Containers[0], &sb.Spec.Containers[0], "containers")
	assert.Same(t, &sa.Spec.InitContainers[0], &sb.Spec.InitContainers[0], "init containers")
	assert.Same(t, &sa.Status.HostIPs[0], &sb.Status.HostIPs[0], "host IPs")
	assert.NotSame(t, &sa.Spec.Containers[0], &a.Spec.Containers[0], "the shared copy is not the pod's own")
	// The pod IP is kept once, as the string of podIPs[0].
	assert.Equal(t, unsafe.StringData(sa.Status.PodIPs[0].IP), unsafe.StringData(sa.Status.PodIP))

	// A pod whose containers differ keeps its own.
	c := decodedPod(t, benchpod.Realistic("users", 3))
	c.Spec.Containers[1].Image = "registry.k8s.io/git-sync/git-sync:v4.5.0"
	sc := slim.Pod(c)
	_, containers, _, _ := slimByHand(c)
	assert.Equal(t, containers, sc.Spec.Containers)
	assert.Equal(t, "registry.k8s.io/git-sync/git-sync:v4.4.0", sb.Spec.Containers[1].Image)
}

// TestSlimPodSharedValuesDoNotAliasTheInput: the shared copies are the
// tables' own, so a caller changing its pod after SlimPod changes neither
// that slim pod nor the slim view of any other pod.
func TestSlimPodSharedValuesDoNotAliasTheInput(t *testing.T) {
	p := decodedPod(t, benchpod.Realistic("users", 4))
	s := slim.Pod(p)
	wantInit, wantContainers, wantHostIPs, _ := slimByHand(benchpod.Realistic("users", 4))
	p.Spec.InitContainers[0].Name = "changed"
	p.Spec.Containers[0].Image = "changed"
	p.Spec.Containers[0].Ports[0].ContainerPort = 1
	p.Status.HostIPs[0].IP = "198.51.100.1"
	for _, got := range []*corev1.Pod{s, slim.Pod(decodedPod(t, benchpod.Realistic("users", 5)))} {
		assert.Equal(t, wantInit, got.Spec.InitContainers)
		assert.Equal(t, wantContainers, got.Spec.Containers)
		assert.Equal(t, wantHostIPs, got.Status.HostIPs)
	}
}

// TestSlimPodKeepsEveryContainerValue: a pod in, the same containers and
// IPs out, for the shapes a pod can have (no containers, no ports, an
// empty port list (not nil), several ports, no host IPs, an empty list of
// them, a pod IP that is not podIPs[0]), and for pods that differ from
// each other in one field only, more of them than the tables have slots,
// so that some must contend for a slot (the slot holds one of them, the
// others get copies of their own). Not parallel, as above.
func TestSlimPodKeepsEveryContainerValue(t *testing.T) {
	const each = 1100 // pods differing in one field: more than the slots
	// The fields at stake, of a realistic pod (the rest: SlimPodKeepsWhatSpawnersRead).
	base := &corev1.Pod{}
	full := decodedPod(t, benchpod.Realistic("users", 0))
	base.Spec.InitContainers, base.Spec.Containers = full.Spec.InitContainers, full.Spec.Containers
	base.Status.HostIP, base.Status.HostIPs, base.Status.PodIP, base.Status.PodIPs = full.Status.HostIP, full.Status.HostIPs, full.Status.PodIP, full.Status.PodIPs
	var pods []*corev1.Pod
	add := func(change func(p *corev1.Pod, i int)) {
		for i := range each {
			p := base.DeepCopy()
			change(p, i)
			pods = append(pods, p)
		}
	}
	n := strconv.Itoa
	add(func(p *corev1.Pod, i int) { p.Spec.Containers[1].Name = "git-sync-" + n(i) })
	add(func(p *corev1.Pod, i int) { p.Spec.InitContainers[0].Image = "example.org/tools:" + n(i) })
	add(func(p *corev1.Pod, i int) { p.Spec.Containers[0].Ports[0].Name = "port-" + n(i) })
	add(func(p *corev1.Pod, i int) { p.Spec.Containers[0].Ports[0].ContainerPort = int32(i) })
	add(func(p *corev1.Pod, i int) { p.Spec.Containers[0].Ports[0].HostPort = int32(i) })
	add(func(p *corev1.Pod, i int) {
		p.Spec.Containers[0].Ports[0].HostIP = "127.0." + n(i/250) + "." + n(i%250)
	})
	add(func(p *corev1.Pod, i int) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: int32(i), Protocol: corev1.ProtocolUDP})
	})
	add(func(p *corev1.Pod, i int) { p.Status.HostIPs[0].IP = "192.0." + n(i/250) + "." + n(i%250) })
	add(func(p *corev1.Pod, i int) {
		p.Status.HostIPs = append(p.Status.HostIPs, corev1.HostIP{IP: "2001:db8::" + strconv.FormatInt(int64(i), 16)})
	})
	// The shapes.
	for _, change := range []func(p *corev1.Pod){
		func(p *corev1.Pod) { p.Spec.InitContainers = nil },
		func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{} },
		func(p *corev1.Pod) { p.Spec.Containers[0].Ports = nil },
		func(p *corev1.Pod) { p.Spec.Containers[0].Ports = []corev1.ContainerPort{} },
		func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "third"}) },
		func(p *corev1.Pod) { p.Status.HostIPs = nil },
		func(p *corev1.Pod) { p.Status.HostIPs = []corev1.HostIP{} },
		func(p *corev1.Pod) { p.Status.PodIP = "10.255.0.1" },
		func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil },
	} {
		p := base.DeepCopy()
		change(p)
		pods = append(pods, p)
	}
	check := func(order []int) {
		t.Helper()
		for _, i := range order {
			p := pods[i]
			s := slim.Pod(p)
			init, containers, hostIPs, podIP := slimByHand(p)
			require.Equal(t, init, s.Spec.InitContainers, "pod %d", i)
			require.Equal(t, containers, s.Spec.Containers, "pod %d", i)
			require.Equal(t, hostIPs, s.Status.HostIPs, "pod %d", i)
			require.Equal(t, podIP, s.Status.PodIP, "pod %d", i)
			require.Equal(t, p.Status.PodIPs, s.Status.PodIPs, "pod %d", i)
			require.Equal(t, slim.Pod(s), s, "pod %d: idempotent", i)
		}
	}
	order := make([]int, len(pods))
	for i := range order {
		order[i] = i
	}
	check(order)
	slices.Reverse(order)
	check(order)
}

// BenchmarkSlimPod is the slim transform's CPU for a realistic decoded pod
// (ns/op) and what the slim pods of a cache hold, with the informer's
// indexer, per pod (heap-B/pod) at two sizes, so that the figure can be
// seen not to depend on the count (BENCHMARKS.md, P3 and P8).
func BenchmarkSlimPod(b *testing.B) {
	wire := func(n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			p := benchpod.Realistic("users", i)
			p.UID = types.UID(fmt.Sprintf("8a3f5c1e-2b7d-4e9a-b6c4-%012d", i))
			p.ResourceVersion = strconv.Itoa(1000000 + i)
			var err error
			out[i], err = p.Marshal()
			require.NoError(b, err)
		}
		return out
	}
	b.Run("cpu", func(b *testing.B) {
		pods := make([]*corev1.Pod, 1000)
		for i, w := range wire(len(pods)) {
			pods[i] = &corev1.Pod{}
			require.NoError(b, pods[i].Unmarshal(w))
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			slim.Pod(pods[i%len(pods)])
		}
	})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("heap/pods=%d", n), func(b *testing.B) {
			ws := wire(n)
			var perPod float64
			for b.Loop() {
				idx := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
				before := heap()
				for _, w := range ws {
					p := &corev1.Pod{}
					require.NoError(b, p.Unmarshal(w))
					out, err := slim.PodTransform(p)
					require.NoError(b, err)
					require.NoError(b, idx.Add(out))
				}
				perPod = float64(int64(heap())-int64(before)) / float64(n)
				runtime.KeepAlive(idx)
			}
			b.ReportMetric(perPod, "heap-B/pod")
		})
	}
}

func TestStripManagedFieldsIsIdempotent(t *testing.T) {
	t.Parallel()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "test"}}}}
	out, err := slim.StripManagedFields(p)
	require.NoError(t, err)
	out, err = slim.StripManagedFields(out)
	require.NoError(t, err)
	require.Nil(t, out.(*corev1.Pod).ManagedFields)
	s := "not an object"
	out, err = slim.StripManagedFields(s)
	require.NoError(t, err)
	require.Equal(t, s, out)
}
