// Command bench measures kubespawn against plain client-go (and the
// KubeSpawner loop replica) on a real kube-apiserver and etcd that it
// starts on loopback, with realistic JupyterHub user pods, and prints the
// performance table of BENCHMARKS.md (figures P1 to P10). `make bench` runs
// it at 1,000 and 10,000 pods, `make bench-scale` at 100,000. Every figure
// is a ratio against a baseline measured in the same run.
//
//	go run ./internal/cmd/bench [-sizes 1000,10000] [-figures P1,...] [-json out.json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

type config struct {
	sizes     []int
	figures   map[string]bool
	reps      int
	window    time.Duration
	trials    int
	starts    int
	burst     int
	churn     int
	at        int
	writers   int
	waitInf   time.Duration
	jsonPath  string
	etcdQuota string
	abExe     string
	abReps    int
}

func main() {
	if job := os.Getenv(childEnv); job != "" {
		klog.SetOutput(io.Discard)
		klog.LogToStderr(false)
		child(job)
		return
	}
	var (
		sizes   = flag.String("sizes", "1000,10000", "pod counts for P3, P4 and P9 (P8 at the largest, if at least 100000)")
		figures = flag.String("figures", "P1,P2,P3,P4,P5,P6,P7,P8,P9,P10", "figures to measure")
		c       config
	)
	flag.IntVar(&c.reps, "reps", 3, "repetitions of each sync/heap measurement (at least 7 up to 10,000 pods; at 100,000 pods: 1)")
	flag.DurationVar(&c.window, "window", time.Minute, "P2: idle window")
	flag.IntVar(&c.trials, "trials", 3, "P1: trials per configuration")
	flag.IntVar(&c.starts, "starts", 200, "P5: starts")
	flag.IntVar(&c.burst, "burst", 1000, "P10: starts issued together")
	flag.IntVar(&c.churn, "churn", 10000, "P7: pods churning (one update each, twice); one of -sizes")
	flag.IntVar(&c.at, "at", 1000, "the size (one of -sizes) at which P1, P2 and P6 are measured")
	flag.IntVar(&c.writers, "writers", 32, "parallel writers creating pods")
	flag.DurationVar(&c.waitInf, "informer-wait", 30*time.Second, "P1: how long the plain informer is given to notice")
	flag.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&c.abExe, "ab-exe", "", "P3/P4/P8: instead of the variants, measure the default kubespawn cache of this build against that of another build of this program (go build -o PATH ./internal/cmd/bench from other code), interleaved with a plain informer, on the same pods (notes only)")
	flag.IntVar(&c.abReps, "ab-reps", 3, "rounds of -ab-exe at each size (each round: informer, this build, the other)")
	flag.StringVar(&heapProfiles, "heap-profiles", "", "P3/P4/P8: write a heap profile of each cache variant after its sync to this directory (heap-<pods>-<variant>.pprof; go tool pprof -sample_index=inuse_space)")
	flag.StringVar(&c.etcdQuota, "etcd-quota", "8589934592", "etcd --quota-backend-bytes")
	flag.Func("apiserver-arg", "an extra kube-apiserver argument (repeatable), for experiments such as --watch-cache=false", func(v string) error {
		extraAPIServerArgs = append(extraAPIServerArgs, v)
		return nil
	})
	flag.Parse()
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fatalf("bad -sizes %q", *sizes)
		}
		c.sizes = append(c.sizes, n)
	}
	slices.Sort(c.sizes)
	c.figures = map[string]bool{}
	for _, f := range strings.Split(*figures, ",") {
		c.figures[strings.ToUpper(strings.TrimSpace(f))] = true
	}
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	r := &results{Started: time.Now(), Machine: machine(), Args: os.Args[1:]}
	if err := run(ctx, c, r); err != nil {
		r.print(os.Stdout)
		fatalf("%v", err)
	}
	r.Took = time.Since(r.Started).Round(time.Second).String()
	r.print(os.Stdout)
	if c.jsonPath != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(c.jsonPath, b, 0o644); err != nil {
			fatalf("%v", err)
		}
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// logf reports progress on stderr.
var t0 = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

// env is the control plane of a phase and its admin client.
type env struct {
	cluster *testcluster.Cluster
	cfg     *rest.Config // admin, protobuf, no client-side rate limit
	client  kubernetes.Interface
}

// extraAPIServerArgs are -apiserver-arg's.
var extraAPIServerArgs []string

func startEnv(ctx context.Context, etcdArgs ...string) (*env, error) {
	start := time.Now()
	cl, err := testcluster.Start(ctx, testcluster.Options{
		EtcdArgs: etcdArgs,
		// Room for 100,000 pods in the apiserver's own LISTs.
		APIServerArgs: append([]string{"--max-requests-inflight=800", "--max-mutating-requests-inflight=400"}, extraAPIServerArgs...),
	})
	if err != nil {
		return nil, err
	}
	cfg := cl.Config()
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.QPS = -1
	logf("control plane up in %s", time.Since(start).Round(time.Millisecond))
	return &env{cluster: cl, cfg: cfg, client: kubernetes.NewForConfigOrDie(cfg)}, nil
}

