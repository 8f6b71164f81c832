package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/spawner"
)

// policyPod is a request whose pod the zero policy (Pod Security baseline)
// lets through: one container, the service's kind of claim and Service.
func policyPod() spawner.Request {
	return spawner.Request{Key: "alice", Namespace: "users",
		Spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: "example.org/notebook:1"}}},
		Claims: []*corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "claim-alice"},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}}},
		Services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "alice"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8888}}}}},
	}
}

func sc(req *spawner.Request) *corev1.SecurityContext {
	c := &req.Spec.Containers[0]
	if c.SecurityContext == nil {
		c.SecurityContext = &corev1.SecurityContext{}
	}
	return c.SecurityContext
}

func podSC(req *spawner.Request) *corev1.PodSecurityContext {
	if req.Spec.SecurityContext == nil {
		req.Spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	return req.Spec.SecurityContext
}

// TestPodPolicyRefusesBeyondBaseline: each control of Pod Security baseline
// (and the service's own: node, ServiceAccount, Services, claims) refuses
// its field with the zero policy, naming it, and the policy setting that
// loosens it lets the same request through.
func TestPodPolicyRefusesBeyondBaseline(t *testing.T) {
	t.Parallel()
	require.Empty(t, (&PodPolicy{}).Check(policyPod()), "the plain pod passes")
	for _, c := range []struct {
		name  string
		set   func(*spawner.Request)
		field string
		allow PodPolicy
	}{
		{"hostPath", func(r *spawner.Request) {
			r.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "node", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run"}}}}
		}, "spec.volumes[1].hostPath", PodPolicy{AllowHostPath: true}},
		{"hostPath under an allowed directory", func(r *spawner.Request) {
			r.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/data/shared"}}}}
		}, "spec.volumes[0].hostPath", PodPolicy{AllowedHostPaths: []string{"/srv/data"}}},
		{"hostNetwork", func(r *spawner.Request) { r.Spec.HostNetwork = true }, "spec.hostNetwork", PodPolicy{AllowHostNetwork: true}},
		{"hostPID", func(r *spawner.Request) { r.Spec.HostPID = true }, "spec.hostPID", PodPolicy{AllowHostPID: true}},
		{"hostIPC", func(r *spawner.Request) { r.Spec.HostIPC = true }, "spec.hostIPC", PodPolicy{AllowHostIPC: true}},
		{"privileged", func(r *spawner.Request) { sc(r).Privileged = ptr.To(true) },
			"spec.containers[0].securityContext.privileged", PodPolicy{AllowPrivileged: true}},
		{"privileged init container", func(r *spawner.Request) {
			r.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "x", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}
		}, "spec.initContainers[0].securityContext.privileged", PodPolicy{AllowPrivileged: true}},
		{"privileged ephemeral container", func(r *spawner.Request) {
			r.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", Image: "x", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}}
		}, "spec.ephemeralContainers[0].securityContext.privileged", PodPolicy{AllowPrivileged: true}},
		{"hostProcess pod", func(r *spawner.Request) {
			podSC(r).WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr.To(true)}
		}, "spec.securityContext.windowsOptions.hostProcess", PodPolicy{AllowHostProcess: true}},
		{"hostProcess container", func(r *spawner.Request) {
			sc(r).WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr.To(true)}
		}, "spec.containers[0].securityContext.windowsOptions.hostProcess", PodPolicy{AllowHostProcess: true}},
		{"capability beyond baseline", func(r *spawner.Request) {
			sc(r).Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"CHOWN", "NET_ADMIN"}}
		}, "spec.containers[0].securityContext.capabilities.add[1]", PodPolicy{AllowedCapabilities: []string{"NET_ADMIN"}}},
		{"any capability", func(r *spawner.Request) {
			sc(r).Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}
		}, "spec.containers[0].securityContext.capabilities.add[0]", PodPolicy{AllowedCapabilities: []string{"*"}}},
		{"hostPort", func(r *spawner.Request) {
			r.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8888}, {ContainerPort: 80, HostPort: 80}}
		}, "spec.containers[0].ports[1].hostPort", PodPolicy{AllowHostPorts: true}},
		{"an allowed hostPort", func(r *spawner.Request) {
			r.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
		}, "spec.containers[0].ports[0].hostPort", PodPolicy{AllowedHostPorts: []int32{8080}}},
		{"AppArmor Unconfined (container)", func(r *spawner.Request) {
			sc(r).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}, "spec.containers[0].securityContext.appArmorProfile.type", PodPolicy{AllowUnconfinedAppArmor: true}},
		{"AppArmor Unconfined (pod)", func(r *spawner.Request) {
			podSC(r).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}, "spec.securityContext.appArmorProfile.type", PodPolicy{AllowUnconfinedAppArmor: true}},
		{"AppArmor annotation", func(r *spawner.Request) {
			r.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "notebook": "unconfined"}
		}, "metadata.annotations[container.apparmor.security.beta.kubernetes.io/notebook]", PodPolicy{AllowUnconfinedAppArmor: true}},
		{"seccomp Unconfined (pod)", func(r *spawner.Request) {
			podSC(r).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "spec.securityContext.seccompProfile.type", PodPolicy{AllowUnconfinedSeccomp: true}},
		{"seccomp Unconfined (container)", func(r *spawner.Request) {
			sc(r).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "spec.containers[0].securityContext.seccompProfile.type", PodPolicy{AllowUnconfinedSeccomp: true}},
		{"seccomp annotation", func(r *spawner.Request) {
			r.Annotations = map[string]string{corev1.SeccompPodAnnotationKey: "unconfined"}
		}, "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]", PodPolicy{AllowUnconfinedSeccomp: true}},
		{"SELinux type", func(r *spawner.Request) {
			podSC(r).SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"}
		}, "spec.securityContext.seLinuxOptions.type", PodPolicy{AllowCustomSELinux: true}},
		{"SELinux user", func(r *spawner.Request) {
			sc(r).SELinuxOptions = &corev1.SELinuxOptions{User: "system_u"}
		}, "spec.containers[0].securityContext.seLinuxOptions.user", PodPolicy{AllowCustomSELinux: true}},
		{"SELinux role", func(r *spawner.Request) {
			sc(r).SELinuxOptions = &corev1.SELinuxOptions{Role: "system_r"}
		}, "spec.containers[0].securityContext.seLinuxOptions.role", PodPolicy{AllowCustomSELinux: true}},
		{"/proc unmasked", func(r *spawner.Request) { sc(r).ProcMount = ptr.To(corev1.UnmaskedProcMount) },
			"spec.containers[0].securityContext.procMount", PodPolicy{AllowUnmaskedProcMount: true}},
		{"unsafe sysctl", func(r *spawner.Request) {
			podSC(r).Sysctls = []corev1.Sysctl{{Name: "net.ipv4.tcp_syncookies", Value: "1"}, {Name: "net.core.somaxconn", Value: "1024"}}
		}, "spec.securityContext.sysctls[1].name", PodPolicy{AllowedSysctls: []string{"net.core.*"}}},
		{"probe host", func(r *spawner.Request) {
			r.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "169.254.169.254"}}}
		}, "spec.containers[0].readinessProbe.httpGet.host", PodPolicy{AllowProbeHost: true}},
		{"lifecycle host", func(r *spawner.Request) {
			r.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{Host: "10.0.0.1"}}}
		}, "spec.containers[0].lifecycle.preStop.tcpSocket.host", PodPolicy{AllowProbeHost: true}},
		{"gitRepo", func(r *spawner.Request) {
			r.Spec.Volumes = []corev1.Volume{{Name: "repo", VolumeSource: corev1.VolumeSource{GitRepo: &corev1.GitRepoVolumeSource{Repository: "https://example.org/x.git"}}}}
		}, "spec.volumes[0].gitRepo", PodPolicy{AllowGitRepo: true}},
		{"nodeName", func(r *spawner.Request) { r.Spec.NodeName = "control-plane" }, "spec.nodeName", PodPolicy{AllowNodeName: true}},
		{"ServiceAccount", func(r *spawner.Request) { r.Spec.ServiceAccountName = "kubespawn-spawner" },
			"spec.serviceAccountName", PodPolicy{AllowedServiceAccounts: []string{"kubespawn-spawner"}}},
		{"deprecated serviceAccount", func(r *spawner.Request) { r.Spec.DeprecatedServiceAccount = "kubespawn-spawner" },
			"spec.serviceAccount", PodPolicy{AllowedServiceAccounts: []string{"kubespawn-spawner"}}},
		{"Service type", func(r *spawner.Request) { r.Services[0].Spec.Type = corev1.ServiceTypeNodePort },
			"services[0].spec.type", PodPolicy{AllowedServiceTypes: []corev1.ServiceType{corev1.ServiceTypeNodePort}}},
		{"externalIPs", func(r *spawner.Request) { r.Services[0].Spec.ExternalIPs = []string{"203.0.113.1"} },
			"services[0].spec.externalIPs", PodPolicy{AllowExternalIPs: true}},
		{"claim from another claim", func(r *spawner.Request) {
			r.Claims[0].Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "claim-bob"}
		}, "claims[0].spec.dataSource", PodPolicy{AllowClaimDataSource: true}},
		{"claim from a data source ref", func(r *spawner.Request) {
			r.Claims[0].Spec.DataSourceRef = &corev1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "claim-bob"}
		}, "claims[0].spec.dataSourceRef", PodPolicy{AllowClaimDataSource: true}},
		{"claim of a chosen volume", func(r *spawner.Request) { r.Claims[0].Spec.VolumeName = "pv-of-bob" },
			"claims[0].spec.volumeName", PodPolicy{AllowClaimVolumeName: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := policyPod()
			c.set(&req)
			v := (&PodPolicy{}).Check(req)
			require.Len(t, v, 1, "%v", v)
			assert.Equal(t, c.field, v[0].Field)
			assert.NotEmpty(t, v[0].Error)
			assert.Empty(t, c.allow.Check(req), "allowed by %+v", c.allow)
		})
	}
}

