package podproc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The kubelet's reasons for a container that cannot be created or started.
const (
	ReasonCreateContainerConfigError = "CreateContainerConfigError"
	ReasonCreateContainerError       = "CreateContainerError"
	ReasonStartError                 = "StartError"
)

// Kinds of *ContainerError, for errors.Is.
var (
	// ErrCreateContainerConfig: the container's configuration cannot be
	// resolved (a Secret, ConfigMap or key it needs is missing, runAsNonRoot
	// cannot hold). The kubelet keeps retrying: the pod starts once the
	// configuration exists.
	ErrCreateContainerConfig = errors.New("podproc: container configuration error")
	// ErrCreateContainer: the container cannot be run as a process at all
	// (no command). Retrying cannot help: the spec is immutable.
	ErrCreateContainer = errors.New("podproc: container cannot be created")
	// ErrStart: the process could not be started (executable not found,
	// working directory missing, exec refused).
	ErrStart = errors.New("podproc: container process did not start")
)

// ContainerError is why a container cannot run, as the kubelet reports it:
// Reason is the container state's reason, Message its message.
type ContainerError struct {
	Reason  string
	Message string
	kind    error
}

func (e *ContainerError) Error() string { return e.Reason + ": " + e.Message }

// Unwrap returns the kind: ErrCreateContainerConfig, ErrCreateContainer or
// ErrStart.
func (e *ContainerError) Unwrap() error { return e.kind }

func configError(format string, args ...any) error {
	return &ContainerError{Reason: ReasonCreateContainerConfigError, Message: fmt.Sprintf(format, args...), kind: ErrCreateContainerConfig}
}

// DefaultPath is the PATH of a process whose environment sets none, when the
// simulator's own environment has none either.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// requestTimeout bounds each API request Resolve makes.
const requestTimeout = 30 * time.Second

// Config is what Resolve needs besides the pod.
type Config struct {
	// IP is the pod's IP: wildcard listen addresses are rewritten to it
	// (see RewriteArgs and RewriteServiceURL) and it is status.podIP for
	// the downward API.
	IP string
	// HostIP is the node's IP (status.hostIP).
	HostIP string
	// Dir is the pod's own directory: HOME is Dir/home, TMPDIR Dir/tmp and
	// the working directory Dir/work, unless the container sets them; the
	// log is Dir/<container>.log.
	Dir string
	// Entrypoints maps an image to its ENTRYPOINT, as a container runtime
	// reads it from the image: a container without command runs
	// entrypoint+args. An empty entrypoint (tini -g -- and the like) runs
	// args as the command. A container without command whose image is not
	// in the map cannot be run (ErrCreateContainer).
	Entrypoints map[string][]string
	// Allocatable is the node's allocatable resources: the value of a
	// resourceFieldRef on a limit the container does not set.
	Allocatable v1.ResourceList
}

// Spec is how one container runs as a local process.
type Spec struct {
	// Name identifies the container in messages and logs:
	// namespace/pod/container.
	Name string
	// Argv is the command line; Argv[0] is the executable's path.
	Argv []string
	// Env is the whole environment.
	Env []string
	// Dir is the working directory.
	Dir string
	// MakeDirs are created before the process starts (and given to
	// Credential's user): the pod's own HOME, TMPDIR and working directory
	// when the container does not set them.
	MakeDirs []string
	// LogPath receives the process's output, appended.
	LogPath string
	// Credential, if not nil, is the user and groups the process runs as.
	Credential *syscall.Credential
	// Notes say what was rewritten or ignored, for the caller's logs.
	Notes []string
}

