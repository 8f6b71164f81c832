package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
)

func main() { os.Exit(service.ServiceMain("kubespawn-sidecar", run)) }

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
	cache           service.CacheFlags
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
	o.cache.Register(fs, "the sidecar")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "grace period for in-flight requests on SIGTERM")
	klog.InitFlags(fs)
	if err := service.ParseFlags(fs, args); err != nil {
		return nil, err
	}
	if err := o.cache.Validate(); err != nil {
		return nil, err
	}
	if len(o.namespaces.values) == 0 {
		return nil, service.UsageError(errors.New("--namespace must not be empty"))
	}
	if o.shutdownTimeout <= 0 {
		return nil, service.UsageError(errors.New("--shutdown-timeout must be positive"))
	}
	if o.streams.Max < 0 || o.streams.PerClient < 0 {
		return nil, service.UsageError(errors.New("--max-streams and --max-streams-per-client must not be negative"))
	}
	return o, nil
}

// run is the whole program: it returns nil after a graceful shutdown (ctx
// ended: SIGTERM or SIGINT), a usage error (exit status 2) for bad flags,
// and an error, which main turns into exit status 1, when the server
// cannot start or the factory reports a failed cache (Factory.Failed), so
// that Kubernetes restarts the container.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := klog.Background().WithName("sidecar")
	ctx = klog.NewContext(ctx, logger)
	// An unreadable or empty token file is an error: authentication is
	// never silently disabled when a file was given.
	cfg, token, err := service.Prepare(o.kubeconfig, o.tokenFile, o.listen, userAgent)
	if err != nil {
		return err
	}
	f, metrics, err := service.NewFactory(cfg, o.cache.Options())
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
		"stallTimeout", f.Options().StallTimeout, "authenticated", token != "", "maxStreams", o.streams.Max, "maxStreamsPerClient", o.streams.PerClient)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return service.Run(ctx, hs, ln, o.shutdownTimeout, service.Failures(fctx, f))
}
