package service

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/reflector"
)

// ParseFlags parses args into fs. -h is flag.ErrHelp; a bad flag or an
// argument that is not a flag is a usage error (exit status 2).
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return UsageError(err)
	}
	if fs.NArg() > 0 {
		return UsageError(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	return nil
}

// CacheFlags are the reflector options a service's flags set: 0 is the
// library's default, and the library's validation is the only copy of
// its rules.
type CacheFlags struct {
	StallTimeout, FailureTimeout time.Duration
}

// Register adds --stall-timeout and --failure-timeout to fs; who names the
// process that exits when recovery keeps failing.
func (c *CacheFlags) Register(fs *flag.FlagSet, who string) {
	fs.DurationVar(&c.StallTimeout, "stall-timeout", 0, "how long a stalled watch may go unnoticed (reflector.Options.StallTimeout; 0: the library's default)")
	fs.DurationVar(&c.FailureTimeout, "failure-timeout", 0, "how long recovery may fail before "+who+" exits non-zero to be restarted (reflector.Options.FailureTimeout; 0: the library's default)")
}

// Options are the factory's options the flags set.
func (c CacheFlags) Options() reflector.Options {
	return reflector.Options{StallTimeout: c.StallTimeout, FailureTimeout: c.FailureTimeout}
}

// Validate is reflector's validation of the flags, as a usage error.
func (c CacheFlags) Validate() error {
	if err := c.Options().Validate(); err != nil {
		return UsageError(fmt.Errorf("--stall-timeout, --failure-timeout: %w", err))
	}
	return nil
}

// Prepare is what a service does before it serves: it reads the bearer
// token file (ReadTokenFile), checks the listen address against it
// (CheckListen) and loads the API server's configuration (RESTConfig),
// its client named userAgent unless the configuration names one.
func Prepare(kubeconfig, tokenFile, listen, userAgent string) (*rest.Config, string, error) {
	token, err := ReadTokenFile(tokenFile)
	if err != nil {
		return nil, "", err
	}
	if err := CheckListen(listen, NewAuth(token)); err != nil {
		return nil, "", err
	}
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, "", err
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = userAgent
	}
	return cfg, token, nil
}

// NewFactory is the service's one reflector.Factory, its caches' metrics
// registered on a new registry (what /metrics serves) beside the Go
// runtime's and the process's.
func NewFactory(cfg *rest.Config, opts reflector.Options) (*reflector.Factory, *prometheus.Registry, error) {
	reg := NewRegistry()
	opts.Registerer = reg
	f, err := reflector.NewFactory(cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	return f, reg, nil
}

// NewRegistry is a registry with the Go runtime's and the process's
// metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
