package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
)

func main() { os.Exit(exitCode(service.Main(run), os.Stderr)) }

var (
	// errUsage marks bad flags (exit status 2), as service.ParseFlags does.
	errUsage = service.ErrUsage
	// errCannotRun marks what keeps the doctor from examining anything:
	// no configuration, no API server, bad credentials, a namespace that
	// does not exist (exit status 2).
	errCannotRun = errors.New("cannot run")
	// errUnhealthy is returned when a check failed (exit status 1); the
	// report has been written.
	errUnhealthy = errors.New("unhealthy")
)

// exitCode prints err as one line and maps it to the exit status: 0
// healthy, 1 unhealthy, 2 bad input.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUnhealthy):
		fmt.Fprintf(stderr, "doctor: %v\n", oneLine(err))
		return 1
	default:
		fmt.Fprintf(stderr, "doctor: %v\n", oneLine(err))
		return 2
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// options are the command-line flags.
type options struct {
	kubeconfig      string
	namespace       string
	canaryNamespace string
	canaryKind      string
	timeout         time.Duration
	requestTimeout  time.Duration
	canaryTimeout   time.Duration
	json            bool
	// kubespawn are the options of the spawner being checked; zero
	// fields take reflector's defaults.
	kubespawn reflector.Options
}

const (
	kindConfigMap = "configmap"
	kindLease     = "lease"
)

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config): the spawner's own")
	fs.StringVar(&o.namespace, "namespace", "", "the namespace the spawner watches: its pod watch path is checked there (default: --canary-namespace)")
	fs.StringVar(&o.canaryNamespace, "canary-namespace", "", "write a canary here (create, watch, delete a small object) to measure delivery; empty: read-only")
	fs.StringVar(&o.canaryKind, "canary-kind", kindConfigMap, "the canary object: configmap or lease")
	fs.DurationVar(&o.timeout, "timeout", time.Minute, "bound of the whole run")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 10*time.Second, "deadline of each request")
	fs.DurationVar(&o.canaryTimeout, "canary-timeout", 0, "how long the canary may take to be delivered before the watch path counts as stalled (0: the stall timeout)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.DurationVar(&o.kubespawn.StallTimeout, "stall-timeout", 0, "the spawner's reflector.Options.StallTimeout (0: the library's default)")
	fs.DurationVar(&o.kubespawn.ProbeInterval, "probe-interval", 0, "its ProbeInterval (0: default, negative: off)")
	fs.DurationVar(&o.kubespawn.CanaryWindow, "canary-window", 0, "its CanaryWindow (0: default)")
	fs.DurationVar(&o.kubespawn.IdleTimeout, "idle-timeout", 0, "its IdleTimeout (0: default, negative: off)")
	fs.DurationVar(&o.kubespawn.AuditInterval, "audit-interval", 0, "its AuditInterval (0: default, negative: off)")
	fs.DurationVar(&o.kubespawn.FailureTimeout, "failure-timeout", 0, "its FailureTimeout (0: default)")
	if err := service.ParseFlags(fs, args); err != nil {
		return nil, err
	}
	var problems []string
	if o.namespace == "" {
		o.namespace = o.canaryNamespace
	}
	if o.namespace == "" {
		problems = append(problems, "--namespace is required (the namespace the spawner watches)")
	}
	if o.canaryKind != kindConfigMap && o.canaryKind != kindLease {
		problems = append(problems, fmt.Sprintf("--canary-kind must be %s or %s, got %q", kindConfigMap, kindLease, o.canaryKind))
	}
	if o.timeout <= 0 || o.requestTimeout <= 0 || o.canaryTimeout < 0 {
		problems = append(problems, "--timeout and --request-timeout must be positive, --canary-timeout not negative")
	}
	if err := o.kubespawn.Validate(); err != nil { // the library's own rules
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return nil, service.UsageErrorf("%s", strings.Join(problems, "; "))
	}
	return o, nil
}

// run is the whole program, driven by tests with their own args and
// writers. It returns nil when healthy, an error wrapping errUnhealthy
// after the report when a check failed, errUsage or errCannotRun for bad
// input.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg, err := service.RESTConfig(o.kubeconfig)
	if err != nil {
		return fmt.Errorf("%w: %v", errCannotRun, err)
	}
	return runWith(ctx, cfg, o, stdout)
}

// runWith is run after the configuration is loaded: the tests of faults
// call it with a config through a fault proxy (plain HTTP, which a
// kubeconfig would give no credentials).
func runWith(ctx context.Context, cfg *rest.Config, o *options, stdout io.Writer) error {
	eff, err := effectiveOptions(o.kubespawn)
	if err != nil {
		return service.UsageErrorf("%v", err)
	}
	o.canaryTimeout = cmp.Or(o.canaryTimeout, eff.StallTimeout)
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubespawn-doctor"

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	d, err := newDoctor(cfg, o, eff)
	if err != nil {
		return fmt.Errorf("%w: %v", errCannotRun, err)
	}
	rep, err := d.examine(ctx)
	if err != nil {
		return err
	}
	if o.json {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		writeHuman(stdout, rep)
	}
	if !rep.Verdict.Healthy {
		for _, f := range rep.Verdict.Findings {
			if f.Severity == sevFail {
				return fmt.Errorf("%w: %s: %s", errUnhealthy, f.Check, f.Message)
			}
		}
	}
	return nil
}
