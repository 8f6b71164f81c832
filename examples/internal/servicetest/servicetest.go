// Package servicetest holds what the example services' tests share: one
// HTTP round trip that fails the test on a transport error and returns
// the status, header and whole body.
package servicetest

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// Do sends method url with body (nil for none) and header under the test's
// context, and returns the response's status code, header and body.
func Do(t testing.TB, method, url string, body io.Reader, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	require.NoError(t, err)
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