// Resolve builds the process spec of the container named container of pod:
// its command (or its image's entrypoint) and args with $(VAR) references
// expanded and wildcard listen addresses rewritten to cfg.IP; its
// environment from envFrom and env (literal values, Secret and ConfigMap
// keys read from the API server through client, the downward API's
// fieldRef and resourceFieldRef); its working directory; the user it runs
// as.
//
// A configuration that cannot be resolved is a *ContainerError of kind
// ErrCreateContainerConfig, with the kubelet's message (`secret "s" not
// found`, `couldn't find key k in Secret ns/s`); a container that cannot
// run as a process, of kind ErrCreateContainer; an executable not found, of
// kind ErrStart. Any other error (the API server unreachable, say) is
// transient: retry.
func Resolve(ctx context.Context, client kubernetes.Interface, pod *v1.Pod, container string, cfg Config) (*Spec, error) {
	var c *v1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return nil, fmt.Errorf("podproc: pod %s/%s has no container %q", pod.Namespace, pod.Name, container)
	}
	spec := &Spec{
		Name:    pod.Namespace + "/" + pod.Name + "/" + c.Name,
		LogPath: LogPath(cfg.Dir, c.Name),
	}
	r := &resolver{ctx: ctx, client: client, pod: pod, c: c, cfg: cfg, secrets: map[string]*v1.Secret{}, configMaps: map[string]*v1.ConfigMap{}}

	env, order, err := r.env()
	if err != nil {
		return nil, err
	}
	// The process's base environment, like an image's: PATH, HOSTNAME and
	// a HOME and TMPDIR of the pod's own.
	home, tmp, work := filepath.Join(cfg.Dir, "home"), filepath.Join(cfg.Dir, "tmp"), filepath.Join(cfg.Dir, "work")
	base := []struct{ k, v string }{
		{"PATH", hostPath()},
		{"HOSTNAME", pod.Name},
		{"HOME", home},
		{"TMPDIR", tmp},
	}
	for i := len(base) - 1; i >= 0; i-- {
		b := base[i]
		if _, ok := env[b.k]; !ok {
			env[b.k] = b.v
			order = append([]string{b.k}, order...)
			if b.k == "HOME" || b.k == "TMPDIR" {
				spec.MakeDirs = append(spec.MakeDirs, b.v)
			}
		}
	}
	if v, ok := env[ServiceURLEnv]; ok {
		if nv, changed := RewriteServiceURL(v, cfg.IP); changed {
			env[ServiceURLEnv] = nv
			spec.Notes = append(spec.Notes, ServiceURLEnv+"="+v+" -> "+nv)
		}
	}
	for _, k := range order {
		spec.Env = append(spec.Env, k+"="+env[k])
	}

	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var argv []string
	if len(c.Command) > 0 {
		argv = append(append(argv, c.Command...), c.Args...)
	} else {
		ep, ok := cfg.Entrypoints[c.Image]
		if !ok {
			return nil, &ContainerError{Reason: ReasonCreateContainerError, kind: ErrCreateContainer, Message: fmt.Sprintf(
				"podsim runs a container's command as a local process, and container %q has no command (only args): image %q's entrypoint is unknown here; set command, or register the image's entrypoint",
				c.Name, c.Image)}
		}
		argv = append(append(argv, ep...), c.Args...)
		if len(argv) == 0 {
			return nil, &ContainerError{Reason: ReasonCreateContainerError, kind: ErrCreateContainer, Message: fmt.Sprintf("container %q has neither command nor args, and image %q has an empty entrypoint", c.Name, c.Image)}
		}
	}
	for i := range argv {
		argv[i] = expand(argv[i], lookup)
	}
	rest, notes := RewriteArgs(argv[1:], cfg.IP)
	spec.Notes = append(spec.Notes, notes...)
	spec.Dir = c.WorkingDir
	if spec.Dir == "" {
		spec.Dir = work
		spec.MakeDirs = append(spec.MakeDirs, work)
	}
	exe, err := lookPath(argv[0], env["PATH"], spec.Dir)
	if err != nil {
		return nil, err
	}
	spec.Argv = append([]string{exe}, rest...)

	cred, notes, err := credential(pod, c)
	if err != nil {
		return nil, err
	}
	spec.Credential = cred
	spec.Notes = append(spec.Notes, notes...)
	return spec, nil
}

// LogPath is the log file of container in the pod directory dir.
func LogPath(dir, container string) string { return filepath.Join(dir, container+".log") }

func hostPath() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return DefaultPath
}

// lookPath finds name like the container runtime does: a name with a slash
// as it is, else the first executable file of that name in path.
func lookPath(name, path, dir string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &ContainerError{Reason: ReasonStartError, kind: ErrStart,
		Message: fmt.Sprintf("failed to start container process: exec: %q: executable file not found in $PATH", name)}
}

// credential is the user the process runs as: the security context's
// runAsUser and runAsGroup (container over pod), the pod's supplemental
// groups and fsGroup. Only root can switch users: a simulator that is not
// root runs every process as itself, and says so in a note.
func credential(pod *v1.Pod, c *v1.Container) (*syscall.Credential, []string, error) {
	var uid, gid *int64
	var nonRoot *bool
	var groups []uint32
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid, nonRoot = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
		for _, g := range psc.SupplementalGroups {
			groups = append(groups, uint32(g))
		}
		if psc.FSGroup != nil {
			groups = append(groups, uint32(*psc.FSGroup))
		}
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			uid = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			gid = csc.RunAsGroup
		}
		if csc.RunAsNonRoot != nil {
			nonRoot = csc.RunAsNonRoot
		}
	}
	self := int64(os.Geteuid())
	effective := self
	if uid != nil {
		effective = *uid
	}
	if nonRoot != nil && *nonRoot && effective == 0 {
		return nil, nil, configError("container has runAsNonRoot and image will run as root (pod: %q, container: %s)",
			fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID), c.Name)
	}
	if uid == nil && gid == nil && len(groups) == 0 {
		return nil, nil, nil
	}
	if self != 0 {
		return nil, []string{fmt.Sprintf("security context (runAsUser %v, runAsGroup %v, groups %v) ignored: the simulator is not root", deref(uid), deref(gid), groups)}, nil
	}
	cred := &syscall.Credential{Uid: uint32(effective), Groups: groups}
	if gid != nil {
		cred.Gid = uint32(*gid)
	}
	return cred, nil, nil
}

