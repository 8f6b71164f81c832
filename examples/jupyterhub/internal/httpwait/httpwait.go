package httpwait

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/kubespawn/kubespawn/examples/internal/service"
)

// For waits until url answers want to a GET with header (bounded by ctx),
// or exited (nil for none) says the process serving it ended.
func For(ctx context.Context, url string, header http.Header, want int, exited <-chan struct{}) error {
	var last string
	for {
		code, err := service.Probe(ctx, url, "", header)
		switch {
		case err != nil:
			last = err.Error()
		case code == want:
			return nil
		default:
			last = http.StatusText(code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %d (last: %s): %w", url, want, last, context.Cause(ctx))
		case <-exited:
			return fmt.Errorf("the process serving %s exited (last: %s)", url, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
