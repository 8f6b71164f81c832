package spawner

import corev1 "k8s.io/api/core/v1"

// buildPodForTest builds the pod Start would create for req.
func (s *Spawner) buildPodForTest(req Request) (*corev1.Pod, error) {
	pod, _, err := s.buildPod(req)
	return pod, err
}
