package service

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrInsecureListen: an address beyond loopback was asked for without a
// bearer token to authenticate the requests that would arrive there.
var ErrInsecureListen = errors.New("refusing to listen beyond loopback without authentication (--token-file)")

// ReadTokenFile reads a bearer token file ("" for none: no token). An
// unreadable or empty file is an error: authentication is never silently
// disabled when a token file was given.
func ReadTokenFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return tok, nil
}

// Auth checks "Authorization: Bearer <token>" in constant time. The zero
// value (and NewAuth("")) has no token: Enabled is false and Require lets
// every request through, which CheckListen allows on loopback only. The
// token itself is never stored, logged or echoed: only its SHA-256.
type Auth struct {
	sum []byte
}

// NewAuth returns the check for token ("" disables it).
func NewAuth(token string) Auth {
	if token == "" {
		return Auth{}
	}
	sum := sha256.Sum256([]byte(token))
	return Auth{sum: sum[:]}
}

// Enabled says whether requests must carry the token.
func (a Auth) Enabled() bool { return a.sum != nil }

// Valid says whether r carries the token (false when none is configured).
func (a Auth) Valid(r *http.Request) bool {
	if a.sum == nil {
		return false
	}
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) <= len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(auth[len(prefix):])))
	return subtle.ConstantTimeCompare(got[:], a.sum) == 1
}

