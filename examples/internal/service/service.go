package service

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// RESTConfig returns the API server configuration: kubeconfig (a flag's
// value) if set, else $KUBECONFIG, else the in-cluster configuration, else
// ~/.kube/config.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	load := func(rules *clientcmd.ClientConfigLoadingRules, what string) (*rest.Config, error) {
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("API server configuration from %s: %w", what, err)
		}
		return cfg, nil
	}
	if kubeconfig != "" {
		return load(&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}, "--kubeconfig "+kubeconfig)
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return load(&clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(env)}, "$KUBECONFIG")
	}
	cfg, err := rest.InClusterConfig()
	if err == nil {
		return cfg, nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("in-cluster API server configuration: %w", err)
	}
	if _, statErr := os.Stat(clientcmd.RecommendedHomeFile); statErr == nil {
		return load(&clientcmd.ClientConfigLoadingRules{ExplicitPath: clientcmd.RecommendedHomeFile}, clientcmd.RecommendedHomeFile)
	}
	return nil, errors.New("no API server configuration: pass --kubeconfig, set $KUBECONFIG, run in a cluster, or write " + clientcmd.RecommendedHomeFile)
}

// Run serves srv on ln until ctx ends or failed delivers an error, then
// shuts srv down gracefully within grace (connections still open after it
// are closed). It returns nil after ctx ended, the error from failed, or
// the HTTP server's own error.
func Run(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration, failed <-chan error) error {
	logger := klog.FromContext(ctx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	var result error
	select {
	case <-ctx.Done():
		logger.Info("Shutting down", "cause", context.Cause(ctx))
	case err := <-failed:
		result = fmt.Errorf("%w; exiting so that the process is restarted", err)
	case err := <-serveErr:
		return fmt.Errorf("HTTP server: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Info("Graceful shutdown incomplete, closing connections", "err", err)
		_ = srv.Close()
	}
	<-serveErr // Serve returns ErrServerClosed once Shutdown or Close began
	return result
}

// Checker is a health check pair, as reflector.Factory has.
type Checker interface {
	Readyz(*http.Request) error
	Healthz(*http.Request) error
}

type healthResponse struct {
	Status string   `json:"status"`
	Errors []string `json:"errors,omitempty"`
}

// Readyz answers readiness from c.Readyz.
func Readyz(c Checker) http.HandlerFunc { return health(c.Readyz) }

// Livez answers liveness from c.Healthz.
func Livez(c Checker) http.HandlerFunc { return health(c.Healthz) }

func health(check func(*http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := check(r); err != nil {
			WriteJSON(w, http.StatusServiceUnavailable, healthResponse{Status: "unhealthy", Errors: strings.Split(err.Error(), "\n")})
			return
		}
		WriteJSON(w, http.StatusOK, healthResponse{Status: "ok"})
	}
}

// WriteJSON writes v as JSON with code, never cached.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	// Source is "api" when the API server gave the answer (a 404 only ever
	// comes from it), empty otherwise.
	Source string `json:"source,omitempty"`
	Error  string `json:"error"`
}

// WriteError writes {"error": msg} with code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, ErrorResponse{Error: msg})
}

// MethodNotAllowed answers 405 with the allowed methods.
func MethodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
	})
}

// statusRecorder remembers the status code for the request log. It
// forwards Flush (through Unwrap) for event streams.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = cmp.Or(r.code, code)
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.code = cmp.Or(r.code, http.StatusOK)
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// LogRequests logs method, path and status at V(2); never headers (bearer
// tokens) or query strings.
func LogRequests(logger klog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		logger.V(2).Info("HTTP request", "method", r.Method, "path", r.URL.Path, "status", rec.code, "duration", time.Since(start))
	})
}

// Probe sends a GET to url (with host as the Host header when not empty,
// and header) and returns the answer's status code: for health checks,
// readiness waits and tests of the Host and token checks.
func Probe(ctx context.Context, url, host string, header http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
