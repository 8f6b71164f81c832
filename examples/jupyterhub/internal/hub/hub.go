package hub

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/httpwait"
	"github.com/kubespawn/kubespawn/internal/childproc"
)

// What running Debian's JupyterHub here takes (shared/reference/jupyterhub-3.0.md).
const (
	jupyterhubBin = "/usr/bin/jupyterhub"
	// Python is Debian's interpreter, the one that imports jupyterhub
	// (the python3 on PATH may be another).
	Python = "/usr/bin/python3"
	// nodePath lets configurable-http-proxy find its modules when the node
	// on PATH is not Debian's.
	nodePath = "/usr/share/nodejs"
)

// errNotInstalled: the real hub is not installed; nothing is skipped.
var errNotInstalled = errors.New("JupyterHub 3.0 is not installed (/usr/bin/jupyterhub, importable by /usr/bin/python3): run `make jupyterhub` (apt-get install -y jupyterhub, as root) and re-run")

// Check fails loudly when the hub cannot run.
func Check() error {
	if _, err := os.Stat(jupyterhubBin); err != nil {
		return fmt.Errorf("%w: %v", errNotInstalled, err)
	}
	out, err := exec.Command(Python, "-c", "import jupyterhub, sys; sys.stdout.write(jupyterhub.__version__)").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %v: %s", errNotInstalled, err, out)
	}
	if !strings.HasPrefix(string(out), "3.") {
		return fmt.Errorf("%w: found jupyterhub %s", errNotInstalled, out)
	}
	return nil
}

// configFile is examples/jupyterhub/jupyterhub_config.py (beside the
// spawner module it configures).
func configFile() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate examples/jupyterhub")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "jupyterhub_config.py"), nil
}

// Options configures a hub.
type Options struct {
	// Dir holds the hub's state: database, cookie secret, logs.
	Dir string
	// ServiceURL and ServiceTokenFile: the spawner service the spawner
	// class talks to.
	ServiceURL, ServiceTokenFile string
	// NotebookPort is the single-user servers' port.
	NotebookPort int
	// StartTimeout, HTTPTimeout, PollInterval: the hub's start_timeout,
	// http_timeout and poll_interval.
	StartTimeout, HTTPTimeout, PollInterval time.Duration
	// Env is more of jupyterhub_config.py's KUBESPAWN_* settings (e.g.
	// KUBESPAWN_PROCESS_RUNTIME: real single-user servers).
	Env []string
}

// Hub is a JupyterHub process (with its proxy).
type Hub struct {
	// URL is the hub's public URL on loopback.
	URL                    string
	opts                   Options
	token                  string
	port, apiPort, cfgPort int
	starts                 int
	proc                   *childproc.Process
}

