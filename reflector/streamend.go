package reflector

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
)

// streamEnd records how a probe's response body ended. A server that
// closes a watch itself (its timeoutSeconds) ends the body cleanly, with
// io.EOF; a cut connection (a reset, a restart, the cache's own
// closeConns) ends it with an error, which client-go's watch decoder
// reports as a plain close. Only the former tells what the server's replay
// held.
type streamEnd struct {
	mu   sync.Mutex
	seen bool // the response passed through a cache's transport
	err  error
}

type streamEndKey struct{}

// withStreamEnd returns ctx carrying end, for a request whose body's end
// the cache's transport records.
func withStreamEnd(ctx context.Context, end *streamEnd) context.Context {
	return context.WithValue(ctx, streamEndKey{}, end)
}

// cut reports whether the body was seen to end otherwise than cleanly;
// false when it was not seen (a client the factory did not build, a fake
// clientset): the close is then taken for the server's.
func (e *streamEnd) cut() (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.seen {
		return false, nil
	}
	if e.err == nil {
		return true, errors.New("the response body was closed before its end")
	}
	return !errors.Is(e.err, io.EOF), e.err
}

func (e *streamEnd) record(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = err
	}
}

// streamEndTransport wraps the body of responses to requests that carry a
// streamEnd so that the end of the body is recorded.
type streamEndTransport struct{ rt http.RoundTripper }

func (t streamEndTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	end, ok := req.Context().Value(streamEndKey{}).(*streamEnd)
	if err != nil || !ok || resp.Body == nil {
		return resp, err
	}
	end.mu.Lock()
	end.seen = true
	end.mu.Unlock()
	resp.Body = &endRecordingBody{ReadCloser: resp.Body, end: end}
	return resp, nil
}

type endRecordingBody struct {
	io.ReadCloser
	end *streamEnd
}

func (b *endRecordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end.record(err)
	}
	return n, err
}