func (e *env) namespace(ctx context.Context, name string) error {
	_, err := e.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// grow creates pods [have, want) in ns and reports how long it took.
func (e *env) grow(ctx context.Context, r *results, ns string, have, want, writers int) error {
	if want <= have {
		return nil
	}
	start := time.Now()
	err := benchpod.Create(ctx, e.client, ns, have, want, writers, func(done int) {
		if done%10000 == 0 {
			logf("  %d pods created", have+done)
		}
	})
	if err != nil {
		return err
	}
	d := time.Since(start)
	r.notef("setup: created pods %d..%d (create + status update, %d protobuf writers) in %s (%.0f pods/s)", have, want-1, writers, d.Round(time.Second), float64(want-have)/d.Seconds())
	return nil
}

func run(ctx context.Context, c config, r *results) error {
	need := func(ids ...string) bool {
		for _, id := range ids {
			if c.figures[id] {
				return true
			}
		}
		return false
	}
	// Phase 1: the cache figures, on a control plane with no simulator
	// (whose own informer would hold every pod in this process).
	if need("P1", "P2", "P3", "P4", "P6", "P7", "P8", "P9") {
		e, err := startEnv(ctx, "--quota-backend-bytes="+c.etcdQuota)
		if err != nil {
			return err
		}
		defer e.cluster.Stop()
		const ns = "scale"
		if err := e.namespace(ctx, ns); err != nil {
			return err
		}
		have := 0
		for _, n := range c.sizes {
			if err := e.grow(ctx, r, ns, have, n, c.writers); err != nil {
				return err
			}
			have = n
			if need("P3", "P4", "P8", "P9") {
				if err := measureSync(ctx, e, r, ns, n, c); err != nil {
					return err
				}
			}
			if n == c.at {
				if need("P2") {
					if err := measureIdle(ctx, e, r, ns, n, c.window); err != nil {
						return err
					}
				}
				if need("P1") {
					if err := measureStall(ctx, e, r, ns, n, c); err != nil {
						return err
					}
				}
				if need("P6") {
					if err := measureGet(ctx, e, r, ns, n); err != nil {
						return err
					}
				}
			}
			if n == c.churn && need("P7") {
				if err := measureChurn(ctx, e, r, ns, n); err != nil {
					return err
				}
			}
		}
		if need("P9") {
			r.growth(c.sizes)
		}
		e.cluster.Stop()
	}
	// Phase 2: the spawner figures, with the pod simulator.
	if need("P5", "P10") {
		e, err := startEnv(ctx)
		if err != nil {
			return err
		}
		defer e.cluster.Stop()
		if need("P5") {
			if err := measureStartLatency(ctx, e, r, c.starts); err != nil {
				return err
			}
		}
		if need("P10") {
			if err := measureBurst(ctx, e, r, c.burst); err != nil {
				return err
			}
		}
		e.cluster.Stop()
	}
	return nil
}

// --- results ---

type row struct {
	ID       string `json:"id"`
	Figure   string `json:"figure"`
	Value    string `json:"kubespawn"`
	Baseline string `json:"baseline"`
	Ratio    string `json:"ratio"`
	Goal     string `json:"goal"`
	Met      string `json:"met"`
}

type results struct {
	Started time.Time `json:"started"`
	Took    string    `json:"took"`
	Machine string    `json:"machine"`
	Args    []string  `json:"args"`
	Rows    []row     `json:"rows"`
	Notes   []string  `json:"notes"`
	// sync measurements per size, for P9
	syncs map[int]map[string]syncResult
}

func (r *results) add(rw row) {
	r.Rows = append(r.Rows, rw)
	logf("%s %s: %s vs %s (%s; goal %s: %s)", rw.ID, rw.Figure, rw.Value, rw.Baseline, rw.Ratio, rw.Goal, rw.Met)
}

func (r *results) notef(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.Notes = append(r.Notes, s)
	logf("%s", s)
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func (r *results) print(w io.Writer) {
	fmt.Fprintf(w, "\nkubespawn benchmarks, %s, %s\nargs: %s\n\n", r.Started.Format("2006-01-02 15:04 MST"), r.Machine, strings.Join(r.Args, " "))
	fmt.Fprintln(w, "| id | figure | kubespawn | baseline | ratio | goal | met |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	rows := slices.Clone(r.Rows)
	sort.SliceStable(rows, func(i, j int) bool { return idNum(rows[i].ID) < idNum(rows[j].ID) })
	for _, x := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", x.ID, x.Figure, x.Value, x.Baseline, x.Ratio, x.Goal, x.Met)
	}
	fmt.Fprintln(w, "\nnotes:")
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if r.Took != "" {
		fmt.Fprintf(w, "\ntotal time: %s\n", r.Took)
	}
}

func idNum(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "P"))
	return n
}

func machine() string {
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					kb, _ := strconv.ParseFloat(f[1], 64)
					mem = fmt.Sprintf(", %.1f GiB", kb/1024/1024)
				}
			}
		}
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = ", " + strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%s, %d cores%s%s, %s, host %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), model, mem, runtime.Version(), host)
}

// --- small helpers ---

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

func kb(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func medianF(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
