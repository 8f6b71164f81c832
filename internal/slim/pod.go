package slim

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Pod returns the slim view of p that reflector's pod caches hold by
// default (see reflector.Options.FullPods): exactly what the packages of
// this repository read of a pod (spawner, events, the sweeper, the
// sidecar and the demo spawner service), every field the API server lets pods be selected by, and
// nothing else. It keeps:
//
//   - metadata: name, generateName, namespace, uid, resourceVersion,
//     generation, creationTimestamp, deletionTimestamp,
//     deletionGracePeriodSeconds, labels, annotations (all but
//     kubectl.kubernetes.io/last-applied-configuration) and
//     ownerReferences;
//   - spec: nodeName, restartPolicy, schedulerName, serviceAccountName,
//     hostNetwork (the field selectors), terminationGracePeriodSeconds (a
//     delete without a grace period uses it), and of each container and
//     init container its name, image and ports;
//   - status: phase, conditions, reason, message, nominatedNodeName, hostIP,
//     hostIPs, podIP, podIPs, startTime, and of each container and init
//     container status its name, state, lastState (reasons, messages,
//     exit codes, times), ready, started, restartCount, image, imageID and
//     containerID.
//
// Everything else is dropped: managedFields, finalizers, the
// last-applied-configuration annotation, and of the spec environment,
// command and args, resources, volumes and volume mounts, probes,
// lifecycle hooks, security contexts, tolerations, affinity, ephemeral
// containers and the rest; of the status the QoS class, resources,
// resource claims, ephemeral container statuses and the containers'
// resources, users and volume mounts.
//
// The reads behind the list, by file: spawner/classify.go (status phase,
// reason, message, conditions, podIP, container and init container
// statuses with their states and exit codes; spec container names;
// deletionTimestamp), spawner/start.go (uid, labels, the start-ID
// annotation, deletionTimestamp, phase, reason, podIP), spawner/poll.go
// (deletionTimestamp, phase, reason, message), spawner/stop.go (uid,
// deletionTimestamp), spawner/sweep.go (name, namespace, uid, the key
// annotation, deletionTimestamp, creationTimestamp, startTime), events
// (namespace, name, uid), examples/sidecar (uid; its pod responses are
// the slim view), examples/spawner (uid, podIP, the key annotation),
// examples/sweep (labels, phase, reason, creationTimestamp, startTime),
// and the scope's field selector (reflector's podFields).
//
// Strings shared among pods (label and annotation keys and values, images,
// image IDs, container names, the namespace and node, condition types) are
// interned (intern.go), so thousands of pods hold one copy each (see
// BENCHMARKS.md, P3), and so are whole values that pods have alike: the
// slim container lists (every pod of a profile has the same) and a node's
// host IPs, which are then one slice shared by those pods (never a slice
// of p). The result is a new Pod that shares those with other slim pods
// and the other kept slices and pointers with p: copy it (DeepCopy) before
// changing it. Pod is idempotent
// (Pod(Pod(p)) equals Pod(p)) and returns nil for nil. The
// full object is one API read away.
func Pod(p *corev1.Pod) *corev1.Pod { return slimPod(p, false) }

