package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kubespawn/kubespawn/reflector"
)

// Seconds is a duration that JSON writes as seconds (a float), -1 for
// "never".
type Seconds time.Duration

// never marks a stall that is never noticed.
const never = Seconds(-1)

func (s Seconds) MarshalJSON() ([]byte, error) {
	if s < 0 {
		return []byte("-1"), nil
	}
	return json.Marshal(time.Duration(s).Seconds())
}

func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	if f < 0 {
		*s = never
		return nil
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

func (s Seconds) String() string {
	if s < 0 {
		return "never"
	}
	return roundDuration(time.Duration(s)).String()
}

// roundDuration keeps two significant figures or so: what a human reads.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	default:
		return d.Round(100 * time.Microsecond)
	}
}

// Detection says how long one kind of silent stall goes unnoticed by one
// kind of client, and which rule notices it first.
type Detection struct {
	// Client is "kubespawn", "informer" (a plain client-go informer) or
	// "kubespawner-loop" (KubeSpawner's list-and-watch loop).
	Client string `json:"client"`
	// Case is the kind of stall.
	Case string `json:"case"`
	// Within is the bound, -1 for never.
	Within Seconds `json:"withinSeconds"`
	// Rule is what notices it first (for kubespawn, the rule of
	// reflector/doc.go's health table).
	Rule string `json:"rule"`
	// Reported is whether the client says so: the loop's restart only
	// masks a stall, nothing reports it.
	Reported bool `json:"reported"`
}

// Stall cases.
const (
	caseStreamDies = "the watch stream dies silently, a pod changes"
	caseAllWatches = "every watch hangs, a pod changes"
	caseAfterWrite = "after a spawner write (ExpectWrite)"
	caseDeadConn   = "the connection dies silently"
	caseLiveConn   = "the stream stalls on a live connection (a proxy or the server)"
	caseWatchOnly  = "the watch stalls, lists still work"
	caseEverything = "every request hangs"
)

// measured is what the checks found that the verdict depends on.
type measured struct {
	// http2 is whether watches negotiated HTTP/2.
	http2 bool
	// proxied is whether a proxy was seen in the path (then an HTTP/2
	// ping reaches only the proxy).
	proxied bool
	// probesRefused: short watches were answered 429 or 5xx.
	probesRefused bool
	// watchOpen is the time to a watch's response headers (0: unknown).
	watchOpen time.Duration
	// restTimeout is rest.Config.Timeout: it bounds every request of a
	// client built from the config, watches included.
	restTimeout time.Duration
	// ping is client-go's HTTP/2 health check (ReadIdleTimeout,
	// PingTimeout); readIdle 0 disables it.
	readIdle, pingTimeout time.Duration
}

// The constants of reflector's rules that its Options do not export;
// each is documented in reflector/doc.go ("How a stall is found",
// "Deadlines").
const (
	// probeServerTimeout is the probe watch's timeoutSeconds.
	probeServerTimeout = time.Second
	// canaryReplay: a canary's probe needs no grace, only the server's
	// replay: "a write the watch misses is found about CanaryWindow plus
	// a second after it".
	canaryReplay = time.Second
)

// probeDeadline is reflector's probe deadline: "probe 1s + S/5 (between
// 2s and 3s)".
func probeDeadline(o reflector.Options) time.Duration {
	return probeServerTimeout + min(max(o.StallTimeout/5, time.Second), 2*time.Second)
}

// probeGrace is how long a change a probe saw may take to reach the
// cache: "a grace later (ProbeInterval/2, between 1s and 2s)".
func probeGrace(o reflector.Options) time.Duration {
	return min(max(o.ProbeInterval/2, time.Second), 2*time.Second)
}

// effectiveOptions fills in reflector's defaults the way NewFactory does
// (the library's rules are the only copy): a factory that is never
// started, over a client it never uses.
func effectiveOptions(o reflector.Options) (reflector.Options, error) {
	f, err := reflector.NewFactoryForClient(&kubernetes.Clientset{}, o)
	if err != nil {
		return reflector.Options{}, err
	}
	defer f.Shutdown()
	return f.Options(), nil
}

