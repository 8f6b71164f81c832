package servicetest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/internal/service"
)

// TestFreeAddrIsFree: the address is on loopback and nothing listens
// there.
func TestFreeAddrIsFree(t *testing.T) {
	addr := FreeAddr(t)
	host, _, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", host)
	_, err = net.Dial("tcp", addr)
	assert.Error(t, err, "refused")
}

// fatalTB records the failure of a helper under test instead of failing
// the test that runs it.
type fatalTB struct {
	testing.TB
	failed atomic.Pointer[string]
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.failed.Store(&msg)
	runtime.Goexit()
}

// TestAwaitOK: AwaitOK returns once the server answers 200, and fails
// with the last answer when it never does.
func TestAwaitOK(t *testing.T) {
	var calls atomic.Int32
	ts := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/never" || calls.Add(1) < 3 {
			service.WriteError(w, http.StatusServiceUnavailable, "not yet")
			return
		}
		service.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}), service.ServerOptions{})
	defer ts.Close()
	AwaitOK(t, ts.URL+"/readyz", time.Minute, "the server")
	assert.Equal(t, int32(3), calls.Load(), "polled until the third answer")

	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		AwaitOK(f, ts.URL+"/never", 200*time.Millisecond, "the server")
	}()
	<-done
	require.NotNil(t, f.failed.Load(), "AwaitOK failed the test")
	assert.Contains(t, *f.failed.Load(), "did not answer 200 within")
}

// TestRunInBackground: run gets a context that ends at the test's
// cleanup, and the cleanup waits for run to return.
func TestRunInBackground(t *testing.T) {
	var started, returned atomic.Bool
	t.Run("program", func(t *testing.T) {
		RunInBackground(t, func(ctx context.Context) error {
			started.Store(true)
			<-ctx.Done()
			returned.Store(true)
			return nil
		})
		require.Eventually(t, started.Load, time.Minute, time.Millisecond)
		assert.False(t, returned.Load(), "runs until the test ends")
	})
	assert.True(t, returned.Load(), "the cleanup waited for run")
}

// TestProber: the probe sends the Host it is given (the programs' server
// refuses one that is not loopback) and gives 0 when nothing answers.
func TestProber(t *testing.T) {
	ts := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		service.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}), service.ServerOptions{})
	defer ts.Close()
	addr := ts.Listener.Addr().String()
	probe := Prober(t, addr)
	assert.Equal(t, http.StatusOK, probe(addr, "/readyz", nil))
	assert.Equal(t, http.StatusOK, probe("localhost", "/readyz", nil))
	assert.Equal(t, http.StatusForbidden, probe("rebind.attacker.example", "/readyz", nil))
	assert.Equal(t, http.StatusForbidden, probe(addr, "/readyz", http.Header{"Sec-Fetch-Site": {"cross-site"}}))
	assert.Zero(t, Prober(t, FreeAddr(t))(addr, "/readyz", nil), "nothing listens")
}
