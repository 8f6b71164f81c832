package faultproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// closeTimeout bounds how long Close waits for in-flight handlers after it
// has cancelled them. Handlers stop promptly once their connections are gone;
// the bound only protects a test from hanging on a bug.
const closeTimeout = 30 * time.Second

// Options configure a Proxy.
type Options struct {
	// HTTP2, when true, serves clients over TLS with HTTP/2 enabled (a fresh
	// self-signed certificate for 127.0.0.1; ClientConfig carries its CA).
	// Clients that support HTTP/2 (client-go does by default) negotiate h2
	// and so get HTTP/2 PING health checks on the connection.
	//
	// The default, false, serves plain HTTP/1.1: a stalled response leaves an
	// idle TCP connection that no HTTP/2 ping can detect, exactly the 2018
	// mybinder.org failure.
	HTTP2 bool

	// Logger receives the proxy's log lines: fault changes at V(2), upstream
	// errors at V(2), every request at V(5). The zero value means
	// klog.Background().
	Logger klog.Logger
}

// Proxy is an HTTP reverse proxy in front of one kube-apiserver that injects
// faults on command. Create it with New, point clients at it with
// ClientConfig, and Close it when done. All methods are safe for concurrent
// use, from any goroutine, at any time.
type Proxy struct {
	logger    klog.Logger
	upstream  *url.URL
	transport *http.Transport
	rp        *httputil.ReverseProxy
	srv       *http.Server
	ln        net.Listener
	url       string
	caPEM     []byte // CA of the serving certificate; HTTP2 only
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error

	// handlers counts running handlers; Add only under mu while !closed.
	handlers sync.WaitGroup

	mu           sync.Mutex
	closed       bool
	conns        map[net.Conn]struct{}
	refuse       bool
	stalls       map[Match]struct{}
	stallChanged chan struct{} // closed and replaced whenever stalls change
	latency      map[Match]time.Duration
	injections   []*injection
	stats        map[Key]*Counter
	records      []*entry
	open         map[*entry]struct{}
}

// entry is the proxy's state for one request. Its rec and blocked fields are
// guarded by Proxy.mu.
type entry struct {
	info    RequestInfo
	key     Key
	rec     Record
	cancel  context.CancelFunc
	blocked bool // a body write is held back by a stall
	frozen  bool // stalled by StallOpen, until UnstallAll or ClearFaults
}

type connKey struct{}

// New starts a proxy listening on 127.0.0.1 (a random port) in front of the
// API server that upstream points at.
//
// The proxy reaches the upstream with upstream's Host, TLS server
// verification settings (CA, ServerName, Insecure), Dial and Proxy, but with
// none of its credentials: neither its bearer token nor its client
// certificate is used. Each client request's own Authorization and
// impersonation headers are forwarded unchanged, so a request through the
// proxy is authenticated as the client that sent it. (A config that
// authenticates with a client certificate therefore cannot be proxied: TLS
// ends at the proxy.)
//
// Requests go upstream over HTTP/1.1 only, one upstream connection per
// in-flight client request, so that a stalled or reset client stream maps
// onto exactly one upstream connection, back-pressure on a stalled stream
// is plain TCP flow control, and no upstream HTTP/2 connection is shared
// between unrelated test clients.
//
// New returns an error if upstream has no usable host or TLS settings or the
// listener cannot be opened.
func New(upstream *rest.Config, opts Options) (*Proxy, error) {
	if upstream == nil {
		return nil, errors.New("faultproxy: upstream config is nil")
	}
	logger := opts.Logger
	if logger.GetSink() == nil {
		logger = klog.Background()
	}
	logger = logger.WithName("faultproxy")

	anon := rest.AnonymousClientConfig(upstream)
	anon.NextProtos = []string{"http/1.1"}
	hostURL, _, err := rest.DefaultServerUrlFor(anon)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream host: %w", err)
	}
	tlsConfig, err := rest.TLSConfigFor(anon)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream TLS config: %w", err)
	}
	dial := anon.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	tr := &http.Transport{
		Proxy:               anon.Proxy, // nil: no environment proxy between us and the apiserver
		DialContext:         dial,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		Protocols:           protocols,
	}

	p := &Proxy{
		logger:       logger,
		upstream:     hostURL,
		transport:    tr,
		serveDone:    make(chan struct{}),
		conns:        map[net.Conn]struct{}{},
		stalls:       map[Match]struct{}{},
		stallChanged: make(chan struct{}),
		latency:      map[Match]time.Duration{},
		stats:        map[Key]*Counter{},
		open:         map[*entry]struct{}{},
	}
	errorLog := log.New(logWriter{logger}, "", 0)
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(hostURL)
		},
		Transport:     tr,
		FlushInterval: -1, // watch events reach the client as soon as they arrive
		ErrorLog:      errorLog,
		ErrorHandler:  p.upstreamError,
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p.ln = &refusingListener{Listener: ln, p: p}
	p.srv = &http.Server{
		Handler:           p,
		ErrorLog:          errorLog,
		ReadHeaderTimeout: 30 * time.Second,
		ConnState:         p.connState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	scheme := "http"
	if opts.HTTP2 {
		certPEM, keyPEM, err := selfSignedCert()
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("faultproxy: serving certificate: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("faultproxy: serving certificate: %w", err)
		}
		p.caPEM = certPEM
		p.srv.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2", "http/1.1"},
			MinVersion:   tls.VersionTLS12,
		}
		serverProtocols := new(http.Protocols)
		serverProtocols.SetHTTP1(true)
		serverProtocols.SetHTTP2(true)
		p.srv.Protocols = serverProtocols
		scheme = "https"
	} else {
		serverProtocols := new(http.Protocols)
		serverProtocols.SetHTTP1(true)
		p.srv.Protocols = serverProtocols
	}
	p.url = scheme + "://" + ln.Addr().String()

	go func() {
		defer close(p.serveDone)
		var err error
		if opts.HTTP2 {
			err = p.srv.ServeTLS(p.ln, "", "")
		} else {
			err = p.srv.Serve(p.ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.logger.Error(err, "Serving stopped")
		}
	}()
	p.logger.V(2).Info("Started", "url", p.url, "upstream", hostURL.String(), "http2", opts.HTTP2)
	return p, nil
}

