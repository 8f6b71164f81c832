package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hub"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/spawnersvc"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-jupyterhub:", err)
		os.Exit(1)
	}
}

// errLeaked: the exit status is 0 only if nothing leaked.
var errLeaked = errors.New("pods leaked, or servers the hub believes running have no pod")

func run(ctx context.Context, args []string, out, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo-jupyterhub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	users := fs.Int("users", 50, "users launching servers")
	launch := fs.Duration("launch", 15*time.Second, "launches are spread over this long")
	startTimeout := fs.Duration("start-timeout", 20*time.Second, "the hub's start_timeout")
	spawnerBin := fs.String("spawner", "", "the spawner service binary (default: built from examples/spawner)")
	keep := fs.Bool("keep", false, "keep the logs directory")
	benchStarts := fs.Int("bench-starts", 0, "instead of the incident: start this many real single-user servers one after another and measure hub POST → server reachable through the proxy, against the pod's own start (BENCHMARKS.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	if err := hub.Check(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kubespawn-demo-jupyterhub-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintf(out, "logs in %s\n", dir)
	}
	fmt.Fprintln(out, "Starting etcd + kube-apiserver, the pod simulator, the kubespawn spawner service and JupyterHub 3.0 ...")
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := testcluster.Start(cctx, testcluster.Options{})
	cancel()
	if err != nil {
		return err
	}
	defer c.Stop()
	client, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		return err
	}
	// Simulated pods at the stand-in's 127.0.0.1; pods of the process
	// runtime (the benchmark's real servers) at IPs of their own.
	sim, err := podsim.Start(ctx, client, podsim.Options{PodIP: "127.0.0.1", ProcessRuntimeClass: podsim.DefaultProcessRuntimeClass,
		ImageEntrypoints: map[string][]string{hubtest.SingleUserImage: {}}})
	if err != nil {
		return err
	}
	defer sim.Stop()
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "jupyterhub-users"}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if *spawnerBin == "" {
		if *spawnerBin, err = spawnersvc.Build(ctx, dir); err != nil {
			return err
		}
	}
	hc := hubtest.Config{
		Admin: c.Config(), Client: client, Namespace: ns.Name, Dir: dir, SpawnerBinary: *spawnerBin, ThroughProxy: true,
		HubStartTimeout: *startTimeout, HTTPTimeout: 10 * time.Second, SweepInterval: 10 * time.Second, OrphanMinAge: 3 * *startTimeout,
	}
	if *benchStarts > 0 {
		hc.ThroughProxy, hc.ProcessRuntime, hc.HubStartTimeout, hc.OrphanMinAge = false, podsim.DefaultProcessRuntimeClass, 2*time.Minute, 10*time.Minute
	}
	e, err := hubtest.Start(ctx, hc)
	if err != nil {
		return err
	}
	defer e.Close()
	if *benchStarts > 0 {
		fmt.Fprintf(out, "JupyterHub at %s; %d real servers, one after another\n", e.Hub.URL, *benchStarts)
		return runBenchStarts(ctx, e, client, ns.Name, *benchStarts, out)
	}
	fmt.Fprintf(out, "JupyterHub at %s, spawner service at %s (pods in namespace %s)\n\n", e.Hub.URL, e.Service.URL, ns.Name)
	rep, err := runIncident(ctx, e, incidentOptions{
		Users: *users, Launch: *launch, StallAt: 0.35, NeverReady: 7, BadImage: 10, Slow: 4, StopEvery: 4, Out: out,
	})
	if err != nil {
		fmt.Fprint(stderr, e.Logs())
		return err
	}
	printReport(out, rep)
	if rep.Leaked() > 0 || len(rep.Final.Missing) > 0 {
		return errLeaked
	}
	return nil
}
