package main

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podView is the pod as the sidecar serves it, whatever its cache holds:
// an allow-list, so that a field added to Pod later is never served by
// accident. Secrets travel in pod specs (hub API tokens in literal
// environment values, credentials in command lines), so none of the spec
// is served but what a spawner needs to find and describe a server:
//
//   - metadata: name, generateName, namespace, uid, resourceVersion,
//     generation, creationTimestamp, deletionTimestamp,
//     deletionGracePeriodSeconds, labels, ownerReferences, and the
//     annotations but kubectl.kubernetes.io/last-applied-configuration
//     (a copy of the whole object, environment included);
//   - spec: nodeName, serviceAccountName, restartPolicy, schedulerName,
//     terminationGracePeriodSeconds, and of each (init) container its
//     name, image and ports;
//   - status: phase, conditions, reason, message, nominatedNodeName,
//     hostIP(s), podIP(s), startTime, and of each (init) container status
//     its name, state, lastState, ready, started, restartCount, image,
//     imageID and containerID.
//
// Never served: environment (env, envFrom), command and args, volumes and
// volume mounts, resources, probes, lifecycle hooks, security contexts,
// managedFields. apiVersion and kind are set. The result shares maps and
// slices with p, which is never modified.
func podView(p *corev1.Pod) *corev1.Pod {
	annotations := p.Annotations
	if _, ok := annotations[corev1.LastAppliedConfigAnnotation]; ok {
		annotations = make(map[string]string, len(p.Annotations))
		for k, v := range p.Annotations {
			if k != corev1.LastAppliedConfigAnnotation {
				annotations[k] = v
			}
		}
	}
	v := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}}
	v.Name, v.GenerateName, v.Namespace, v.UID = p.Name, p.GenerateName, p.Namespace, p.UID
	v.ResourceVersion, v.Generation, v.CreationTimestamp = p.ResourceVersion, p.Generation, p.CreationTimestamp
	v.DeletionTimestamp, v.DeletionGracePeriodSeconds = p.DeletionTimestamp, p.DeletionGracePeriodSeconds
	v.Labels, v.Annotations, v.OwnerReferences = p.Labels, annotations, p.OwnerReferences

	v.Spec.NodeName, v.Spec.ServiceAccountName, v.Spec.RestartPolicy = p.Spec.NodeName, p.Spec.ServiceAccountName, p.Spec.RestartPolicy
	v.Spec.SchedulerName, v.Spec.TerminationGracePeriodSeconds = p.Spec.SchedulerName, p.Spec.TerminationGracePeriodSeconds
	v.Spec.InitContainers, v.Spec.Containers = containerViews(p.Spec.InitContainers), containerViews(p.Spec.Containers)

	s := &p.Status
	v.Status.Phase, v.Status.Conditions, v.Status.Reason, v.Status.Message = s.Phase, s.Conditions, s.Reason, s.Message
	v.Status.NominatedNodeName, v.Status.HostIP, v.Status.HostIPs = s.NominatedNodeName, s.HostIP, s.HostIPs
	v.Status.PodIP, v.Status.PodIPs, v.Status.StartTime = s.PodIP, s.PodIPs, s.StartTime
	v.Status.InitContainerStatuses = statusViews(s.InitContainerStatuses)
	v.Status.ContainerStatuses = statusViews(s.ContainerStatuses)
	return v
}

func containerViews(cs []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, c := range cs {
		out = append(out, corev1.Container{Name: c.Name, Image: c.Image, Ports: c.Ports})
	}
	return out
}

func statusViews(ss []corev1.ContainerStatus) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for _, s := range ss {
		out = append(out, corev1.ContainerStatus{
			Name: s.Name, State: s.State, LastTerminationState: s.LastTerminationState,
			Ready: s.Ready, Started: s.Started, RestartCount: s.RestartCount,
			Image: s.Image, ImageID: s.ImageID, ContainerID: s.ContainerID,
		})
	}
	return out
}
