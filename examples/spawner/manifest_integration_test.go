//go:build integration

package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/spawner"
)

// hubPod is the start body a hub sends (the class's get_start_body):
// the pod as KubeSpawner builds it, a claim and a Service of the hub's
// names.
func hubPod(claim, service string) map[string]any {
	return map[string]any{
		"pod": map[string]any{
			"metadata": map[string]any{
				"labels":      map[string]string{"component": "singleuser-server", "hub.jupyter.org/servername": ""},
				"annotations": map[string]string{"hub.jupyter.org/username": "Nina"},
			},
			"spec": map[string]any{
				"containers": []any{map[string]any{
					"name": "notebook", "image": "example.org/singleuser:3.0", "imagePullPolicy": "IfNotPresent",
					"command": []string{"jupyterhub-singleuser"}, "args": []string{"--ip=0.0.0.0", "--port=8888"},
					"workingDir": "/home/jovyan",
					"env": []any{
						map[string]string{"name": "JUPYTERHUB_API_TOKEN", "value": "token-of-nina"},
						map[string]string{"name": "JUPYTERHUB_SERVICE_PREFIX", "value": "/user/nina/"},
					},
					"ports": []any{map[string]any{"name": "notebook-port", "containerPort": 8888}},
					"resources": map[string]any{
						"requests": map[string]string{"cpu": "100m", "memory": "256Mi"},
						"limits":   map[string]string{"cpu": "2", "memory": "1Gi"},
					},
					"volumeMounts": []any{
						map[string]string{"name": "home", "mountPath": "/home/jovyan"},
						map[string]string{"name": "scratch", "mountPath": "/tmp"},
					},
					"securityContext": map[string]any{"runAsUser": 1000, "runAsGroup": 100, "allowPrivilegeEscalation": false},
				}},
				"volumes": []any{
					map[string]any{"name": "home", "persistentVolumeClaim": map[string]string{"claimName": claim}},
					map[string]any{"name": "scratch", "emptyDir": map[string]any{}},
				},
				"nodeSelector":                 map[string]string{"hub.jupyter.org/node-purpose": "user"},
				"tolerations":                  []any{map[string]string{"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}},
				"securityContext":              map[string]any{"fsGroup": 100},
				"automountServiceAccountToken": false,
				"restartPolicy":                "OnFailure",
			},
		},
		"claims": []any{map[string]any{
			"metadata": map[string]any{"name": claim, "labels": map[string]string{"component": "singleuser-storage"}},
			"spec": map[string]any{"accessModes": []string{"ReadWriteOnce"},
				"resources": map[string]any{"requests": map[string]string{"storage": "2Gi"}}},
		}},
		"services": []any{map[string]any{
			"metadata": map[string]any{"name": service},
			"spec":     map[string]any{"ports": []any{map[string]any{"name": "http", "port": 8888, "targetPort": 8888}}},
		}},
	}
}

// TestStartWithTheHubsManifest (issue 22, item 1): the hub's pod lands on
// the API server as sent (resources, env, command and args, node
// selector, tolerations, an emptyDir and the claim mounted), with the
// service's own metadata added: its name from the user, the namespace,
// its labels and the user's key. The body's claim and Service are the
// ones created (the service's --storage-*/--services-enabled were the
// defaults, and the body had its own); the Service selects the pod and is
// owned by it.
func TestStartWithTheHubsManifest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.start(e.storageConfig())
	user, claim, svcName := "Nina", "claim-nina", "jupyter-nina"
	name := e.podName(user)

	r := d.do(http.MethodPost, "/users/"+user+"/server", hubPod(claim, svcName))
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	res := r.json(t)
	assert.Equal(t, "running", res["state"])
	cl, obj := objects(t, res, "claims"), objects(t, res, "objects")
	require.Len(t, cl, 1, "%v", res)
	assert.Equal(t, claim, cl[0]["name"])
	require.Len(t, obj, 1, "%v", res)
	assert.Equal(t, svcName, obj[0]["name"])

	pod := e.pod(name)
	require.NotNil(t, pod)
	assert.Equal(t, e.ns, pod.Namespace)
	assert.Empty(t, pod.OwnerReferences)
	assert.Equal(t, map[string]string{"component": "singleuser-server", "hub.jupyter.org/servername": "",
		spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: "default", spawner.LabelKeyHash: spawner.KeyHash(user)}, pod.Labels)
	assert.Equal(t, "Nina", pod.Annotations["hub.jupyter.org/username"])
	assert.Equal(t, user, pod.Annotations[spawner.AnnotationKey])
	assert.NotEmpty(t, pod.Annotations[spawner.AnnotationStartID])
	assert.Len(t, pod.Annotations, 3)

	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]
	assert.Equal(t, "example.org/singleuser:3.0", c.Image, "the hub's image, not --image")
	assert.Equal(t, corev1.PullIfNotPresent, c.ImagePullPolicy)
	assert.Equal(t, []string{"jupyterhub-singleuser"}, c.Command)
	assert.Equal(t, []string{"--ip=0.0.0.0", "--port=8888"}, c.Args)
	assert.Equal(t, "/home/jovyan", c.WorkingDir)
	assert.Equal(t, []corev1.EnvVar{{Name: "JUPYTERHUB_API_TOKEN", Value: "token-of-nina"}, {Name: "JUPYTERHUB_SERVICE_PREFIX", Value: "/user/nina/"}}, c.Env)
	assert.Equal(t, []corev1.ContainerPort{{Name: "notebook-port", ContainerPort: 8888, Protocol: corev1.ProtocolTCP}}, c.Ports)
	for res, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "100m", corev1.ResourceMemory: "256Mi"} {
		q := c.Resources.Requests[res]
		assert.Zero(t, q.Cmp(resource.MustParse(want)), "request %s: %s", res, q.String())
	}
	for res, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "2", corev1.ResourceMemory: "1Gi"} {
		q := c.Resources.Limits[res]
		assert.Zero(t, q.Cmp(resource.MustParse(want)), "limit %s: %s", res, q.String())
	}
	assert.Equal(t, []corev1.VolumeMount{{Name: "home", MountPath: "/home/jovyan"}, {Name: "scratch", MountPath: "/tmp"}}, c.VolumeMounts,
		"the hub's mounts, nothing of --storage-mount-path added")
	assert.Equal(t, &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](100), AllowPrivilegeEscalation: ptr.To(false)}, c.SecurityContext)
	assert.Equal(t, []corev1.Volume{
		{Name: "home", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}, pod.Spec.Volumes)
	assert.Equal(t, map[string]string{"hub.jupyter.org/node-purpose": "user"}, pod.Spec.NodeSelector)
	assert.Contains(t, pod.Spec.Tolerations, corev1.Toleration{Key: "hub.jupyter.org/dedicated", Operator: corev1.TolerationOpEqual, Value: "user", Effect: corev1.TaintEffectNoSchedule})
	assert.Equal(t, ptr.To[int64](100), pod.Spec.SecurityContext.FSGroup)
	assert.Equal(t, ptr.To(false), pod.Spec.AutomountServiceAccountToken)
	assert.Equal(t, corev1.RestartPolicyOnFailure, pod.Spec.RestartPolicy)

	pvc := e.claim(claim)
	require.NotNil(t, pvc)
	assert.Equal(t, types.UID(cl[0]["uid"].(string)), pvc.UID)
	assert.Equal(t, "singleuser-storage", pvc.Labels["component"])
	assert.Equal(t, "default", pvc.Labels[spawner.LabelInstance])
	assert.Equal(t, user, pvc.Annotations[spawner.AnnotationKey])
	assert.Equal(t, "2Gi", pvc.Spec.Resources.Requests.Storage().String(), "the hub's size, not --storage-capacity")
	assert.Nil(t, e.claim(claimNameOf(t, user)), "the service's default claim is not made: the body had claims")

	svc := e.service(svcName)
	require.NotNil(t, svc)
	assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)), "the service's selector selects the pod")
	require.Len(t, svc.OwnerReferences, 1)
	assert.Equal(t, pod.UID, svc.OwnerReferences[0].UID)
	assert.Nil(t, e.service(name), "the service's default Service is not made: the body had services")

	d.stopUser(user)
	assert.Nil(t, e.service(svcName), "the stop deleted the hub's Service")
	assert.NotNil(t, e.claim(claim), "and kept the claim")
}

