package hubtest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hub"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/spawnersvc"
	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/internal/svcproxy"
	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/spawner"
)

// Config configures one hub + spawner service + stand-in.
type Config struct {
	// Admin is the control plane's admin config; Client its client (the
	// view that bypasses everything: the audit's).
	Admin  *rest.Config
	Client kubernetes.Interface
	// Namespace of the users' pods; Dir for state and logs.
	Namespace, Dir string
	// SpawnerBinary is examples/spawner built (spawnersvc.Build).
	SpawnerBinary string
	// ThroughProxy puts a fault proxy between the service and the API
	// server (Env.Proxy).
	ThroughProxy bool
	// HubStartTimeout, HTTPTimeout: the hub's start_timeout, http_timeout.
	HubStartTimeout, HTTPTimeout time.Duration
	// SweepInterval, OrphanMinAge: the service's sweeper.
	SweepInterval, OrphanMinAge time.Duration
	// StopTimeout: the service's --stop-timeout (default 60s).
	StopTimeout time.Duration
	// ProcessRuntime, if set, makes the users' servers real: the hub's
	// class asks for this RuntimeClass (the pod simulator's process
	// runtime), so each pod runs Debian's jupyterhub-singleuser at an IP
	// of its own (the simulator's PodCIDR), port 8888, as uid 1000. Otherwise the stand-in
	// answers for every server.
	ProcessRuntime string
	// Profiles turns on the configuration's profile_list (Small, Large).
	Profiles bool
	// Storage, if set, is the capacity of a claim per user (the
	// configuration's storage_pvc_ensure).
	Storage string
	// Services turns on the configuration's services_enabled with
	// dns_name_template "{cluster_ip}" (no cluster DNS here), and runs a
	// kube-proxy stand-in (internal/svcproxy, Env.SvcProxy) over
	// Namespace, so that the hub reaches each server through its
	// Service's ClusterIP. The control plane's --service-cluster-ip-range
	// must then be a loopback range (testcluster.Options.ServiceCIDR) and
	// its controller-manager must run the EndpointSlice controller.
	Services bool
}

// SingleUserImage is the image name the rig's real servers use: the pod
// simulator maps it to no entrypoint, so the container's args
// (KubeSpawner's cmd + get_args(): jupyterhub-singleuser ...) run as is.
const SingleUserImage = "kubespawn.test/jupyterhub-singleuser:3.0"

// LargeProfileImage is the image of the configuration's Large profile
// (jupyterhub_config.py): a profile changes the image, as z2jh's do. A
// simulator that runs real servers maps it to the same entrypoint as
// SingleUserImage: the process is jupyterhub-singleuser either way.
const LargeProfileImage = "kubespawn.test/datascience-notebook:3.0"

// Env is a running hub with its spawner service and stand-in.
type Env struct {
	Config  Config
	Proxy   *faultproxy.Proxy // nil unless Config.ThroughProxy
	Service *spawnersvc.Service
	Hub     *hub.Hub
	// SvcProxy serves the Services' ClusterIPs (Config.Services); nil
	// otherwise.
	SvcProxy *svcproxy.Proxy
	standIn  *standIn
	// routeToken may read the hub's proxy routes (Routes), nothing else.
	routeToken string
}

// Start starts the stand-in, the service (through a fault proxy if
// asked) and the hub; Close stops them all.
func Start(ctx context.Context, c Config) (_ *Env, err error) {
	e := &Env{Config: c}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	svcCfg := c.Admin
	if c.ThroughProxy {
		// TLS (HTTP/2): a kubeconfig's token is only sent over TLS.
		if e.Proxy, err = faultproxy.New(c.Admin, faultproxy.Options{HTTP2: true}); err != nil {
			return nil, err
		}
		svcCfg = e.Proxy.ClientConfig(c.Admin)
	}
	kubeconfig := filepath.Join(c.Dir, "service.kubeconfig")
	if err := testcluster.WriteKubeConfig(kubeconfig, svcCfg); err != nil {
		return nil, err
	}
	if e.standIn, err = startStandIn(c.Client, c.Namespace); err != nil {
		return nil, err
	}
	if c.Services {
		if e.SvcProxy, err = svcproxy.Start(ctx, svcproxy.Options{Client: c.Client, Namespace: c.Namespace}); err != nil {
			return nil, err
		}
	}
	e.Service, err = spawnersvc.Start(ctx, spawnersvc.Options{
		Binary: c.SpawnerBinary, Dir: c.Dir, Kubeconfig: kubeconfig, Namespace: c.Namespace,
		StartTimeout: 3 * c.HubStartTimeout, SweepInterval: c.SweepInterval, OrphanMinAge: c.OrphanMinAge,
		StopTimeout: c.StopTimeout,
	})
	if err != nil {
		return nil, err
	}
	hubDir := filepath.Join(c.Dir, "hub")
	if err := os.MkdirAll(hubDir, 0o700); err != nil {
		return nil, err
	}
	ho := hub.Options{Dir: hubDir, ServiceURL: e.Service.URL, ServiceTokenFile: e.Service.TokenFile,
		NotebookPort: e.standIn.port, StartTimeout: c.HubStartTimeout, HTTPTimeout: c.HTTPTimeout, PollInterval: 5 * time.Second}
	if c.ProcessRuntime != "" {
		ho.NotebookPort = 8888
		ho.Env = []string{"KUBESPAWN_PROCESS_RUNTIME=" + c.ProcessRuntime, "KUBESPAWN_SINGLEUSER_IMAGE=" + SingleUserImage}
	}
	if c.Profiles {
		ho.Env = append(ho.Env, "KUBESPAWN_PROFILES=1")
	}
	if c.Storage != "" {
		ho.Env = append(ho.Env, "KUBESPAWN_STORAGE="+c.Storage)
	}
	if c.Services {
		ho.Env = append(ho.Env, "KUBESPAWN_SERVICES=1")
	}
	e.routeToken = rand.Text()
	ho.Env = append(ho.Env, "KUBESPAWN_ROUTE_READER_TOKEN="+e.routeToken)
	e.Hub, err = hub.Start(ctx, ho)
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Close stops the hub, the service, the stand-in and the proxy.
func (e *Env) Close() {
	if e.Hub != nil {
		e.Hub.Stop()
	}
	if e.Service != nil {
		e.Service.Stop()
	}
	if e.SvcProxy != nil {
		e.SvcProxy.Stop()
	}
	if e.standIn != nil {
		e.standIn.close()
	}
	if e.Proxy != nil {
		_ = e.Proxy.Close()
	}
}

// Logs are the tails of the hub's and the service's logs.
func (e *Env) Logs() string {
	var b strings.Builder
	if e.Hub != nil {
		b.WriteString(e.Hub.Tail(60))
	}
	if e.Service != nil {
		b.WriteString(e.Service.Tail(60))
	}
	return b.String()
}

// Routes are the hub's proxy routes (GET /hub/api/proxy): route spec
// (/user/ada/) → target (http://127.96.3.17:8888).
func (e *Env) Routes(ctx context.Context) (map[string]string, error) {
	code, body, err := e.Hub.Get(ctx, "/hub/api/proxy", e.routeToken)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /hub/api/proxy: %d: %s", code, body)
	}
	var routes map[string]struct {
		Target string `json:"target"`
	}
	if err := json.Unmarshal(body, &routes); err != nil {
		return nil, fmt.Errorf("GET /hub/api/proxy: %w: %s", err, body)
	}
	out := make(map[string]string, len(routes))
	for spec, r := range routes {
		out[spec] = r.Target
	}
	return out, nil
}

