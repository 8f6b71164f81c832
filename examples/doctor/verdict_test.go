package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/reflector"
)

func eff(t *testing.T, o reflector.Options) reflector.Options {
	t.Helper()
	e, err := effectiveOptions(o)
	require.NoError(t, err)
	return e
}

func within(ds []Detection, c string) Seconds {
	for _, d := range ds {
		if d.Case == c {
			return d.Within
		}
	}
	return Seconds(-2)
}

// kubespawn's bounds come from reflector's options and rules, not from
// numbers of the doctor's own.
func TestKubespawnDetectionFollowsTheOptions(t *testing.T) {
	s := func(d time.Duration) Seconds { return Seconds(d) }
	for _, tc := range []struct {
		name                string
		opts                reflector.Options
		m                   measured
		stream, all, write  Seconds
		ruleStream, ruleAll string
	}{
		{"defaults", reflector.Options{}, measured{}, s(7 * time.Second), s(8 * time.Second), s(2 * time.Second), "stall: a probe (every ProbeInterval 5s) finds changes", "stall: a probe passes its deadline (3s)"},
		{"tightest", reflector.Options{StallTimeout: 4 * time.Second, ProbeInterval: 2 * time.Second}, measured{}, s(3 * time.Second), s(4 * time.Second), s(2 * time.Second), "grace (1s)", "deadline (2s)"},
		{"slow canary window", reflector.Options{CanaryWindow: 3 * time.Second}, measured{}, s(7 * time.Second), s(8 * time.Second), s(4 * time.Second), "stall", "stall"},
		{"long stall timeout", reflector.Options{StallTimeout: 30 * time.Second}, measured{}, s(17 * time.Second), s(18 * time.Second), s(2 * time.Second), "ProbeInterval 15s", "deadline (3s)"},
		{"probes off", reflector.Options{ProbeInterval: -1}, measured{}, s(150 * time.Second), s(150 * time.Second), s(150 * time.Second), "idle: ", "idle: "},
		{"probes off, short audit", reflector.Options{ProbeInterval: -1, AuditInterval: time.Minute}, measured{}, s(time.Minute), s(time.Minute), s(time.Minute), "drift: ", "drift: "},
		{"probes refused", reflector.Options{}, measured{probesRefused: true}, s(150 * time.Second), s(150 * time.Second), s(150 * time.Second), "refused", "refused"},
		{"probes too slow", reflector.Options{}, measured{watchOpen: 2500 * time.Millisecond}, s(150 * time.Second), s(150 * time.Second), s(150 * time.Second), "miss their 3s deadline", "idle"},
		{"nothing on", reflector.Options{ProbeInterval: -1, IdleTimeout: -1, AuditInterval: -1}, measured{}, never, never, never, "nothing", "nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := kubespawnDetection(eff(t, tc.opts), tc.m)
			assert.Equal(t, tc.stream, within(ds, caseStreamDies))
			assert.Equal(t, tc.all, within(ds, caseAllWatches))
			assert.Equal(t, tc.write, within(ds, caseAfterWrite))
			assert.Contains(t, ds[0].Rule, tc.ruleStream)
			assert.Contains(t, ds[1].Rule, tc.ruleAll)
		})
	}
}

// With default options the bound is within StallTimeout, as reflector's
// documentation promises, and BENCHMARKS.md's P1 (at most 6.8s measured,
// 1.0s after a write) is within it.
func TestDefaultBoundsMatchTheDocumentedOnes(t *testing.T) {
	o := eff(t, reflector.Options{})
	ds := kubespawnDetection(o, measured{})
	for _, d := range ds {
		assert.LessOrEqual(t, time.Duration(d.Within), o.StallTimeout, d.Case)
	}
	assert.GreaterOrEqual(t, time.Duration(within(ds, caseStreamDies)), 6800*time.Millisecond)
	assert.GreaterOrEqual(t, time.Duration(within(ds, caseAfterWrite)), 1020*time.Millisecond)
	assert.LessOrEqual(t, time.Duration(within(ds, caseAfterWrite)), 3*time.Second)
}

