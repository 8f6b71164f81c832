package service

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ok(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func get(t *testing.T, url string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	tok, err := ReadTokenFile("")
	require.NoError(t, err)
	assert.Empty(t, tok)
	path := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(path, []byte(" s3cret\n"), 0o600))
	tok, err = ReadTokenFile(path)
	require.NoError(t, err)
	assert.Equal(t, "s3cret", tok)
	require.NoError(t, os.WriteFile(path, []byte("\n"), 0o600))
	_, err = ReadTokenFile(path)
	assert.ErrorContains(t, err, "empty")
	_, err = ReadTokenFile(filepath.Join(dir, "missing"))
	assert.Error(t, err)
}

// TestAuthRequire: without a token every request passes; with one, only
// "Bearer <token>" does (scheme case-insensitive), others get 401 with
// WWW-Authenticate and a body that never echoes what was sent.
func TestAuthRequire(t *testing.T) {
	open := httptest.NewServer(NewAuth("").Require("test", http.HandlerFunc(ok)))
	defer open.Close()
	assert.Equal(t, http.StatusOK, get(t, open.URL, nil).StatusCode)
	assert.False(t, NewAuth("").Valid(httptest.NewRequest(http.MethodGet, "/", nil)), "no token: nothing is valid")

	srv := httptest.NewServer(NewAuth("s3cret").Require("test", http.HandlerFunc(ok)))
	defer srv.Close()
	for _, h := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic s3cret", "s3cret", "Bearer s3cret2"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%q", h)
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
		assert.NotContains(t, string(body), "s3cret")
	}
	for _, h := range []string{"Bearer s3cret", "bearer s3cret", "Bearer  s3cret "} {
		assert.Equal(t, http.StatusOK, get(t, srv.URL, http.Header{"Authorization": {h}}).StatusCode, "%q", h)
	}
}

func TestCheckListen(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8081", "[::1]:8081", "localhost:8081", "127.244.0.9:1"} {
		assert.NoError(t, CheckListen(addr, Auth{}), addr)
	}
	for _, addr := range []string{"0.0.0.0:8081", ":8081", "[::]:8081", "10.1.2.3:8081", "example.org:80"} {
		err := CheckListen(addr, Auth{})
		assert.ErrorIs(t, err, ErrInsecureListen, addr)
		assert.NoError(t, CheckListen(addr, NewAuth("t")), addr)
	}
}

// TestLoopbackHostsStopsDNSRebinding: on a loopback listener a request
// for another host name (a rebinding attacker's) is refused; loopback
// names pass. Beyond loopback the check is not applied.
func TestLoopbackHostsStopsDNSRebinding(t *testing.T) {
	srv := httptest.NewServer(LoopbackHosts("127.0.0.1:0", http.HandlerFunc(ok)))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	for host, want := range map[string]int{
		"127.0.0.1:" + port: http.StatusOK, "localhost:" + port: http.StatusOK, "LOCALHOST": http.StatusOK, "[::1]:" + port: http.StatusOK,
		"attacker.example:" + port: http.StatusForbidden, "attacker.example": http.StatusForbidden, "10.0.0.1": http.StatusForbidden,
		"127.0.0.1.attacker.example": http.StatusForbidden,
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, "Host: %s", host)
	}
	wide := httptest.NewServer(LoopbackHosts("0.0.0.0:8081", http.HandlerFunc(ok)))
	defer wide.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, wide.URL, nil)
	req.Host = "hub.example"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestStreamLimiter: caps in all and per client; 429 with Retry-After
// past them; a released slot can be taken again.
func TestStreamLimiter(t *testing.T) {
	l := NewStreamLimiter(StreamLimits{Max: 3, PerClient: 2})
	from := func(ip string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = ip + ":40000"
		return r
	}
	a1, ok1 := l.Acquire(from("10.0.0.1"))
	_, ok2 := l.Acquire(from("10.0.0.1"))
	_, ok3 := l.Acquire(from("10.0.0.1"))
	require.True(t, ok1)
	require.True(t, ok2)
	assert.False(t, ok3, "per-client cap")
	_, ok4 := l.Acquire(from("10.0.0.2"))
	require.True(t, ok4)
	_, ok5 := l.Acquire(from("10.0.0.3"))
	assert.False(t, ok5, "global cap")
	assert.Equal(t, 3, l.Open())
	a1()
	a1() // idempotent
	assert.Equal(t, 2, l.Open())
	_, ok6 := l.Acquire(from("10.0.0.3"))
	assert.True(t, ok6)

	// Through Limit, over HTTP: the handler holds its slot until it returns.
	hl := NewStreamLimiter(StreamLimits{Max: 1, PerClient: 1})
	entered, leave := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(hl.Limit(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-leave
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-entered
	resp := get(t, srv.URL, nil)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	close(leave)
	assert.Equal(t, http.StatusOK, <-first)
	require.Eventually(t, func() bool { return hl.Open() == 0 }, 10*time.Second, 10*time.Millisecond)
}

// TestEventStreamEndsForAClientThatNeverReads: a client that opens a
// stream and never reads does not hold the handler: once the socket
// buffers are full a write misses its deadline and the stream ends.
func TestEventStreamEndsForAClientThatNeverReads(t *testing.T) {
	ended := make(chan error, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		es := StartEventStream(w)
		es.Timeout = 200 * time.Millisecond
		chunk := strings.Repeat("x", 64<<10)
		for {
			if err := es.Comment(chunk); err != nil {
				ended <- err
				return
			}
			if r.Context().Err() != nil {
				ended <- errors.New("client went away")
				return
			}
		}
	}))
	srv.Config.WriteTimeout = WriteTimeout
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	require.NoError(t, err)
	// Read the status line only, then never again.
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	assert.Contains(t, line, "200")
	select {
	case err := <-ended:
		var ne net.Error
		assert.True(t, errors.As(err, &ne) && ne.Timeout(), "the write missed its deadline: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the handler is still writing to a client that never reads")
	}
}
