package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
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
	streams         service.StreamLimits
	stallTimeout    time.Duration
	failureTimeout  time.Duration
	shutdownTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{namespaces: stringList{values: []string{"default"}}}
	fs := flag.NewFlagSet("kubespawn-sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "path to a kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config)")
	fs.Var(&o.namespaces, "namespace", "namespace to watch (repeatable, or comma-separated)")
	fs.StringVar(&o.selector, "selector", "", "label selector of the pods to watch, e.g. component=singleuser-server")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8081", "address to serve HTTP on (loopback by default; any other address needs --token-file)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token that every pod route requires and that enables DELETE /pods/{namespace}/{name}; without it the sidecar serves loopback only, and no DELETE")
	fs.IntVar(&o.streams.Max, "max-streams", service.DefaultMaxStreams, "event streams open at once, in all (0: no cap); more get 429")
	fs.IntVar(&o.streams.PerClient, "max-streams-per-client", service.DefaultMaxStreamsPerClient, "event streams open at once from one client IP (0: no cap); more get 429")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", 10*time.Second, "how long a stalled watch may go unnoticed (at least 4s)")
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
	if o.stallTimeout < 4*time.Second {
		return nil, fmt.Errorf("--stall-timeout must be at least 4s, got %s", o.stallTimeout)
	}
	if o.failureTimeout <= 0 || o.shutdownTimeout <= 0 {
		return nil, errors.New("--failure-timeout and --shutdown-timeout must be positive")
	}
	if o.streams.Max < 0 || o.streams.PerClient < 0 {
		return nil, errors.New("--max-streams and --max-streams-per-client must not be negative")
	}
	return o, nil
}

// readToken reads the bearer token file. An unreadable or empty file is an
// error: authentication is never silently disabled when a file was given.
var readToken = service.ReadTokenFile

// run is the whole program: it returns nil after a graceful shutdown (ctx
// ended: SIGTERM or SIGINT), and an error, which main turns into exit
// status 1, when the flags are bad, the server cannot start, or a cache
// reports failure, so that Kubernetes restarts the container.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := klog.Background().WithName("sidecar")
	ctx = klog.NewContext(ctx, logger)
	token, err := readToken(o.tokenFile)
	if err != nil {
		return err
	}
	if err := service.CheckListen(o.listen, service.NewAuth(token)); err != nil {
		return err
	}
	cfg, err := service.RESTConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = userAgent
	}

	metrics := newMetrics()
	failed := make(chan error, 1)
	f, err := reflector.NewFactory(cfg, reflector.Options{
		StallTimeout:   o.stallTimeout,
		FailureTimeout: o.failureTimeout,
		Registerer:     metrics,
		OnFailure: func(st reflector.Status) {
			select {
			case failed <- fmt.Errorf("reflector %s failed: %s", st.Name, st.Reason):
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	defer f.Shutdown()
	srv, err := newServer(Config{
		Factory:    f,
		Namespaces: o.namespaces.values,
		Selector:   o.selector,
		Token:      token,
		Streams:    o.streams,
		Metrics:    metrics,
		Logger:     &logger,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	// Every timeout set; the event streams extend their write deadline
	// before each write. On loopback, the Host header must be loopback.
	hs := service.NewHTTPServer(o.listen, srv.Handler())
	hs.RegisterOnShutdown(srv.CloseStreams)
	f.Start(context.WithoutCancel(ctx)) // stopped by the deferred Shutdown, after the HTTP server
	logger.Info("Serving", "address", ln.Addr().String(), "namespaces", o.namespaces.values, "selector", o.selector,
		"stallTimeout", o.stallTimeout, "authenticated", token != "", "maxStreams", o.streams.Max, "maxStreamsPerClient", o.streams.PerClient)
	return service.Run(ctx, hs, ln, o.shutdownTimeout, failed)
}

// newMetrics is the registry /metrics serves: the Go runtime's and the
// process's metrics, and (as the factory's Registerer) the caches'.
func newMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
