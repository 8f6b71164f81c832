package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"

	"github.com/kubespawn/kubespawn/spawner"
)

// PodPolicy is what a start may ask for beyond the Kubernetes Pod Security
// Standards' "baseline" profile, which is what the zero PodPolicy enforces
// (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
// the hub decides the pod, the operator decides what a pod may do to the
// node it runs on. Each field loosens one control. A start that asks for
// more is refused (403, reason "policy", the field at fault) before
// anything is created. The namespace's Pod Security Admission, if
// labelled, stays the second line: what it refuses fails the start with
// reason "rejected".
//
// Besides baseline, the zero policy refuses what would let a pod escape
// the service's own bounds: a chosen node (spec.nodeName skips the
// scheduler), a ServiceAccount other than the namespace's default (the
// service's own is in the namespace too: its token would let the pod
// create any pod), Services that are not ClusterIP or carry externalIPs,
// and claims that copy another claim (spec.dataSource, dataSourceRef) or
// bind a chosen volume (spec.volumeName).
type PodPolicy struct {
	// AllowHostProcess: Windows HostProcess containers
	// (securityContext.windowsOptions.hostProcess).
	AllowHostProcess bool `json:"allowHostProcess,omitempty"`
	// AllowHostNetwork, AllowHostPID, AllowHostIPC: the node's
	// namespaces.
	AllowHostNetwork bool `json:"allowHostNetwork,omitempty"`
	AllowHostPID     bool `json:"allowHostPID,omitempty"`
	AllowHostIPC     bool `json:"allowHostIPC,omitempty"`
	// AllowPrivileged: securityContext.privileged in any container.
	AllowPrivileged bool `json:"allowPrivileged,omitempty"`
	// AllowedCapabilities may be added (capabilities.add) beyond
	// baseline's (AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
	// MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID,
	// SYS_CHROOT); "*" allows any.
	AllowedCapabilities []string `json:"allowedCapabilities,omitempty"`
	// AllowHostPath allows any hostPath volume; AllowedHostPaths only
	// those whose path is one of these or under one (clean absolute
	// paths).
	AllowHostPath    bool     `json:"allowHostPath,omitempty"`
	AllowedHostPaths []string `json:"allowedHostPaths,omitempty"`
	// AllowHostPorts allows any containerPort's hostPort; AllowedHostPorts
	// only these.
	AllowHostPorts   bool    `json:"allowHostPorts,omitempty"`
	AllowedHostPorts []int32 `json:"allowedHostPorts,omitempty"`
	// AllowUnconfinedAppArmor: appArmorProfile type Unconfined (pod or
	// container), or the deprecated annotation
	// container.apparmor.security.beta.kubernetes.io/* set to anything
	// but runtime/default or localhost/*.
	AllowUnconfinedAppArmor bool `json:"allowUnconfinedAppArmor,omitempty"`
	// AllowUnconfinedSeccomp: seccompProfile type Unconfined (pod or
	// container), or the deprecated seccomp annotations set to
	// "unconfined".
	AllowUnconfinedSeccomp bool `json:"allowUnconfinedSeccomp,omitempty"`
	// AllowCustomSELinux: seLinuxOptions with a type other than
	// container_t, container_init_t or container_kvm_t, or with a user or
	// role.
	AllowCustomSELinux bool `json:"allowCustomSELinux,omitempty"`
	// AllowUnmaskedProcMount: securityContext.procMount other than
	// Default in a pod that shares the node's user namespace (baseline
	// allows it with hostUsers: false).
	AllowUnmaskedProcMount bool `json:"allowUnmaskedProcMount,omitempty"`
	// AllowedSysctls may be set beyond the safe set; a name ending in "*"
	// is a prefix ("net.core.*").
	AllowedSysctls []string `json:"allowedSysctls,omitempty"`
	// AllowProbeHost: probes and lifecycle handlers with an httpGet or
	// tcpSocket host (the kubelet would connect there, not to the pod).
	AllowProbeHost bool `json:"allowProbeHost,omitempty"`
	// AllowGitRepo: the deprecated gitRepo volume (it runs git on the
	// node).
	AllowGitRepo bool `json:"allowGitRepo,omitempty"`

	// AllowNodeName: spec.nodeName (the pod bypasses the scheduler).
	AllowNodeName bool `json:"allowNodeName,omitempty"`
	// AllowedServiceAccounts may be the pod's serviceAccountName besides
	// "" and "default".
	AllowedServiceAccounts []string `json:"allowedServiceAccounts,omitempty"`
	// AllowedServiceTypes may be the type of a start's Services besides
	// ClusterIP (NodePort, LoadBalancer expose the user's server beyond
	// the cluster).
	AllowedServiceTypes []corev1.ServiceType `json:"allowedServiceTypes,omitempty"`
	// AllowExternalIPs: a Service's spec.externalIPs (CVE-2020-8554).
	AllowExternalIPs bool `json:"allowExternalIPs,omitempty"`
	// AllowClaimDataSource: a claim's spec.dataSource or dataSourceRef (a
	// claim made from another: another user's home, say).
	AllowClaimDataSource bool `json:"allowClaimDataSource,omitempty"`
	// AllowClaimVolumeName: a claim's spec.volumeName (binding a chosen
	// PersistentVolume).
	AllowClaimVolumeName bool `json:"allowClaimVolumeName,omitempty"`
}