// TestPodPolicyAllowsBaseline: what baseline allows passes the zero
// policy: its capabilities, safe sysctls, RuntimeDefault and Localhost
// profiles, baseline's SELinux types, an unmasked /proc in a pod of its own
// user namespace, the default ServiceAccount, emptyDir and claim volumes,
// a hostPath outside an allowed directory stays refused.
func TestPodPolicyAllowsBaseline(t *testing.T) {
	t.Parallel()
	req := policyPod()
	req.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "notebook": "localhost/notebook", "hub.jupyter.org/username": "alice"}
	req.Spec.ServiceAccountName = "default"
	req.Spec.HostUsers = ptr.To(false)
	req.Spec.RuntimeClassName = ptr.To("kubespawn-process")
	req.Spec.Volumes = []corev1.Volume{
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "home", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim-alice"}}},
	}
	ps := podSC(&req)
	ps.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	ps.SELinuxOptions = &corev1.SELinuxOptions{Type: "container_t", Level: "s0:c1,c2"}
	ps.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}, {Name: "net.ipv4.tcp_keepalive_time", Value: "60"}}
	ps.RunAsUser, ps.FSGroup = ptr.To[int64](1000), ptr.To[int64](100)
	c := sc(&req)
	c.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE", "SETUID"}, Drop: []corev1.Capability{"ALL"}}
	c.AllowPrivilegeEscalation = ptr.To(true) // restricted's, not baseline's
	c.Privileged = ptr.To(false)
	c.ProcMount = ptr.To(corev1.UnmaskedProcMount)
	c.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr.To("notebook.json")}
	c.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
	req.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8888}}
	req.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/api"}}}
	assert.Empty(t, (&PodPolicy{}).Check(req))

	req.Spec.Volumes = append(req.Spec.Volumes, corev1.Volume{Name: "etc", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/data/../../etc"}}})
	v := (&PodPolicy{AllowedHostPaths: []string{"/srv/data"}}).Check(req)
	require.Len(t, v, 1, "a path that leaves the allowed directory")
	assert.Equal(t, "spec.volumes[2].hostPath", v[0].Field)

	// Every violation is reported, in order.
	req = policyPod()
	req.Spec.HostNetwork, req.Spec.HostPID = true, true
	sc(&req).Privileged = ptr.To(true)
	var fields []string
	for _, v := range (&PodPolicy{}).Check(req) {
		fields = append(fields, v.Field)
	}
	assert.Equal(t, []string{"spec.hostNetwork", "spec.hostPID", "spec.containers[0].securityContext.privileged"}, fields)
}

// TestPodPolicyFile: --pod-policy reads YAML (or JSON) strictly, a
// misspelt key is an error naming it; the --allow-* flags loosen what the
// file says; a bad value is a usage error.
func TestPodPolicyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	file := write("policy.yaml", "# loosened for the GPU nodes\nallowedCapabilities: [SYS_PTRACE]\nallowedHostPaths:\n  - /srv/datasets\nallowedServiceAccounts: [notebook]\n")
	o, err := parseFlags([]string{"--instance=demo", "--pod-policy=" + file, "--allow-privileged"}, &strings.Builder{})
	require.NoError(t, err)
	assert.Equal(t, PodPolicy{AllowedCapabilities: []string{"SYS_PTRACE"}, AllowedHostPaths: []string{"/srv/datasets"},
		AllowedServiceAccounts: []string{"notebook"}, AllowPrivileged: true}, o.podPolicy)
	assert.Equal(t, o.podPolicy, o.config().PodPolicy)

	o, err = parseFlags([]string{"--instance=demo"}, &strings.Builder{})
	require.NoError(t, err)
	assert.Equal(t, PodPolicy{}, o.podPolicy, "no policy: baseline")
	o, err = parseFlags([]string{"--instance=demo", "--allow-host-path", "--allow-host-namespaces"}, &strings.Builder{})
	require.NoError(t, err)
	assert.Equal(t, PodPolicy{AllowHostPath: true, AllowHostNetwork: true, AllowHostPID: true, AllowHostIPC: true}, o.podPolicy)
	o, err = parseFlags([]string{"--instance=demo", "--pod-policy=" + write("empty.yaml", "")}, &strings.Builder{})
	require.NoError(t, err)
	assert.Equal(t, PodPolicy{}, o.podPolicy)

	for _, c := range []struct{ file, msg string }{
		{write("typo.yaml", "allowHostPaths: true\n"), `unknown field "allowHostPaths"`},
		{write("case.yaml", "AllowHostPath: true\n"), `unknown field "AllowHostPath"`},
		{write("relative.yaml", "allowedHostPaths: [srv]\n"), "allowedHostPaths"},
		{write("port.yaml", "allowedHostPorts: [0]\n"), "allowedHostPorts"},
		{write("type.yaml", "allowedServiceTypes: [ExternalName]\n"), "allowedServiceTypes"},
		{write("bad.yaml", "allowHostPath: [\n"), "--pod-policy"},
		{filepath.Join(dir, "missing.yaml"), "missing.yaml"},
	} {
		_, err := parseFlags([]string{"--instance=demo", "--pod-policy=" + c.file}, &strings.Builder{})
		require.Error(t, err, c.file)
		assert.ErrorContains(t, err, c.msg, c.file)
	}
	_, err = parseFlags([]string{"--instance=demo", "--storage-force"}, &strings.Builder{})
	assert.ErrorContains(t, err, "--storage-force", "no claim to force without --storage-capacity")
}
