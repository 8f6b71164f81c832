// Command soak is `make soak`: the reliability soak of package
// internal/soak at full length (1,000 cycles per run by default) on a
// control plane of its own, with the report printed. SOAK_SEED (or -seed)
// replays a schedule. The exit status is 0 only if kubespawn leaked
// nothing, deleted nothing wrongly, decided no absence without the API
// server and had no cache failed by failing probes alone, and the 2018
// replica leaked on the same schedule.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/internal/soak"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

func main() {
	if soak.IsInstance() {
		os.Exit(soak.RunInstance())
	}
	os.Exit(run())
}

func run() int {
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("SOAK_SEED"), 10, 64); err == nil {
		seed = s
	}
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	fs.Uint64Var(&seed, "seed", seed, "seed of the schedule (default: $SOAK_SEED, else the clock)")
	cycles := fs.Int("cycles", 1000, "start/stop cycles per run")
	users := fs.Int("users", 16, "users running cycles at once")
	logDir := fs.String("log-dir", "", "keep the instances' logs here (default: a temporary directory)")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	fmt.Println("soak: starting the control plane (etcd, kube-apiserver) and the pod simulator")
	c, err := testcluster.Start(ctx, testcluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer c.Stop()
	client, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	sim, err := podsim.Start(ctx, client, podsim.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer sim.Stop()

	rep, err := soak.Run(ctx, soak.Config{Cluster: c, Seed: seed, Cycles: *cycles, Users: *users, Progress: os.Stdout, LogDir: *logDir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	rep.Print(os.Stdout)
	k := rep.Kubespawn
	if len(k.Leaks) > 0 || len(k.WrongDeletions) > 0 || k.AbsenceWithoutAPI > 0 || k.ProbesOnlyFailures() > 0 || k.Cycles < *cycles ||
		len(k.ObjectLeaks) > 0 || len(k.ClaimsLost) > 0 || len(k.ClaimsDuplicated) > 0 {
		fmt.Println("\nFAIL: kubespawn did not hold its promise")
		return 1
	}
	if len(rep.Legacy.Leaks) == 0 {
		fmt.Println("\nFAIL: the 2018 replica leaked nothing: the schedule has no teeth")
		return 1
	}
	fmt.Println("\nOK: kubespawn leaked nothing (pods, Services, Secrets) and deleted nothing wrongly, no claim lost or duplicated; the 2018 replica leaked on the same schedule")
	return 0
}
