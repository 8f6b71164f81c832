package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kubespawn/kubespawn/reflector"
)

// Report is what the doctor found, as -json prints it. Every field is
// always present (nothing is omitted), so that a program can rely on it.
type Report struct {
	Host            string `json:"host"`
	Namespace       string `json:"namespace"`
	CanaryNamespace string `json:"canaryNamespace"`
	// Mode is "read-write" (a canary was written) or "read-only".
	Mode      string          `json:"mode"`
	Server    ServerReport    `json:"server"`
	Watch     WatchReport     `json:"watch"`
	Latency   LatencyReport   `json:"latency"`
	Canary    CanaryReport    `json:"canary"`
	Priority  PriorityReport  `json:"priorityAndFairness"`
	RateLimit RateLimitReport `json:"rateLimit"`
	// Options are the kubespawn options the verdict assumes, with
	// reflector's defaults filled in.
	Options OptionsReport `json:"options"`
	Verdict Verdict       `json:"verdict"`
	// Elapsed is how long the run took.
	Elapsed Seconds `json:"elapsedSeconds"`
}

// ServerReport is the API server's version and its watch features.
type ServerReport struct {
	Version  string `json:"version"`
	Platform string `json:"platform"`
	// WatchList: a watch with sendInitialEvents=true ended its initial
	// events with the k8s.io/initial-events-end bookmark.
	WatchList bool `json:"watchList"`
	// Bookmarks: a watch with allowWatchBookmarks=true got a bookmark.
	Bookmarks bool `json:"bookmarks"`
	// BookmarkAfter is when the bookmark came (the server sends one 2s
	// before a watch's timeout, and about once a minute).
	BookmarkAfter Seconds `json:"bookmarkAfterSeconds"`
}

// WatchReport is the watch connection: protocol, proxies, refusals.
type WatchReport struct {
	// Protocol is the negotiated protocol of a watch response: HTTP/2.0
	// or HTTP/1.1.
	Protocol string `json:"protocol"`
	HTTP2    bool   `json:"http2"`
	// ProxyHeaders are response headers a proxy adds (Via, Forwarded,
	// X-Forwarded-*, Server, ...).
	ProxyHeaders map[string]string `json:"proxyHeaders"`
	// ClientProxy is the proxy the client itself is configured to use
	// ($HTTPS_PROXY or the kubeconfig's proxy-url), "" for none.
	ClientProxy string `json:"clientProxy"`
	// Probes are the short watches sent; Refused those answered 429 or
	// 5xx, with the status codes seen.
	Probes        int    `json:"probes"`
	Refused       int    `json:"refused"`
	RefusedStatus []int  `json:"refusedStatus"`
	Stalled       bool   `json:"stalled"`
	Error         string `json:"error"`
}

// LatencyReport is what requests took.
type LatencyReport struct {
	// Request is a GET /version round trip.
	Request Seconds `json:"requestSeconds"`
	// WatchOpen is the time to a watch's response headers.
	WatchOpen Seconds `json:"watchOpenSeconds"`
}

