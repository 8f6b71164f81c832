package faultproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Stall stops the body of every response to a request matched by m from
// reaching its client, for responses already streaming (open watches) and
// for new ones alike, until a matching Unstall, UnstallAll or ClearFaults.
// Response headers of new requests are still forwarded (so a client-go
// Watch call returns a watcher), the client's TCP connection stays open and
// idle, and nothing tells the client that anything is wrong: this is the
// 2018 mybinder.org failure, a watch that is alive but silent.
//
// While stalled, the proxy stops reading the upstream body too, so at most
// one read buffer (32 KiB) plus the kernel's socket buffers of data is held
// back per stream; nothing is buffered without bound and nothing is lost.
// When the stall is lifted the stream continues exactly where it stopped.
// Stalls are a set: Stall with an equal Match twice is the same as once.
func (p *Proxy) Stall(m Match) {
	p.mu.Lock()
	p.stalls[m] = struct{}{}
	p.broadcastLocked()
	p.mu.Unlock()
	p.logger.V(2).Info("Stall", "match", m)
}

// StallOpen stalls only the responses matched by m that are open now
// (typically long-running watches), leaving new requests alone: a TCP
// connection that died silently under one stream while the network and
// the server stay fine. It returns how many streams it froze. Only
// UnstallAll, ClearFaults, ResetConnections or Close release them.
func (p *Proxy) StallOpen(m Match) int {
	p.mu.Lock()
	n := 0
	for e := range p.open {
		if m.Matches(e.info) {
			e.frozen = true
			n++
		}
	}
	p.broadcastLocked()
	p.mu.Unlock()
	p.logger.V(2).Info("StallOpen", "match", m, "streams", n)
	return n
}

// Unstall lifts the stall installed by Stall with an equal Match. Streams
// that no other stall matches resume where they stopped.
func (p *Proxy) Unstall(m Match) {
	p.mu.Lock()
	delete(p.stalls, m)
	p.broadcastLocked()
	p.mu.Unlock()
	p.logger.V(2).Info("Unstall", "match", m)
}

// UnstallAll lifts every stall.
func (p *Proxy) UnstallAll() {
	p.mu.Lock()
	clear(p.stalls)
	for e := range p.open {
		e.frozen = false
	}
	p.broadcastLocked()
	p.mu.Unlock()
	p.logger.V(2).Info("Unstall all")
}

// SetLatency delays every new request matched by m by d before the proxy
// acts on it (forwards it or answers it with an injected status). When
// several latencies match a request the longest applies. d <= 0 removes the
// latency set for an equal Match. A client that gives up during the delay
// is never forwarded.
func (p *Proxy) SetLatency(m Match, d time.Duration) {
	p.mu.Lock()
	if d <= 0 {
		delete(p.latency, m)
	} else {
		p.latency[m] = d
	}
	p.mu.Unlock()
	p.logger.V(2).Info("Latency", "match", m, "delay", d)
}

// InjectStatus makes the proxy answer the next n requests matched by m
// itself, without contacting the upstream, with HTTP status code and a
// Kubernetes Status body (JSON; kind Status, apiVersion v1, status Failure)
// whose reason matches the code, as the kube-apiserver would send it:
//
//	400 BadRequest, 401 Unauthorized, 403 Forbidden, 404 NotFound,
//	409 Conflict (AlreadyExists for a create), 410 Expired ("too old
//	resource version"), 429 TooManyRequests, 500 InternalError,
//	503 ServiceUnavailable, 504 Timeout; other codes as client-go would
//	interpret a bare status (apierrors.NewGenericServerResponse).
//
// A 429 always carries a Retry-After header of at least one second
// (retryAfter rounded up); other codes carry one only when retryAfter > 0.
// Note that client-go retries a request that gets a 429 or 5xx with a
// Retry-After header (up to 10 times by default, sleeping as told), so use n
// above the client's retry budget, or retryAfter 0 for a 5xx, to make the
// error reach the caller.
//
// For a watch, the status is the HTTP response status, which makes
// client-go's Watch() return the error; see InjectWatchError for an error
// reported inside a watch stream. Injections queue: each request takes one
// from the oldest injection it matches. n <= 0 cancels the pending
// injections with an equal Match (and any code). InjectStatus panics if n > 0
// and code is not in [400, 599].
func (p *Proxy) InjectStatus(m Match, code int, n int, retryAfter time.Duration) {
	if n > 0 && (code < 400 || code > 599) {
		panic(fmt.Sprintf("faultproxy: InjectStatus code %d is not an HTTP error status", code))
	}
	p.inject(&injection{match: m, code: code, remaining: n, retryAfter: retryAfter})
}

