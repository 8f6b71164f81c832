package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kubespawn/kubespawn/spawner"
)

// unitServer is a Server as far as request() needs one: its Config.
func unitServer(cfg Config) *Server {
	cfg.Namespace, cfg.Instance, cfg.Image = "users", "default", "example.org/default:1"
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Storage != nil {
		st, err := cfg.Storage.withDefaults()
		if err != nil {
			panic(err)
		}
		cfg.Storage = &st
	}
	return &Server{cfg: cfg}
}

// startRequest decodes body and builds alice's request.
func startRequest(t *testing.T, s *Server, body string) (spawner.Request, *refusal) {
	t.Helper()
	b, r := decodeStartBody([]byte(body))
	if r != nil {
		return spawner.Request{}, r
	}
	return s.request("alice", "kubespawn-default-x-alice-y", b)
}

const minimalPod = `"spec":{"containers":[{"name":"notebook","image":"example.org/nb:1"}]}`

// TestStartBodyRefusals: a body the service cannot take as is (unknown or
// misspelt or duplicate keys, wrong types, what only the service or the
// API server sets) is a 400 invalid_request naming the field; one that
// conflicts with forced storage is a 403. Nothing is created for any: the
// refusal comes before the user's row.
func TestStartBodyRefusals(t *testing.T) {
	t.Parallel()
	s := unitServer(Config{})
	for _, c := range []struct{ body, field string }{
		{`{"pod":{` + minimalPod + `},"x":1}`, "x"},
		{`{"pod":{"spec":{"containers":[{"name":"notebook","image":"x","imagePullPolice":"Always"}]}}}`, "spec.containers[0].imagePullPolice"},
		{`{"pod":{"spec":{"containers":[{"name":"notebook","Image":"x"}]}}}`, "spec.containers[0].Image"},
		{`{"pod":{"spec":{"containers":[{"name":"a","image":"x"}],"containers":[]}}}`, "spec.containers"},
		{`{"pod":{"spec":{"containers":[{"name":"a","image":"x"}],"hostNetwork":"yes"}}}`, "spec.hostNetwork"},
		{`{"pod":{"kind":"Pod",` + minimalPod + `}}`, "kind"},
		{`{"pod":{"status":{},` + minimalPod + `}}`, "status"},
		{`{"pod":{"metadata":{"name":"mine"},` + minimalPod + `}}`, "metadata.name"},
		{`{"pod":{"metadata":{"generateName":"mine-"},` + minimalPod + `}}`, "metadata.generateName"},
		{`{"pod":{"metadata":{"namespace":"kube-system"},` + minimalPod + `}}`, "metadata.namespace"},
		{`{"pod":{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":"x","uid":"1"}]},` + minimalPod + `}}`, "metadata.ownerReferences"},
		{`{"pod":{"metadata":{"finalizers":["example.org/keep"]},` + minimalPod + `}}`, "metadata.finalizers"},
		{`{"pod":{"metadata":{"uid":"1"},` + minimalPod + `}}`, "metadata.uid"},
		{`{"pod":{"metadata":{"labels":{"kubespawn.io/instance":"other"}},` + minimalPod + `}}`, "metadata.labels[kubespawn.io/instance]"},
		{`{"pod":{"metadata":{"labels":{"app.kubernetes.io/managed-by":"me"}},` + minimalPod + `}}`, "metadata.labels[app.kubernetes.io/managed-by]"},
		{`{"pod":{"metadata":{"annotations":{"kubespawn.io/key":"bob"}},` + minimalPod + `}}`, "metadata.annotations[kubespawn.io/key]"},
		{`{"annotations":{"kubespawn.io/key":"bob"}}`, "annotations[kubespawn.io/key]"},
		{`{"pod":{"metadata":{"annotations":{"a":"1"}},` + minimalPod + `},"annotations":{"a":"2"}}`, "annotations[a]"},
		{`{"pod":{"metadata":{}}}`, "spec"},
		{`{"pod":{"spec":{}}}`, "spec.containers"},
		{`{"image":"x","pod":{` + minimalPod + `}}`, "image"},
		{`{"pod":{` + minimalPod + `},"claims":[null]}`, "claims[0]"},
		{`{"pod":{` + minimalPod + `},"claims":[{"metadata":{"name":"c","namespace":"other"}}]}`, "claims[0].metadata.namespace"},
		{`{"pod":{` + minimalPod + `},"claims":[{"metadata":{"name":"c","labels":{"kubespawn.io/key-hash":"x"}}}]}`, "claims[0].metadata.labels[kubespawn.io/key-hash]"},
		{`{"pod":{` + minimalPod + `},"claims":[{"kind":"Secret","metadata":{"name":"c"}}]}`, "claims[0].kind"},
		{`{"pod":{` + minimalPod + `},"claims":[{"metadata":{"name":"c"},"status":{"phase":"Bound"}}]}`, "claims[0].status"},
		{`{"pod":{` + minimalPod + `},"claims":[{"metadata":{"name":"c"},"spec":{"storageClass":"x"}}]}`, "claims[0].spec.storageClass"},
		{`{"pod":{` + minimalPod + `},"services":[{"metadata":{"name":"s"},"spec":{"selector":{"app":"other"}}}]}`, "services[0].spec.selector"},
		{`{"pod":{` + minimalPod + `},"services":[{"metadata":{"name":"s","ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":"x","uid":"1"}]}}]}`, "services[0].metadata.ownerReferences"},
		{`{"pod":{` + minimalPod + `},"services":[{"metadata":{"name":"s","finalizers":["x/y"]}}]}`, "services[0].metadata.finalizers"},
	} {
		_, r := startRequest(t, s, c.body)
		require.NotNil(t, r, c.body)
		assert.Equal(t, http.StatusBadRequest, r.status, c.body)
		assert.Equal(t, reasonInvalid, r.reason, c.body)
		assert.Equal(t, c.field, r.errs[0].Field, "%s: %s", c.body, r.Error())
		assert.NotEmpty(t, r.Error())
	}
	_, r := startRequest(t, s, `{"pod":`)
	require.NotNil(t, r)
	assert.Equal(t, http.StatusBadRequest, r.status, "a syntax error")

	// Every strict problem is listed.
	_, r = startRequest(t, s, `{"pod":{"spec":{"containers":[{"name":"a","image":"x","imagePullPolice":"Always","comand":["x"]}]}},"claim":[]}`)
	require.NotNil(t, r)
	var fields []string
	for _, e := range r.errs {
		fields = append(fields, e.Field)
	}
	assert.ElementsMatch(t, []string{"spec.containers[0].imagePullPolice", "spec.containers[0].comand", "claim"}, fields)

	// The policy's refusals are 403s.
	_, r = startRequest(t, s, `{"pod":{"spec":{"containers":[{"name":"a","image":"x"}],"volumes":[{"name":"n","hostPath":{"path":"/"}}]}}}`)
	require.NotNil(t, r)
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Equal(t, reasonPolicy, r.reason)
	assert.Equal(t, "spec.volumes[0].hostPath", r.errs[0].Field)
	_, r = startRequest(t, unitServer(Config{PodPolicy: PodPolicy{AllowHostPath: true}}),
		`{"pod":{"spec":{"containers":[{"name":"a","image":"x"}],"volumes":[{"name":"n","hostPath":{"path":"/"}}]}}}`)
	assert.Nil(t, r, "allowed by the operator")
}