// CanaryReport is the canary write.
type CanaryReport struct {
	Ran       bool   `json:"ran"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	Delivered bool   `json:"delivered"`
	// Write is the create's round trip.
	Write Seconds `json:"writeSeconds"`
	// Delivery is from the start of the create until the watch delivered
	// the object; AfterWrite from the create's answer (what
	// reflector.Options.CanaryWindow is measured against).
	Delivery   Seconds `json:"deliverySeconds"`
	AfterWrite Seconds `json:"afterWriteSeconds"`
	Deleted    bool    `json:"deleted"`
	// MissingVerbs are the verbs the credentials lack for the canary.
	MissingVerbs []string `json:"missingVerbs"`
	Error        string   `json:"error"`
}

// PriorityReport is API priority and fairness as the watch was
// classified.
type PriorityReport struct {
	Enabled           bool   `json:"enabled"`
	FlowSchemaUID     string `json:"flowSchemaUID"`
	FlowSchema        string `json:"flowSchema"`
	PriorityLevelUID  string `json:"priorityLevelUID"`
	PriorityLevel     string `json:"priorityLevel"`
	PriorityLevelType string `json:"priorityLevelType"`
	// LimitResponse is Queue or Reject for a Limited level.
	LimitResponse            string `json:"limitResponse"`
	NominalConcurrencyShares int32  `json:"nominalConcurrencyShares"`
	Note                     string `json:"note"`
}

// RateLimitReport is the client-side limit of the given config.
type RateLimitReport struct {
	// QPS and Burst as the config sets them (0: unset).
	QPS   float32 `json:"qps"`
	Burst int     `json:"burst"`
	// Custom is a RateLimiter set in the config.
	Custom bool `json:"custom"`
	// Effective says what a clientset built from the config gets.
	Effective string `json:"effective"`
	// ClassOf1000 is how long 1,000 creates at once would take under it
	// (0 without a limit, -1 unknown).
	ClassOf1000 Seconds `json:"classOf1000Seconds"`
}

// OptionsReport are the kubespawn options, after defaults.
type OptionsReport struct {
	StallTimeout   Seconds `json:"stallTimeoutSeconds"`
	ProbeInterval  Seconds `json:"probeIntervalSeconds"`
	CanaryWindow   Seconds `json:"canaryWindowSeconds"`
	IdleTimeout    Seconds `json:"idleTimeoutSeconds"`
	AuditInterval  Seconds `json:"auditIntervalSeconds"`
	FailureTimeout Seconds `json:"failureTimeoutSeconds"`
}

func optionsReport(o reflector.Options) OptionsReport {
	s := func(d time.Duration) Seconds {
		if d < 0 {
			return never // disabled
		}
		return Seconds(d)
	}
	return OptionsReport{StallTimeout: s(o.StallTimeout), ProbeInterval: s(o.ProbeInterval), CanaryWindow: s(o.CanaryWindow),
		IdleTimeout: s(o.IdleTimeout), AuditInterval: s(o.AuditInterval), FailureTimeout: s(o.FailureTimeout)}
}

// Verdict is the doctor's conclusion.
type Verdict struct {
	Healthy bool `json:"healthy"`
	// Kubespawn is the worst bound for a silent stall without a write, and
	// AfterWrite after one, with these options here.
	Kubespawn  Seconds `json:"kubespawnSeconds"`
	AfterWrite Seconds `json:"kubespawnAfterWriteSeconds"`
	// Informer and Loop are the worst bounds of a plain informer and of
	// the KubeSpawner loop (-1: never).
	Informer   Seconds     `json:"informerSeconds"`
	Loop       Seconds     `json:"loopSeconds"`
	Detections []Detection `json:"detections"`
	Findings   []Finding   `json:"findings"`
}

// Severity of a finding: only "fail" makes the run unhealthy.
const (
	sevFail = "fail"
	sevWarn = "warn"
	sevInfo = "info"
)

// Finding is one thing found, with what to change.
type Finding struct {
	Severity string `json:"severity"`
	// Check is the check that found it: server, watch, protocol, latency,
	// canary, priority, rate-limit.
	Check   string `json:"check"`
	Message string `json:"message"`
	Fix     string `json:"fix"`
}

func worst(ds []Detection, c string) Seconds {
	w := Seconds(0)
	for _, d := range ds {
		if c != "" && d.Case != c {
			continue
		}
		if d.Within < 0 {
			return never
		}
		w = max(w, d.Within)
	}
	return w
}

func writeJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// writeHuman prints the report for a person.
func writeHuman(w io.Writer, r *Report) {
	fmt.Fprintf(w, "kubespawn doctor: %s, namespace %s, %s\n", r.Host, r.Namespace,
		yesNo(r.CanaryNamespace != "", fmt.Sprintf("canary %s in %s", r.Canary.Kind, r.CanaryNamespace), "read-only (no --canary-namespace)"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	s := r.Server
	bm := yesNo(s.Bookmarks, fmt.Sprintf("bookmarks served (one after %s)", s.BookmarkAfter), "no bookmark seen")
	fmt.Fprintf(tw, "server\t%s (%s); %s; %s\n", s.Version, s.Platform, yesNo(s.WatchList, "WatchList served", "WatchList not served"), bm)
	proxy := "no proxy seen in the response headers"
	if len(r.Watch.ProxyHeaders) > 0 {
		var hs []string
		for k, v := range r.Watch.ProxyHeaders {
			hs = append(hs, k+": "+v)
		}
		proxy = "proxy headers " + strings.Join(hs, ", ")
	}
	if r.Watch.ClientProxy != "" {
		proxy += "; client proxy " + r.Watch.ClientProxy
	}
	fmt.Fprintf(tw, "protocol\t%s on watches; %s\n", yesNo(r.Watch.Protocol != "", r.Watch.Protocol, "unknown"), proxy)
	lat := fmt.Sprintf("request %s; watch open %s", r.Latency.Request, r.Latency.WatchOpen)
	if r.Canary.Delivered {
		lat += fmt.Sprintf("; canary written in %s, delivered %s after the write (%s from its start)", r.Canary.Write, r.Canary.AfterWrite, r.Canary.Delivery)
	}
	fmt.Fprintf(tw, "latency\t%s\n", lat)
	canary := "not run (read-only)"
	switch {
	case r.Canary.Ran && r.Canary.Delivered:
		canary = fmt.Sprintf("%s %s delivered, %s", r.Canary.Kind, r.Canary.Name, yesNo(r.Canary.Deleted, "deleted", "NOT deleted"))
	case r.Canary.Ran:
		canary = fmt.Sprintf("%s %s NOT delivered: %s", r.Canary.Kind, r.Canary.Name, r.Canary.Error)
	case r.Canary.Error != "":
		canary = "not run: " + r.Canary.Error
	}
	fmt.Fprintf(tw, "canary\t%s\n", canary)
	p := r.Priority
	apf := "not in effect (no X-Kubernetes-PF-* headers)"
	if p.Enabled {
		apf = fmt.Sprintf("in effect: flow schema %s, priority level %s", orUID(p.FlowSchema, p.FlowSchemaUID), orUID(p.PriorityLevel, p.PriorityLevelUID))
		if p.PriorityLevelType != "" {
			apf += fmt.Sprintf(" (%s", p.PriorityLevelType)
			if p.LimitResponse != "" {
				apf += fmt.Sprintf(", %d shares, %s", p.NominalConcurrencyShares, p.LimitResponse)
			}
			apf += ")"
		}
	}
	if p.Note != "" {
		apf += "; " + p.Note
	}
	fmt.Fprintf(tw, "priority\t%s\n", apf)
	fmt.Fprintf(tw, "rate limit\t%s\n", r.RateLimit.Effective)
	tw.Flush()

	o := r.Options
	fmt.Fprintf(w, "\nhow long a silent stall goes unnoticed here\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	title := map[string]string{
		"kubespawn": fmt.Sprintf("kubespawn (StallTimeout %s, ProbeInterval %s, CanaryWindow %s, IdleTimeout %s, AuditInterval %s)",
			o.StallTimeout, o.ProbeInterval, o.CanaryWindow, o.IdleTimeout, o.AuditInterval),
		"informer":         fmt.Sprintf("plain informer (%s)", yesNo(r.Watch.Protocol != "", r.Watch.Protocol, "protocol unknown")),
		"kubespawner-loop": fmt.Sprintf("KubeSpawner loop (timeout_seconds %d, request_timeout %d, restart_seconds %d)", int(loopTimeoutSeconds.Seconds()), int(loopRequestTimeout.Seconds()), int(loopRestartSeconds.Seconds())),
	}
	last := ""
	for _, d := range r.Verdict.Detections {
		if d.Client != last {
			fmt.Fprintf(tw, "  %s\n", title[d.Client])
			last = d.Client
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\n", d.Case, d.Within, d.Rule)
	}
	tw.Flush()

	if len(r.Verdict.Findings) > 0 {
		fmt.Fprintf(w, "\nfindings\n")
		for _, f := range r.Verdict.Findings {
			fmt.Fprintf(w, "  %-4s %s: %s\n", strings.ToUpper(f.Severity), f.Check, f.Message)
			if f.Fix != "" {
				fmt.Fprintf(w, "       change: %s\n", f.Fix)
			}
		}
	}
	v := r.Verdict
	status := "healthy"
	if !v.Healthy {
		n := 0
		for _, f := range v.Findings {
			if f.Severity == sevFail {
				n++
			}
		}
		status = fmt.Sprintf("UNHEALTHY (%d failed)", n)
	}
	fmt.Fprintf(w, "\nverdict: %s. A silent stall goes unnoticed for up to %s by kubespawn with these options (%s after a write); by a plain informer %s on a dead connection, never on a live one; by the KubeSpawner loop %s, then masked by its restart and never reported\n",
		status, v.Kubespawn, v.AfterWrite, v.Informer, v.Loop)
}

func orUID(name, uid string) string {
	if name != "" {
		return name
	}
	return "uid " + uid
}
