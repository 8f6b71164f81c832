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
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		klog.ErrorS(err, "kubespawn demo spawner exiting")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
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
	fs.DurationVar(&o.stallTimeout, "stall-timeout", 10*time.Second, "how long a stalled watch may go unnoticed (at least 4s)")
	fs.DurationVar(&o.failureTimeout, "failure-timeout", 2*time.Minute, "how long watch recovery may fail before the process exits non-zero to be restarted")
	fs.DurationVar(&o.imagePullGrace, "image-pull-grace", 30*time.Second, "how long an image pull may fail before the start fails")
	fs.DurationVar(&o.sweepInterval, "sweep-interval", 10*time.Minute, "interval of the leader-elected sweeper; 0 disables it")
	fs.DurationVar(&o.orphanMinAge, "orphan-min-age", 0, "the sweeper leaves unknown pods younger than this alone (default: --start-timeout)")
	fs.DurationVar(&o.maxAge, "max-age", 0, "the sweeper also deletes pods older than this, known or not (0: never)")
	fs.StringVar(&o.leaseNamespace, "lease-namespace", "", "namespace of the sweeper's Lease (default: --namespace)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "grace for in-flight requests on SIGTERM")
	klog.InitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.namespace == "" || o.image == "" || o.instance == "" {
		return nil, errors.New("--namespace, --instance and --image must not be empty")
	}
	if o.startTimeout <= 0 || o.stopTimeout <= 0 || o.shutdownTimeout <= 0 || o.imagePullGrace <= 0 || o.failureTimeout <= 0 || o.stopRetryInterval <= 0 || o.stopRetryMaxInterval <= 0 {
		return nil, errors.New("--start-timeout, --stop-timeout, --image-pull-grace, --failure-timeout, --shutdown-timeout and --stop-retry-(max-)interval must be positive")
	}
	if _, err := spawner.InstancePrefix(namePrefix, o.instance); err != nil {
		return nil, fmt.Errorf("--instance: %w", err)
	}
	if o.stallTimeout < 4*time.Second {
		return nil, fmt.Errorf("--stall-timeout must be at least 4s, got %s", o.stallTimeout)
	}
	if o.sweepInterval < 0 || o.orphanMinAge < 0 || o.maxAge < 0 || o.streams.Max < 0 || o.streams.PerClient < 0 {
		return nil, errors.New("--sweep-interval, --orphan-min-age, --max-age and --max-streams(-per-client) must not be negative")
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
// ended: SIGTERM or SIGINT), and an error (exit status 1) for bad flags, a
// startup error, or a cache that failed for good, so that Kubernetes
// restarts the container.
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
	failed := make(chan error, 1)
	f, err := reflector.NewFactory(cfg, reflector.Options{
		StallTimeout: o.stallTimeout, FailureTimeout: o.failureTimeout, Registerer: metrics,
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
	return service.Run(ctx, hs, ln, o.shutdownTimeout, failed)
}
