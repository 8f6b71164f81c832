// Package servicetest holds what the example programs' tests share: one
// HTTP round trip that fails the test on a transport error and returns
// the status, header and whole body, a raw one for what well-behaved
// clients never send, and a test server that serves a handler as the
// programs do (this file); running a program under test and waiting for
// it to answer (run.go); the checks of the flags and exit statuses every
// program has (flags.go).
package servicetest

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/internal/service"
)

// Do sends method url with body (nil for none) and header under the test's
// context, and returns the response's status code, header and body. A
// body is sent as Content-Type: application/json, as the services
// require, unless header says otherwise.
func Do(t testing.TB, method, url string, body io.Reader, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

// NewServer serves handler on a loopback port behind the programs' own
// http.Server (service.NewHTTPServerWithOptions with o: its Host and
// cross-site checks, its timeouts), so that tests see what clients of
// the real programs see. The caller closes it.
func NewServer(handler http.Handler, o service.ServerOptions) *httptest.Server {
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = service.NewHTTPServerWithOptions(ts.Listener.Addr().String(), handler, o)
	ts.Start()
	return ts
}

// RawRequest writes head (a request, or its start) on a new connection to
// addr and returns everything the server writes until it closes the
// connection. It fails the test if the connection is still open after
// bound: a test sets the server's timeouts short and bound generous.
func RawRequest(t testing.TB, addr, head string, bound time.Duration) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, head)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(bound)))
	got, err := io.ReadAll(conn)
	var ne net.Error
	// Any other error (a reset) closed the connection too.
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server still holds the connection after %s (read so far: %q)", bound, got)
	return string(got)
}