// kubespawnDetection applies reflector's rules (reflector/doc.go, "How a
// stall is found" and the health table) to effective options o and what
// was measured.
func kubespawnDetection(o reflector.Options, m measured) []Detection {
	d := func(c string, within time.Duration, rule string) Detection {
		return Detection{Client: "kubespawn", Case: c, Within: Seconds(within), Rule: rule, Reported: true}
	}
	probing := o.ProbeInterval > 0
	why := ""
	switch {
	case !probing:
		why = "probes are off (ProbeInterval < 0)"
	case m.probesRefused:
		why = "probes are refused here (429/5xx): probes_failing only degrades the cache"
		probing = false
	case m.watchOpen > 0 && m.watchOpen+probeServerTimeout > probeDeadline(o):
		why = fmt.Sprintf("probes miss their %s deadline here (a watch takes %s to open)", probeDeadline(o), roundDuration(m.watchOpen))
		probing = false
	}
	if probing {
		grace, deadline := probeGrace(o), probeDeadline(o)
		return []Detection{
			d(caseStreamDies, o.ProbeInterval+grace, fmt.Sprintf("stall: a probe (every ProbeInterval %s) finds changes the cache lacks past the grace (%s)", o.ProbeInterval, grace)),
			d(caseAllWatches, o.ProbeInterval+deadline, fmt.Sprintf("stall: a probe passes its deadline (%s) while the main watch is silent", deadline)),
			d(caseAfterWrite, o.CanaryWindow+canaryReplay, fmt.Sprintf("stall: the canary's probe, CanaryWindow (%s) plus the server's replay (%s)", o.CanaryWindow, canaryReplay)),
		}
	}
	// Without probes (and canaries, which probe) only the idle watch rule
	// and the drift audit remain.
	within, rule := time.Duration(never), "nothing: probes, IdleTimeout and the audit are all off"
	if o.IdleTimeout > 0 {
		within, rule = o.IdleTimeout, fmt.Sprintf("idle: the open main watch delivers nothing for IdleTimeout (%s); %s", o.IdleTimeout, why)
	}
	if o.AuditInterval > 0 && (within < 0 || o.AuditInterval < within) {
		within, rule = o.AuditInterval, fmt.Sprintf("drift: the audit (every AuditInterval %s) finds differences twice, a settle apart; %s", o.AuditInterval, why)
	}
	out := []Detection{d(caseStreamDies, within, rule), d(caseAllWatches, within, rule), d(caseAfterWrite, within, rule)}
	if within < 0 {
		for i := range out {
			out[i].Within, out[i].Reported = never, false
		}
	}
	return out
}

// informerDetection is a plain client-go informer: nothing but the
// transport notices a stall. Its watch's timeoutSeconds is the server's
// to enforce, so a stalled stream never reaches it.
func informerDetection(m measured) []Detection {
	d := func(c string, within Seconds, rule string) Detection {
		return Detection{Client: "informer", Case: c, Within: within, Rule: rule, Reported: within >= 0}
	}
	if m.restTimeout > 0 {
		rule := fmt.Sprintf("rest.Config.Timeout (%s) cuts every request, watches included", m.restTimeout)
		return []Detection{d(caseDeadConn, Seconds(m.restTimeout), rule), d(caseLiveConn, Seconds(m.restTimeout), rule)}
	}
	live := d(caseLiveConn, never, "nothing: the connection answers, the watch's timeoutSeconds is enforced by the server, which the stall hides")
	switch {
	case !m.http2:
		return []Detection{d(caseDeadConn, never, "nothing: HTTP/1.1 has no ping, and client-go sets no read deadline on a watch"), live}
	case m.readIdle <= 0:
		return []Detection{d(caseDeadConn, never, "nothing: client-go's HTTP/2 health check is off (HTTP2_READ_IDLE_TIMEOUT_SECONDS=0)"), live}
	case m.proxied:
		return []Detection{d(caseDeadConn, never, "nothing beyond the proxy: client-go's HTTP/2 ping reaches only the proxy, which answers it"), live}
	}
	return []Detection{
		d(caseDeadConn, Seconds(m.readIdle+m.pingTimeout), fmt.Sprintf("client-go's HTTP/2 health check: ReadIdleTimeout %s + PingTimeout %s", m.readIdle, m.pingTimeout)),
		live,
	}
}

// The KubeSpawner loop's defaults (jupyterhub/kubespawner reflector.py).
const (
	loopTimeoutSeconds = 10 * time.Second
	loopRequestTimeout = 60 * time.Second
	loopRestartSeconds = 30 * time.Second
)

// loopDetection is KubeSpawner's list-and-watch loop with its defaults: a
// stalled watch is cut by the unconditional restart (or the request
// timeout) and the relist refreshes the cache, but nothing reports it; if
// every request hangs, each times out, and after about nine failures in a
// row the loop gives up and keeps serving its frozen cache.
func loopDetection() []Detection {
	return []Detection{
		{Client: "kubespawner-loop", Case: caseWatchOnly, Within: Seconds(min(loopRestartSeconds, loopRequestTimeout)),
			Rule: fmt.Sprintf("restart_seconds (%s): the watch is restarted and relisted, masking the stall; never reported", loopRestartSeconds)},
		{Client: "kubespawner-loop", Case: caseEverything, Within: never,
			Rule: fmt.Sprintf("nothing: each request times out (request_timeout %s), and after ~9 failures the loop gives up and serves its frozen cache", loopRequestTimeout)},
	}
}

// http2Health reads client-go's HTTP/2 health check settings the way
// k8s.io/apimachinery/pkg/util/net does: 30s and 15s unless
// HTTP2_READ_IDLE_TIMEOUT_SECONDS / HTTP2_PING_TIMEOUT_SECONDS say
// otherwise (0 read idle disables it).
func http2Health(getenv func(string) string) (readIdle, ping time.Duration) {
	read := func(name string, def int) time.Duration {
		if s := getenv(name); s != "" {
			if i, err := strconv.Atoi(s); err == nil {
				return time.Duration(i) * time.Second
			}
		}
		return time.Duration(def) * time.Second
	}
	return read("HTTP2_READ_IDLE_TIMEOUT_SECONDS", 30), read("HTTP2_PING_TIMEOUT_SECONDS", 15)
}