// Require answers 401 (with WWW-Authenticate) to requests without the
// token when one is configured; without a token it is next itself.
func (a Auth) Require(realm string, next http.Handler) http.Handler {
	if !a.Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.Valid(r) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer realm=%q", realm))
			WriteError(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// IsLoopback says whether addr ("host:port") can only be reached from
// this machine (or pod): a loopback IP or "localhost". An empty host
// (":8080") listens on every interface and is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

// CheckListen refuses (ErrInsecureListen) an address beyond loopback
// unless requests are authenticated.
func CheckListen(addr string, auth Auth) error {
	if IsLoopback(addr) || auth.Enabled() {
		return nil
	}
	return fmt.Errorf("--listen %s: %w", addr, ErrInsecureListen)
}

// LoopbackHosts protects a service listening on loopback from DNS
// rebinding: a page in a browser on the same machine can make the browser
// send requests to 127.0.0.1 under a name of the attacker's, but not with
// a Host header that names loopback. When listenAddr is loopback, requests
// whose Host is not a loopback IP or "localhost" (any port) get 403; on
// other addresses next is returned as it is (authentication is required
// there).
func LoopbackHosts(listenAddr string, next http.Handler) http.Handler {
	if !IsLoopback(listenAddr) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsLoopback(r.Host) {
			WriteError(w, http.StatusForbidden, "this service listens on loopback and only answers requests for a loopback host (Host: 127.0.0.1, [::1] or localhost)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Server limits of NewHTTPServer (ServerOptions' defaults). WriteTimeout
// bounds every write of a plain answer; long answers (event streams, a
// start waiting for its pod) extend it before each write with
// ExtendWrite, so a client that stops reading holds a handler for at most
// WriteTimeout. ReadTimeout bounds reading a request, headers and body,
// from its first byte: a client that announces a body and never sends it
// is cut off after it.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 20 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 64 << 10
)

// ServerOptions are the limits of NewHTTPServerWithOptions; a zero field
// takes the default of the same name. (Tests shorten them.)
type ServerOptions struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
}

// NewHTTPServer is the http.Server of the services, with the default
// ServerOptions.
func NewHTTPServer(listenAddr string, handler http.Handler) *http.Server {
	return NewHTTPServerWithOptions(listenAddr, handler, ServerOptions{})
}

// NewHTTPServerWithOptions is the http.Server of the services: handler
// behind LoopbackHosts(listenAddr) and NoCrossSite, with every timeout
// set. Every connection's life is bounded: headers within
// ReadHeaderTimeout, the whole request, body included, within
// ReadTimeout (net/http drains a body the handler did not read under
// that deadline too), each write within WriteTimeout (unless a long
// answer extends it), an idle connection for IdleTimeout.
//
// ReadTimeout does not cut long answers: once the request is read (no
// body, or the body read to its end), net/http clears the read deadline
// as it starts the read that notices a client going away, so the
// request's context lasts as long as the client stays.
func NewHTTPServerWithOptions(listenAddr string, handler http.Handler, o ServerOptions) *http.Server {
	return &http.Server{
		Handler:           LoopbackHosts(listenAddr, NoCrossSite(handler)),
		ReadHeaderTimeout: cmp.Or(o.ReadHeaderTimeout, ReadHeaderTimeout),
		ReadTimeout:       cmp.Or(o.ReadTimeout, ReadTimeout),
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       cmp.Or(o.IdleTimeout, IdleTimeout),
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// NoCrossSite refuses, before next runs and on every method, what a web
// page can make a browser send to the service. The services are APIs for
// programs (a hub, a CLI), which send neither Origin nor Sec-Fetch-Site;
// a page in a developer's browser can reach a loopback listener, and a
// CORS-simple request (fetch with mode "no-cors") is sent without asking.
// Refused are:
//
//   - 403: Sec-Fetch-Site other than "same-origin" or "none" (a URL typed
//     in the address bar);
//   - 403: an Origin other than the service's own, scheme://Host ("null",
//     the opaque origin of sandboxed pages and files, included);
//   - 415: a body (of any length but 0) whose Content-Type is not
//     application/json. A page may send text/plain and form bodies
//     without a CORS preflight, never JSON, and no preflight is granted
//     here (no CORS headers): the check holds even for a browser that
//     sends neither header.
//
// net/http.CrossOriginProtection applies the first two to unsafe methods
// only (GET, HEAD and OPTIONS always pass), trusts Sec-Fetch-Site without
// looking at Origin, and compares only Origin's host; here a GET holds an
// event stream, so every method is checked, and Origin must match
// exactly. A request without either header, a program's, passes both.
func NoCrossSite(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := crossSite(r); why != "" {
			WriteError(w, http.StatusForbidden, why+": this service answers programs, not requests a web page makes a browser send")
			return
		}
		if r.ContentLength != 0 && !isJSON(r.Header) { // -1: chunked, length unknown
			WriteError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("a request body must be JSON, with Content-Type: application/json (got %.64q)", strings.Join(r.Header.Values("Content-Type"), ", ")))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isJSON says whether h has one Content-Type, application/json (with
// parameters or not).
func isJSON(h http.Header) bool {
	ct := h.Values("Content-Type")
	if len(ct) != 1 {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct[0])
	return err == nil && mt == "application/json"
}

// crossSite says why r is a cross-site browser request ("" if it is not).
func crossSite(r *http.Request) string {
	switch site := r.Header.Values("Sec-Fetch-Site"); {
	case len(site) == 0:
	case len(site) == 1 && (site[0] == "same-origin" || site[0] == "none"):
	default:
		return fmt.Sprintf("cross-site request (Sec-Fetch-Site: %.64q)", strings.Join(site, ", "))
	}
	origin := r.Header.Values("Origin")
	if len(origin) == 0 {
		return ""
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if len(origin) == 1 && strings.EqualFold(origin[0], scheme+"://"+r.Host) {
		return ""
	}
	return fmt.Sprintf("cross-origin request (Origin: %.64q)", strings.Join(origin, ", "))
}

// ExtendWrite moves the write deadline of w's connection to d from now:
// long answers call it before each write (a server without a WriteTimeout
// ignores it).
func ExtendWrite(w http.ResponseWriter, d time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
}

// HoldWrite keeps w's write deadline WriteTimeout ahead until release is
// called: for a handler that waits for work whose bound it does not know
// (a start or a stop, bounded by the library's timeouts), so that the
// connection is not cut meanwhile. Call release before writing the answer
// (its writes get WriteTimeout again) and before the handler returns: it
// waits for the keeper to stop. A client that goes away is noticed by the
// request's context, not by the deadline.
func HoldWrite(w http.ResponseWriter) (release func()) {
	return holdWrite(w, WriteTimeout, WriteTimeout/3)
}

func holdWrite(w http.ResponseWriter, ahead, every time.Duration) (release func()) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(ahead))
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = rc.SetWriteDeadline(time.Now().Add(ahead))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			_ = rc.SetWriteDeadline(time.Now().Add(ahead))
		})
	}
}

// ReadBody reads at most limit bytes of r's body, within the server's
// ReadTimeout (NewHTTPServer). Reading it to its end is what lets the
// request's context outlive ReadTimeout (NewHTTPServerWithOptions).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

// StreamLimits caps the event streams open at once: Max in all, PerClient
// from one client (its IP address). 0 means no cap.
type StreamLimits struct {
	Max, PerClient int
}

// Default stream caps of the services' flags.
const (
	DefaultMaxStreams          = 512
	DefaultMaxStreamsPerClient = 256
)

// StreamLimiter enforces StreamLimits. Each open stream holds goroutines,
// timers and, while a watch is unhealthy, periodic API requests: the caps
// keep a client from loading the service or the API server at will.
type StreamLimiter struct {
	limits StreamLimits
	mu     sync.Mutex
	total  int
	per    map[string]int
}

// NewStreamLimiter returns a limiter for limits.
func NewStreamLimiter(limits StreamLimits) *StreamLimiter {
	return &StreamLimiter{limits: limits, per: map[string]int{}}
}

// Open counts the number of streams open now.
func (l *StreamLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Acquire takes a stream slot for r's client; release gives it back. ok is
// false, and nothing taken, when a cap is reached.
func (l *StreamLimiter) Acquire(r *http.Request) (release func(), ok bool) {
	c := clientOf(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.limits.Max > 0 && l.total >= l.limits.Max) || (l.limits.PerClient > 0 && l.per[c] >= l.limits.PerClient) {
		return nil, false
	}
	l.total++
	l.per[c]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.per[c]--; l.per[c] <= 0 {
				delete(l.per, c)
			}
		})
	}, true
}

// TooManyStreams answers 429 with Retry-After.
func TooManyStreams(w http.ResponseWriter, limits StreamLimits) {
	w.Header().Set("Retry-After", strconv.Itoa(5))
	WriteError(w, http.StatusTooManyRequests, fmt.Sprintf("too many event streams open (at most %d in all, %d per client)", limits.Max, limits.PerClient))
}

// Limit runs next only with a stream slot, else answers 429.
func (l *StreamLimiter) Limit(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, ok := l.Acquire(r)
		if !ok {
			TooManyStreams(w, l.limits)
			return
		}
		defer release()
		next(w, r)
	}
}

// EventStream writes Server-Sent Events, each write within WriteTimeout
// and flushed: a client that stops reading ends the stream (a write
// fails) instead of holding the handler.
type EventStream struct {
	// Timeout bounds each write (default WriteTimeout).
	Timeout time.Duration
	w       http.ResponseWriter
	rc      *http.ResponseController
}

// StartEventStream sends the headers of a text/event-stream answer.
func StartEventStream(w http.ResponseWriter) *EventStream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s := &EventStream{Timeout: WriteTimeout, w: w, rc: http.NewResponseController(w)}
	_ = s.rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	w.WriteHeader(http.StatusOK)
	return s
}

// Event writes "event: name" with data (JSON bytes or a string).
func (s *EventStream) Event(name string, data []byte) error {
	return s.write(fmt.Sprintf("event: %s\ndata: %s\n\n", name, data))
}

// Comment writes a comment line (keep-alives, headers for humans).
func (s *EventStream) Comment(text string) error { return s.write(": " + text + "\n\n") }

func (s *EventStream) write(text string) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.Timeout))
	if _, err := s.w.Write([]byte(text)); err != nil {
		return err
	}
	return s.rc.Flush()
}
