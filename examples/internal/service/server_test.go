package service

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serve runs hs on a loopback port until the test ends and returns its
// address.
func serve(t *testing.T, hs *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

// TestNewHTTPServerRefusesCrossSiteRequests: what a web page can make a
// browser send to the service (another site's Origin or Sec-Fetch-Site,
// a CORS-simple body that is not JSON) is refused before any handler
// runs, on every method; a program's request (no Origin, no
// Sec-Fetch-Site, a JSON body or none) and a developer's address bar
// (Sec-Fetch-Site: none) pass. Whatever net/http.CrossOriginProtection
// refuses, NoCrossSite refuses too.
func TestNewHTTPServerRefusesCrossSiteRequests(t *testing.T) {
	var reached atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		b, err := ReadBody(w, r, 1<<20)
		if err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		WriteJSON(w, http.StatusOK, map[string]int{"read": len(b)})
	})
	addr := serve(t, NewHTTPServer("127.0.0.1:0", h))
	own := "http://" + addr
	const jsonBody = `{"image":"attacker.example/miner:1"}`
	type req struct {
		method, body string
		chunked      bool
		header       map[string]string
	}
	for _, c := range []struct {
		name string
		req  req
		want int
	}{
		{"program POST with a JSON body", req{http.MethodPost, jsonBody, false, map[string]string{"Content-Type": "application/json"}}, http.StatusOK},
		{"program POST, JSON with charset", req{http.MethodPost, jsonBody, false, map[string]string{"Content-Type": "application/json; charset=utf-8"}}, http.StatusOK},
		{"program POST, chunked JSON", req{http.MethodPost, jsonBody, true, map[string]string{"Content-Type": "application/json"}}, http.StatusOK},
		{"program POST without a body", req{http.MethodPost, "", false, nil}, http.StatusOK},
		{"program GET", req{http.MethodGet, "", false, nil}, http.StatusOK},
		{"program DELETE", req{http.MethodDelete, "", false, nil}, http.StatusOK},
		{"empty body of another type", req{http.MethodPost, "", false, map[string]string{"Content-Type": "text/plain"}}, http.StatusOK},
		{"address bar", req{http.MethodGet, "", false, map[string]string{"Sec-Fetch-Site": "none"}}, http.StatusOK},
		{"same origin", req{http.MethodPost, jsonBody, false, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": own, "Content-Type": "application/json"}}, http.StatusOK},
		{"own Origin, old browser", req{http.MethodPost, jsonBody, false, map[string]string{"Origin": own, "Content-Type": "application/json"}}, http.StatusOK},

		{"no-cors POST from a page", req{http.MethodPost, jsonBody, false, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example", "Content-Type": "text/plain;charset=UTF-8"}}, http.StatusForbidden},
		{"cross-site JSON POST", req{http.MethodPost, jsonBody, false, map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}}, http.StatusForbidden},
		{"same-site POST", req{http.MethodPost, jsonBody, false, map[string]string{"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"}}, http.StatusForbidden},
		{"cross-site GET", req{http.MethodGet, "", false, map[string]string{"Sec-Fetch-Site": "cross-site"}}, http.StatusForbidden},
		{"cross-site DELETE", req{http.MethodDelete, "", false, map[string]string{"Sec-Fetch-Site": "cross-site"}}, http.StatusForbidden},
		{"unknown Sec-Fetch-Site", req{http.MethodGet, "", false, map[string]string{"Sec-Fetch-Site": "bogus"}}, http.StatusForbidden},
		{"foreign Origin, old browser", req{http.MethodPost, jsonBody, false, map[string]string{"Origin": "http://attacker.example", "Content-Type": "application/json"}}, http.StatusForbidden},
		{"foreign Origin on GET", req{http.MethodGet, "", false, map[string]string{"Origin": "http://attacker.example"}}, http.StatusForbidden},
		{"opaque Origin", req{http.MethodPost, "", false, map[string]string{"Origin": "null"}}, http.StatusForbidden},
		{"own host, other scheme", req{http.MethodPost, "", false, map[string]string{"Origin": "https://" + addr}}, http.StatusForbidden},
		{"same-origin but a foreign Origin", req{http.MethodPost, "", false, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://attacker.example"}}, http.StatusForbidden},
		{"preflight", req{http.MethodOptions, "", false, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://attacker.example", "Access-Control-Request-Method": "POST"}}, http.StatusForbidden},

		{"body without Content-Type", req{http.MethodPost, jsonBody, false, nil}, http.StatusUnsupportedMediaType},
		{"chunked body without Content-Type", req{http.MethodPost, jsonBody, true, nil}, http.StatusUnsupportedMediaType},
		{"text/plain body", req{http.MethodPost, jsonBody, false, map[string]string{"Content-Type": "text/plain"}}, http.StatusUnsupportedMediaType},
		{"form body", req{http.MethodPost, "image=x", false, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, http.StatusUnsupportedMediaType},
		{"multipart body", req{http.MethodPost, "--b--", false, map[string]string{"Content-Type": "multipart/form-data; boundary=b"}}, http.StatusUnsupportedMediaType},
		{"malformed Content-Type", req{http.MethodPost, jsonBody, false, map[string]string{"Content-Type": "application/json; ="}}, http.StatusUnsupportedMediaType},
		{"DELETE with a text body", req{http.MethodDelete, "x", false, map[string]string{"Content-Type": "text/plain"}}, http.StatusUnsupportedMediaType},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			if c.req.body != "" {
				body = strings.NewReader(c.req.body)
				if c.req.chunked {
					body = io.MultiReader(body) // unknown length: sent chunked
				}
			}
			r, err := http.NewRequestWithContext(t.Context(), c.req.method, own+"/users/alice/server", body)
			require.NoError(t, err)
			for k, v := range c.req.header {
				r.Header.Set(k, v)
			}
			before := reached.Load()
			resp, err := http.DefaultClient.Do(r)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, c.want, resp.StatusCode, "%s", b)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var e ErrorResponse
			require.NoError(t, json.Unmarshal(b, &e), "%s", b)
			if c.want != http.StatusOK {
				assert.NotEmpty(t, e.Error)
				assert.Equal(t, before, reached.Load(), "the handler never ran")
			}

			// The standard library's CSRF check (which exempts GET, HEAD
			// and OPTIONS) never refuses what NoCrossSite lets through.
			probe := r.Clone(t.Context())
			probe.Method, probe.Host = http.MethodPost, addr
			if http.NewCrossOriginProtection().Check(probe) != nil {
				assert.NotEqual(t, http.StatusOK, resp.StatusCode, "CrossOriginProtection refuses it")
			}
		})
	}
}

// TestHoldWriteKeepsALongAnswer: a handler that waits for work longer
// than the server's WriteTimeout (a start, a stop, bounded by the
// library's timeouts, not by the handler) still gets its answer out while
// it holds the write deadline; one that does not hold it is cut off.
func TestHoldWriteKeepsALongAnswer(t *testing.T) {
	t.Parallel()
	const writeTimeout = 150 * time.Millisecond
	work := func() { time.Sleep(4 * writeTimeout) } // the work outlasts the deadline: not a synchronisation
	for _, hold := range []bool{true, false} {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var release func()
			if hold {
				release = holdWrite(w, writeTimeout, writeTimeout/3)
			} else {
				release = func() {}
			}
			work()
			release()
			WriteJSON(w, http.StatusOK, map[string]string{"state": "done"})
		})
		addr := serve(t, &http.Server{Handler: h, WriteTimeout: writeTimeout, ReadHeaderTimeout: time.Second})
		resp, err := http.Get("http://" + addr + "/")
		if !hold {
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			require.Error(t, err, "without HoldWrite the answer is cut off by the write deadline")
			continue
		}
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.JSONEq(t, `{"state":"done"}`, string(b))
	}
}
