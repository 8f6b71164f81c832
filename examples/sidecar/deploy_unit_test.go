package main

import (
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kubespawn/kubespawn/examples/internal/manifest"
)

// readManifests decodes every document of a deploy YAML file.
func readManifests(t *testing.T, path string) []runtime.Object {
	t.Helper()
	objs, err := manifest.Read(path)
	require.NoError(t, err)
	return objs
}

// TestDeployManifests checks deployment.yaml and alerts.yaml: they decode,
// the sidecar's args are valid flags, the probes and the token volume are
// wired, and the alerts use the metric names the code exports.
func TestDeployManifests(t *testing.T) {
	objs := readManifests(t, "deploy/deployment.yaml")
	require.Len(t, objs, 1)
	dep, ok := objs[0].(*appsv1.Deployment)
	require.True(t, ok, "%T", objs[0])
	spec := dep.Spec.Template.Spec
	assert.Equal(t, "kubespawn-sidecar", spec.ServiceAccountName)
	var sidecarC *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "kubespawn-sidecar" {
			sidecarC = &spec.Containers[i]
		}
	}
	require.NotNil(t, sidecarC)
	o, err := parseFlags(sidecarC.Args, io.Discard)
	require.NoError(t, err, "the Deployment's args are valid flags")
	require.NotEmpty(t, o.tokenFile)
	require.NotNil(t, sidecarC.LivenessProbe)
	require.NotNil(t, sidecarC.ReadinessProbe)
	assert.Equal(t, "/livez", sidecarC.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", sidecarC.ReadinessProbe.HTTPGet.Path)
	_, port, err := net.SplitHostPort(o.listen)
	require.NoError(t, err)
	assert.Equal(t, port, strconv.Itoa(int(sidecarC.Ports[0].ContainerPort)))
	mounted := false
	for _, m := range sidecarC.VolumeMounts {
		if strings.HasPrefix(o.tokenFile, m.MountPath+"/") {
			mounted = true
			for _, v := range spec.Volumes {
				if v.Name == m.Name {
					require.NotNil(t, v.Secret, "the token comes from a Secret")
				}
			}
		}
	}
	assert.True(t, mounted, "--token-file is on a mounted volume")

	b, err := os.ReadFile("deploy/alerts.yaml")
	require.NoError(t, err)
	var rules map[string]any
	require.NoError(t, utilyaml.Unmarshal(b, &rules))
	alerts := string(b)
	for _, metric := range []string{
		`kubespawn_reflector_state{state!="synced"}`,
		"kubespawn_reflector_gaps_detected_total",
		"kubespawn_reflector_lag_seconds",
		"kubespawn_spawner_swept_pods_total",
		"kubespawn_spawner_starts_total",
		"kubespawn_spawner_cleanup_failures_total",
	} {
		assert.Contains(t, alerts, metric)
	}
	// The spawner's success results are "running" and "adopted".
	assert.Contains(t, alerts, `result!~"running|adopted`)
}
