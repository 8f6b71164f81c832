package servicetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/internal/service"
)

// FreeAddr returns a loopback address that nothing listens on now: for a
// program under test to listen on, or for a client to be refused at.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// RunInBackground runs a program under test (its run function, bound to
// its flags) until the test ends: the context it gets is cancelled at
// cleanup, as SIGTERM would end it, and run must then return nil, a
// graceful shutdown. Tests that stop the program themselves, or expect it
// to fail, keep their own goroutine.
func RunInBackground(t testing.TB, run func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done, "run after its context ended")
	})
}

// Prober returns a probe of the program listening on addr: the status code
// of a GET of path sent with Host host (addr itself, or a name a browser
// would send) and header, as service.Probe gives it; 0 when nothing
// answers. The Host, cross-site and token checks are tested with it.
func Prober(t testing.TB, addr string) func(host, path string, header http.Header) int {
	return func(host, path string, header http.Header) int {
		code, _ := service.Probe(t.Context(), "http://"+addr+path, host, header)
		return code
	}
}

// AwaitOK waits until a GET of url answers 200, polling every 50ms, and
// fails the test with the last answer if none did within: for a program
// or a server that starts in the background (its /readyz, /livez). what
// names it in the failure.
func AwaitOK(t testing.TB, url string, within time.Duration, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		last, ok := getOK(ctx, url)
		if ok {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s: GET %s did not answer 200 within %s (last answer: %s)", what, url, within, last)
		}
	}
}

// getOK sends one GET of url and says whether it answered 200, and if not,
// what it answered (or why nothing did).
func getOK(ctx context.Context, url string) (last string, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error(), false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error(), false // not listening yet
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b), resp.StatusCode == http.StatusOK
}