// URL returns the proxy's base URL: http://127.0.0.1:PORT, or
// https://127.0.0.1:PORT with Options.HTTP2.
func (p *Proxy) URL() string { return p.url }

// ClientConfig returns a copy of cfg whose requests go through the proxy.
// cfg may carry any identity (an admin config, a service-account token
// config, ...); the copy keeps its credentials (BearerToken,
// BearerTokenFile, Username/Password, AuthProvider, ExecProvider,
// Impersonate), which the client sends as headers that the proxy forwards
// unchanged, and everything else (content type, QPS, timeouts, user agent).
//
// In the copy Host is the proxy's URL; TLS client settings are replaced:
// none for a plain HTTP proxy, the proxy's CA for an HTTP2 proxy. Client
// certificates, Dial, Proxy and a custom Transport are dropped, as they
// belong to the connection to the real API server. cfg is not modified.
func (p *Proxy) ClientConfig(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Host = p.url
	c.TLSClientConfig = rest.TLSClientConfig{}
	if p.caPEM != nil {
		c.TLSClientConfig.CAData = append([]byte(nil), p.caPEM...)
	}
	c.Dial = nil
	c.Proxy = nil
	c.Transport = nil
	return c
}

// Close stops the proxy: it closes the listener and every open client
// connection, cancels every in-flight upstream request, releases stalled
// streams (which then fail), and waits for the request handlers to return.
// It is idempotent; every call returns the result of the first.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()

		// Connections first, so that no cancelled handler can still answer.
		p.resetAllConns()
		err := p.srv.Close() // closes the listener and all connections it tracks
		if err != nil && !errors.Is(err, net.ErrClosed) {
			p.closeErr = err
		}
		<-p.serveDone
		p.mu.Lock()
		for e := range p.open {
			e.cancel()
		}
		p.mu.Unlock()

		done := make(chan struct{})
		go func() { p.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(closeTimeout):
			p.logger.Error(nil, "Request handlers still running after Close", "timeout", closeTimeout)
		}
		p.transport.CloseIdleConnections()
		p.logger.V(2).Info("Closed", "url", p.url)
	})
	return p.closeErr
}

// ServeHTTP implements http.Handler: it classifies, accounts for and, subject
// to the faults in force, forwards one client request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.isRefusing() {
		abortRequest(r)
	}
	info := Classify(r.Method, r.URL)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	e := p.begin(r, info, cancel)
	if e == nil { // closed
		abortRequest(r)
	}
	defer p.finish(e)
	if l := p.logger.V(5); l.Enabled() {
		l.Info("Request", "verb", info.Verb, "resource", e.key.Resource, "namespace", info.Namespace, "name", info.Name, "path", r.URL.Path, "query", r.URL.RawQuery)
	}

	rw := &responseWriter{ResponseWriter: w, p: p, e: e, ctx: ctx, method: r.Method}
	r = r.WithContext(ctx)
	if d := p.latencyFor(info); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			// The client left, or the proxy is resetting or closing: never
			// answer with an empty response.
			panic(http.ErrAbortHandler)
		}
	}
	if inj := p.takeInjection(info); inj != nil {
		p.mu.Lock()
		e.rec.Injected = true
		p.mu.Unlock()
		inj.serve(rw, r, info)
		return
	}
	p.rp.ServeHTTP(rw, r)
}

