package spawnersvc

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/httpwait"
	"github.com/kubespawn/kubespawn/internal/childproc"
)

// Instance is the service's --instance. Its pods are found by their
// labels (the service's names carry a hash of the instance).
const Instance = "hub"

// Build builds examples/spawner into dir and returns the binary's path.
func Build(ctx context.Context, dir string) (string, error) {
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
	// Inside the module, wherever the caller runs.
	if _, file, _, ok := runtime.Caller(0); ok {
		cmd.Dir = filepath.Dir(file)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build examples/spawner: %w\n%s", err, b)
	}
	return out, nil
}

// Options configures the service process.
type Options struct {
	// Binary is examples/spawner built (Build); Dir holds its token file
	// and log.
	Binary, Dir string
	// Kubeconfig and Namespace: where its pods go.
	Kubeconfig, Namespace string
	// StartTimeout, SweepInterval, OrphanMinAge: its flags of those names.
	StartTimeout, SweepInterval, OrphanMinAge time.Duration
	// StopTimeout is its --stop-timeout (0: 60s).
	StopTimeout time.Duration
}

// Service is a running spawner service.
type Service struct {
	// URL is its base URL on loopback; TokenFile holds its bearer token.
	URL, TokenFile string
	token          string
	proc           *childproc.Process
}

// Start runs the service and waits until it is ready.
func Start(ctx context.Context, o Options) (*Service, error) {
	port, err := childproc.FreePort()
	if err != nil {
		return nil, err
	}
	token := rand.Text()
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
	s := &Service{URL: "http://" + addr, TokenFile: tokenFile, token: token, proc: p}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := s.WaitReadyz(wctx, http.StatusOK); err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("spawner service: %w\n%s", err, p.Tail(30))
	}
	return s, nil
}

// WaitReadyz waits (bounded by ctx) until the service's /readyz answers
// want: 503 once it reports a stalled cache.
func (s *Service) WaitReadyz(ctx context.Context, want int) error {
	return httpwait.For(ctx, s.URL+"/readyz", nil, want, s.proc.Done())
}

// KnownPods is the service's GET /known-pods, the pods of its user table.
func (s *Service) KnownPods(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/known-pods", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("known-pods: " + resp.Status)
	}
	var kp struct{ Pods []string }
	err = json.NewDecoder(resp.Body).Decode(&kp)
	return kp.Pods, err
}

// Stop ends the service (SIGTERM: starts in flight are cancelled).
func (s *Service) Stop() { s.proc.Stop(30 * time.Second) }

// Freeze stops the service process (SIGSTOP): connections open, nothing
// answers, as a service that is slow or cut off. Thaw resumes it.
func (s *Service) Freeze() error { return s.proc.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen service (SIGCONT).
func (s *Service) Thaw() error { return s.proc.Signal(syscall.SIGCONT) }

// Count counts the occurrences of text in the service's log.
func (s *Service) Count(text string) int { return s.proc.Count(text) }

// Tail is the last n lines of the service's log, headed by its path.
func (s *Service) Tail(n int) string { return s.proc.Tail(n) }
