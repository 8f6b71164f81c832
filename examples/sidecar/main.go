package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		klog.ErrorS(err, "kubespawn-sidecar exiting")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// stringList is a repeatable flag that also accepts comma-separated values.
type stringList struct {
	values []string
	set    bool
}

func (l *stringList) String() string { return strings.Join(l.values, ",") }

func (l *stringList) Set(v string) error {
	if !l.set {
		l.values, l.set = nil, true
	}
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			l.values = append(l.values, part)
		}
	}
	return nil
}

// options are the command-line flags.
type options struct {
	kubeconfig      string
	namespaces      stringList
	selector        string
	listen          string
	tokenFile       string
	stallTimeout    time.Duration
	failureTimeout  time.Duration
	shutdownTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{namespaces: stringList{values: []string{"default"}}}
	fs := flag.NewFlagSet("kubespawn-sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "path to a kubeconfig file; in-cluster configuration when empty")
	fs.Var(&o.namespaces, "namespace", "namespace to watch (repeatable, or comma-separated)")
	fs.StringVar(&o.selector, "selector", "", "label selector of the pods to watch, e.g. component=singleuser-server")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8081", "address to serve HTTP on (loopback by default)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token that enables DELETE /pods/{namespace}/{name}; DELETE is not served without it")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", 30*time.Second, "how long a stalled watch may go unnoticed (at least 1s)")
	fs.DurationVar(&o.failureTimeout, "failure-timeout", 2*time.Minute, "how long recovery may fail before the sidecar exits non-zero to be restarted")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "grace period for in-flight requests on SIGTERM")
	klog.InitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if len(o.namespaces.values) == 0 {
		return nil, errors.New("--namespace must not be empty")
	}
	if o.stallTimeout < time.Second {
		return nil, fmt.Errorf("--stall-timeout must be at least 1s, got %s", o.stallTimeout)
	}
	if o.failureTimeout <= 0 || o.shutdownTimeout <= 0 {
		return nil, errors.New("--failure-timeout and --shutdown-timeout must be positive")
	}
	return o, nil
}

// readToken reads the bearer token file. An unreadable or empty file is an
// error: DELETE is never silently disabled when a token file was given.
func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return tok, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

// run is the whole program: it returns nil after a graceful shutdown (ctx
// ended: SIGTERM or SIGINT), and an error, which main turns into exit
// status 1, when the flags are bad, the server cannot start, or a
// reflector reports failure, so that Kubernetes restarts the container.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := klog.Background().WithName("sidecar")
	token, err := readToken(o.tokenFile)
	if err != nil {
		return err
	}
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return fmt.Errorf("API server configuration: %w", err)
	}

	failed := make(chan error, 1)
	srv, err := newServer(Config{
		REST:           cfg,
		Namespaces:     o.namespaces.values,
		Selector:       o.selector,
		StallTimeout:   o.stallTimeout,
		FailureTimeout: o.failureTimeout,
		Token:          token,
		Logger:         &logger,
		OnFailure: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: the events endpoint streams for as long as a
		// pod starts.
	}
	hs.RegisterOnShutdown(srv.CloseStreams)

	runCtx, cancel := context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), logger))
	defer cancel()
	if err := srv.Start(runCtx); err != nil {
		ln.Close()
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	logger.Info("Serving", "address", ln.Addr().String(), "namespaces", o.namespaces.values, "selector", o.selector,
		"stallTimeout", o.stallTimeout, "deleteEnabled", token != "")

	var result error
	select {
	case <-ctx.Done():
		logger.Info("Shutting down", "cause", context.Cause(ctx))
	case err := <-failed:
		result = fmt.Errorf("%w; exiting so that the container is restarted", err)
	case err := <-serveErr:
		result = fmt.Errorf("HTTP server: %w", err)
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancelShutdown()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		logger.Info("Graceful shutdown incomplete, closing connections", "err", err)
		hs.Close()
	}
	srv.Stop()
	return result
}
