package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/internal/childproc"
	"github.com/kubespawn/kubespawn/spawner"
)

// What running Debian's JupyterHub here takes (shared/reference/jupyterhub-3.0.md).
const (
	jupyterhubBin = "/usr/bin/jupyterhub"
	debianPython  = "/usr/bin/python3"
	// nodePath lets configurable-http-proxy find its modules when the node
	// on PATH is not Debian's.
	nodePath = "/usr/share/nodejs"
	// Instance is the spawner service's --instance. Its pods are found by
	// their labels (the service's names carry a hash of the instance).
	Instance = "hub"
)

// ErrNoJupyterHub: the real hub is not installed; nothing is skipped.
var ErrNoJupyterHub = errors.New("JupyterHub 3.0 is not installed (/usr/bin/jupyterhub, importable by /usr/bin/python3): run `make jupyterhub` (apt-get install -y jupyterhub, as root) and re-run")

// CheckJupyterHub fails loudly when the hub cannot run.
func CheckJupyterHub() error {
	if _, err := os.Stat(jupyterhubBin); err != nil {
		return fmt.Errorf("%w: %v", ErrNoJupyterHub, err)
	}
	out, err := exec.Command(debianPython, "-c", "import jupyterhub, sys; sys.stdout.write(jupyterhub.__version__)").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %v: %s", ErrNoJupyterHub, err, out)
	}
	if !strings.HasPrefix(string(out), "3.") {
		return fmt.Errorf("%w: found jupyterhub %s", ErrNoJupyterHub, out)
	}
	return nil
}