// InjectWatchError makes the proxy answer the next n watch requests matched
// by m itself, without contacting the upstream, with HTTP 200, a single
// watch event {"type":"ERROR","object":<Status>} whose Status is the one
// InjectStatus describes for code, and the end of the stream. This is how a
// real API server reports a failure on a watch, e.g. 410 Expired for a
// resourceVersion that has been compacted away: client-go delivers it as a
// watch.Error event (apierrors.FromObject(ev.Object)) and then closes
// ResultChan. Requests that are not watches never match, whatever m.Verb
// says. n <= 0 cancels pending watch-error injections with an equal Match.
// InjectWatchError panics if n > 0 and code is not in [400, 599].
func (p *Proxy) InjectWatchError(m Match, code int, n int) {
	if n > 0 && (code < 400 || code > 599) {
		panic(fmt.Sprintf("faultproxy: InjectWatchError code %d is not an HTTP error status", code))
	}
	p.inject(&injection{match: m, code: code, remaining: n, watchError: true})
}

// ClearFaults removes every fault: stalls are lifted (stalled streams
// resume), latencies removed, pending injections dropped and refusal
// switched off. Statistics and records are kept.
func (p *Proxy) ClearFaults() {
	p.mu.Lock()
	clear(p.stalls)
	for e := range p.open {
		e.frozen = false
	}
	clear(p.latency)
	p.injections = nil
	p.refuse = false
	p.broadcastLocked()
	p.mu.Unlock()
	p.logger.V(2).Info("Cleared faults")
}

// broadcastLocked wakes every writer waiting on a stall so it re-checks.
func (p *Proxy) broadcastLocked() {
	close(p.stallChanged)
	p.stallChanged = make(chan struct{})
}

func (p *Proxy) stalledLocked(ri RequestInfo) bool {
	for m := range p.stalls {
		if m.Matches(ri) {
			return true
		}
	}
	return false
}

// waitWhileStalled blocks while a stall matches e, until the stall is lifted
// (nil) or e's request is cancelled: by its client, ResetConnections or
// Close (the context's error).
func (p *Proxy) waitWhileStalled(ctx context.Context, e *entry) error {
	for {
		p.mu.Lock()
		if !e.frozen && !p.stalledLocked(e.info) {
			e.blocked = false
			p.mu.Unlock()
			return nil
		}
		e.blocked = true
		changed := p.stallChanged
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			p.mu.Lock()
			e.blocked = false
			p.mu.Unlock()
			return ctx.Err()
		}
	}
}

func (p *Proxy) latencyFor(ri RequestInfo) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var d time.Duration
	for m, l := range p.latency {
		if l > d && m.Matches(ri) {
			d = l
		}
	}
	return d
}

type injection struct {
	match      Match
	code       int
	remaining  int
	retryAfter time.Duration
	watchError bool
}

func (p *Proxy) inject(inj *injection) {
	logged := *inj // inj is shared with the handlers once queued
	p.mu.Lock()
	if inj.remaining <= 0 {
		kept := p.injections[:0]
		for _, old := range p.injections {
			if old.match != inj.match || old.watchError != inj.watchError {
				kept = append(kept, old)
			}
		}
		clear(p.injections[len(kept):])
		p.injections = kept
	} else {
		p.injections = append(p.injections, inj)
	}
	p.mu.Unlock()
	p.logger.V(2).Info("Inject", "match", logged.match, "code", logged.code, "count", logged.remaining, "retryAfter", logged.retryAfter, "watchError", logged.watchError)
}

