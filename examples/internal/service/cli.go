package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/kubespawn/kubespawn/reflector"
)

// ErrUsage marks bad flags (exit status 2), the library's validation of the
// options they set included.
var ErrUsage = errors.New("usage")

// UsageError marks err as a usage error.
func UsageError(err error) error { return fmt.Errorf("%w: %w", ErrUsage, err) }

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