// slimPod is Pod; inPlace lets it intern p's label and annotation
// maps in place instead of copying them (client-go lets a transform
// mutate the object it is given: it is the informer's own, just decoded).
// Copying them was measured at a third of the transform's cost.
func slimPod(p *corev1.Pod, inPlace bool) *corev1.Pod {
	if p == nil {
		return nil
	}
	m := &p.ObjectMeta
	return &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:                       m.Name,
			GenerateName:               intern(m.GenerateName),
			Namespace:                  intern(m.Namespace),
			UID:                        m.UID,
			ResourceVersion:            m.ResourceVersion,
			Generation:                 m.Generation,
			CreationTimestamp:          m.CreationTimestamp,
			DeletionTimestamp:          m.DeletionTimestamp,
			DeletionGracePeriodSeconds: m.DeletionGracePeriodSeconds,
			Labels:                     internMap(m.Labels, "", inPlace),
			Annotations:                internMap(m.Annotations, corev1.LastAppliedConfigAnnotation, inPlace),
			OwnerReferences:            m.OwnerReferences,
		},
		Spec: corev1.PodSpec{
			InitContainers:                internContainers(p.Spec.InitContainers),
			Containers:                    internContainers(p.Spec.Containers),
			RestartPolicy:                 p.Spec.RestartPolicy,
			TerminationGracePeriodSeconds: p.Spec.TerminationGracePeriodSeconds,
			ServiceAccountName:            intern(p.Spec.ServiceAccountName),
			NodeName:                      intern(p.Spec.NodeName),
			HostNetwork:                   p.Spec.HostNetwork,
			SchedulerName:                 intern(p.Spec.SchedulerName),
		},
		Status: corev1.PodStatus{
			Phase:                 p.Status.Phase,
			Conditions:            internConditions(p.Status.Conditions),
			Message:               p.Status.Message,
			Reason:                p.Status.Reason,
			NominatedNodeName:     p.Status.NominatedNodeName,
			HostIP:                intern(p.Status.HostIP),
			HostIPs:               internHostIPs(p.Status.HostIPs),
			PodIP:                 podIP(&p.Status),
			PodIPs:                p.Status.PodIPs,
			StartTime:             p.Status.StartTime,
			InitContainerStatuses: slimStatuses(p.Status.InitContainerStatuses),
			ContainerStatuses:     slimStatuses(p.Status.ContainerStatuses),
		},
	}
}

// internMap returns m with interned keys and values and without key drop
// ("" drops nothing), nil if that leaves it empty: m itself when inPlace,
// else a copy.
func internMap(m map[string]string, drop string, inPlace bool) map[string]string {
	if drop != "" {
		if _, ok := m[drop]; ok && inPlace {
			delete(m, drop)
		}
	}
	n := len(m)
	if _, ok := m[drop]; ok && drop != "" {
		n--
	}
	if n <= 0 {
		return nil
	}
	if inPlace {
		for k, v := range m {
			// Assigning an existing key stores the key given: the
			// interned copy replaces the decoded one.
			m[intern(k)] = intern(v)
		}
		return m
	}
	out := make(map[string]string, n)
	for k, v := range m {
		if drop == "" || k != drop {
			out[intern(k)] = intern(v)
		}
	}
	return out
}

func internConditions(cs []corev1.PodCondition) []corev1.PodCondition {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.PodCondition, len(cs))
	for i, c := range cs {
		c.Type, c.Status, c.Reason = corev1.PodConditionType(intern(string(c.Type))), corev1.ConditionStatus(intern(string(c.Status))), intern(c.Reason)
		out[i] = c
	}
	return out
}

// podIP is st.PodIP, as the string of st.PodIPs[0] when it is the same
// IP (it is, by the API's rules): one copy of it a pod, not two.
func podIP(st *corev1.PodStatus) string {
	if len(st.PodIPs) > 0 && st.PodIPs[0].IP == st.PodIP {
		return st.PodIPs[0].IP
	}
	return st.PodIP
}

func slimStatuses(ss []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(ss) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(ss))
	for i := range ss {
		s := &ss[i]
		out[i] = corev1.ContainerStatus{
			Name:                 intern(s.Name),
			State:                s.State,
			LastTerminationState: s.LastTerminationState,
			Ready:                s.Ready,
			RestartCount:         s.RestartCount,
			Image:                intern(s.Image),
			ImageID:              intern(s.ImageID),
			ContainerID:          s.ContainerID,
			Started:              s.Started,
		}
		// A terminated state repeats the container's ID: one copy. (A
		// copy of the state, not the shared one, is changed.)
		if t := s.State.Terminated; t != nil && t.ContainerID == s.ContainerID && t.ContainerID != "" {
			dup := *t
			dup.ContainerID = s.ContainerID
			out[i].State.Terminated = &dup
		}
	}
	return out
}

// PodTransform is the default transform of reflector's pod caches, a
// client-go TransformFunc: [Pod] for pods, changing the given pod's label
// and annotation maps in place; other objects (tombstones such as
// DeletedFinalStateUnknown) are returned untouched. It is idempotent.
func PodTransform(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p == nil {
		return obj, nil
	}
	return slimPod(p, true), nil
}
