package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/browser"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hub"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hubtest"
	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/spawnersvc"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

func main() {
	err := service.Main(run)
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
	standIn := fs.Bool("standin", false, "instead of real jupyterhub-singleuser servers, one stand-in HTTP server answers for every (simulated) pod: lighter, faster")
	launch := fs.Duration("launch", 0, "launches are spread over this long (default: 60s with real servers, 15s with -standin)")
	startTimeout := fs.Duration("start-timeout", 0, "the hub's start_timeout (default: 30s with real servers, 20s with -standin)")
	screenshot := fs.Bool("screenshot", true, "after the audit, open one running user's notebook tree page through the hub in headless chromium and save a screenshot to out/demo-jupyterhub.png (needs `make chromium`; not with -standin)")
	spawnerBin := fs.String("spawner", "", "the spawner service binary (default: built from examples/spawner)")
	keep := fs.Bool("keep", false, "keep the logs directory")
	benchStarts := fs.Int("bench-starts", 0, "instead of the incident: start this many real single-user servers one after another and measure hub POST → server reachable through the proxy, against the pod's own start (BENCHMARKS.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Real servers take ~1 s of CPU each to start: on 2 cores, spread
	// the launches so the healthy ones start within the hub's
	// start_timeout while the never-ready ones run into it.
	if *launch == 0 {
		*launch = 60 * time.Second
		if *standIn {
			*launch = 15 * time.Second
		}
	}
	if *startTimeout == 0 {
		*startTimeout = 30 * time.Second
		if *standIn {
			*startTimeout = 20 * time.Second
		}
	}
	// The stand-in has no notebook page to show.
	*screenshot = *screenshot && !*standIn && *benchStarts == 0
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	if err := hub.Check(); err != nil {
		return err
	}
	if *screenshot {
		if err := browser.Check(); err != nil {
			return fmt.Errorf("%w (or -screenshot=false)", err)
		}
	}
	runBegin := time.Now()
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
	// Pods of the process runtime (the real servers: the default, and
	// -bench-starts) at IPs of their own; with -standin, simulated pods at
	// the stand-in's 127.0.0.1.
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
	if !*standIn {
		hc.ProcessRuntime = podsim.DefaultProcessRuntimeClass
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
	o := incidentOptions{
		Users: *users, Launch: *launch, StallAt: 0.35, NeverReady: 7, BadImage: 10, Slow: 4, StopEvery: 4, Out: out,
	}
	if !*standIn {
		o.Processes = sim.Processes // the real servers' memory
	}
	var shots []string
	var shotErr error
	if *screenshot {
		o.AfterAudit = func(ctx context.Context, running []string) error {
			// The demo's result, not its verdict: a failed screenshot is
			// reported after the table.
			shots, shotErr = screenshotServer(ctx, e, running)
			return nil
		}
	}
	rep, err := runIncident(ctx, e, o)
	if err != nil {
		fmt.Fprint(stderr, e.Logs())
		return err
	}
	printReport(out, rep)
	for _, p := range shots {
		fmt.Fprintf(out, "screenshot: %s\n", p)
	}
	fmt.Fprintf(out, "demo-jupyterhub took %.0fs in all (control plane, hub and service start-up, the incident, the clean-up)\n", time.Since(runBegin).Seconds())
	if rep.Leaked() > 0 || len(rep.Final.Missing) > 0 {
		return errLeaked
	}
	if shotErr != nil {
		return fmt.Errorf("screenshot: %w", shotErr)
	}
	return nil
}

// screenshotServer logs one of the running users in on the hub's page in
// headless chromium, opens their notebook tree page through the hub (its
// proxy and OAuth: the real server answers) and saves it as
// out/demo-jupyterhub.png; it returns the screenshots' paths.
func screenshotServer(ctx context.Context, e *hubtest.Env, running []string) ([]string, error) {
	if len(running) == 0 {
		return nil, errors.New("no server is running to show")
	}
	user := running[0]
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	b, err := browser.Start(ctx)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if err := b.LogIn(e.Hub.URL, user, 30*time.Second); err != nil {
		return nil, err
	}
	if err := b.OpenTree(e.Hub.URL, user, time.Minute); err != nil {
		return nil, err
	}
	path, err := b.Screenshot("demo-jupyterhub")
	if err != nil {
		return nil, err
	}
	return []string{path}, nil
}
