package reflector

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
)

// TestProbeTellsAServerCloseFromACut: a probe watch that the server
// closes (its timeoutSeconds) without the canary's version is a stall; one
// whose connection is cut proves nothing (client-go's watch decoder
// reports both as a plain close): a failed probe, which leaves the canary
// pending. Through a factory's own transport, against an HTTP server.
func TestProbeTellsAServerCloseFromACut(t *testing.T) {
	t.Parallel()
	var mode atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") != "true" || r.URL.Query().Get("timeoutSeconds") != "1" {
			http.Error(w, "a probe was expected: "+r.URL.String(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		switch mode.Load() {
		case "replay":
			fmt.Fprintln(w, `{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns","resourceVersion":"7"}}}`)
		case "cut":
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close() // no terminating chunk: a cut connection
			}
		}
		// "close": the server ends the watch, with nothing to replay
	}))
	defer srv.Close()
	f, err := NewFactory(&rest.Config{Host: srv.URL}, Options{})
	require.NoError(t, err)
	defer f.Shutdown()
	p, err := f.Pods(Scope{Namespaces: []string{"ns"}})
	require.NoError(t, err)
	s := p.c.shards[0]

	mode.Store("close")
	r := s.runProbe(t.Context(), time.Now(), "5", "7")
	assert.Equal(t, probeStale, r.outcome, "the server ended the replay without the write: %v", r.err)
	assert.ErrorContains(t, r.err, "ended without resourceVersion 7")
	r = s.runProbe(t.Context(), time.Now(), "5", "")
	assert.Equal(t, probeOK, r.outcome, "a routine probe with nothing to replay: %v", r.err)

	mode.Store("cut")
	r = s.runProbe(t.Context(), time.Now(), "5", "7")
	assert.Equal(t, probeFailed, r.outcome, "a cut is not the server's answer: %v", r.err)
	assert.ErrorContains(t, r.err, "cut before the server closed it")
	r = s.runProbe(t.Context(), time.Now(), "5", "")
	assert.Equal(t, probeFailed, r.outcome, "nor for a routine probe, which must not confirm the cache: %v", r.err)

	mode.Store("replay")
	outcome, newest, err := s.probeWatch(t.Context(), "5", "7")
	require.NoError(t, err)
	assert.Equal(t, probeOK, outcome)
	assert.Equal(t, "7", newest)
}
