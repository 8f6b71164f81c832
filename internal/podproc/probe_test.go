package podproc_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubespawn/kubespawn/internal/podproc"
)

type report struct {
	ready   bool
	failure string
}

// runProber runs p until the test ends and returns its reports.
func runProber(t *testing.T, p *podproc.Prober) <-chan report {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan report, 1000)
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, func(ready bool, failure string) { ch <- report{ready, failure} }) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ch
}

func next(t *testing.T, ch <-chan report) report {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no probe report")
		return report{}
	}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	port, err := strconv.Atoi(p)
	require.NoError(t, err)
	return h, port
}

// TestHTTPProbeThresholds: Ready after a passing httpGet (path, named port,
// headers), not Ready again only after failureThreshold failures in a row.
func TestHTTPProbeThresholds(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	status.Store(http.StatusOK)
	var mu sync.Mutex
	var paths, agents, extra []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths, agents, extra = append(paths, r.URL.Path), append(agents, r.UserAgent()), append(extra, r.Header.Get("X-Probe"))
		mu.Unlock()
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	host, port := hostPort(t, srv.Listener.Addr().String())
	c := &v1.Container{
		Ports: []v1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
		ReadinessProbe: &v1.Probe{
			ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/api/status", Port: intstr.FromString("http"),
				HTTPHeaders: []v1.HTTPHeader{{Name: "X-Probe", Value: "yes"}}}},
			PeriodSeconds: 1, FailureThreshold: 2,
		},
	}
	p := podproc.NewProber(c, podproc.ProbeOptions{IP: host, MaxPeriod: 5 * time.Millisecond})
	assert.Equal(t, podproc.ProbeHTTP, p.Kind())
	assert.True(t, p.Explicit())
	ch := runProber(t, p)
	assert.Equal(t, report{ready: true}, next(t, ch))

	status.Store(http.StatusServiceUnavailable)
	r := next(t, ch)
	for r.failure == "" { // a probe that was under way when the status changed
		r = next(t, ch)
	}
	assert.Equal(t, report{ready: true, failure: "HTTP probe failed with statuscode: 503"}, r, "not Ready after one failure of two")
	assert.Equal(t, report{ready: false, failure: "HTTP probe failed with statuscode: 503"}, next(t, ch))
	status.Store(http.StatusFound)
	r = next(t, ch)
	for r.failure != "" {
		r = next(t, ch)
	}
	assert.True(t, r.ready, "a 3xx passes")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "/api/status", paths[0])
	assert.Equal(t, "kube-probe/podsim", agents[0])
	assert.Equal(t, "yes", extra[0])
}

// TestProbeTiming: the first probe after initialDelaySeconds, then one per
// periodSeconds (fake clock).
func TestProbeTiming(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	host, port := hostPort(t, l.Addr().String())
	clock := clocktesting.NewFakeClock(time.Now())
	c := &v1.Container{ReadinessProbe: &v1.Probe{
		ProbeHandler:        v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}},
		InitialDelaySeconds: 30, PeriodSeconds: 10,
	}}
	p := podproc.NewProber(c, podproc.ProbeOptions{IP: host, Clock: clock})
	assert.Equal(t, podproc.ProbeTCP, p.Kind())
	ch := runProber(t, p)
	waitTimer := func() {
		require.Eventually(t, clock.HasWaiters, 30*time.Second, time.Millisecond)
	}
	waitTimer()
	clock.Step(29 * time.Second)
	assert.Empty(t, ch, "probed before initialDelaySeconds")
	clock.Step(time.Second)
	assert.Equal(t, report{ready: true}, next(t, ch))
	waitTimer()
	clock.Step(9 * time.Second)
	assert.Empty(t, ch, "probed before periodSeconds")
	clock.Step(time.Second)
	assert.Equal(t, report{ready: true}, next(t, ch))
}

func TestProberChoosesLikeTheDocSays(t *testing.T) {
	t.Parallel()
	// No probe, a port: a TCP connect to it, every second (capped).
	c := &v1.Container{Ports: []v1.ContainerPort{{ContainerPort: 53, Protocol: v1.ProtocolUDP}, {ContainerPort: 8888}}}
	p := podproc.NewProber(c, podproc.ProbeOptions{IP: ip, MaxPeriod: 100 * time.Millisecond})
	assert.Equal(t, podproc.ProbePort, p.Kind())
	assert.False(t, p.Explicit())
	assert.Equal(t, "containerPort "+ip+":8888 period 100ms", p.String())

	// An exec probe is not run: the port instead, said in a note.
	c.ReadinessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"true"}}}}
	p = podproc.NewProber(c, podproc.ProbeOptions{IP: ip})
	assert.Equal(t, podproc.ProbePort, p.Kind())
	assert.NotEmpty(t, p.Note())

	// Nothing to probe: Ready at once.
	p = podproc.NewProber(&v1.Container{}, podproc.ProbeOptions{IP: ip})
	assert.Equal(t, podproc.ProbeNone, p.Kind())
	assert.Equal(t, report{ready: true}, next(t, runProber(t, p)))

	// A refused connection is a failure with the dialer's message.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	_, port := hostPort(t, l.Addr().String())
	l.Close()
	p = podproc.NewProber(&v1.Container{Ports: []v1.ContainerPort{{ContainerPort: int32(port)}}}, podproc.ProbeOptions{IP: "127.0.0.1"})
	assert.ErrorContains(t, p.Probe(context.Background()), "connection refused")
}