// TestStartBodyIsTheHubsPod: with "pod" the hub's labels, annotations
// and spec are the request's as sent (the service's --image and --port do
// not apply); the service keeps the namespace and the user's key; the
// body's "claims" and "services" replace the service's defaults, present
// even when empty; the old body still gets the service's pod.
func TestStartBodyIsTheHubsPod(t *testing.T) {
	t.Parallel()
	st := &Storage{Capacity: resource.MustParse("1Gi")}
	s := unitServer(Config{Storage: st, ServicesEnabled: true})
	body := `{"pod":{"metadata":{"labels":{"component":"singleuser-server"},"annotations":{"hub.jupyter.org/username":"alice"}},` +
		`"spec":{"containers":[{"name":"notebook","image":"example.org/nb:2","args":["jupyterhub-singleuser"],"ports":[{"name":"notebook-port","containerPort":9999}]}],` +
		`"volumes":[{"name":"scratch","emptyDir":{}}]}},` +
		`"claims":[{"metadata":{"name":"claim-alice","labels":{"component":"singleuser-storage"}},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"5Gi"}}}}],` +
		`"services":[{"metadata":{"name":"jupyter-alice"},"spec":{"ports":[{"name":"http","port":9999}]}}]}`
	req, r := startRequest(t, s, body)
	require.Nil(t, r, "%v", r)
	assert.Equal(t, "alice", req.Key)
	assert.Equal(t, "users", req.Namespace)
	assert.Equal(t, map[string]string{"component": "singleuser-server"}, req.Labels)
	assert.Equal(t, map[string]string{"hub.jupyter.org/username": "alice"}, req.Annotations)
	require.Len(t, req.Spec.Containers, 1)
	assert.Equal(t, "example.org/nb:2", req.Spec.Containers[0].Image, "not --image")
	assert.Equal(t, int32(9999), req.Spec.Containers[0].Ports[0].ContainerPort, "not --port")
	assert.Empty(t, req.Spec.Containers[0].VolumeMounts, "the hub decides the storage: the service's claim is not mounted")
	assert.Equal(t, []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}, req.Spec.Volumes)
	require.Len(t, req.Claims, 1)
	assert.Equal(t, "claim-alice", req.Claims[0].Name)
	assert.Equal(t, "5Gi", req.Claims[0].Spec.Resources.Requests.Storage().String())
	require.Len(t, req.Services, 1)
	assert.Equal(t, "jupyter-alice", req.Services[0].Name)
	assert.Empty(t, req.Services[0].Spec.Selector, "the library selects the pod")

	// Empty lists: no claim, no Service, whatever the flags.
	req, r = startRequest(t, s, `{"pod":{`+minimalPod+`},"claims":[],"services":[]}`)
	require.Nil(t, r, "%v", r)
	assert.Empty(t, req.Claims)
	assert.Empty(t, req.Services)
	assert.Empty(t, req.Spec.Volumes)

	// No keys (or null): the flags are the defaults, with the hub's pod too.
	for _, b := range []string{`{"pod":{` + minimalPod + `}}`, `{"pod":{` + minimalPod + `},"claims":null,"services":null}`} {
		req, r = startRequest(t, s, b)
		require.Nil(t, r, "%v", r)
		claim := claimName(t, s, "alice")
		require.Len(t, req.Claims, 1, b)
		assert.Equal(t, claim, req.Claims[0].Name)
		assert.Equal(t, []corev1.Volume{{Name: homeVolume, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}, req.Spec.Volumes)
		assert.Equal(t, []corev1.VolumeMount{{Name: homeVolume, MountPath: DefaultMountPath}}, req.Spec.Containers[0].VolumeMounts)
		require.Len(t, req.Services, 1)
		assert.Equal(t, "kubespawn-default-x-alice-y", req.Services[0].Name)
	}

	// The old body: the service's pod, as before.
	req, r = startRequest(t, s, `{"image":"example.org/other:3","annotations":{"podsim.kubespawn.io/scenario":"normal"}}`)
	require.Nil(t, r, "%v", r)
	assert.Equal(t, "example.org/other:3", req.Spec.Containers[0].Image)
	assert.Equal(t, map[string]string{"podsim.kubespawn.io/scenario": "normal"}, req.Annotations)
	assert.Len(t, req.Claims, 1)
	req, r = startRequest(t, s, ``)
	require.Nil(t, r, "%v", r)
	assert.Equal(t, "example.org/default:1", req.Spec.Containers[0].Image, "no body: --image")
	assert.Equal(t, int32(DefaultPort), req.Spec.Containers[0].Ports[0].ContainerPort)
}

