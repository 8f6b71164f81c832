// Package benchpod builds realistic JupyterHub user pods for benchmarks
// and tests, and creates them on an API server the way the real
// components do, so that their managedFields are the API server's own.
//
// A pod is what Zero to JupyterHub's KubeSpawner creates for a user: one
// init container (the cloud-metadata blocker) and two containers (the
// notebook and a sidecar), 32 environment variables, requests and limits,
// three volumes, nine labels, six annotations including a ~1 KB
// kubectl.kubernetes.io/last-applied-configuration, pod and container
// security contexts, tolerations and a node affinity. [RunningStatus] is
// what a kubelet writes once it runs: phase Running, five conditions, an
// init container status and two container statuses. [Create] writes the
// pod with a field manager (create) and its status with another (the
// kubelet's status update), so each pod has two managedFields entries as
// on a real cluster.
package benchpod

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Labels every pod of Pod carries (besides the per-user ones).
const (
	// Selector selects the pods of Pod.
	Selector = "component=singleuser-server"
	// NodeName is the node the pods are bound to: not the pod simulator's,
	// so that a simulator running in the same cluster leaves them alone.
	NodeName = "bench-node-0"
)

// Name is the name of pod i.
func Name(i int) string { return fmt.Sprintf("jupyter-user-%06d", i) }

