package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/reflector"
)

// RunFunc is a command's body: its flags in args, its output on stdout
// and stderr; it returns when ctx ends or the work is done.
type RunFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Main calls run with the process's arguments and a context that SIGTERM
// (how the kubelet stops a container) or an interrupt cancels, and
// returns run's error. A second signal is the default action again: the
// process dies.
func Main(run RunFunc) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// ServiceMain is the main of a service that logs with klog (on stderr;
// it takes no stdout): run under Main, then its exit status (ExitCode),
// once an error that is not a usage error is logged as name's last words
// and klog flushed.
func ServiceMain(name string, run func(ctx context.Context, args []string, stderr io.Writer) error) int {
	err := Main(func(ctx context.Context, args []string, _, stderr io.Writer) error { return run(ctx, args, stderr) })
	code := ExitCode(err, os.Stderr)
	if code == 1 {
		klog.ErrorS(err, name+" exiting")
	}
	klog.Flush()
	return code
}

// ErrUsage marks bad flags (exit status 2), the library's validation of the
// options they set included.
var ErrUsage = errors.New("usage")

// UsageError marks err as a usage error.
func UsageError(err error) error { return fmt.Errorf("%w: %w", ErrUsage, err) }

// UsageErrorf is a new usage error: fmt.Errorf(format, args...) marked.
func UsageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}

// ExitCode is a main's exit status for err: 0 after a graceful shutdown or
// -h, 2 for bad flags (with the message on stderr), 1 for any other error.
func ExitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(stderr, "%v\n", err)
		return 2
	default:
		return 1
	}
}

// Failures delivers the factory's failure (its Err, once Failed has
// closed) to Run, until ctx ends.
func Failures(ctx context.Context, f *reflector.Factory) <-chan error {
	ch := make(chan error, 1)
	go func() {
		select {
		case <-f.Failed():
			ch <- f.Err()
		case <-ctx.Done():
		}
	}()
	return ch
}
