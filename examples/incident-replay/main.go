package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/testcluster"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	c := DefaultConfig()
	flags := flag.NewFlagSet("incident-replay", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.IntVar(&c.Users, "users", c.Users, "number of users launching a server")
	flags.DurationVar(&c.Duration, "duration", c.Duration, "launch window (compressed time)")
	stallAt := flags.Duration("stall-at", 0, "when the pod watch stalls, from the start of a run (default: 35% of -duration)")
	flags.DurationVar(&c.StartTimeout, "start-timeout", c.StartTimeout, "start timeout of both spawners (2018: 300s)")
	flags.DurationVar(&c.StopTimeout, "stop-timeout", c.StopTimeout, "stop timeout of both spawners")
	flags.DurationVar(&c.StallTimeout, "stall-timeout", c.StallTimeout, "kubespawn reflector's StallTimeout")
	flags.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the schedule (both runs replay the same one)")
	jsonOut := flags.Bool("json", false, "print one JSON object {\"baseline\":{...},\"kubespawn\":{...}} on stdout; progress goes to stderr")
	svgPath := flags.String("svg", filepath.Join("out", "incident-replay.svg"), "write the chart of pods on the server over time here (empty: none)")
	verbosity := flags.Int("v", 0, "log verbosity of the libraries (klog); 0 keeps them quiet")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *stallAt > 0 {
		c.StallAt = *stallAt
	} else {
		c.StallAt = (c.Duration * 35 / 100).Round(time.Second)
		if c.StallAt <= 0 {
			c.StallAt = c.Duration * 35 / 100
		}
	}
	setupKlog(*verbosity, stderr)

	out := stdout
	if *jsonOut {
		out = stderr
	}
	c.Progress = out
	if err := c.validate(); err != nil {
		fmt.Fprintln(stderr, "incident-replay:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintln(out, "Starting a local control plane (etcd + kube-apiserver from bin/) ...")
	began := time.Now()
	cluster, err := startCluster(ctx, out)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "incident-replay: the control plane binaries are missing: %v\n"+
				"Build them once with `make tools` (etcd and kube-apiserver into bin/, ~4-10 minutes), then run `make demo` again.\n", err)
		} else {
			fmt.Fprintln(stderr, "incident-replay: starting the control plane:", err)
		}
		return 1
	}
	defer cluster.Stop()
	fmt.Fprintf(out, "Control plane ready at %s in %s; starting the pod simulator (scheduler + kubelet stand-in).\n",
		cluster.URL(), time.Since(began).Round(100*time.Millisecond))

	rep, err := replay(ctx, cluster.Config(), c)
	if err != nil {
		fmt.Fprintln(stderr, "incident-replay:", err)
		if ctx.Err() == nil {
			fmt.Fprint(stderr, cluster.LogTail(20))
		}
		return 1
	}
	printTable(out, rep)
	if *svgPath != "" {
		if err := writeSVG(*svgPath, rep); err != nil {
			fmt.Fprintln(stderr, "incident-replay: writing the chart:", err)
			return 1
		}
		fmt.Fprintf(out, "Chart: %s\n", *svgPath)
	}
	if *jsonOut {
		data, err := jsonReport(rep)
		if err != nil {
			fmt.Fprintln(stderr, "incident-replay:", err)
			return 1
		}
		fmt.Fprintln(stdout, string(data))
	}
	fmt.Fprintf(out, "Total time: %s\n", time.Since(began).Round(time.Second))
	if rep.Baseline.Leaked == 0 {
		fmt.Fprintln(out, "Note: the baseline leaked nothing this time: the incident was not reproduced (too few launches after the stall?).")
	}
	if rep.Kubespawn.Leaked > 0 {
		fmt.Fprintf(stderr, "FAIL: kubespawn leaked %d pods (%v): a failed start or a stop left a pod on the server that the hub does not know is running.\n",
			rep.Kubespawn.Leaked, rep.Kubespawn.LeakedPods)
		return 1
	}
	return 0
}

// startCluster starts the control plane, printing a line every few seconds
// while it comes up.
func startCluster(ctx context.Context, out io.Writer) (*testcluster.Cluster, error) {
	type result struct {
		c   *testcluster.Cluster
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := testcluster.Start(ctx, testcluster.Options{})
		done <- result{c, err}
	}()
	began := time.Now()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case r := <-done:
			return r.c, r.err
		case <-t.C:
			fmt.Fprintf(out, "  ... still starting (%s)\n", time.Since(began).Round(time.Second))
		}
	}
}

func writeSVG(path string, rep *Report) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(renderSVG(rep)), 0o644)
}

// setupKlog keeps klog (the libraries' logs) quiet unless -v is given.
func setupKlog(v int, stderr io.Writer) {
	kfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(kfs)
	_ = kfs.Set("v", strconv.Itoa(v))
	// Not to stderr directly: to the writer set below, for every severity.
	_ = kfs.Set("logtostderr", "false")
	_ = kfs.Set("alsologtostderr", "false")
	_ = kfs.Set("stderrthreshold", "FATAL")
	if v > 0 {
		klog.SetOutput(stderr)
	} else {
		klog.SetOutput(io.Discard)
	}
}
