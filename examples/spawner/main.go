package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/spawner"
)

func main() { os.Exit(service.ServiceMain("kubespawn demo spawner", run)) }

type options struct {
	kubeconfig, namespace, listen, image, instance, leaseNamespace, tokenFile string
	streams                                                                   service.StreamLimits
	cache                                                                     service.CacheFlags
	startTimeout, stopTimeout, imagePullGrace                                 time.Duration
	sweepInterval, orphanMinAge, maxAge, maxClaimAge, shutdownTimeout         time.Duration
	stopRetryInterval, stopRetryMaxInterval                                   time.Duration
	// storage is nil without --storage-capacity: no claim.
	storage         *Storage
	servicesEnabled bool
	port            int32
	clusterDomain   string
	// podPolicy: --pod-policy's file, loosened by the --allow-* flags.
	podPolicy PodPolicy
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
	// The library's options: 0 is the library's default, and the library
	// checks them (checkConfig).
	fs.DurationVar(&o.startTimeout, "start-timeout", 0, "how long a start may take (spawner.Options.StartTimeout; 0: the library's default, 5m)")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 0, "how long a stop waits for the pod to be gone, each attempt when the service retries a pending stop, and how long DELETE /users/{user}/claims waits for the claims to be gone (spawner.Options.StopTimeout; 0: the library's default, 1m)")
	fs.DurationVar(&o.imagePullGrace, "image-pull-grace", 0, "how long an image pull may fail before the start fails (spawner.Options.ImagePullGrace; 0: the library's default, 30s)")
	fs.DurationVar(&o.stopRetryInterval, "stop-retry-interval", time.Second, "first wait before the service retries a stop that could not complete (stop-pending), doubling from there; also paces the start-up rebuild of the user table")
	fs.DurationVar(&o.stopRetryMaxInterval, "stop-retry-max-interval", time.Minute, "longest wait between retries of a pending stop")
	o.cache.Register(fs, "the process")
	fs.DurationVar(&o.sweepInterval, "sweep-interval", 10*time.Minute, "interval of the leader-elected sweeper; 0 disables it")
	fs.DurationVar(&o.orphanMinAge, "orphan-min-age", 0, "the sweeper leaves unknown pods, and claims of users without a server, younger than this alone (SweepPolicy.MinAge; 0: the library's default, the start timeout)")
	fs.DurationVar(&o.maxAge, "max-age", 0, "the sweeper also deletes pods older than this, known or not (0: never)")
	fs.DurationVar(&o.maxClaimAge, "max-claim-age", 0, "the sweeper deletes the claims of users without a server older than this (SweepPolicy.MaxClaimAge; 0: never, claims are only reported)")
	fs.StringVar(&o.leaseNamespace, "lease-namespace", "", "namespace of the sweeper's Lease (default: --namespace)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "grace for in-flight requests on SIGTERM")

	// Per-user storage and per-pod Services, named as Zero to JupyterHub's
	// singleuser.storage and KubeSpawner's traits.
	var capacity, class, modes string
	classSet := false
	var st Storage
	fs.StringVar(&capacity, "storage-capacity", "", "size of each user's claim, e.g. 10Gi (KubeSpawner storage_capacity, Z2JH singleuser.storage.capacity); empty: no claim")
	fs.Func("storage-class", "storage class of the claims (KubeSpawner storage_class); unset: the cluster's default class, empty: no class", func(v string) error {
		class, classSet = v, true
		return nil
	})
	fs.StringVar(&modes, "storage-access-modes", string(corev1.ReadWriteOnce), "comma-separated access modes of the claims (KubeSpawner storage_access_modes)")
	fs.StringVar(&st.NameTemplate, "storage-name-template", DefaultClaimNameTemplate, "name of each user's claim (KubeSpawner pvc_name_template): {username} is the user's escaped form as in pod names, {servername} is empty")
	fs.StringVar(&st.MountPath, "storage-mount-path", DefaultMountPath, "where the claim is mounted in the notebook container (Z2JH singleuser.storage.homeMountPath)")
	fs.BoolVar(&o.servicesEnabled, "services-enabled", false, "front each user's pod with a Service of the pod's name, port http to --port (KubeSpawner services_enabled)")
	fs.StringVar(&o.clusterDomain, "cluster-domain", DefaultClusterDomain, "the cluster's DNS domain: a start's answer names each Service it created <name>.<namespace>.svc.<domain> (beside its ClusterIP)")
	port := fs.Int("port", DefaultPort, "port of the notebook server in the user's pod: its container port and its Service's (KubeSpawner port)")
	fs.BoolVar(&st.Force, "storage-force", false, "every start gets the user's claim (--storage-capacity), mounted at --storage-mount-path, even when the hub sends claims of its own (without it the claim is a default, for bodies without \"claims\")")

	// What the hub's pods may ask for beyond Pod Security baseline.
	policyFile := fs.String("pod-policy", "", "YAML or JSON file of the pod policy: what a start may ask for beyond Pod Security baseline (see README.md); empty: baseline")
	allowHostPath := fs.Bool("allow-host-path", false, "the pod policy allows hostPath volumes (as allowHostPath in --pod-policy)")
	allowHostNamespaces := fs.Bool("allow-host-namespaces", false, "the pod policy allows hostNetwork, hostPID and hostIPC")
	allowPrivileged := fs.Bool("allow-privileged", false, "the pod policy allows privileged containers")
	klog.InitFlags(fs)
	if err := service.ParseFlags(fs, args); err != nil {
		return nil, err
	}
	if err := o.cache.Validate(); err != nil {
		return nil, err
	}
	if o.namespace == "" || o.image == "" || o.instance == "" {
		return nil, service.UsageError(errors.New("--namespace, --instance and --image must not be empty"))
	}
	if o.stopRetryInterval <= 0 || o.stopRetryMaxInterval <= 0 || o.shutdownTimeout <= 0 {
		return nil, service.UsageError(errors.New("--shutdown-timeout and --stop-retry-(max-)interval must be positive"))
	}
	if _, err := spawner.InstancePrefix(namePrefix, o.instance); err != nil {
		return nil, service.UsageError(fmt.Errorf("--instance: %w", err))
	}
	if o.sweepInterval < 0 || o.streams.Max < 0 || o.streams.PerClient < 0 {
		return nil, service.UsageError(errors.New("--sweep-interval and --max-streams(-per-client) must not be negative"))
	}
	if *port < 1 || *port > 65535 {
		return nil, service.UsageError(fmt.Errorf("--port must be a TCP port (1-65535), got %d", *port))
	}
	o.port = int32(*port)
	if errs := validation.IsDNS1123Subdomain(o.clusterDomain); len(errs) > 0 {
		return nil, service.UsageError(fmt.Errorf("--cluster-domain %q: %s", o.clusterDomain, strings.Join(errs, "; ")))
	}
	var storageFlags []string
	fs.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "storage-") && f.Name != "storage-capacity" {
			storageFlags = append(storageFlags, "--"+f.Name)
		}
	})
	if capacity == "" && len(storageFlags) > 0 {
		return nil, service.UsageError(fmt.Errorf("%s: no claim without --storage-capacity", strings.Join(storageFlags, ", ")))
	}
	if capacity != "" {
		q, err := resource.ParseQuantity(capacity)
		if err != nil {
			return nil, service.UsageError(fmt.Errorf("--storage-capacity %q: %w", capacity, err))
		}
		st.Capacity = q
		if classSet {
			st.Class = &class
		}
		for m := range strings.SplitSeq(modes, ",") {
			if m = strings.TrimSpace(m); m != "" {
				st.AccessModes = append(st.AccessModes, corev1.PersistentVolumeAccessMode(m))
			}
		}
		if len(st.AccessModes) == 0 {
			return nil, service.UsageError(errors.New("--storage-access-modes must name at least one access mode"))
		}
		if st, err = st.withDefaults(); err != nil {
			return nil, service.UsageError(err)
		}
		o.storage = &st
	}
	if *policyFile != "" {
		var err error
		if o.podPolicy, err = loadPodPolicy(*policyFile); err != nil {
			return nil, service.UsageError(err)
		}
	}
	// A flag only loosens what the file says.
	o.podPolicy.AllowHostPath = o.podPolicy.AllowHostPath || *allowHostPath
	o.podPolicy.AllowHostNetwork = o.podPolicy.AllowHostNetwork || *allowHostNamespaces
	o.podPolicy.AllowHostPID = o.podPolicy.AllowHostPID || *allowHostNamespaces
	o.podPolicy.AllowHostIPC = o.podPolicy.AllowHostIPC || *allowHostNamespaces
	o.podPolicy.AllowPrivileged = o.podPolicy.AllowPrivileged || *allowPrivileged
	if o.leaseNamespace == "" {
		o.leaseNamespace = o.namespace
	}
	if err := checkConfig(o.config()); err != nil {
		return nil, service.UsageError(err)
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
	cfg, token, err := service.Prepare(o.kubeconfig, o.tokenFile, o.listen, "kubespawn-demo-spawner")
	if err != nil {
		return err
	}
	f, metrics, err := service.NewFactory(cfg, o.cache.Options())
	if err != nil {
		return err
	}
	defer f.Shutdown()
	scfg := o.config()
	scfg.Factory, scfg.Metrics, scfg.Token, scfg.Logger = f, metrics, token, &logger
	srv, err := newServer(ctx, scfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	// Every timeout set: starts, stops and progress streams hold or extend
	// their write deadline. On loopback, the Host header must be loopback.
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

// config is the service's Config the flags make (without its factory,
// metrics, token and logger).
func (o *options) config() Config {
	return Config{
		Namespace: o.namespace, Instance: o.instance, Image: o.image,
		StartTimeout: o.startTimeout, StopTimeout: o.stopTimeout, ImagePullGrace: o.imagePullGrace,
		StopRetryInterval: o.stopRetryInterval, StopRetryMaxInterval: o.stopRetryMaxInterval,
		SweepInterval: o.sweepInterval, OrphanMinAge: o.orphanMinAge, MaxAge: o.maxAge, MaxClaimAge: o.maxClaimAge, LeaseNamespace: o.leaseNamespace,
		Streams: o.streams, Storage: o.storage, ServicesEnabled: o.servicesEnabled, Port: o.port, ClusterDomain: o.clusterDomain, PodPolicy: o.podPolicy,
	}
}

// checkConfig applies the library's rules, their only copy, to the
// options the flags make: spawner.New checks the spawner's options, the
// sweeper the sweep policy's (checkSweeper), here on a client that never
// connects: neither sends a request.
func checkConfig(cfg Config) error {
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		return err
	}
	so := cfg.spawnerOptions()
	so.Client = client
	sp, err := spawner.New(so)
	if err != nil {
		return fmt.Errorf("--start-timeout, --stop-timeout, --image-pull-grace: %w", err)
	}
	defer sp.Close()
	if err := checkSweeper(sp, (&Server{cfg: cfg}).sweeperOptions()); err != nil {
		return fmt.Errorf("--orphan-min-age, --max-age, --max-claim-age: %w", err)
	}
	return nil
}