// Spec is the pod spec of a JupyterHub user pod for user.
func Spec(user string) corev1.PodSpec {
	env := []corev1.EnvVar{}
	for _, kv := range [][2]string{
		{"JUPYTERHUB_API_TOKEN", "5f2c0e4b8a9d4c7f9e1b3a6d8c0f2e4a"},
		{"JPY_API_TOKEN", "5f2c0e4b8a9d4c7f9e1b3a6d8c0f2e4a"},
		{"JUPYTERHUB_CLIENT_ID", "jupyterhub-user-" + user},
		{"JUPYTERHUB_HOST", ""},
		{"JUPYTERHUB_OAUTH_CALLBACK_URL", "/user/" + user + "/oauth_callback"},
		{"JUPYTERHUB_OAUTH_ACCESS_SCOPES", `["access:servers!server=` + user + `/", "access:servers!user=` + user + `"]`},
		{"JUPYTERHUB_OAUTH_SCOPES", `["access:servers!server=` + user + `/", "access:servers!user=` + user + `"]`},
		{"JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", "[]"},
		{"JUPYTERHUB_USER", user},
		{"JUPYTERHUB_SERVER_NAME", ""},
		{"JUPYTERHUB_API_URL", "http://hub:8081/hub/api"},
		{"JUPYTERHUB_ACTIVITY_URL", "http://hub:8081/hub/api/users/" + user + "/activity"},
		{"JUPYTERHUB_BASE_URL", "/"},
		{"JUPYTERHUB_SERVICE_PREFIX", "/user/" + user + "/"},
		{"JUPYTERHUB_SERVICE_URL", "http://0.0.0.0:8888/user/" + user + "/"},
		{"JUPYTERHUB_PUBLIC_URL", "https://hub.example.org/user/" + user + "/"},
		{"JUPYTERHUB_PUBLIC_HUB_URL", "https://hub.example.org/hub/"},
		{"JUPYTERHUB_ROOT_DIR", "/home/jovyan"},
		{"JUPYTERHUB_DEFAULT_URL", "/lab"},
		{"JUPYTERHUB_DEBUG", "0"},
		{"JUPYTERHUB_DISABLE_USER_CONFIG", "1"},
		{"JUPYTER_IMAGE", "quay.io/jupyter/scipy-notebook:2026-11-02"},
		{"JUPYTER_IMAGE_SPEC", "quay.io/jupyter/scipy-notebook:2026-11-02"},
		{"JUPYTER_ENABLE_LAB", "yes"},
		{"MEM_GUARANTEE", "1073741824"},
		{"MEM_LIMIT", "4294967296"},
		{"CPU_GUARANTEE", "0.5"},
		{"CPU_LIMIT", "2.0"},
		{"NB_USER", "jovyan"},
		{"NB_UID", "1000"},
		{"GRANT_SUDO", "no"},
		{"TZ", "Etc/UTC"},
	} {
		env = append(env, corev1.EnvVar{Name: kv[0], Value: kv[1]})
	}
	res := func(reqCPU, reqMem, limCPU, limMem string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(reqCPU), corev1.ResourceMemory: resource.MustParse(reqMem)},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(limCPU), corev1.ResourceMemory: resource.MustParse(limMem)},
		}
	}
	noPrivs := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	return corev1.PodSpec{
		InitContainers: []corev1.Container{{
			Name:    "block-cloud-metadata",
			Image:   "quay.io/jupyterhub/k8s-network-tools:4.1.0",
			Command: []string{"iptables", "--append", "OUTPUT", "--protocol", "tcp", "--destination", "169.254.169.254", "--destination-port", "80", "--jump", "DROP"},
			SecurityContext: &corev1.SecurityContext{
				RunAsUser:    ptr.To(int64(0)),
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}},
			},
			Resources:                res("10m", "16Mi", "100m", "64Mi"),
			TerminationMessagePath:   "/dev/termination-log",
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy:          corev1.PullIfNotPresent,
		}},
		Containers: []corev1.Container{
			{
				Name:       "notebook",
				Image:      "quay.io/jupyter/scipy-notebook:2026-11-02",
				Args:       []string{"jupyterhub-singleuser", "--ip=0.0.0.0", "--port=8888", "--SingleUserNotebookApp.default_url=/lab"},
				WorkingDir: "/home/jovyan",
				Env:        env,
				Ports:      []corev1.ContainerPort{{Name: "notebook-port", ContainerPort: 8888, Protocol: corev1.ProtocolTCP}},
				Resources:  res("500m", "1Gi", "2", "4Gi"),
				VolumeMounts: []corev1.VolumeMount{
					{Name: "home", MountPath: "/home/jovyan"},
					{Name: "jupyter-config", MountPath: "/usr/local/etc/jupyter/jupyter_server_config.py", SubPath: "jupyter_server_config.py", ReadOnly: true},
					{Name: "dshm", MountPath: "/dev/shm"},
				},
				Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
					Command: []string{"sh", "-c", "gitpuller https://github.com/example/course-materials main materials || true"}}}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/user/" + user + "/api", Port: intstr.FromString("notebook-port")}},
					PeriodSeconds: 10, TimeoutSeconds: 3, FailureThreshold: 3, SuccessThreshold: 1,
				},
				SecurityContext:          noPrivs,
				TerminationMessagePath:   "/dev/termination-log",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy:          corev1.PullIfNotPresent,
			},
			{
				Name:  "git-sync",
				Image: "registry.k8s.io/git-sync/git-sync:v4.4.0",
				Args:  []string{"--repo=https://github.com/example/course-materials", "--root=/home/jovyan/.materials", "--period=300s", "--depth=1"},
				Env: []corev1.EnvVar{
					{Name: "GITSYNC_ONE_TIME", Value: "false"},
					{Name: "GITSYNC_MAX_FAILURES", Value: "-1"},
				},
				Resources:                res("10m", "32Mi", "200m", "128Mi"),
				VolumeMounts:             []corev1.VolumeMount{{Name: "home", MountPath: "/home/jovyan"}},
				SecurityContext:          noPrivs,
				TerminationMessagePath:   "/dev/termination-log",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy:          corev1.PullIfNotPresent,
			},
		},
		Volumes: []corev1.Volume{
			{Name: "home", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim-" + user}}},
			{Name: "jupyter-config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "user-etc-jupyter"}, DefaultMode: ptr.To(int32(0o644))}}},
			{Name: "dshm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Gi"))}}},
		},
		RestartPolicy:                 corev1.RestartPolicyOnFailure,
		TerminationGracePeriodSeconds: ptr.To(int64(1)),
		DNSPolicy:                     corev1.DNSClusterFirst,
		ServiceAccountName:            "default",
		AutomountServiceAccountToken:  ptr.To(false),
		EnableServiceLinks:            ptr.To(false),
		SchedulerName:                 "jupyterhub-user-scheduler",
		PriorityClassName:             "",
		SecurityContext:               &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1000)), RunAsGroup: ptr.To(int64(100)), FSGroup: ptr.To(int64(100))},
		Tolerations: []corev1.Toleration{
			{Key: "hub.jupyter.org/dedicated", Operator: corev1.TolerationOpEqual, Value: "user", Effect: corev1.TaintEffectNoSchedule},
			{Key: "hub.jupyter.org_dedicated", Operator: corev1.TolerationOpEqual, Value: "user", Effect: corev1.TaintEffectNoSchedule},
			{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(int64(300))},
			{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(int64(300))},
		},
		Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 100, Preference: corev1.NodeSelectorTerm{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "hub.jupyter.org/node-purpose", Operator: corev1.NodeSelectorOpIn, Values: []string{"user"}}}}}},
		}},
	}
}

