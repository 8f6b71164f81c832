package podproc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/podproc"
)

func testPod(c v1.Container) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "jupyter-alice", UID: "uid-1", Labels: map[string]string{"app": "nb"}},
		Spec:       v1.PodSpec{NodeName: "node", ServiceAccountName: "sa", Containers: []v1.Container{c}},
	}
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestResolveEnvironment(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "creds"}, Data: map[string][]byte{"token": []byte("s3cr3t"), "user": []byte("alice")}},
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "settings"}, Data: map[string]string{"color": "blue"}, BinaryData: map[string][]byte{"blob": []byte("b")}},
	)
	c := v1.Container{
		Name: "notebook", Image: "img", Command: []string{"sh", "-c"}, Args: []string{"echo $(GREETING)", "--ip=0.0.0.0"},
		EnvFrom: []v1.EnvFromSource{
			{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "settings"}}},
			{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "missing"}, Optional: ptr.To(true)}},
		},
		Env: []v1.EnvVar{
			{Name: "GREETING", Value: "hello"},
			{Name: "CFG_color", Value: "red"}, // env wins over envFrom
			{Name: "TOKEN", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}, Key: "token"}}},
			{Name: "BLOB", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "settings"}, Key: "blob"}}},
			{Name: "OPTIONAL", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}, Key: "nope", Optional: ptr.To(true)}}},
			{Name: "POD_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "HOST_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "APP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "SA", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
			{Name: "MEM_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "CPU_REQUEST", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
			{Name: "EXPANDED", Value: "$(GREETING)/$(TOKEN)/$$(GREETING)/$(NOPE)"},
			{Name: "JUPYTERHUB_SERVICE_URL", Value: "http://0.0.0.0:8888/user/alice/"},
		},
	}
	c.Resources.Limits = v1.ResourceList{v1.ResourceMemory: resource.MustParse("1Gi")}
	c.Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m")}
	dir := t.TempDir()
	spec, err := podproc.Resolve(context.Background(), client, testPod(c), "notebook", podproc.Config{
		IP: ip, HostIP: "127.0.0.1", Dir: dir, Allocatable: v1.ResourceList{v1.ResourceCPU: resource.MustParse("64")},
	})
	require.NoError(t, err)
	env := envMap(spec.Env)
	want := map[string]string{
		"CFG_color": "red", "GREETING": "hello", "TOKEN": "s3cr3t", "BLOB": "b", "POD_IP": ip, "HOST_IP": "127.0.0.1",
		"POD_NAME": "jupyter-alice", "APP": "nb", "SA": "sa", "MEM_LIMIT": "1024", "CPU_LIMIT": "64", "CPU_REQUEST": "250",
		"EXPANDED":               "hello/s3cr3t/$(GREETING)/$(NOPE)",
		"JUPYTERHUB_SERVICE_URL": "http://" + ip + ":8888/user/alice/",
		"HOSTNAME":               "jupyter-alice",
		"HOME":                   filepath.Join(dir, "home"),
		"TMPDIR":                 filepath.Join(dir, "tmp"),
		"PATH":                   os.Getenv("PATH"),
	}
	assert.Equal(t, want, env)
	_, optional := env["OPTIONAL"]
	assert.False(t, optional, "an optional missing key is not set")
	assert.Equal(t, "sh", filepath.Base(spec.Argv[0]))
	assert.True(t, filepath.IsAbs(spec.Argv[0]), "looked up in PATH: %s", spec.Argv[0])
	assert.Equal(t, []string{"-c", "echo hello", "--ip=" + ip}, spec.Argv[1:])
	assert.Equal(t, filepath.Join(dir, "work"), spec.Dir)
	assert.ElementsMatch(t, []string{filepath.Join(dir, "home"), filepath.Join(dir, "tmp"), filepath.Join(dir, "work")}, spec.MakeDirs)
	assert.Equal(t, filepath.Join(dir, "notebook.log"), spec.LogPath)
	assert.Equal(t, "ns/jupyter-alice/notebook", spec.Name)
	assert.Len(t, spec.Notes, 2, "%q", spec.Notes)
	assert.Nil(t, spec.Credential)
	// One GET per object.
	gets := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" {
			gets++
		}
	}
	assert.Equal(t, 3, gets, "secrets creds and missing, configmap settings")
}

func TestResolveHomeAndWorkingDirFromTheSpec(t *testing.T) {
	t.Parallel()
	c := v1.Container{Name: "c", Command: []string{"/bin/true"}, WorkingDir: "/srv", Env: []v1.EnvVar{{Name: "HOME", Value: "/home/jovyan"}, {Name: "PATH", Value: "/nowhere"}}}
	spec, err := podproc.Resolve(context.Background(), fake.NewClientset(), testPod(c), "c", podproc.Config{IP: ip, Dir: t.TempDir()})
	require.NoError(t, err)
	env := envMap(spec.Env)
	assert.Equal(t, "/home/jovyan", env["HOME"])
	assert.Equal(t, "/nowhere", env["PATH"])
	assert.Equal(t, "/srv", spec.Dir)
	assert.Len(t, spec.MakeDirs, 1, "only TMPDIR is the pod's: %q", spec.MakeDirs)
	assert.Equal(t, "/bin/true", spec.Argv[0])
	// The container's env comes after the base, in order of definition.
	assert.True(t, slices.Index(spec.Env, "HOME=/home/jovyan") > slices.Index(spec.Env, "HOSTNAME=jupyter-alice"))
}