// exampleDir is this directory (jupyterhub_config.py, the spawner module).
func exampleDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate examples/jupyterhub")
	}
	return filepath.Dir(file), nil
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitHTTP waits until url answers want (bounded by ctx), or exited says
// the process ended.
func waitHTTP(ctx context.Context, url string, header http.Header, want int, exited <-chan struct{}) error {
	var last string
	for {
		code, err := service.Probe(ctx, url, "", header)
		switch {
		case err != nil:
			last = err.Error()
		case code == want:
			return nil
		default:
			last = http.StatusText(code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %d (last: %s): %w", url, want, last, context.Cause(ctx))
		case <-exited:
			return fmt.Errorf("the process serving %s exited (last: %s)", url, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// --- the spawner service ---

// BuildSpawner builds examples/spawner into dir (with -race when this
// binary has it, so that the build reuses the test's compiled packages).
func BuildSpawner(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "kubespawn-spawner")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/kubespawn/kubespawn/examples/spawner")
	cmd := exec.CommandContext(ctx, gobin, args...)
	if src, err := exampleDir(); err == nil {
		cmd.Dir = src
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build examples/spawner: %w\n%s", err, b)
	}
	return out, nil
}

// ServiceOptions configures the spawner service process.
type ServiceOptions struct {
	Binary, Dir, Kubeconfig, Namespace string
	StartTimeout, SweepInterval        time.Duration
	OrphanMinAge                       time.Duration
	// StopTimeout is the service's --stop-timeout (default 60s).
	StopTimeout time.Duration
}

// Service is the demo spawner service, a child process.
type Service struct {
	*childproc.Process
	URL, Token, TokenFile string
}

// StartService runs the spawner service and waits until it is ready.
func StartService(ctx context.Context, o ServiceOptions) (*Service, error) {
	port, err := childproc.FreePort()
	if err != nil {
		return nil, err
	}
	token := randomHex()
	tokenFile := filepath.Join(o.Dir, "service-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if o.StopTimeout <= 0 {
		o.StopTimeout = 60 * time.Second
	}
	p, err := childproc.Start("spawner service", filepath.Join(o.Dir, "spawner-service.log"), childproc.Options{Env: os.Environ(), Dir: o.Dir}, o.Binary,
		"--kubeconfig="+o.Kubeconfig, "--namespace="+o.Namespace, "--instance="+Instance, "--listen="+addr,
		"--token-file="+tokenFile, "--image=example.org/notebook:1",
		"--start-timeout="+o.StartTimeout.String(), "--stop-timeout="+o.StopTimeout.String(), "--stall-timeout=4s", "--image-pull-grace=2s",
		"--sweep-interval="+o.SweepInterval.String(), "--orphan-min-age="+o.OrphanMinAge.String(), "-v=2")
	if err != nil {
		return nil, err
	}
	s := &Service{Process: p, URL: "http://" + addr, Token: token, TokenFile: tokenFile}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := waitHTTP(wctx, s.URL+"/readyz", nil, http.StatusOK, p.Done()); err != nil {
		s.Process.Stop(5 * time.Second)
		return nil, fmt.Errorf("spawner service: %w\n%s", err, s.Tail(30))
	}
	return s, nil
}

// KnownPods is the service's GET /known-pods, the pods of its user table.
func (s *Service) KnownPods(ctx context.Context) ([]string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/known-pods", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var kp struct{ Pods []string }
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("known-pods: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&kp)
	return kp.Pods, err
}

// Stop ends the service (SIGTERM: starts in flight are cancelled).
func (s *Service) Stop() { s.Process.Stop(30 * time.Second) }

// Freeze stops the service process (SIGSTOP): connections open, nothing
// answers, as a service that is slow or cut off. Thaw resumes it.
func (s *Service) Freeze() error { return s.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen service (SIGCONT).
func (s *Service) Thaw() error { return s.Signal(syscall.SIGCONT) }

// --- the stand-in notebook server ---

// StandIn answers the hub's readiness checks for the single-user servers:
// nothing runs containers here, so one loopback HTTP server plays every
// user's notebook server. It answers 200 for /user/{name}/... only while
// the API server has that user's pod Running and Ready, as the pod's own
// server would, and 503 otherwise.
type StandIn struct {
	Port   int
	server *http.Server
	done   chan struct{}
}

// StartStandIn listens on 127.0.0.1 (the pods' simulated IP).
func StartStandIn(client kubernetes.Interface, namespace string) (*StandIn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &StandIn{Port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{})}
	s.server = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/user/")
		user, _, _ := strings.Cut(rest, "/")
		user, err := url.PathUnescape(user)
		if !ok || err != nil || user == "" {
			http.Error(w, "not a user server path", http.StatusNotFound)
			return
		}
		pod, err := userPod(r.Context(), client, namespace, user)
		if err != nil || pod == nil || !podReady(pod) {
			http.Error(w, "no running notebook server for "+user, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "stand-in notebook server of %s (pod %s)\n", user, pod.Name)
	})}
	go func() {
		defer close(s.done)
		_ = s.server.Serve(ln)
	}()
	return s, nil
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Close stops the stand-in.
func (s *StandIn) Close() {
	_ = s.server.Close()
	<-s.done
}

// --- the hub ---

// HubOptions configures a JupyterHub process.
type HubOptions struct {
	Dir                       string // the hub's state: database, cookie secret, logs
	Service                   *Service
	NotebookPort              int
	StartTimeout, HTTPTimeout time.Duration
	PollInterval              time.Duration
}

// Hub is a real, unmodified JupyterHub process (with its proxy).
type Hub struct {
	*childproc.Process
	opts                   HubOptions
	URL, Token             string
	port, apiPort, cfgPort int
	starts                 int
}

// NewHub picks the hub's ports and token; Start runs it.
func NewHub(o HubOptions) (*Hub, error) {
	if err := CheckJupyterHub(); err != nil {
		return nil, err
	}
	h := &Hub{opts: o, Token: randomHex()}
	for _, p := range []*int{&h.port, &h.apiPort, &h.cfgPort} {
		port, err := childproc.FreePort()
		if err != nil {
			return nil, err
		}
		*p = port
	}
	h.URL = fmt.Sprintf("http://127.0.0.1:%d", h.port)
	return h, nil
}

// Start runs the hub (again, after Stop: same database and ports) and
// waits until its REST API answers.
func (h *Hub) Start(ctx context.Context) error {
	src, err := exampleDir()
	if err != nil {
		return err
	}
	secs := func(d time.Duration) string { return fmt.Sprint(int(d.Seconds())) }
	env := append(os.Environ(),
		"NODE_PATH="+nodePath,
		"KUBESPAWN_HUB_DIR="+h.opts.Dir,
		fmt.Sprintf("KUBESPAWN_HUB_PORT=%d", h.port),
		fmt.Sprintf("KUBESPAWN_HUB_API_PORT=%d", h.apiPort),
		fmt.Sprintf("KUBESPAWN_PROXY_API_PORT=%d", h.cfgPort),
		"KUBESPAWN_HUB_API_TOKEN="+h.Token,
		"KUBESPAWN_SERVICE_URL="+h.opts.Service.URL,
		"KUBESPAWN_TOKEN_FILE="+h.opts.Service.TokenFile,
		fmt.Sprintf("KUBESPAWN_NOTEBOOK_PORT=%d", h.opts.NotebookPort),
		"KUBESPAWN_START_TIMEOUT="+secs(h.opts.StartTimeout),
		"KUBESPAWN_HTTP_TIMEOUT="+secs(h.opts.HTTPTimeout),
		"KUBESPAWN_POLL_INTERVAL="+secs(h.opts.PollInterval),
	)
	h.starts++
	logPath := filepath.Join(h.opts.Dir, fmt.Sprintf("jupyterhub-%d.log", h.starts))
	p, err := childproc.Start("jupyterhub", logPath, childproc.Options{Env: env, Dir: h.opts.Dir}, jupyterhubBin,
		"-f", filepath.Join(src, "jupyterhub_config.py"), "--log-level=DEBUG")
	if err != nil {
		return err
	}
	h.Process = p
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := waitHTTP(wctx, h.URL+"/hub/api/users", h.auth(), http.StatusOK, p.Done()); err != nil {
		h.Process.Stop(5 * time.Second)
		return fmt.Errorf("jupyterhub: %w\n%s", err, h.Tail(40))
	}
	// The API answers after init_spawners_timeout (10 s) even if the checks
	// of the servers in the database (poll, get_url, the URL) go on in the
	// background: wait for them, "Initialized N spawners in S seconds".
	for h.Count(" spawners in ") == 0 {
		select {
		case <-wctx.Done():
			h.Process.Stop(5 * time.Second)
			return fmt.Errorf("jupyterhub: the servers in its database were not checked in time: %w\n%s", context.Cause(wctx), h.Tail(40))
		case <-p.Done():
			return fmt.Errorf("jupyterhub exited\n%s", h.Tail(40))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Stop stops the hub with SIGTERM (servers are left running:
// cleanup_servers is False) and waits for it and its proxy to exit.
func (h *Hub) Stop() { h.Process.Stop(30 * time.Second) }

func (h *Hub) auth() http.Header { return http.Header{"Authorization": {"token " + h.Token}} }

// API calls the hub's REST API (/hub/api + path) and decodes a JSON
// answer into out (if not nil).
func (h *Hub) API(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.URL+"/hub/api"+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header = h.auth()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(b) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w: %s", method, path, err, b)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return resp.StatusCode, nil
}

// HubServer is a user's default server as GET /hub/api/users/{name} shows it.
type HubServer struct {
	Pending     *string `json:"pending"`
	Ready       bool    `json:"ready"`
	URL         string  `json:"url"`
	ProgressURL string  `json:"progress_url"`
	State       any     `json:"state"`
}

// HubUser is GET /hub/api/users/{name}.
type HubUser struct {
	Name    string               `json:"name"`
	Pending *string              `json:"pending"`
	Servers map[string]HubServer `json:"servers"`
}

// Server returns the user's default server, if the hub has one.
func (u HubUser) Server() (HubServer, bool) {
	s, ok := u.Servers[""]
	return s, ok
}

// CreateUsers creates users in the hub.
func (h *Hub) CreateUsers(ctx context.Context, names []string) error {
	_, err := h.API(ctx, http.MethodPost, "/users", map[string]any{"usernames": names}, nil)
	return err
}

// User reads one user.
func (h *Hub) User(ctx context.Context, name string) (HubUser, error) {
	var u HubUser
	_, err := h.API(ctx, http.MethodGet, "/users/"+url.PathEscape(name), nil, &u)
	return u, err
}

// StartServer asks the hub to start name's server with user_options
// (the spawner passes the allowed annotations on to the pod).
func (h *Hub) StartServer(ctx context.Context, name string, annotations map[string]string) error {
	body := map[string]any{}
	if annotations != nil {
		body["annotations"] = annotations
	}
	_, err := h.API(ctx, http.MethodPost, "/users/"+url.PathEscape(name)+"/server", body, nil)
	return err
}

// StopServer asks the hub to stop name's server: 202 or 204 once accepted.
func (h *Hub) StopServer(ctx context.Context, name string) (int, error) {
	return h.API(ctx, http.MethodDelete, "/users/"+url.PathEscape(name)+"/server", nil, nil)
}

// ProgressEvent is one event of the hub's progress stream.
type ProgressEvent struct {
	Progress int    `json:"progress"`
	Message  string `json:"message"`
	Ready    bool   `json:"ready"`
	Failed   bool   `json:"failed"`
	URL      string `json:"url"`
}

// Progress reads the hub's progress stream of name's server to its end.
func (h *Hub) Progress(ctx context.Context, name string) ([]ProgressEvent, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL+"/hub/api/users/"+url.PathEscape(name)+"/server/progress", nil)
	if err != nil {
		return nil, err
	}
	req.Header = h.auth()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("progress of %s: %s", name, resp.Status)
	}
	var out []ProgressEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev ProgressEvent
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return out, fmt.Errorf("progress of %s: %w: %s", name, err, data)
		}
		out = append(out, ev)
	}
	return out, sc.Err()
}

// Settled waits until no server of users is pending in the hub, and
// returns the users as the hub then sees them.
func (h *Hub) Settled(ctx context.Context, users []string) (map[string]HubUser, error) {
	for {
		out := map[string]HubUser{}
		pending := ""
		for _, name := range users {
			u, err := h.User(ctx, name)
			if err != nil {
				return nil, err
			}
			out[name] = u
			if s, ok := u.Server(); (ok && s.Pending != nil) || u.Pending != nil {
				pending = name
			}
		}
		if pending == "" {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the hub still has a pending server (%s): %w", pending, context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// --- the API server's view ---

// PodsOnServer lists the service's pods straight from the API server
// (no proxy, no cache): user → pod, and the pods without a known user.
func PodsOnServer(ctx context.Context, client kubernetes.Interface, namespace string) (map[string]*corev1.Pod, error) {
	list, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
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

// Audit compares the hub's belief with the API server: leaked pods (on
// the server, not running in the hub) and missing pods (running in the
// hub, absent from the server).
type Audit struct {
	HubRunning, Pods int
	Leaked, Missing  []string
}

// Check audits users.
func Check(ctx context.Context, h *Hub, client kubernetes.Interface, namespace string, users []string) (Audit, error) {
	pods, err := PodsOnServer(ctx, client, namespace)
	if err != nil {
		return Audit{}, err
	}
	a := Audit{Pods: len(pods)}
	running := map[string]bool{}
	for _, name := range users {
		u, err := h.User(ctx, name)
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

// userPod reads user's pod of the service's instance from the API server
// (by its labels: key hash and instance); nil if there is none.
func userPod(ctx context.Context, client kubernetes.Interface, namespace, user string) (*corev1.Pod, error) {
	sel := fmt.Sprintf("%s=%s,%s=%s,%s=%s", spawner.LabelManagedBy, spawner.ManagedByValue,
		spawner.LabelInstance, Instance, spawner.LabelKeyHash, spawner.KeyHash(user))
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

// podGone says whether the API server has no pod of user.
func podGone(ctx context.Context, client kubernetes.Interface, namespace, user string) (bool, error) {
	pod, err := userPod(ctx, client, namespace, user)
	return err == nil && pod == nil, err
}

// parallel runs f for every item, at most n at once, and returns the
// first error.
func parallel[T any](items []T, n int, f func(T) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, n)
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(it); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}
