package podproc

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"
)

// ProbeKind says which check decides a container's readiness.
type ProbeKind string

const (
	// ProbeHTTP: the readinessProbe's httpGet.
	ProbeHTTP ProbeKind = "httpGet"
	// ProbeTCP: the readinessProbe's tcpSocket.
	ProbeTCP ProbeKind = "tcpSocket"
	// ProbePort: no readinessProbe podproc can run (none, or exec or grpc):
	// a TCP connect to the first TCP containerPort.
	ProbePort ProbeKind = "containerPort"
	// ProbeNone: no probe and no port: Ready as soon as the process runs,
	// as the kubelet does for a container without readinessProbe.
	ProbeNone ProbeKind = "none"
)

// ProbeOptions configures NewProber.
type ProbeOptions struct {
	// IP is the pod's IP, the probes' host unless httpGet sets one.
	IP string
	// MaxPeriod caps the probe's periodSeconds (which defaults to 10s, too
	// slow for tests); 0 means no cap.
	MaxPeriod time.Duration
	// Clock times the probes; default the real clock.
	Clock clock.Clock
}

// Prober runs one container's readiness checks.
type Prober struct {
	kind             ProbeKind
	host             string
	port             int
	scheme           string
	path             string
	headers          http.Header
	initialDelay     time.Duration
	period           time.Duration
	timeout          time.Duration
	successThreshold int
	failureThreshold int
	clock            clock.Clock
	note             string
}

// NewProber returns the readiness prober of container c: its
// readinessProbe's httpGet (path and port on the pod IP, or httpGet.host),
// else its tcpSocket, else (no probe, or an exec or grpc probe) a TCP
// connect to the first TCP containerPort, else none. The probe's
// initialDelaySeconds, periodSeconds (capped by MaxPeriod), timeoutSeconds,
// successThreshold and failureThreshold are honoured, with the API's
// defaults (0s, 10s, 1s, 1, 3); the containerPort check runs every second
// (capped by MaxPeriod).
func NewProber(c *v1.Container, opts ProbeOptions) *Prober {
	p := &Prober{
		kind: ProbeNone, host: opts.IP, scheme: "http", path: "/",
		period: 10 * time.Second, timeout: time.Second, successThreshold: 1, failureThreshold: 3,
		clock: opts.Clock,
	}
	if p.clock == nil {
		p.clock = clock.RealClock{}
	}
	rp := c.ReadinessProbe
	switch {
	case rp != nil && rp.HTTPGet != nil:
		g := rp.HTTPGet
		p.kind = ProbeHTTP
		if g.Host != "" {
			p.host = g.Host
		}
		if g.Scheme == v1.URISchemeHTTPS {
			p.scheme = "https"
		}
		if g.Path != "" {
			p.path = g.Path
		}
		p.headers = http.Header{"User-Agent": {"kube-probe/podsim"}, "Accept": {"*/*"}}
		for _, h := range g.HTTPHeaders {
			p.headers.Set(h.Name, h.Value)
		}
		p.port = resolvePort(g.Port, c)
	case rp != nil && rp.TCPSocket != nil:
		p.kind = ProbeTCP
		if rp.TCPSocket.Host != "" {
			p.host = rp.TCPSocket.Host
		}
		p.port = resolvePort(rp.TCPSocket.Port, c)
	default:
		if rp != nil {
			p.note = "readinessProbe handler not supported by podproc (exec or grpc): checking the first containerPort instead"
		}
		for _, cp := range c.Ports {
			if cp.Protocol == "" || cp.Protocol == v1.ProtocolTCP {
				p.kind, p.port, p.period = ProbePort, int(cp.ContainerPort), time.Second
				break
			}
		}
	}
	if rp != nil && (p.kind == ProbeHTTP || p.kind == ProbeTCP) {
		p.initialDelay = time.Duration(rp.InitialDelaySeconds) * time.Second
		if rp.PeriodSeconds > 0 {
			p.period = time.Duration(rp.PeriodSeconds) * time.Second
		}
		if rp.TimeoutSeconds > 0 {
			p.timeout = time.Duration(rp.TimeoutSeconds) * time.Second
		}
		if rp.SuccessThreshold > 0 {
			p.successThreshold = int(rp.SuccessThreshold)
		}
		if rp.FailureThreshold > 0 {
			p.failureThreshold = int(rp.FailureThreshold)
		}
	}
	if opts.MaxPeriod > 0 {
		p.period = min(p.period, opts.MaxPeriod)
	}
	return p
}

// resolvePort is a probe's port number: a number, or the name of one of the
// container's ports (0 if there is none of that name).
func resolvePort(port intstr.IntOrString, c *v1.Container) int {
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n
	}
	return 0
}

// Kind is the check that decides readiness.
func (p *Prober) Kind() ProbeKind { return p.kind }

// Explicit reports whether the check is the container's own readinessProbe
// (whose failures a kubelet reports as Unhealthy events).
func (p *Prober) Explicit() bool { return p.kind == ProbeHTTP || p.kind == ProbeTCP }

// Note says why the container's probe is not the one run, or "".
func (p *Prober) Note() string { return p.note }

// String describes the check, for logs.
func (p *Prober) String() string {
	switch p.kind {
	case ProbeHTTP:
		return fmt.Sprintf("httpGet %s period %s", p.url(), p.period)
	case ProbeTCP, ProbePort:
		return fmt.Sprintf("%s %s period %s", p.kind, net.JoinHostPort(p.host, strconv.Itoa(p.port)), p.period)
	}
	return string(p.kind)
}

func (p *Prober) url() string {
	return (&url.URL{Scheme: p.scheme, Host: net.JoinHostPort(p.host, strconv.Itoa(p.port)), Path: p.path}).String()
}

// Run probes until ctx ends: the first probe after initialDelaySeconds,
// then one every period. After every probe it calls report with the
// readiness (Ready after successThreshold successes in a row, not Ready
// again after failureThreshold failures in a row) and the failure of that
// probe ("" if it passed). With ProbeNone it reports Ready once and returns.
func (p *Prober) Run(ctx context.Context, report func(ready bool, failure string)) {
	if p.kind == ProbeNone {
		report(true, "")
		return
	}
	ready := false
	successes, failures := 0, 0
	delay := p.initialDelay
	for {
		t := p.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		err := p.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		failure := ""
		if err == nil {
			successes, failures = successes+1, 0
			if successes >= p.successThreshold {
				ready = true
			}
		} else {
			successes, failures = 0, failures+1
			failure = err.Error()
			if failures >= p.failureThreshold {
				ready = false
			}
		}
		report(ready, failure)
		delay = p.period
	}
}

// Probe runs the check once; nil means it passed.
func (p *Prober) Probe(ctx context.Context) error { return p.probe(ctx) }

func (p *Prober) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	addr := net.JoinHostPort(p.host, strconv.Itoa(p.port))
	if p.kind != ProbeHTTP {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url(), nil)
	if err != nil {
		return err
	}
	req.Header = p.headers.Clone()
	// Like the kubelet's prober: no keep-alive, no proxy, no certificate
	// check.
	tr := &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's prober
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}