// Start picks the hub's ports and token, and runs it (Check first).
func Start(ctx context.Context, o Options) (*Hub, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	ports, err := childproc.FreePorts(3)
	if err != nil {
		return nil, err
	}
	h := &Hub{opts: o, token: rand.Text(), port: ports[0], apiPort: ports[1], cfgPort: ports[2]}
	h.URL = fmt.Sprintf("http://127.0.0.1:%d", h.port)
	if err := h.Start(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// Start runs the hub again after Stop (same database and ports) and
// waits until its REST API answers.
func (h *Hub) Start(ctx context.Context) error {
	cfg, err := configFile()
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
		"KUBESPAWN_HUB_API_TOKEN="+h.token,
		"KUBESPAWN_SERVICE_URL="+h.opts.ServiceURL,
		"KUBESPAWN_TOKEN_FILE="+h.opts.ServiceTokenFile,
		fmt.Sprintf("KUBESPAWN_NOTEBOOK_PORT=%d", h.opts.NotebookPort),
		"KUBESPAWN_START_TIMEOUT="+secs(h.opts.StartTimeout),
		"KUBESPAWN_HTTP_TIMEOUT="+secs(h.opts.HTTPTimeout),
		"KUBESPAWN_POLL_INTERVAL="+secs(h.opts.PollInterval),
	)
	env = append(env, h.opts.Env...)
	h.starts++
	logPath := filepath.Join(h.opts.Dir, fmt.Sprintf("jupyterhub-%d.log", h.starts))
	p, err := childproc.Start("jupyterhub", logPath, childproc.Options{Env: env, Dir: h.opts.Dir}, jupyterhubBin,
		"-f", cfg, "--log-level=DEBUG")
	if err != nil {
		return err
	}
	h.proc = p
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := httpwait.For(wctx, h.URL+"/hub/api/users", h.auth(), http.StatusOK, p.Done()); err != nil {
		p.Stop(5 * time.Second)
		return fmt.Errorf("jupyterhub: %w\n%s", err, p.Tail(40))
	}
	// The API answers after init_spawners_timeout (10 s) even if the checks
	// of the servers in the database (poll, get_url, the URL) go on in the
	// background: wait for them, "Initialized N spawners in S seconds".
	for p.Count(" spawners in ") == 0 {
		select {
		case <-wctx.Done():
			p.Stop(5 * time.Second)
			return fmt.Errorf("jupyterhub: the servers in its database were not checked in time: %w\n%s", context.Cause(wctx), p.Tail(40))
		case <-p.Done():
			return fmt.Errorf("jupyterhub exited\n%s", p.Tail(40))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Stop stops the hub with SIGTERM (servers are left running:
// cleanup_servers is False) and waits for it and its proxy to exit.
func (h *Hub) Stop() { h.proc.Stop(30 * time.Second) }

// Count counts the occurrences of text in the log of the hub's last run.
func (h *Hub) Count(text string) int { return h.proc.Count(text) }

// Tail is the last n lines of the log of the hub's last run.
func (h *Hub) Tail(n int) string { return h.proc.Tail(n) }

func (h *Hub) auth() http.Header { return http.Header{"Authorization": {"token " + h.token}} }

// api calls the hub's REST API (/hub/api + path) and decodes a JSON
// answer into out (if not nil).
func (h *Hub) api(ctx context.Context, method, path string, body, out any) (int, error) {
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

// Server is a user's server as GET /hub/api/users/{name} shows it.
type Server struct {
	// Pending is "spawn" or "stop" while one is in progress.
	Pending *string `json:"pending"`
	Ready   bool    `json:"ready"`
}

// User is GET /hub/api/users/{name}.
type User struct {
	Name    string            `json:"name"`
	Pending *string           `json:"pending"`
	Servers map[string]Server `json:"servers"`
}

// Server returns the user's default server, if the hub has one.
func (u User) Server() (Server, bool) {
	s, ok := u.Servers[""]
	return s, ok
}

// CreateUsers creates users in the hub.
func (h *Hub) CreateUsers(ctx context.Context, names []string) error {
	_, err := h.api(ctx, http.MethodPost, "/users", map[string]any{"usernames": names}, nil)
	return err
}

// User reads one user.
func (h *Hub) User(ctx context.Context, name string) (User, error) {
	var u User
	_, err := h.api(ctx, http.MethodGet, "/users/"+url.PathEscape(name), nil, &u)
	return u, err
}

// StartServer asks the hub to start name's server with user_options
// (the spawner passes the allowed annotations on to the pod).
func (h *Hub) StartServer(ctx context.Context, name string, annotations map[string]string) error {
	body := map[string]any{}
	if annotations != nil {
		body["annotations"] = annotations
	}
	_, err := h.api(ctx, http.MethodPost, "/users/"+url.PathEscape(name)+"/server", body, nil)
	return err
}

// StartNamedServer asks the hub to start name's server serverName (""
// for the default one) with userOptions as the request's body (the
// user_options: a profile's slug, say).
func (h *Hub) StartNamedServer(ctx context.Context, name, serverName string, userOptions map[string]any) error {
	path := "/users/" + url.PathEscape(name) + "/server"
	if serverName != "" {
		path = "/users/" + url.PathEscape(name) + "/servers/" + url.PathEscape(serverName)
	}
	if userOptions == nil {
		userOptions = map[string]any{}
	}
	_, err := h.api(ctx, http.MethodPost, path, userOptions, nil)
	return err
}

// StopNamedServer stops name's server serverName ("" the default one).
func (h *Hub) StopNamedServer(ctx context.Context, name, serverName string) (int, error) {
	if serverName == "" {
		return h.StopServer(ctx, name)
	}
	return h.api(ctx, http.MethodDelete, "/users/"+url.PathEscape(name)+"/servers/"+url.PathEscape(serverName), nil, nil)
}

// Token creates an API token of user name (the rig's service may:
// admin:users), as the user's browser session would hold one.
func (h *Hub) Token(ctx context.Context, name string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	_, err := h.api(ctx, http.MethodPost, "/users/"+url.PathEscape(name)+"/tokens", map[string]any{"note": "kubespawn test", "expires_in": 3600}, &out)
	return out.Token, err
}

// Get GETs path on the hub's public URL (through its
// configurable-http-proxy) with token, as a user's client would.
func (h *Hub) Get(ctx context.Context, path, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// DeleteUser deletes the user from the hub, which calls delete_forever on
// each of the user's (stopped) servers.
func (h *Hub) DeleteUser(ctx context.Context, name string) error {
	_, err := h.api(ctx, http.MethodDelete, "/users/"+url.PathEscape(name), nil, nil)
	return err
}

// StopServer asks the hub to stop name's server: 202 or 204 once accepted.
func (h *Hub) StopServer(ctx context.Context, name string) (int, error) {
	return h.api(ctx, http.MethodDelete, "/users/"+url.PathEscape(name)+"/server", nil, nil)
}

// ProgressEvent is one event of the hub's progress stream.
type ProgressEvent struct {
	Progress int    `json:"progress"`
	Message  string `json:"message"`
	Ready    bool   `json:"ready"`
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
func (h *Hub) Settled(ctx context.Context, users []string) (map[string]User, error) {
	for {
		out := map[string]User{}
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