// Pod is user pod i in namespace ns, bound to NodeName, as created.
func Pod(ns string, i int) *corev1.Pod {
	user := fmt.Sprintf("user-%06d", i)
	spec := Spec(user)
	spec.NodeName = NodeName
	p := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      Name(i),
			Namespace: ns,
			Labels: map[string]string{
				"app":                                "jupyterhub",
				"component":                          "singleuser-server",
				"release":                            "jhub",
				"chart":                              "jupyterhub-4.1.0",
				"heritage":                           "jupyterhub",
				"hub.jupyter.org/network-access-hub": "true",
				"hub.jupyter.org/servername":         "",
				"hub.jupyter.org/username":           user,
				"app.kubernetes.io/managed-by":       "kubespawner",
			},
			Annotations: map[string]string{
				"hub.jupyter.org/username":                       user,
				"hub.jupyter.org/servername":                     "",
				"hub.jupyter.org/start-time":                     "2026-12-01T09:00:00Z",
				"cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
				"prometheus.io/scrape":                           "false",
			},
		},
		Spec: spec,
	}
	p.Annotations[corev1.LastAppliedConfigAnnotation] = lastApplied(p)
	return p
}

// lastApplied is what kubectl apply would have stored for p: about 1 KB of
// JSON (its metadata, and its spec without the long environment).
func lastApplied(p *corev1.Pod) string {
	c := p.DeepCopy()
	c.Annotations = nil
	for i := range c.Spec.Containers {
		c.Spec.Containers[i].Env = nil
		c.Spec.Containers[i].Lifecycle = nil
		c.Spec.Containers[i].ReadinessProbe = nil
		c.Spec.Containers[i].Resources = corev1.ResourceRequirements{}
	}
	c.Spec.InitContainers = nil
	c.Spec.Affinity = nil
	c.Spec.Tolerations = nil
	b, _ := json.Marshal(c)
	s := string(b)
	if len(s) > 1100 {
		s = s[:1100]
	}
	return s
}

// RunningStatus is the status a kubelet writes for a running, ready p.
func RunningStatus(p *corev1.Pod, i int, started time.Time) corev1.PodStatus {
	t := metav1.NewTime(started.Truncate(time.Second))
	ip := fmt.Sprintf("10.%d.%d.%d", 64+(i>>16)&63, (i>>8)&255, i&255)
	cond := func(ty corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: ty, Status: corev1.ConditionTrue, LastTransitionTime: t}
	}
	running := func(c corev1.Container, n int) corev1.ContainerStatus {
		return corev1.ContainerStatus{
			Name: c.Name, Ready: true, Started: ptr.To(true), Image: c.Image,
			ImageID:     c.Image[:strings.LastIndex(c.Image, ":")] + "@sha256:" + strings.Repeat("3f9a", 16),
			ContainerID: fmt.Sprintf("containerd://%064x", i*4+n),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t}},
		}
	}
	init := p.Spec.InitContainers[0]
	return corev1.PodStatus{
		Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers), cond(corev1.PodInitialized), cond(corev1.PodReady),
			cond(corev1.ContainersReady), cond(corev1.PodScheduled),
		},
		HostIP:    "192.0.2.10",
		HostIPs:   []corev1.HostIP{{IP: "192.0.2.10"}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &t,
		QOSClass:  corev1.PodQOSBurstable,
		InitContainerStatuses: []corev1.ContainerStatus{{
			Name: init.Name, Ready: true, Started: ptr.To(false), Image: init.Image,
			ImageID:     "quay.io/jupyterhub/k8s-network-tools@sha256:" + strings.Repeat("9c1e", 16),
			ContainerID: fmt.Sprintf("containerd://%064x", i*4+3),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: t, FinishedAt: t, ContainerID: fmt.Sprintf("containerd://%064x", i*4+3)}},
		}},
		ContainerStatuses: []corev1.ContainerStatus{running(p.Spec.Containers[0], 0), running(p.Spec.Containers[1], 1)},
	}
}