func claimName(t *testing.T, s *Server, user string) string {
	t.Helper()
	n, err := s.cfg.Storage.claimName(user)
	require.NoError(t, err)
	return n
}

// TestStorageForce: with --storage-force the operator's claim is every
// start's: added to the body's claims (replacing one of its name: the
// operator's size wins) and mounted at the mount path, unless the hub's
// pod mounts it there already; a pod that mounts something else there is
// refused (403 policy), as a conflict with the service's default claim is
// a 400 (the hub can send "claims" to decide).
func TestStorageForce(t *testing.T) {
	t.Parallel()
	forced := unitServer(Config{Storage: &Storage{Capacity: resource.MustParse("10Gi"), Force: true}})
	claim := claimName(t, forced, "alice")
	req, r := startRequest(t, forced, `{"pod":{`+minimalPod+`},"claims":[]}`)
	require.Nil(t, r, "%v", r)
	require.Len(t, req.Claims, 1, "forced, even when the hub asks for none")
	assert.Equal(t, claim, req.Claims[0].Name)
	assert.Equal(t, []corev1.VolumeMount{{Name: homeVolume, MountPath: DefaultMountPath}}, req.Spec.Containers[0].VolumeMounts)

	body := `{"pod":{"spec":{"containers":[{"name":"notebook","image":"x","volumeMounts":[{"name":"mine","mountPath":"/home/jovyan"}]}],` +
		`"volumes":[{"name":"mine","persistentVolumeClaim":{"claimName":"` + claim + `"}},{"name":"home","emptyDir":{}}]}},` +
		`"claims":[{"metadata":{"name":"` + claim + `"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}},` +
		`{"metadata":{"name":"shared-scratch"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}]}`
	req, r = startRequest(t, forced, body)
	require.Nil(t, r, "%v", r)
	require.Len(t, req.Claims, 2)
	assert.Equal(t, claim, req.Claims[0].Name, "in its place")
	assert.Equal(t, "10Gi", req.Claims[0].Spec.Resources.Requests.Storage().String(), "the operator's size")
	assert.Equal(t, "shared-scratch", req.Claims[1].Name)
	assert.Len(t, req.Spec.Volumes, 2, "the hub's volume of the claim is used")
	assert.Len(t, req.Spec.Containers[0].VolumeMounts, 1, "and its mount")

	// A volume named home already: the service's takes another name.
	req, r = startRequest(t, forced, `{"pod":{"spec":{"containers":[{"name":"n","image":"x"}],"volumes":[{"name":"home","emptyDir":{}}]}},"claims":[]}`)
	require.Nil(t, r, "%v", r)
	assert.Equal(t, "kubespawn-home", req.Spec.Volumes[1].Name)
	assert.Equal(t, "kubespawn-home", req.Spec.Containers[0].VolumeMounts[0].Name)

	conflict := `{"pod":{"spec":{"containers":[{"name":"n","image":"x","volumeMounts":[{"name":"tmp","mountPath":"/home/jovyan"}]}],"volumes":[{"name":"tmp","emptyDir":{}}]}}CLAIMS}`
	_, r = startRequest(t, forced, strings.ReplaceAll(conflict, "CLAIMS", `,"claims":[]`))
	require.NotNil(t, r)
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Equal(t, reasonPolicy, r.reason)
	assert.Equal(t, "spec.containers[0].volumeMounts[0].mountPath", r.errs[0].Field)
	notForced := unitServer(Config{Storage: &Storage{Capacity: resource.MustParse("10Gi")}})
	_, r = startRequest(t, notForced, strings.ReplaceAll(conflict, "CLAIMS", ""))
	require.NotNil(t, r)
	assert.Equal(t, http.StatusBadRequest, r.status, "the default claim: the hub may say what it wants")
	assert.Equal(t, "spec.containers[0].volumeMounts[0].mountPath", r.errs[0].Field)
	_, r = startRequest(t, notForced, strings.ReplaceAll(conflict, "CLAIMS", `,"claims":[]`))
	assert.Nil(t, r, "the hub decided: no claim")
}