// --- the API server's view ---

// Pods lists the service's pods straight from the API server (no proxy,
// no cache): user → pod, and "?"+name for a pod without a user.
func (e *Env) Pods(ctx context.Context) (map[string]*corev1.Pod, error) {
	list, err := e.Config.Client.CoreV1().Pods(e.Config.Namespace).List(ctx, metav1.ListOptions{LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
	if err != nil {
		return nil, err
	}
	out := map[string]*corev1.Pod{}
	for i := range list.Items {
		p := &list.Items[i]
		key := p.Annotations[spawner.AnnotationKey]
		if key == "" {
			key = "?" + p.Name
		}
		out[key] = p
	}
	return out, nil
}

// UserPod reads user's pod from the API server; nil if there is none.
func (e *Env) UserPod(ctx context.Context, user string) (*corev1.Pod, error) {
	return userPod(ctx, e.Config.Client, e.Config.Namespace, user)
}

// userPod finds user's pod of the service's instance by its labels (key
// hash and instance) and its key annotation.
func userPod(ctx context.Context, client kubernetes.Interface, namespace, user string) (*corev1.Pod, error) {
	sel := fmt.Sprintf("%s=%s,%s=%s,%s=%s", spawner.LabelManagedBy, spawner.ManagedByValue,
		spawner.LabelInstance, spawnersvc.Instance, spawner.LabelKeyHash, spawner.KeyHash(user))
	list, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	for i := range list.Items {
		if p := &list.Items[i]; p.Annotations[spawner.AnnotationKey] == user {
			return p, nil
		}
	}
	return nil, nil
}

// Audit compares the hub's belief with the API server: leaked pods (on
// the server, not running in the hub) and missing pods (running in the
// hub, absent from the server).
type Audit struct {
	HubRunning, Pods int
	Leaked, Missing  []string
}

// Check audits users.
func (e *Env) Check(ctx context.Context, users []string) (Audit, error) {
	pods, err := e.Pods(ctx)
	if err != nil {
		return Audit{}, err
	}
	a := Audit{Pods: len(pods)}
	running := map[string]bool{}
	for _, name := range users {
		u, err := e.Hub.User(ctx, name)
		if err != nil {
			return Audit{}, err
		}
		if s, ok := u.Server(); ok && s.Ready {
			running[name] = true
			a.HubRunning++
			if _, ok := pods[name]; !ok {
				a.Missing = append(a.Missing, name)
			}
		}
	}
	for key, p := range pods {
		if !running[key] {
			a.Leaked = append(a.Leaked, p.Name)
		}
	}
	return a, nil
}

// StopAll stops every running server of users through the hub and waits
// until the API server has none of their pods.
func (e *Env) StopAll(ctx context.Context, users []string) error {
	if err := Parallel(users, 16, func(name string) error {
		u, err := e.Hub.User(ctx, name)
		if err != nil {
			return err
		}
		if _, ok := u.Server(); !ok {
			return nil
		}
		_, err = e.Hub.StopServer(ctx, name)
		return err
	}); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := e.Hub.Settled(sctx, users); err != nil {
		return err
	}
	for {
		pods, err := e.Pods(sctx)
		if err == nil && len(pods) == 0 {
			return nil
		}
		select {
		case <-sctx.Done():
			names := []string{}
			for _, p := range pods {
				names = append(names, p.Name)
			}
			slices.Sort(names)
			return fmt.Errorf("pods left after stopping every server: %v (%v)", names, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Parallel runs f for every item, at most n at once, and returns the
// first error once all have returned.
func Parallel[T any](items []T, n int, f func(T) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, n)
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(it); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}