// Realistic is Pod(ns, i) with RunningStatus and a made-up uid,
// resourceVersion, creationTimestamp and managedFields of the size the
// API server writes: for unit tests that need no API server.
func Realistic(ns string, i int) *corev1.Pod {
	p := Pod(ns, i)
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	p.UID = "8a3f5c1e-2b7d-4e9a-b6c4-0d1e2f3a4b5c"
	p.ResourceVersion = "123456"
	p.CreationTimestamp = metav1.NewTime(now)
	p.Status = RunningStatus(p, i, now)
	spec, _ := json.Marshal(p.Spec)
	status, _ := json.Marshal(p.Status)
	p.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "jupyterhub", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &p.CreationTimestamp,
			FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: spec}},
		{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &p.CreationTimestamp,
			FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: status}, Subresource: "status"},
	}
	return p
}

// Create creates pods [from, to) in namespace ns with workers parallel
// writers: a create with field manager "jupyterhub", then the status
// update with field manager "kubelet" (as a kubelet does), so their
// managedFields are the API server's. Pods that exist are updated to the
// running status only. progress, if set, is called with the count done
// every 1,000 pods.
func Create(ctx context.Context, client kubernetes.Interface, ns string, from, to, workers int, progress func(done int)) error {
	var (
		wg    sync.WaitGroup
		done  atomic.Int64
		first error
		once  sync.Once
	)
	work := make(chan int)
	started := time.Now()
	for range workers {
		wg.Go(func() {
			for i := range work {
				if err := createOne(ctx, client, ns, i, started); err != nil {
					once.Do(func() { first = err })
					continue
				}
				if n := done.Add(1); progress != nil && n%1000 == 0 {
					progress(int(n))
				}
			}
		})
	}
loop:
	for i := from; i < to; i++ {
		select {
		case work <- i:
		case <-ctx.Done():
			break loop
		}
	}
	close(work)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func createOne(ctx context.Context, client kubernetes.Interface, ns string, i int, started time.Time) error {
	pods := client.CoreV1().Pods(ns)
	want := Pod(ns, i)
	var created *corev1.Pod
	var err error
	for attempt := 0; ; attempt++ {
		created, err = pods.Create(ctx, want, metav1.CreateOptions{FieldManager: "jupyterhub"})
		if err == nil || attempt >= 5 || ctx.Err() != nil {
			break
		}
		if apierrors.IsAlreadyExists(err) {
			created, err = pods.Get(ctx, want.Name, metav1.GetOptions{})
			if err == nil && created.Status.Phase == corev1.PodRunning {
				return nil
			}
			break
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("benchpod: create %s/%s: %w", ns, want.Name, err)
	}
	for attempt := 0; ; attempt++ {
		created.Status = RunningStatus(created, i, started)
		_, err = pods.UpdateStatus(ctx, created, metav1.UpdateOptions{FieldManager: "kubelet"})
		if err == nil || attempt >= 5 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		if c, gerr := pods.Get(ctx, want.Name, metav1.GetOptions{}); gerr == nil {
			created = c
		}
	}
	if err != nil {
		return fmt.Errorf("benchpod: status of %s/%s: %w", ns, want.Name, err)
	}
	return nil
}