func TestResolveErrorsLikeTheKubelet(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "creds"}, Data: map[string][]byte{"other": nil}},
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "settings"}},
	)
	secretKey := func(name, key string) v1.EnvVar {
		return v1.EnvVar{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: name}, Key: key}}}
	}
	cmKey := func(name, key string) v1.EnvVar {
		return v1.EnvVar{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: name}, Key: key}}}
	}
	cases := []struct {
		name   string
		c      v1.Container
		pod    func(*v1.Pod)
		kind   error
		reason string
		msg    string
	}{
		{"missing key", v1.Container{Command: []string{"true"}, Env: []v1.EnvVar{secretKey("creds", "token")}},
			nil, podproc.ErrCreateContainerConfig, podproc.ReasonCreateContainerConfigError, "couldn't find key token in Secret ns/creds"},
		{"missing secret", v1.Container{Command: []string{"true"}, Env: []v1.EnvVar{secretKey("nope", "token")}},
			nil, podproc.ErrCreateContainerConfig, podproc.ReasonCreateContainerConfigError, `secret "nope" not found`},
		{"missing configmap key", v1.Container{Command: []string{"true"}, Env: []v1.EnvVar{cmKey("settings", "color")}},
			nil, podproc.ErrCreateContainerConfig, podproc.ReasonCreateContainerConfigError, "couldn't find key color in ConfigMap ns/settings"},
		{"missing configmap", v1.Container{Command: []string{"true"}, EnvFrom: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}}}}},
			nil, podproc.ErrCreateContainerConfig, podproc.ReasonCreateContainerConfigError, `configmap "nope" not found`},
		{"runAsNonRoot as root", v1.Container{Command: []string{"true"}, SecurityContext: &v1.SecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](0)}},
			nil, podproc.ErrCreateContainerConfig, podproc.ReasonCreateContainerConfigError, `container has runAsNonRoot and image will run as root (pod: "jupyter-alice_ns(uid-1)", container: c)`},
		{"only args", v1.Container{Image: "quay.io/jupyter/base-notebook", Args: []string{"jupyterhub-singleuser"}},
			nil, podproc.ErrCreateContainer, podproc.ReasonCreateContainerError, ""},
		{"no such executable", v1.Container{Command: []string{"podproc-no-such-program"}},
			nil, podproc.ErrStart, podproc.ReasonStartError, `failed to start container process: exec: "podproc-no-such-program": executable file not found in $PATH`},
	}
	for _, tc := range cases {
		tc.c.Name = "c"
		_, err := podproc.Resolve(context.Background(), client, testPod(tc.c), "c", podproc.Config{IP: ip, Dir: t.TempDir()})
		require.Error(t, err, tc.name)
		assert.ErrorIs(t, err, tc.kind, tc.name)
		var ce *podproc.ContainerError
		require.True(t, errors.As(err, &ce), tc.name)
		assert.Equal(t, tc.reason, ce.Reason, tc.name)
		if tc.msg != "" {
			assert.Equal(t, tc.msg, ce.Message, tc.name)
		} else {
			assert.Contains(t, ce.Message, "has no command", tc.name)
		}
	}
	_, err := podproc.Resolve(context.Background(), client, testPod(v1.Container{Name: "c"}), "other", podproc.Config{})
	assert.Error(t, err, "no such container")
}

func TestResolveImageEntrypoint(t *testing.T) {
	t.Parallel()
	c := v1.Container{Name: "c", Image: "jupyter", Args: []string{"jupyterhub-singleuser", "--ip=0.0.0.0"}}
	dir := t.TempDir()
	exe := filepath.Join(dir, "jupyterhub-singleuser")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	cfg := podproc.Config{IP: ip, Dir: dir, Entrypoints: map[string][]string{"jupyter": {}}}
	c.Env = []v1.EnvVar{{Name: "PATH", Value: dir}}
	spec, err := podproc.Resolve(context.Background(), fake.NewClientset(), testPod(c), "c", cfg)
	require.NoError(t, err)
	assert.Equal(t, []string{exe, "--ip=" + ip}, spec.Argv, "an empty entrypoint runs the args")

	cfg.Entrypoints["jupyter"] = []string{"/bin/sh", "-e"}
	spec, err = podproc.Resolve(context.Background(), fake.NewClientset(), testPod(c), "c", cfg)
	require.NoError(t, err)
	assert.Equal(t, []string{"/bin/sh", "-e", "jupyterhub-singleuser", "--ip=" + ip}, spec.Argv)

	c.Args = nil
	cfg.Entrypoints["jupyter"] = []string{}
	_, err = podproc.Resolve(context.Background(), fake.NewClientset(), testPod(c), "c", cfg)
	assert.ErrorIs(t, err, podproc.ErrCreateContainer)
}
