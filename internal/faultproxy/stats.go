package faultproxy

import "time"

// Key identifies a kind of request for accounting: its verb and its
// resource, written "resource/subresource" for subresources ("pods/status",
// "pods/log"). Non-resource requests (discovery, /version, /healthz) have an
// empty Resource.
type Key struct {
	Verb     Verb
	Resource string
}

// Counter is the accounting of one Key.
type Counter struct {
	// Requests counts requests received, including those answered by an
	// injected fault and those still open.
	Requests int64
	// ResponseBytes counts response body bytes written to clients, as sent:
	// compressed if the upstream compressed them, excluding headers and
	// HTTP framing. Bytes are counted before they leave the proxy, so a
	// client never holds bytes that Stats does not show yet.
	ResponseBytes int64
}

// Record describes one request through the proxy.
type Record struct {
	// RequestInfo is how the proxy classified the request (Path included).
	RequestInfo
	// Method and RawQuery complete the client's HTTP request line; Proto is
	// its protocol ("HTTP/1.1", "HTTP/2.0").
	Method   string
	RawQuery string
	Proto    string
	// Status is the HTTP status code sent to the client, or 0 if none was
	// sent (the request was cancelled or reset before its response).
	Status int
	// Bytes counts response body bytes written to the client so far.
	Bytes int64
	// Start is when the request arrived. End is when the proxy completed
	// its response, zero while it is still open (a streaming watch, a
	// stalled response). A client that has read a complete response always
	// finds End set.
	Start, End time.Time
	// Injected is true when the proxy answered with an injected fault
	// instead of forwarding the request.
	Injected bool
}

// Stats returns a snapshot of the counters per Key since the proxy started
// or since the last ResetStats. Bytes that open streams write after a
// ResetStats count towards the new period.
func (p *Proxy) Stats() map[Key]Counter {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Key]Counter, len(p.stats))
	for k, c := range p.stats {
		out[k] = *c
	}
	return out
}

// ResetStats zeroes every counter and forgets the records of completed
// requests. Requests still open stay in Records.
func (p *Proxy) ResetStats() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.stats)
	kept := p.records[:0]
	for _, e := range p.records {
		if e.rec.End.IsZero() {
			kept = append(kept, e)
		}
	}
	clear(p.records[len(kept):])
	p.records = kept
}

// Records returns a snapshot of the record of every request received since
// the proxy started or since the last ResetStats, completed or still open
// (End zero), in order of arrival.
func (p *Proxy) Records() []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Record, len(p.records))
	for i, e := range p.records {
		out[i] = e.rec
	}
	return out
}

// OpenWatches returns the number of watch requests matched by m that are
// open through the proxy now: received and not yet complete, whether
// streaming, stalled or waiting for an injected latency. m.Verb other than
// "" or "watch" matches no watch.
func (p *Proxy) OpenWatches(m Match) int {
	return p.countOpen(func(e *entry) bool { return e.info.Verb == VerbWatch && m.Matches(e.info) })
}

// StalledStreams returns the number of open responses matched by m whose
// body is being held back by a stall right now: the proxy has data for the
// client and does not send it. Tests use it to know that a stall has caught
// an event, instead of sleeping.
func (p *Proxy) StalledStreams(m Match) int {
	return p.countOpen(func(e *entry) bool { return e.blocked && m.Matches(e.info) })
}

// countOpen counts the open requests that match, under p.mu (which guards
// every field match may read).
func (p *Proxy) countOpen(match func(*entry) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for e := range p.open {
		if match(e) {
			n++
		}
	}
	return n
}
