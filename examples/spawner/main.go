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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	code := service.ExitCode(err, os.Stderr)
	if code == 1 {
		klog.ErrorS(err, "kubespawn demo spawner exiting")
	}
	klog.Flush()
	os.Exit(code)
}

type options struct {
	kubeconfig, namespace, listen, image, instance, leaseNamespace, tokenFile string
	streams                                                                   service.StreamLimits
	startTimeout, stopTimeout, stallTimeout, imagePullGrace, failureTimeout   time.Duration
	sweepInterval, orphanMinAge, maxAge, shutdownTimeout                      time.Duration
	stopRetryInterval, stopRetryMaxInterval                                   time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("spawner", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config)")
	fs.StringVar(&o.namespace, "namespace", "default", "namespace of the users' pods")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8082", "HTTP address (loopback by default; any other address needs --token-file)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token that every /users route and /known-pods require; without it the service listens on loopback only")
	fs.IntVar(&o.streams.Max, "max-streams", service.DefaultMaxStreams, "progress streams open at once, in all (0: no cap); more get 429")
	fs.IntVar(&o.streams.PerClient, "max-streams-per-client", service.DefaultMaxStreamsPerClient, "progress streams open at once from one client IP (0: no cap); more get 429")
	fs.StringVar(&o.image, "image", "quay.io/jupyter/base-notebook:latest", "default image of the users' pods")
	fs.StringVar(&o.instance, "instance", "", "this service's instance name, required: the pod label "+spawner.LabelInstance+" and the sweeper's Lease; two services sharing a namespace need two")
	fs.DurationVar(&o.startTimeout, "start-timeout", 5*time.Minute, "how long a start may take")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", time.Minute, "how long a stop waits for the pod to be gone (each attempt, when the service retries a pending stop)")
	fs.DurationVar(&o.stopRetryInterval, "stop-retry-interval", time.Second, "first wait before the service retries a stop that could not complete (stop-pending), doubling from there; also paces the start-up rebuild of the user table")
	fs.DurationVar(&o.stopRetryMaxInterval, "stop-retry-max-interval", time.Minute, "longest wait between retries of a pending stop")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", 0, "how long a stalled watch may go unnoticed (reflector.Options.StallTimeout; 0: the library's default)")
	fs.DurationVar(&o.failureTimeout, "failure-timeout", 0, "how long watch recovery may fail before the process exits non-zero to be restarted (reflector.Options.FailureTimeout; 0: the library's default)")
	fs.DurationVar(&o.imagePullGrace, "image-pull-grace", 30*time.Second, "how long an image pull may fail before the start fails")
	fs.DurationVar(&o.sweepInterval, "sweep-interval", 10*time.Minute, "interval of the leader-elected sweeper; 0 disables it")
	fs.DurationVar(&o.orphanMinAge, "orphan-min-age", 0, "the sweeper leaves unknown pods younger than this alone (default: --start-timeout)")
	fs.DurationVar(&o.maxAge, "max-age", 0, "the sweeper also deletes pods older than this, known or not (0: never)")
	fs.StringVar(&o.leaseNamespace, "lease-namespace", "", "namespace of the sweeper's Lease (default: --namespace)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "grace for in-flight requests on SIGTERM")
	klog.InitFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, service.UsageError(err)
	}
	if fs.NArg() > 0 {
		return nil, service.UsageError(fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	// The library's rules are the only copy: --stall-timeout and
	// --failure-timeout are checked by it, 0 being its default.
	if err := o.reflectorOptions().Validate(); err != nil {
		return nil, service.UsageError(fmt.Errorf("--stall-timeout, --failure-timeout: %w", err))
	}
	if o.namespace == "" || o.image == "" || o.instance == "" {
		return nil, service.UsageError(errors.New("--namespace, --instance and --image must not be empty"))
	}
	if o.startTimeout <= 0 || o.stopTimeout <= 0 || o.shutdownTimeout <= 0 || o.imagePullGrace <= 0 || o.stopRetryInterval <= 0 || o.stopRetryMaxInterval <= 0 {
		return nil, service.UsageError(errors.New("--start-timeout, --stop-timeout, --image-pull-grace, --shutdown-timeout and --stop-retry-(max-)interval must be positive"))
	}
	if _, err := spawner.InstancePrefix(namePrefix, o.instance); err != nil {
		return nil, service.UsageError(fmt.Errorf("--instance: %w", err))
	}
	if o.sweepInterval < 0 || o.orphanMinAge < 0 || o.maxAge < 0 || o.streams.Max < 0 || o.streams.PerClient < 0 {
		return nil, service.UsageError(errors.New("--sweep-interval, --orphan-min-age, --max-age and --max-streams(-per-client) must not be negative"))
	}
	if o.orphanMinAge == 0 {
		o.orphanMinAge = o.startTimeout
	}
	if o.leaseNamespace == "" {
		o.leaseNamespace = o.namespace
	}
	return o, nil
}

// run is the whole program. It returns nil after a graceful shutdown (ctx
// ended: SIGTERM or SIGINT), a usage error (exit status 2) for bad flags,
// and an error (exit status 1) for a startup error or a cache that failed
// (Factory.Failed), so that Kubernetes restarts the container.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := klog.Background().WithName("spawner")
	ctx = klog.NewContext(ctx, logger)
	token, err := service.ReadTokenFile(o.tokenFile)
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
	cfg.UserAgent = "kubespawn-demo-spawner"
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ropts := o.reflectorOptions()
	ropts.Registerer = metrics
	f, err := reflector.NewFactory(cfg, ropts)
	if err != nil {
		return err
	}
	defer f.Shutdown()
	srv, err := newServer(ctx, Config{
		Factory: f, Metrics: metrics,
		Namespace: o.namespace, Instance: o.instance, Image: o.image,
		StartTimeout: o.startTimeout, StopTimeout: o.stopTimeout, ImagePullGrace: o.imagePullGrace,
		StopRetryInterval: o.stopRetryInterval, StopRetryMaxInterval: o.stopRetryMaxInterval,
		SweepInterval: o.sweepInterval, OrphanMinAge: o.orphanMinAge, MaxAge: o.maxAge, LeaseNamespace: o.leaseNamespace,
		Token: token, Streams: o.streams,
		Logger: &logger,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	// Every timeout set: starts, stops and progress streams extend their
	// write deadline. On loopback, the Host header must be loopback.
	hs := service.NewHTTPServer(o.listen, srv.Handler())
	// Shutdown cancels the starts in flight: each deletes its pod, then
	// their requests get their answer.
	hs.RegisterOnShutdown(srv.Shutdown)
	f.Start(context.WithoutCancel(ctx)) // stopped by the deferred Shutdown
	srv.Start()
	logger.Info("Serving", "address", ln.Addr().String(), "namespace", o.namespace, "instance", o.instance, "sweepInterval", o.sweepInterval, "authenticated", token != "")
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return service.Run(ctx, hs, ln, o.shutdownTimeout, service.Failures(fctx, f))
}

// reflectorOptions are the factory's options the flags set.
func (o *options) reflectorOptions() reflector.Options {
	return reflector.Options{StallTimeout: o.stallTimeout, FailureTimeout: o.failureTimeout}
}
