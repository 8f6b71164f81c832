package service_test

// The tests of the server's timeouts that need only what the package
// exports run here, outside it, so that they use servicetest (which
// imports the package) as the programs' tests do.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
)

func ok(w http.ResponseWriter, _ *http.Request) {
	service.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// TestUnsentBodyDoesNotHoldTheConnection: a request that announces a body
// and never sends it, to a handler that does not read it (401, 415, GET,
// DELETE) or does (ReadBody), gets its answer and its connection closed
// within ReadTimeout, instead of the server waiting for the body forever.
// Unfinished headers and an idle connection are bounded too.
func TestUnsentBodyDoesNotHoldTheConnection(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/authed", service.NewAuth("s3cret").Require("test", http.HandlerFunc(ok)))
	mux.HandleFunc("/open", ok)
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		if _, err := service.ReadBody(w, r, 1<<20); err != nil {
			service.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		ok(w, r)
	})
	ts := servicetest.NewServer(mux, service.ServerOptions{
		ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, IdleTimeout: 200 * time.Millisecond,
	})
	defer ts.Close()
	addr := ts.Listener.Addr().String()
	const bound = 30 * time.Second // generous: the timeouts are far shorter
	for _, c := range []struct {
		method, path, contentType string
		want                      int
	}{
		{http.MethodPost, "/authed", "application/json", http.StatusUnauthorized},
		{http.MethodDelete, "/authed", "application/json", http.StatusUnauthorized},
		{http.MethodPost, "/authed", "", http.StatusUnsupportedMediaType},
		{http.MethodGet, "/open", "application/json", http.StatusOK},
		{http.MethodDelete, "/open", "application/json", http.StatusOK},
		{http.MethodPost, "/read", "application/json", http.StatusBadRequest},
	} {
		head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n", c.method, c.path, addr)
		if c.contentType != "" {
			head += "Content-Type: " + c.contentType + "\r\n"
		}
		got := servicetest.RawRequest(t, addr, head+"\r\n", bound)
		line, _, _ := strings.Cut(got, "\r\n")
		assert.Contains(t, line, fmt.Sprint(c.want), "%s %s: %q", c.method, c.path, got)
	}
	// Headers that never end: closed, unanswered, after ReadHeaderTimeout.
	got := servicetest.RawRequest(t, addr, "GET /open HTTP/1.1\r\nHost: "+addr+"\r\n", bound)
	assert.Empty(t, got, "unfinished headers")
	// A whole request, then nothing: answered, then closed after IdleTimeout.
	got = servicetest.RawRequest(t, addr, "GET /open HTTP/1.1\r\nHost: "+addr+"\r\n\r\n", bound)
	assert.True(t, strings.HasPrefix(got, "HTTP/1.1 200"), "idle connection: %q", got)
}

// TestLongAnswersOutliveReadTimeout: ReadTimeout bounds reading the
// request; once it is read (no body, or ReadBody to its end), a long
// answer (an event stream, a start that waits for its pod) keeps its
// context for as long as the client stays: net/http clears the read
// deadline when it starts watching the connection for the client going
// away, so that watch does not fail at ReadTimeout and cancel it.
func TestLongAnswersOutliveReadTimeout(t *testing.T) {
	const readTimeout = 100 * time.Millisecond
	long := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := service.ReadBody(w, r, 1<<20); err != nil {
			service.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		es := service.StartEventStream(w)
		select {
		case <-r.Context().Done():
			_ = es.Event("cancelled", []byte(r.Context().Err().Error()))
		case <-time.After(5 * readTimeout):
			_ = es.Event("done", []byte("{}"))
		}
	})
	ts := servicetest.NewServer(long, service.ServerOptions{ReadTimeout: readTimeout})
	defer ts.Close()
	for _, c := range []struct{ method, body string }{
		{http.MethodGet, ""},
		{http.MethodPost, `{"image":"x"}`},
	} {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body) // sent as application/json
		}
		code, _, b := servicetest.Do(t, c.method, ts.URL+"/", body, nil)
		require.Equal(t, http.StatusOK, code, "%s", b)
		assert.Equal(t, "event: done\ndata: {}\n\n", string(b), "%s: the answer's context was not cancelled", c.method)
	}
}