// abortRequest ends the handler without a response: an HTTP/1.x client
// connection is reset, an HTTP/2 stream is reset (RST_STREAM) while the
// connection and its other streams live on.
func abortRequest(r *http.Request) {
	if r.ProtoMajor < 2 {
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			resetConn(c)
		}
	}
	panic(http.ErrAbortHandler)
}

// upstreamError answers a request that could not be forwarded (the upstream
// is down, or the request was cancelled). A cancelled request is aborted
// without a response; anything else gets a 502 with a Kubernetes Status
// body.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		panic(http.ErrAbortHandler)
	}
	p.logger.V(2).Info("Upstream request failed", "path", r.URL.Path, "err", err)
	info := Classify(r.Method, r.URL)
	st := apierrors.NewGenericServerResponse(http.StatusBadGateway, r.Method,
		schema.GroupResource{Group: info.Group, Resource: info.Resource}, info.Name,
		"faultproxy: upstream request failed: "+err.Error(), 0, true).ErrStatus
	writeStatus(w, &st)
}

func (p *Proxy) begin(r *http.Request, info RequestInfo, cancel context.CancelFunc) *entry {
	e := &entry{
		info:   info,
		key:    info.Key(),
		cancel: cancel,
		rec: Record{
			RequestInfo: info,
			Method:      r.Method,
			RawQuery:    r.URL.RawQuery,
			Proto:       r.Proto,
			Start:       time.Now(),
		},
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.handlers.Add(1)
	p.counterLocked(e.key).Requests++
	p.records = append(p.records, e)
	p.open[e] = struct{}{}
	return e
}

// complete marks e's response as complete: End is set and it no longer
// counts as open. It is called before the last byte of a response of known
// length goes to the client, and at the latest when the handler returns, so
// a client that has read a complete response always finds its record
// complete.
func (p *Proxy) complete(e *entry) {
	p.mu.Lock()
	if e.rec.End.IsZero() {
		e.rec.End = time.Now()
	}
	e.blocked = false
	delete(p.open, e)
	p.mu.Unlock()
}

func (p *Proxy) finish(e *entry) {
	p.complete(e)
	p.handlers.Done()
}

func (p *Proxy) setStatus(e *entry, code int) {
	p.mu.Lock()
	e.rec.Status = code
	p.mu.Unlock()
}

// addBytes counts n (possibly negative, to correct a short write) response
// body bytes for e.
func (p *Proxy) addBytes(e *entry, n int) {
	if n == 0 {
		return
	}
	p.mu.Lock()
	e.rec.Bytes += int64(n)
	p.counterLocked(e.key).ResponseBytes += int64(n)
	p.mu.Unlock()
}

func (p *Proxy) counterLocked(k Key) *Counter {
	c := p.stats[k]
	if c == nil {
		c = &Counter{}
		p.stats[k] = c
	}
	return c
}

// responseWriter is the http.ResponseWriter handed to the reverse proxy and
// to injected responses. It holds body writes back while the request is
// stalled, flushes response headers as soon as they are written (so a
// stalled client still gets them), and accounts for the response: status,
// body bytes and completion are recorded before the client can see them, so
// that Stats and Records are up to date once a client has its response.
type responseWriter struct {
	http.ResponseWriter
	p           *Proxy
	e           *entry
	ctx         context.Context
	method      string
	wroteHeader bool
	expect      int64 // body length announced to the client, -1 if unknown
	written     int64
}

func (w *responseWriter) WriteHeader(code int) {
	if code < 200 || w.wroteHeader { // 1xx informational, or a duplicate
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	w.expect = -1
	if cl := w.Header().Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.expect = n
		}
	}
	if w.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
		w.expect = 0
	}
	w.p.setStatus(w.e, code)
	if w.expect == 0 {
		w.p.complete(w.e)
	}
	w.ResponseWriter.WriteHeader(code)
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.p.waitWhileStalled(w.ctx, w.e); err != nil {
		return 0, err
	}
	w.p.addBytes(w.e, len(b))
	w.written += int64(len(b))
	if w.expect >= 0 && w.written >= w.expect {
		w.p.complete(w.e)
	}
	n, err := w.ResponseWriter.Write(b)
	if n < len(b) {
		w.p.addBytes(w.e, n-len(b))
	}
	return n, err
}

// FlushError flushes the underlying writer; http.ResponseController uses it.
func (w *responseWriter) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer (Hijack,
// deadlines).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logWriter adapts the standard library's loggers (http.Server, ReverseProxy)
// to the proxy's logger.
type logWriter struct{ logger klog.Logger }

func (l logWriter) Write(b []byte) (int, error) {
	l.logger.V(4).Info(strings.TrimSpace(string(b)))
	return len(b), nil
}
