package faultproxy

import (
	"crypto/tls"
	"net"
	"net/http"
)

// refusingListener accepts connections and, while the proxy refuses,
// resets them at once instead of handing them to the server.
type refusingListener struct {
	net.Listener
	p *Proxy
}

func (l *refusingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.p.isRefusing() {
			return c, nil
		}
		resetConn(c)
	}
}

// connState tracks the client connections the server manages, for
// ResetConnections.
func (p *Proxy) connState(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

// resetConn closes c abruptly: the peer gets a TCP RST ("connection reset by
// peer") rather than an orderly FIN, and a TLS connection gets no
// close_notify.
func resetConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = c.Close()
}

// resetAllConns resets every tracked client connection.
func (p *Proxy) resetAllConns() int {
	p.mu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		resetConn(c)
	}
	return len(conns)
}

// ResetConnections abruptly closes (TCP RST) every client connection that is
// open now, idle or busy, and cancels every in-flight request and its
// upstream request, including stalled and upgraded (exec, port-forward)
// streams. Clients see "connection reset by peer" or an unexpected EOF; an
// open client-go watch ends (its ResultChan closes). Connections made
// afterwards are served normally.
func (p *Proxy) ResetConnections() {
	p.mu.Lock()
	open := make([]*entry, 0, len(p.open))
	for e := range p.open {
		open = append(open, e)
	}
	p.mu.Unlock()
	// Connections first, so that no cancelled handler can still answer.
	n := p.resetAllConns()
	for _, e := range open {
		e.cancel()
	}
	p.logger.V(2).Info("Reset connections", "count", n)
}

// Refuse switches connection refusal on or off. While on, every new client
// connection is accepted and immediately reset, and a request arriving on an
// already open connection is dropped without a response (an HTTP/1.1
// keep-alive connection is reset; on an HTTP/2 connection only the request's
// stream is reset), so every new request fails with a connection error
// ("connection reset by peer", EOF, or an HTTP/2 stream error), as when the
// API server is unreachable. Refused requests are not counted in Stats or
// Records. Responses already in progress (open watches) are left alone;
// combine with ResetConnections to drop them too. Refuse(false) makes the
// proxy serve again.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
	p.logger.V(2).Info("Refuse", "on", on)
}

func (p *Proxy) isRefusing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refuse
}