func deref(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// resolver resolves one container's environment; it reads each Secret and
// ConfigMap once.
type resolver struct {
	ctx        context.Context
	client     kubernetes.Interface
	pod        *v1.Pod
	c          *v1.Container
	cfg        Config
	secrets    map[string]*v1.Secret
	configMaps map[string]*v1.ConfigMap
}

// env returns the container's environment from envFrom, then env (later
// entries win), as the kubelet builds it, and the order of first definition.
func (r *resolver) env() (map[string]string, []string, error) {
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	for _, src := range r.c.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			cm, err := r.configMap(src.ConfigMapRef.Name, ptrTrue(src.ConfigMapRef.Optional))
			if err != nil {
				return nil, nil, err
			}
			if cm != nil {
				for k, v := range cm.Data {
					set(src.Prefix+k, v)
				}
			}
		case src.SecretRef != nil:
			s, err := r.secret(src.SecretRef.Name, ptrTrue(src.SecretRef.Optional))
			if err != nil {
				return nil, nil, err
			}
			if s != nil {
				for k, v := range s.Data {
					set(src.Prefix+k, string(v))
				}
			}
		}
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, e := range r.c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, lookup))
			continue
		}
		v, ok, err := r.valueFrom(e.Name, e.ValueFrom)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			set(e.Name, v)
		}
	}
	return env, order, nil
}

func ptrTrue(b *bool) bool { return b != nil && *b }

// valueFrom resolves one env var's source; ok is false for an optional key
// that is missing (the variable is then not set).
func (r *resolver) valueFrom(name string, src *v1.EnvVarSource) (string, bool, error) {
	switch {
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := r.secret(ref.Name, ptrTrue(ref.Optional))
		if err != nil || s == nil {
			return "", false, err
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if ptrTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, configError("couldn't find key %s in Secret %s/%s", ref.Key, r.pod.Namespace, ref.Name)
		}
		return string(v), true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := r.configMap(ref.Name, ptrTrue(ref.Optional))
		if err != nil || cm == nil {
			return "", false, err
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if ptrTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, configError("couldn't find key %s in ConfigMap %s/%s", ref.Key, r.pod.Namespace, ref.Name)
	case src.FieldRef != nil:
		v, err := r.fieldRef(src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		v, err := r.resourceFieldRef(src.ResourceFieldRef)
		return v, err == nil, err
	}
	return "", false, configError("env %s: unsupported valueFrom", name)
}

func (r *resolver) secret(name string, optional bool) (*v1.Secret, error) {
	if s, ok := r.secrets[name]; ok {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, requestTimeout)
	defer cancel()
	s, err := r.client.CoreV1().Secrets(r.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && optional:
		s = nil
	case apierrors.IsNotFound(err):
		return nil, configError("secret %q not found", name)
	case err != nil:
		return nil, err
	}
	r.secrets[name] = s
	return s, nil
}

func (r *resolver) configMap(name string, optional bool) (*v1.ConfigMap, error) {
	if cm, ok := r.configMaps[name]; ok {
		return cm, nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, requestTimeout)
	defer cancel()
	cm, err := r.client.CoreV1().ConfigMaps(r.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && optional:
		cm = nil
	case apierrors.IsNotFound(err):
		return nil, configError("configmap %q not found", name)
	case err != nil:
		return nil, err
	}
	r.configMaps[name] = cm
	return cm, nil
}

// fieldRef is the downward API's value of a field path, as the kubelet
// gives it to env vars.
func (r *resolver) fieldRef(path string) (string, error) {
	p := r.pod
	if k, ok := subscript(path, "metadata.labels"); ok {
		return p.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return p.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return r.cfg.IP, nil
	case "status.hostIP", "status.hostIPs":
		return r.cfg.HostIP, nil
	}
	return "", configError("unsupported fieldRef %q", path)
}

// subscript parses prefix['key'].
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// resourceFieldRef is the value of a container's limit or request, rounded
// up to the divisor as the kubelet does; an unset limit is the node's
// allocatable.
func (r *resolver) resourceFieldRef(ref *v1.ResourceFieldSelector) (string, error) {
	c := r.c
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		for i := range r.pod.Spec.Containers {
			if r.pod.Spec.Containers[i].Name == ref.ContainerName {
				c = &r.pod.Spec.Containers[i]
			}
		}
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", configError("unsupported resourceFieldRef %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[v1.ResourceName(res)]
	if !ok && kind == "limits" {
		q, ok = r.cfg.Allocatable[v1.ResourceName(res)]
	}
	if !ok && kind == "requests" {
		q, ok = resource.MustParse("0"), true
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if !ok {
		return "", configError("resourceFieldRef %q: no such resource on container %s or the node", ref.Resource, c.Name)
	}
	if res == string(v1.ResourceCPU) {
		return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))), nil
	}
	return fmt.Sprint(int64(math.Ceil(float64(q.Value()) / float64(divisor.Value())))), nil
}
