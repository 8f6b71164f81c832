package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// logLine is one notable log line of a run, with its time in the run.
type logLine struct {
	At   time.Duration
	Text string
}

// logRecorder keeps the first line of each kind of message a run logs
// (and how many of each), so the report can quote the run's log as the 2018
// postmortem quotes the hub's.
type logRecorder struct {
	start time.Time
	mu    sync.Mutex
	first map[string]logLine
	count map[string]int
}

func newLogRecorder(start time.Time) *logRecorder {
	return &logRecorder{start: start, first: map[string]logLine{}, count: map[string]int{}}
}

// setStart sets the time that line times are relative to.
func (r *logRecorder) setStart(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.start = t
}

// add records text under kind (lines of one kind differ only by pod name).
func (r *logRecorder) add(kind, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.first[kind]; !ok {
		r.first[kind] = logLine{At: time.Since(r.start), Text: text}
	}
	r.count[kind]++
}

// lines returns the first line of each kind in time order, with counts.
func (r *logRecorder) lines() []reportLogLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]reportLogLine, 0, len(r.first))
	for k, l := range r.first {
		out = append(out, reportLogLine{AtSeconds: l.At.Seconds(), Text: l.Text, Count: r.count[k]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AtSeconds < out[j].AtSeconds })
	return out
}

// recordingSink is a logr.LogSink that records level-0 messages in a
// logRecorder and forwards everything to klog (quiet unless -v).
type recordingSink struct {
	rec    *logRecorder
	next   logr.LogSink
	values []any
	// keep selects which messages are recorded (nil: all).
	keep func(msg string) bool
}

func newRecordingLogger(rec *logRecorder, keep func(string) bool) logr.Logger {
	// WithCallDepth copies klog's global sink, so that Init below does not
	// modify the shared one (and the caller's file:line skips this sink).
	return logr.New(&recordingSink{rec: rec, next: klog.Background().WithCallDepth(1).GetSink(), keep: keep})
}

func (s *recordingSink) Init(info logr.RuntimeInfo) { s.next.Init(info) }
func (s *recordingSink) Enabled(level int) bool {
	return level == 0 || s.next.Enabled(level)
}

func (s *recordingSink) Info(level int, msg string, kv ...any) {
	if level == 0 && (s.keep == nil || s.keep(msg)) {
		all := append(append([]any{}, s.values...), kv...)
		kind, text := msg, msg
		for i := 0; i+1 < len(all); i += 2 {
			k, _ := all[i].(string)
			v := fmt.Sprint(all[i+1])
			switch k {
			case "pod":
				kind = strings.ReplaceAll(kind, v, "X")
			case "why", "reason", "gap", "err":
				text += fmt.Sprintf(" %s=%q", k, v)
			}
		}
		s.rec.add(kind, text)
	}
	if s.next.Enabled(level) {
		s.next.Info(level, msg, kv...)
	}
}

func (s *recordingSink) Error(err error, msg string, kv ...any) {
	if s.keep == nil || s.keep(msg) {
		s.rec.add("error: "+msg, fmt.Sprintf("%s: %v", msg, err))
	}
	s.next.Error(err, msg, kv...)
}

func (s *recordingSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.values = append(append([]any{}, s.values...), kv...)
	c.next = s.next.WithValues(kv...)
	return &c
}

func (s *recordingSink) WithName(name string) logr.LogSink {
	c := *s
	c.next = s.next.WithName(name)
	return &c
}