// Violation is one field of a start that the policy refuses.
type Violation struct {
	// Field is the path of the field: the pod's relative to the pod
	// ("spec.volumes[0].hostPath", "metadata.annotations[…]"), the
	// others' relative to the body ("claims[0].spec.dataSource",
	// "services[0].spec.type").
	Field string `json:"field"`
	// Error says what is refused and which setting of the policy would
	// allow it.
	Error string `json:"error"`
}

// baselineCapabilities may be added under Pod Security baseline.
var baselineCapabilities = []corev1.Capability{"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
	"MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}

// safeSysctls are baseline's (Kubernetes 1.32's safe set: namespaced and
// isolated from other pods on the node).
var safeSysctls = []string{
	"kernel.shm_rmid_forced",
	"net.ipv4.ip_local_port_range",
	"net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_syncookies",
	"net.ipv4.ping_group_range",
	"net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_fin_timeout",
	"net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
	"net.ipv4.tcp_rmem",
	"net.ipv4.tcp_wmem",
}

// allowedSELinuxTypes are baseline's.
var allowedSELinuxTypes = []string{"", "container_t", "container_init_t", "container_kvm_t"}

// defaultServiceAccounts are always allowed: none named, and the
// namespace's default.
var defaultServiceAccounts = []string{"", "default"}

// Check returns the request's violations of p, pod first (metadata, then
// spec in field order), then claims, then Services; none: the start may
// go on.
func (p *PodPolicy) Check(req spawner.Request) []Violation {
	c := checker{p: p}
	c.annotations(req.Annotations)
	if req.Spec != nil {
		c.spec(req.Spec)
	}
	for i, cl := range req.Claims {
		if cl != nil {
			c.claim(fmt.Sprintf("claims[%d]", i), cl)
		}
	}
	for i, svc := range req.Services {
		if svc != nil {
			c.service(fmt.Sprintf("services[%d]", i), svc)
		}
	}
	return c.out
}

type checker struct {
	p   *PodPolicy
	out []Violation
}

func (c *checker) refuse(field, format string, args ...any) {
	c.out = append(c.out, Violation{Field: field, Error: fmt.Sprintf(format, args...)})
}

func (c *checker) annotations(a map[string]string) {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.Sort(keys) // violations in a stable order
	for _, k := range keys {
		v := a[k]
		field := "metadata.annotations[" + k + "]"
		switch {
		case strings.HasPrefix(k, corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix) && !c.p.AllowUnconfinedAppArmor &&
			v != "" && v != corev1.DeprecatedAppArmorBetaProfileRuntimeDefault && !strings.HasPrefix(v, corev1.DeprecatedAppArmorBetaProfileNamePrefix):
			c.refuse(field, "AppArmor profile %q is refused by the pod policy (only runtime/default or localhost/*; allowUnconfinedAppArmor allows it)", v)
		case (k == corev1.SeccompPodAnnotationKey || strings.HasPrefix(k, corev1.SeccompContainerAnnotationKeyPrefix)) &&
			!c.p.AllowUnconfinedSeccomp && v == "unconfined":
			c.refuse(field, "seccomp profile %q is refused by the pod policy (allowUnconfinedSeccomp allows it)", v)
		}
	}
}

func (c *checker) spec(s *corev1.PodSpec) {
	p := c.p
	if s.HostNetwork && !p.AllowHostNetwork {
		c.refuse("spec.hostNetwork", "the node's network namespace is refused by the pod policy (allowHostNetwork allows it)")
	}
	if s.HostPID && !p.AllowHostPID {
		c.refuse("spec.hostPID", "the node's process namespace is refused by the pod policy (allowHostPID allows it)")
	}
	if s.HostIPC && !p.AllowHostIPC {
		c.refuse("spec.hostIPC", "the node's IPC namespace is refused by the pod policy (allowHostIPC allows it)")
	}
	if s.NodeName != "" && !p.AllowNodeName {
		c.refuse("spec.nodeName", "choosing the node (bypassing the scheduler) is refused by the pod policy (allowNodeName allows it)")
	}
	for _, f := range []struct{ field, name string }{{"spec.serviceAccountName", s.ServiceAccountName}, {"spec.serviceAccount", s.DeprecatedServiceAccount}} {
		if !slices.Contains(defaultServiceAccounts, f.name) && !slices.Contains(p.AllowedServiceAccounts, f.name) {
			c.refuse(f.field, "ServiceAccount %q is refused by the pod policy: its token would be the pod's (only the namespace's default; allowedServiceAccounts allows others)", f.name)
		}
	}
	if sc := s.SecurityContext; sc != nil {
		if w := sc.WindowsOptions; w != nil && w.HostProcess != nil && *w.HostProcess && !p.AllowHostProcess {
			c.refuse("spec.securityContext.windowsOptions.hostProcess", "Windows HostProcess pods are refused by the pod policy (allowHostProcess allows them)")
		}
		c.seLinux("spec.securityContext.seLinuxOptions", sc.SELinuxOptions)
		c.seccomp("spec.securityContext.seccompProfile", sc.SeccompProfile)
		c.appArmor("spec.securityContext.appArmorProfile", sc.AppArmorProfile)
		for i, sysctl := range sc.Sysctls {
			if !slices.Contains(safeSysctls, sysctl.Name) && !matchesAny(p.AllowedSysctls, sysctl.Name) {
				c.refuse(fmt.Sprintf("spec.securityContext.sysctls[%d].name", i), "sysctl %q is not in the safe set and refused by the pod policy (allowedSysctls allows it)", sysctl.Name)
			}
		}
	}
	for i, v := range s.Volumes {
		field := fmt.Sprintf("spec.volumes[%d]", i)
		if hp := v.HostPath; hp != nil && !p.AllowHostPath && !underAny(p.AllowedHostPaths, hp.Path) {
			c.refuse(field+".hostPath", "hostPath volume %q (path %s) is refused by the pod policy (allowHostPath or allowedHostPaths allows it)", v.Name, hp.Path)
		}
		if v.GitRepo != nil && !p.AllowGitRepo {
			c.refuse(field+".gitRepo", "gitRepo volume %q is refused by the pod policy (it runs git on the node; allowGitRepo allows it)", v.Name)
		}
	}
	userNamespace := s.HostUsers != nil && !*s.HostUsers
	for i := range s.InitContainers {
		c.container(fmt.Sprintf("spec.initContainers[%d]", i), &s.InitContainers[i], userNamespace)
	}
	for i := range s.Containers {
		c.container(fmt.Sprintf("spec.containers[%d]", i), &s.Containers[i], userNamespace)
	}
	for i := range s.EphemeralContainers {
		ec := corev1.Container(s.EphemeralContainers[i].EphemeralContainerCommon)
		c.container(fmt.Sprintf("spec.ephemeralContainers[%d]", i), &ec, userNamespace)
	}
}

func (c *checker) container(field string, ct *corev1.Container, userNamespace bool) {
	p := c.p
	for i, port := range ct.Ports {
		if port.HostPort != 0 && !p.AllowHostPorts && !slices.Contains(p.AllowedHostPorts, port.HostPort) {
			c.refuse(fmt.Sprintf("%s.ports[%d].hostPort", field, i), "hostPort %d is refused by the pod policy (allowHostPorts or allowedHostPorts allows it)", port.HostPort)
		}
	}
	if !p.AllowProbeHost {
		for _, pr := range []struct {
			name  string
			probe *corev1.Probe
		}{{"livenessProbe", ct.LivenessProbe}, {"readinessProbe", ct.ReadinessProbe}, {"startupProbe", ct.StartupProbe}} {
			if pr.probe != nil {
				c.handlerHost(field+"."+pr.name, pr.probe.HTTPGet, pr.probe.TCPSocket)
			}
		}
		if lc := ct.Lifecycle; lc != nil {
			for _, h := range []struct {
				name    string
				handler *corev1.LifecycleHandler
			}{{"postStart", lc.PostStart}, {"preStop", lc.PreStop}} {
				if h.handler != nil {
					c.handlerHost(field+".lifecycle."+h.name, h.handler.HTTPGet, h.handler.TCPSocket)
				}
			}
		}
	}
	sc := ct.SecurityContext
	if sc == nil {
		return
	}
	field += ".securityContext"
	if sc.Privileged != nil && *sc.Privileged && !p.AllowPrivileged {
		c.refuse(field+".privileged", "privileged containers are refused by the pod policy (allowPrivileged allows them)")
	}
	if w := sc.WindowsOptions; w != nil && w.HostProcess != nil && *w.HostProcess && !p.AllowHostProcess {
		c.refuse(field+".windowsOptions.hostProcess", "Windows HostProcess containers are refused by the pod policy (allowHostProcess allows them)")
	}
	if caps := sc.Capabilities; caps != nil && !slices.Contains(p.AllowedCapabilities, "*") {
		for i, cp := range caps.Add {
			if !slices.Contains(baselineCapabilities, cp) && !slices.Contains(p.AllowedCapabilities, string(cp)) {
				c.refuse(fmt.Sprintf("%s.capabilities.add[%d]", field, i), "capability %s is beyond the baseline set and refused by the pod policy (allowedCapabilities allows it)", cp)
			}
		}
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount && !userNamespace && !p.AllowUnmaskedProcMount {
		c.refuse(field+".procMount", "procMount %s is refused by the pod policy unless the pod has its own user namespace (hostUsers: false; allowUnmaskedProcMount allows it)", *sc.ProcMount)
	}
	c.seLinux(field+".seLinuxOptions", sc.SELinuxOptions)
	c.seccomp(field+".seccompProfile", sc.SeccompProfile)
	c.appArmor(field+".appArmorProfile", sc.AppArmorProfile)
}

func (c *checker) handlerHost(field string, get *corev1.HTTPGetAction, tcp *corev1.TCPSocketAction) {
	if get != nil && get.Host != "" {
		c.refuse(field+".httpGet.host", "host %q: the kubelet would connect to it, not to the pod; refused by the pod policy (allowProbeHost allows it)", get.Host)
	}
	if tcp != nil && tcp.Host != "" {
		c.refuse(field+".tcpSocket.host", "host %q: the kubelet would connect to it, not to the pod; refused by the pod policy (allowProbeHost allows it)", tcp.Host)
	}
}

func (c *checker) seLinux(field string, o *corev1.SELinuxOptions) {
	if o == nil || c.p.AllowCustomSELinux {
		return
	}
	if !slices.Contains(allowedSELinuxTypes, o.Type) {
		c.refuse(field+".type", "SELinux type %q is refused by the pod policy (only container_t, container_init_t, container_kvm_t; allowCustomSELinux allows it)", o.Type)
	}
	if o.User != "" {
		c.refuse(field+".user", "an SELinux user is refused by the pod policy (allowCustomSELinux allows it)")
	}
	if o.Role != "" {
		c.refuse(field+".role", "an SELinux role is refused by the pod policy (allowCustomSELinux allows it)")
	}
}

func (c *checker) seccomp(field string, sp *corev1.SeccompProfile) {
	if sp != nil && sp.Type != corev1.SeccompProfileTypeRuntimeDefault && sp.Type != corev1.SeccompProfileTypeLocalhost && !c.p.AllowUnconfinedSeccomp {
		c.refuse(field+".type", "seccomp profile type %q is refused by the pod policy (only RuntimeDefault or Localhost; allowUnconfinedSeccomp allows it)", sp.Type)
	}
}

func (c *checker) appArmor(field string, ap *corev1.AppArmorProfile) {
	if ap != nil && ap.Type == corev1.AppArmorProfileTypeUnconfined && !c.p.AllowUnconfinedAppArmor {
		c.refuse(field+".type", "AppArmor profile type Unconfined is refused by the pod policy (allowUnconfinedAppArmor allows it)")
	}
}

func (c *checker) claim(field string, cl *corev1.PersistentVolumeClaim) {
	if !c.p.AllowClaimDataSource {
		if cl.Spec.DataSource != nil {
			c.refuse(field+".spec.dataSource", "claim %q made from another object (%s %q) is refused by the pod policy (allowClaimDataSource allows it)", cl.Name, cl.Spec.DataSource.Kind, cl.Spec.DataSource.Name)
		}
		if cl.Spec.DataSourceRef != nil {
			c.refuse(field+".spec.dataSourceRef", "claim %q made from another object (%s %q) is refused by the pod policy (allowClaimDataSource allows it)", cl.Name, cl.Spec.DataSourceRef.Kind, cl.Spec.DataSourceRef.Name)
		}
	}
	if cl.Spec.VolumeName != "" && !c.p.AllowClaimVolumeName {
		c.refuse(field+".spec.volumeName", "claim %q binding the chosen volume %q is refused by the pod policy (allowClaimVolumeName allows it)", cl.Name, cl.Spec.VolumeName)
	}
}

func (c *checker) service(field string, svc *corev1.Service) {
	if t := svc.Spec.Type; t != "" && t != corev1.ServiceTypeClusterIP && !slices.Contains(c.p.AllowedServiceTypes, t) {
		c.refuse(field+".spec.type", "Service type %s is refused by the pod policy (only ClusterIP; allowedServiceTypes allows it)", t)
	}
	if len(svc.Spec.ExternalIPs) > 0 && !c.p.AllowExternalIPs {
		c.refuse(field+".spec.externalIPs", "a Service's externalIPs are refused by the pod policy (allowExternalIPs allows them)")
	}
}

// matchesAny: name is one of patterns, or starts with one ending in "*"
// (without it).
func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if p == name || (strings.HasSuffix(p, "*") && strings.HasPrefix(name, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}

// underAny: p (made clean) is one of dirs or under one.
func underAny(dirs []string, p string) bool {
	p = path.Clean(p)
	if !path.IsAbs(p) {
		return false
	}
	for _, d := range dirs {
		if p == d || d == "/" || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// validate refuses a policy that could not mean what it says: host paths
// that are not clean absolute paths, ports out of range.
func (p *PodPolicy) validate() error {
	var problems []string
	for _, d := range p.AllowedHostPaths {
		if !path.IsAbs(d) || path.Clean(d) != d {
			problems = append(problems, fmt.Sprintf("allowedHostPaths: %q is not a clean absolute path", d))
		}
	}
	for _, port := range p.AllowedHostPorts {
		if port < 1 || port > 65535 {
			problems = append(problems, fmt.Sprintf("allowedHostPorts: %d is not a TCP port", port))
		}
	}
	for _, t := range p.AllowedServiceTypes {
		if !slices.Contains([]corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer}, t) {
			problems = append(problems, fmt.Sprintf("allowedServiceTypes: %q is not ClusterIP, NodePort or LoadBalancer", t))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// loadPodPolicy reads a PodPolicy from a YAML or JSON file, strictly: an
// unknown key (a typo that would leave a control closed, or open) is an
// error naming it.
func loadPodPolicy(file string) (PodPolicy, error) {
	var p PodPolicy
	b, err := os.ReadFile(file)
	if err != nil {
		return p, fmt.Errorf("--pod-policy: %w", err)
	}
	js, err := utilyaml.ToJSON(b)
	if err != nil {
		return p, fmt.Errorf("--pod-policy %s: %w", file, err)
	}
	if len(strings.TrimSpace(string(js))) == 0 || string(js) == "null" {
		return p, nil // an empty file: the baseline
	}
	strict, err := kjson.UnmarshalStrict(js, &p)
	if err == nil && len(strict) > 0 {
		err = errors.Join(strict...)
	}
	if err != nil {
		return p, fmt.Errorf("--pod-policy %s: %w", file, err)
	}
	if err := p.validate(); err != nil {
		return p, fmt.Errorf("--pod-policy %s: %w", file, err)
	}
	return p, nil
}