// takeInjection consumes one use of the oldest injection matching ri.
func (p *Proxy) takeInjection(ri RequestInfo) *injection {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, inj := range p.injections {
		if inj.watchError && ri.Verb != VerbWatch {
			continue
		}
		if !inj.match.Matches(ri) {
			continue
		}
		taken := *inj
		inj.remaining--
		if inj.remaining <= 0 {
			p.injections = append(p.injections[:i], p.injections[i+1:]...)
		}
		return &taken
	}
	return nil
}

// serve answers r with the injected fault.
func (inj *injection) serve(w http.ResponseWriter, r *http.Request, ri RequestInfo) {
	retryAfter := 0
	if inj.retryAfter > 0 {
		retryAfter = int(math.Ceil(inj.retryAfter.Seconds()))
	}
	if inj.code == http.StatusTooManyRequests && retryAfter < 1 {
		retryAfter = 1
	}
	st := injectedStatus(inj.code, r, ri, retryAfter)
	if inj.watchError {
		raw, _ := json.Marshal(st)
		ev, _ := json.Marshal(&metav1.WatchEvent{Type: "ERROR", Object: runtime.RawExtension{Raw: raw}})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache, private")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(ev, '\n'))
		return
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	writeStatus(w, st)
}

// injectedStatus builds the Status the apiserver would send for code.
func injectedStatus(code int, r *http.Request, ri RequestInfo, retryAfter int) *metav1.Status {
	gr := schema.GroupResource{Group: ri.Group, Resource: ri.Resource}
	const note = "injected by faultproxy"
	var se *apierrors.StatusError
	switch code {
	case http.StatusGone:
		rv := r.URL.Query().Get("resourceVersion")
		if rv == "" {
			rv = "0"
		}
		se = apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %s (%s)", rv, note))
	case http.StatusTooManyRequests:
		se = apierrors.NewTooManyRequests("Too many requests, please try again later. ("+note+")", retryAfter)
	case http.StatusInternalServerError:
		se = apierrors.NewInternalError(errors.New(note))
	case http.StatusServiceUnavailable:
		se = apierrors.NewServiceUnavailable("the server is currently unable to handle the request (" + note + ")")
	case http.StatusGatewayTimeout:
		se = apierrors.NewTimeoutError(note, retryAfter)
	case http.StatusNotFound:
		se = apierrors.NewNotFound(gr, ri.Name)
	case http.StatusConflict:
		if ri.Verb == VerbCreate {
			se = apierrors.NewAlreadyExists(gr, ri.Name)
		} else {
			se = apierrors.NewConflict(gr, ri.Name, errors.New(note))
		}
	case http.StatusUnauthorized:
		se = apierrors.NewUnauthorized(note)
	case http.StatusForbidden:
		se = apierrors.NewForbidden(gr, ri.Name, errors.New(note))
	case http.StatusBadRequest:
		se = apierrors.NewBadRequest(note)
	default:
		se = apierrors.NewGenericServerResponse(code, r.Method, gr, ri.Name, note, retryAfter, false)
	}
	st := se.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	st.Code = int32(code)
	if retryAfter > 0 {
		if st.Details == nil {
			st.Details = &metav1.StatusDetails{}
		}
		st.Details.RetryAfterSeconds = int32(retryAfter)
	}
	return &st
}

// writeStatus writes st as a JSON response with st.Code as HTTP status.
func writeStatus(w http.ResponseWriter, st *metav1.Status) {
	if st.Kind == "" {
		st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	}
	body, err := json.Marshal(st)
	if err != nil { // cannot happen for a Status
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache, private")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(int(st.Code))
	_, _ = w.Write(body)
}
