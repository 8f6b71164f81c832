package reflector

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationLastApplied is the annotation kubectl apply writes: a JSON copy
// of the whole object as last applied (often a kilobyte or more), which
// the slim pod view drops.
const AnnotationLastApplied = corev1.LastAppliedConfigAnnotation

// SlimPod returns the slim view of p that pod caches hold by default (see
// [Options.FullPods]): exactly what the packages of this repository read
// of a pod (spawner, events, the sweeper, the sidecar and the demo spawner
// service), every field the API server lets pods be selected by, and
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
// and the scope's field selector ([podFields]).
//
// The result is a new Pod that shares the kept maps, slices and pointers
// with p: copy it (DeepCopy) before changing it. SlimPod is idempotent
// (SlimPod(SlimPod(p)) equals SlimPod(p)) and returns nil for nil. The
// full object is one API read away: Factory.Client().CoreV1().Pods(ns).Get.
func SlimPod(p *corev1.Pod) *corev1.Pod {
	if p == nil {
		return nil
	}
	m := &p.ObjectMeta
	return &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:                       m.Name,
			GenerateName:               m.GenerateName,
			Namespace:                  m.Namespace,
			UID:                        m.UID,
			ResourceVersion:            m.ResourceVersion,
			Generation:                 m.Generation,
			CreationTimestamp:          m.CreationTimestamp,
			DeletionTimestamp:          m.DeletionTimestamp,
			DeletionGracePeriodSeconds: m.DeletionGracePeriodSeconds,
			Labels:                     m.Labels,
			Annotations:                slimAnnotations(m.Annotations),
			OwnerReferences:            m.OwnerReferences,
		},
		Spec: corev1.PodSpec{
			InitContainers:                slimContainers(p.Spec.InitContainers),
			Containers:                    slimContainers(p.Spec.Containers),
			RestartPolicy:                 p.Spec.RestartPolicy,
			TerminationGracePeriodSeconds: p.Spec.TerminationGracePeriodSeconds,
			ServiceAccountName:            p.Spec.ServiceAccountName,
			NodeName:                      p.Spec.NodeName,
			HostNetwork:                   p.Spec.HostNetwork,
			SchedulerName:                 p.Spec.SchedulerName,
		},
		Status: corev1.PodStatus{
			Phase:                 p.Status.Phase,
			Conditions:            p.Status.Conditions,
			Message:               p.Status.Message,
			Reason:                p.Status.Reason,
			NominatedNodeName:     p.Status.NominatedNodeName,
			HostIP:                p.Status.HostIP,
			HostIPs:               p.Status.HostIPs,
			PodIP:                 p.Status.PodIP,
			PodIPs:                p.Status.PodIPs,
			StartTime:             p.Status.StartTime,
			InitContainerStatuses: slimStatuses(p.Status.InitContainerStatuses),
			ContainerStatuses:     slimStatuses(p.Status.ContainerStatuses),
		},
	}
}

// slimAnnotations drops the last-applied-configuration annotation; a map
// without it is shared as it is.
func slimAnnotations(a map[string]string) map[string]string {
	if _, ok := a[AnnotationLastApplied]; !ok {
		return a
	}
	if len(a) == 1 {
		return nil
	}
	out := make(map[string]string, len(a)-1)
	for k, v := range a {
		if k != AnnotationLastApplied {
			out[k] = v
		}
	}
	return out
}

func slimContainers(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i := range cs {
		out[i] = corev1.Container{Name: cs[i].Name, Image: cs[i].Image, Ports: cs[i].Ports}
	}
	return out
}

func slimStatuses(ss []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(ss) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(ss))
	for i := range ss {
		s := &ss[i]
		out[i] = corev1.ContainerStatus{
			Name:                 s.Name,
			State:                s.State,
			LastTerminationState: s.LastTerminationState,
			Ready:                s.Ready,
			RestartCount:         s.RestartCount,
			Image:                s.Image,
			ImageID:              s.ImageID,
			ContainerID:          s.ContainerID,
			Started:              s.Started,
		}
	}
	return out
}

// SlimPodTransform is the default transform of pod caches, a client-go
// TransformFunc: [SlimPod] for pods; other objects (tombstones such as
// DeletedFinalStateUnknown) are returned untouched. It is idempotent.
func SlimPodTransform(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p == nil {
		return obj, nil
	}
	return SlimPod(p), nil
}