// nothingOf checks that the API server has no pod, claim or Service of
// the test's namespace, and that d has no row for user.
func (e *env) nothingOf(d *demo, user string) {
	e.t.Helper()
	ctx := context.Background()
	pods, err := e.direct.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	assert.Empty(e.t, pods.Items, "no pod")
	claims, err := e.direct.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	assert.Empty(e.t, claims.Items, "no claim")
	svcs, err := e.direct.CoreV1().Services(e.ns).List(ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	assert.Empty(e.t, svcs.Items, "no Service")
	state, _ := d.row(user)
	assert.Empty(e.t, state, "no row")
}

// TestRefusedStartsCreateNothing: a start the pod policy refuses is a 403
// {"error","field","reason":"policy"}; a malformed one (an unknown field,
// a field only the service sets) a 400 naming the field. Neither creates
// a pod, a claim or a Service, nor a row: the user's next start runs. An
// operator who allows the field lets the same start through.
func TestRefusedStartsCreateNothing(t *testing.T) {
	t.Parallel()
	e, d := newDemo(t)
	user := "Nina"
	hostPath := hubPod("claim-nina", "jupyter-nina")
	spec := hostPath["pod"].(map[string]any)["spec"].(map[string]any)
	spec["volumes"] = append(spec["volumes"].([]any), map[string]any{"name": "docker", "hostPath": map[string]string{"path": "/var/run/docker.sock"}})

	for _, path := range []string{"/users/" + user + "/server", "/users/" + user + "/server?progress=sse"} {
		r := d.do(http.MethodPost, path, hostPath)
		require.Equal(t, http.StatusForbidden, r.code, "%s: %s", path, r.body)
		m := r.json(t)
		assert.Equal(t, "policy", m["reason"])
		assert.Equal(t, "spec.volumes[2].hostPath", m["field"])
		assert.Contains(t, m["error"], "/var/run/docker.sock")
		assert.Equal(t, "failed", m["state"])
		e.nothingOf(d, user)
	}

	for _, c := range []struct {
		field string
		set   func(map[string]any)
	}{
		{"spec.containers[0].imagePullPolice", func(b map[string]any) {
			b["pod"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["imagePullPolice"] = "Always"
		}},
		{"metadata.name", func(b map[string]any) { b["pod"].(map[string]any)["metadata"].(map[string]any)["name"] = "my-own-name" }},
		{"metadata.namespace", func(b map[string]any) {
			b["pod"].(map[string]any)["metadata"].(map[string]any)["namespace"] = "kube-system"
		}},
		{"metadata.finalizers", func(b map[string]any) {
			b["pod"].(map[string]any)["metadata"].(map[string]any)["finalizers"] = []string{"x.example/y"}
		}},
		{"services[0].spec.selector", func(b map[string]any) {
			b["services"].([]any)[0].(map[string]any)["spec"].(map[string]any)["selector"] = map[string]string{"component": "hub"}
		}},
	} {
		body := hubPod("claim-nina", "jupyter-nina")
		c.set(body)
		r := d.do(http.MethodPost, "/users/"+user+"/server", body)
		require.Equal(t, http.StatusBadRequest, r.code, "%s: %s", c.field, r.body)
		m := r.json(t)
		assert.Equal(t, "invalid_request", m["reason"])
		assert.Equal(t, c.field, m["field"], "%s", r.body)
		e.nothingOf(d, user)
	}

	// The operator allows what the policy refused: the same start runs.
	d.close()
	cfg := e.config(nil)
	cfg.PodPolicy = PodPolicy{AllowedHostPaths: []string{"/var/run"}}
	d = e.start(cfg)
	r := d.do(http.MethodPost, "/users/"+user+"/server", hostPath)
	require.Equal(t, http.StatusOK, r.code, "%s", r.body)
	assert.Equal(t, "/var/run/docker.sock", e.pod(e.podName(user)).Spec.Volumes[2].HostPath.Path)
	d.stopUser(user)
}

// TestPodSecurityAdmissionIsTheSecondLine: the namespace enforces Pod
// Security baseline; the operator loosened the service's policy to let
// hostPath volumes through (privileged containers would not do: this
// kube-apiserver runs without --allow-privileged, its validation refuses
// them before admission). The API server refuses the pod: the start fails
// clearly (422, reason rejected: spawner.ErrRejected, with the API
// server's message) and leaves nothing behind, not even the claim and the
// Service it asked for, nor a row: the user's next, compliant, start runs.
func TestPodSecurityAdmissionIsTheSecondLine(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	ns, err := e.direct.CoreV1().Namespaces().Get(ctx, e.ns, metav1.GetOptions{})
	require.NoError(t, err)
	ns.Labels["pod-security.kubernetes.io/enforce"] = "baseline"
	_, err = e.direct.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
	require.NoError(t, err)
	// Admission reads namespaces from its informer: wait until it
	// enforces the label (a server-side dry run goes through admission
	// and creates nothing).
	probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "psa-probe"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "example.org/x:1"}},
		Volumes:    []corev1.Volume{{Name: "node", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}}}}}
	var refused error
	require.Eventually(t, func() bool {
		_, refused = e.direct.CoreV1().Pods(e.ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return refused != nil
	}, time.Minute, 20*time.Millisecond, "Pod Security Admission enforces baseline in %s", e.ns)
	require.True(t, apierrors.IsForbidden(refused), "refused by admission: %v", refused)

	cfg := e.config(nil)
	cfg.PodPolicy = PodPolicy{AllowHostPath: true}
	d := e.start(cfg)
	user := "Nina"
	// With the user's claim: a first start the API server refuses leaves
	// no new, empty claim either (the pod's dry run comes first).
	body := hubPod("claim-nina", "jupyter-nina")
	spec := body["pod"].(map[string]any)["spec"].(map[string]any)
	logs := map[string]any{"name": "home", "hostPath": map[string]string{"path": "/var/log"}}
	spec["volumes"] = []any{logs, map[string]any{"name": "scratch", "emptyDir": map[string]any{}}}

	for _, path := range []string{"/users/" + user + "/server", "/users/" + user + "/server?progress=sse&cancelOnDisconnect=true"} {
		var m map[string]any
		if strings.Contains(path, "sse") {
			evs := d.sse(http.MethodPost, path, body)
			require.Equal(t, "result", evs[len(evs)-1].name)
			m = response{body: []byte(evs[len(evs)-1].data)}.json(t)
			assert.Equal(t, float64(http.StatusUnprocessableEntity), m["status"])
		} else {
			r := d.do(http.MethodPost, path, body)
			require.Equal(t, http.StatusUnprocessableEntity, r.code, "%s", r.body)
			m = r.json(t)
		}
		assert.Equal(t, "failed", m["state"])
		assert.Equal(t, "rejected", m["reason"], "%v", m)
		assert.Contains(t, m["error"], `violates PodSecurity "baseline`, "the API server's message")
		assert.Contains(t, m["error"], "hostPath")
		e.nothingOf(d, user)
	}
	assert.Contains(t, metric(t, d, "kubespawn_spawner_starts_total"), `kubespawn_spawner_starts_total{result="rejected",spawner="default"} 2`)

	delete(logs, "hostPath")
	logs["emptyDir"] = map[string]any{}
	r := d.do(http.MethodPost, "/users/"+user+"/server", body)
	require.Equal(t, http.StatusOK, r.code, "a compliant start: %s", r.body)
	d.stopUser(user)
}