func TestInformerDetection(t *testing.T) {
	h2 := measured{http2: true, readIdle: 30 * time.Second, pingTimeout: 15 * time.Second}
	assert.Equal(t, Seconds(45*time.Second), within(informerDetection(h2), caseDeadConn))
	assert.Equal(t, never, within(informerDetection(h2), caseLiveConn))
	assert.Equal(t, never, within(informerDetection(measured{}), caseDeadConn), "HTTP/1.1")
	off := h2
	off.readIdle = 0
	assert.Equal(t, never, within(informerDetection(off), caseDeadConn))
	prox := h2
	prox.proxied = true
	assert.Equal(t, never, within(informerDetection(prox), caseDeadConn))
	timeout := measured{restTimeout: 2 * time.Minute}
	assert.Equal(t, Seconds(2*time.Minute), within(informerDetection(timeout), caseLiveConn))
}

func TestHTTP2HealthFromTheEnvironment(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	r, p := http2Health(get)
	assert.Equal(t, 30*time.Second, r)
	assert.Equal(t, 15*time.Second, p)
	env["HTTP2_READ_IDLE_TIMEOUT_SECONDS"], env["HTTP2_PING_TIMEOUT_SECONDS"] = "0", "5"
	r, p = http2Health(get)
	assert.Equal(t, time.Duration(0), r)
	assert.Equal(t, 5*time.Second, p)
}

func TestLoopDetection(t *testing.T) {
	ds := loopDetection()
	assert.Equal(t, Seconds(30*time.Second), within(ds, caseWatchOnly))
	assert.Equal(t, never, within(ds, caseEverything))
	for _, d := range ds {
		assert.False(t, d.Reported, "the loop reports nothing")
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--namespace is required"},
		{[]string{"-namespace", "x", "-canary-kind", "pod"}, "--canary-kind must be configmap or lease"},
		{[]string{"-namespace", "x", "-stall-timeout", "1s"}, "StallTimeout must be at least 4s"},
		{[]string{"-namespace", "x", "-probe-interval", "9s"}, "exceeds StallTimeout"},
		{[]string{"-namespace", "x", "-timeout", "0"}, "--timeout and --request-timeout must be positive"},
		{[]string{"-namespace", "x", "extra"}, "unexpected arguments"},
		{[]string{"-no-such-flag"}, "flag provided but not defined"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), tc.args, io.Discard, io.Discard)
		require.ErrorIs(t, err, errUsage, "%v", tc.args)
		assert.Equal(t, 2, exitCode(err, &stderr), "%v", tc.args)
		assert.Contains(t, stderr.String(), tc.want, "%v", tc.args)
		assert.Equal(t, 1, strings.Count(stderr.String(), "\n"), "one line: %q", stderr.String())
	}
	err := run(t.Context(), []string{"-h"}, io.Discard, io.Discard)
	assert.True(t, errors.Is(err, flag.ErrHelp))
	assert.Equal(t, 0, exitCode(err, io.Discard))
}

func TestSecondsJSON(t *testing.T) {
	b, err := json.Marshal(struct {
		A, B Seconds
	}{Seconds(1500 * time.Millisecond), never})
	require.NoError(t, err)
	assert.JSONEq(t, `{"A":1.5,"B":-1}`, string(b))
	var back struct{ A, B Seconds }
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, Seconds(1500*time.Millisecond), back.A)
	assert.Equal(t, never, back.B)
}

// jsonKeys lists the JSON paths of every field of v's type, nested
// structs included ("verdict.healthy").
func jsonKeys(v any) []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			out = append(out, prefix+name)
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+name+".")
			}
		}
	}
	walk(reflect.TypeOf(v), "")
	return out
}

// hasPath reports whether the decoded JSON m has the dotted path.
func hasPath(m map[string]any, path string) bool {
	head, rest, nested := strings.Cut(path, ".")
	v, ok := m[head]
	if !ok || !nested {
		return ok
	}
	sub, ok := v.(map[string]any)
	return ok && hasPath(sub, rest)
}

func TestJSONKeysCoverTheReport(t *testing.T) {
	keys := jsonKeys(Report{})
	assert.Contains(t, keys, "verdict.healthy")
	assert.Contains(t, keys, "canary.missingVerbs")
	assert.Contains(t, keys, "priorityAndFairness.flowSchema")
}
