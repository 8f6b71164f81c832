package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/childproc"
	"github.com/kubespawn/kubespawn/internal/legacy"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/spawner"
)

// backend is the service the simulated hub drives: kubespawn's (two
// instance processes) or the 2018 replica's (in-process).
type backend interface {
	// start starts the user's server. ok: running with uid. err: the
	// service could not be asked (it is down): the outcome is unknown.
	start(ctx context.Context, user, scenario string) (uid types.UID, ok bool, outcome string, err error)
	// stop stops the user's server; uid, if set, is a precondition.
	stop(ctx context.Context, user string, uid types.UID) error
	// crash kills the instance serving users of group 0 (its process gone)
	// and starts a new one in its place.
	crash(ctx context.Context) error
	// group is the instance (0 or 1) serving user.
	group(user string) int
	// selector selects the service's pods.
	selector() string
	// claimKey is the user a claim of the service is for.
	claimKey(*corev1.PersistentVolumeClaim) string
	// stats are the instances' own counters (live ones, and those saved
	// from killed ones).
	stats(ctx context.Context) instanceStats
	close()
}

// --- kubespawn: two instances of the spawner service, as processes ---

type kubespawnBackend struct {
	base       instanceConfig
	logDir     string
	mu         sync.Mutex
	procs      [2]*proc
	generation int
	saved      instanceStats // of killed instances
}

// proc is one running instance process.
type proc struct {
	p    *childproc.Process
	addr string
}

func newKubespawnBackend(ctx context.Context, base instanceConfig, logDir string) (*kubespawnBackend, error) {
	b := &kubespawnBackend{base: base, logDir: logDir, saved: instanceStats{Outcomes: map[string]int{}}}
	for g := range b.procs {
		p, err := b.spawn(ctx, g)
		if err != nil {
			b.close()
			return nil, err
		}
		b.procs[g] = p
	}
	return b, nil
}

func instanceName(g int) string { return []string{"hub-a", "hub-b"}[g] }

// spawn starts instance g: this very binary, re-executed with the
// instance's configuration in its environment.
func (b *kubespawnBackend) spawn(ctx context.Context, g int) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := b.base
	c.Instance = instanceName(g)
	b.generation++
	c.Identity = fmt.Sprintf("%s-%d", c.Instance, b.generation)
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	// A test binary runs no test; cmd/soak ignores the flag.
	p, err := childproc.Start(c.Identity, filepath.Join(b.logDir, c.Identity+".log"),
		childproc.Options{Env: append(os.Environ(), instanceEnv+"="+string(raw))}, exe, "-test.run=^$")
	if err != nil {
		return nil, err
	}
	addr, err := listenAddr(ctx, p, time.Minute)
	if err != nil {
		p.Stop(0)
		return nil, fmt.Errorf("soak: instance %s: %w", c.Identity, err)
	}
	return &proc{p: p, addr: addr}, nil
}

// listenAddr waits for the address the instance prints first (a whole
// "LISTEN addr" line in its log), until it exits or timeout passes.
func listenAddr(ctx context.Context, p *childproc.Process, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(p.LogPath())
		lines := strings.Split(string(b), "\n")
		for _, l := range lines[:len(lines)-1] { // complete lines only
			if a, ok := strings.CutPrefix(l, "LISTEN "); ok {
				return a, nil
			}
		}
		select {
		case <-p.Done():
			return "", fmt.Errorf("exited at start\n%s", p.Tail(20))
		case <-deadline.C:
			return "", fmt.Errorf("did not listen within %s\n%s", timeout, p.Tail(20))
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

func (b *kubespawnBackend) group(user string) int {
	return int(user[len(user)-1]-'0') % 2
}

func (b *kubespawnBackend) selector() string {
	return spawner.LabelManagedBy + "=" + spawner.ManagedByValue
}

func (b *kubespawnBackend) claimKey(c *corev1.PersistentVolumeClaim) string {
	return c.Annotations[spawner.AnnotationKey]
}

func (b *kubespawnBackend) addr(g int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.procs[g].addr
}

// call posts to the user's instance and decodes the answer.
func (b *kubespawnBackend) call(ctx context.Context, g int, path string, q url.Values) (startAnswer, error) {
	var a startAnswer
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+b.addr(g)+path+"?"+q.Encode(), nil)
	if err != nil {
		return a, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return a, fmt.Errorf("decoding the answer: %w", err)
	}
	return a, nil
}

func (b *kubespawnBackend) start(ctx context.Context, user, scenario string) (types.UID, bool, string, error) {
	a, err := b.call(ctx, b.group(user), "/start", url.Values{"user": {user}, "scenario": {scenario}})
	if err != nil {
		return "", false, "", err
	}
	if !a.OK {
		return "", false, a.Reason, nil
	}
	return a.UID, true, "running", nil
}

func (b *kubespawnBackend) stop(ctx context.Context, user string, uid types.UID) error {
	a, err := b.call(ctx, b.group(user), "/stop", url.Values{"user": {user}, "uid": {string(uid)}})
	if err != nil {
		return err
	}
	if !a.OK {
		return errors.New(a.Error)
	}
	return nil
}

func (b *kubespawnBackend) crash(ctx context.Context) error {
	// What it counted before the crash is kept: a real process would have
	// exported it to Prometheus.
	if st, err := b.instanceStats(ctx, 0); err == nil {
		b.mu.Lock()
		b.saved = mergeStats(b.saved, st)
		b.mu.Unlock()
	}
	b.mu.Lock()
	old := b.procs[0]
	b.mu.Unlock()
	_ = old.p.Signal(syscall.SIGKILL) // a crash: no cleanup
	<-old.p.Done()
	p, err := b.spawn(ctx, 0)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.procs[0] = p
	b.mu.Unlock()
	return nil
}

func (b *kubespawnBackend) instanceStats(ctx context.Context, g int) (instanceStats, error) {
	var st instanceStats
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr(g)+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (b *kubespawnBackend) stats(ctx context.Context) instanceStats {
	b.mu.Lock()
	out := mergeStats(instanceStats{Outcomes: map[string]int{}}, b.saved)
	b.mu.Unlock()
	for g := range b.procs {
		if st, err := b.instanceStats(ctx, g); err == nil {
			out = mergeStats(out, st)
		}
	}
	return out
}

func mergeStats(a, b instanceStats) instanceStats {
	a.Health = append(a.Health, b.Health...)
	a.Failures = append(a.Failures, b.Failures...)
	if a.Outcomes == nil {
		a.Outcomes = map[string]int{}
	}
	for k, v := range b.Outcomes {
		a.Outcomes[k] += v
	}
	if a.Absence == nil {
		a.Absence = map[string]int{}
	}
	for k, v := range b.Absence {
		a.Absence[k] += v
	}
	a.Swept += b.Swept
	a.Reported = max(a.Reported, b.Reported)
	return a
}

func (b *kubespawnBackend) close() {
	b.mu.Lock()
	procs := b.procs
	b.mu.Unlock()
	for _, p := range procs {
		if p == nil {
			continue
		}
		p.p.Stop(20 * time.Second)
	}
}

// --- the 2018 replica, in-process ---

// legacySelector is KubeSpawner's pod label.
const legacySelector = "component=singleuser-server"

type legacyBackend struct {
	cfg       *rest.Config
	ns        string
	timeouts  [2]time.Duration
	mu        sync.Mutex
	instances [2]*legacyInstance
	outcomes  map[string]int
}

type legacyInstance struct {
	sp     *legacy.Spawner
	cancel context.CancelFunc
	done   chan struct{}
}

func newLegacyBackend(ctx context.Context, cfg *rest.Config, ns string, startTimeout, stopTimeout time.Duration) (*legacyBackend, error) {
	b := &legacyBackend{cfg: cfg, ns: ns, timeouts: [2]time.Duration{startTimeout, stopTimeout}, outcomes: map[string]int{}}
	for g := range b.instances {
		in, err := b.newInstance(ctx)
		if err != nil {
			b.close()
			return nil, err
		}
		b.instances[g] = in
	}
	return b, nil
}

func (b *legacyBackend) newInstance(ctx context.Context) (*legacyInstance, error) {
	cfg := legacy.JSONConfig(b.cfg)
	cfg.QPS, cfg.Burst = -1, 0
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	refl := legacy.New(client, legacy.Of2018(b.ns, legacySelector))
	rctx, cancel := context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), klog.Background().V(2)))
	in := &legacyInstance{cancel: cancel, done: make(chan struct{})}
	go func() { defer close(in.done); refl.Run(rctx) }()
	for !refl.Synced() {
		select {
		case <-ctx.Done():
			cancel()
			<-in.done
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	in.sp = legacy.NewSpawner(client, refl, legacy.SpawnerOptions{Namespace: b.ns, StartTimeout: b.timeouts[0], StopTimeout: b.timeouts[1], DeleteGracePeriod: time.Second})
	return in, nil
}

func (b *legacyBackend) group(user string) int { return int(user[len(user)-1]-'0') % 2 }
func (b *legacyBackend) selector() string      { return legacySelector }

// legacyUserLabel is KubeSpawner's label of a user's objects.
const legacyUserLabel = "hub.jupyter.org/username"

func (b *legacyBackend) claimKey(c *corev1.PersistentVolumeClaim) string {
	return c.Labels[legacyUserLabel]
}

func (b *legacyBackend) instance(user string) *legacyInstance {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.instances[b.group(user)]
}

func (b *legacyBackend) start(ctx context.Context, user, scenario string) (types.UID, bool, string, error) {
	ann := map[string]string{}
	if scenario != "" {
		ann[podsim.AnnotationScenario] = scenario
	}
	name := "jupyter-" + user
	pod, err := b.instance(user).sp.StartWith(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"component": "singleuser-server", legacyUserLabel: user}, Annotations: ann},
		Spec:       *notebookSpec("jupyter/base-notebook:2018", claimName(user)),
	}, legacy.Extras{
		Claim:   homeClaim(user, map[string]string{"component": "singleuser-storage", legacyUserLabel: user}),
		Secret:  withLabels(podSecret(name), user),
		Service: withLabels(podService(name), user),
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		reason := legacyReason(err)
		b.outcomes[reason]++
		return "", false, reason, nil
	}
	b.outcomes["running"]++
	return pod.UID, true, "running", nil
}

// legacyReason names why a start of the replica failed.
func legacyReason(err error) string {
	var te *legacy.TimeoutError
	switch {
	case errors.As(err, &te) && te.Op == "uid":
		return "no uid in the cache"
	case errors.As(err, &te):
		return "start timed out"
	case apierrors.IsAlreadyExists(err):
		return "pod exists"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "start cancelled"
	}
	return "API error"
}

// withLabels gives a pod's object KubeSpawner's labels of the pod.
func withLabels[T interface{ SetLabels(map[string]string) }](o T, user string) T {
	o.SetLabels(map[string]string{"component": "singleuser-server", legacyUserLabel: user})
	return o
}

// stop is KubeSpawner's: by name (it has no UID precondition).
func (b *legacyBackend) stop(ctx context.Context, user string, _ types.UID) error {
	return b.instance(user).sp.Stop(ctx, "jupyter-"+user)
}

func (b *legacyBackend) crash(ctx context.Context) error {
	b.mu.Lock()
	old := b.instances[0]
	b.mu.Unlock()
	old.cancel()
	<-old.done
	in, err := b.newInstance(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.instances[0] = in
	b.mu.Unlock()
	return nil
}

func (b *legacyBackend) stats(context.Context) instanceStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := instanceStats{Outcomes: map[string]int{}}
	for k, v := range b.outcomes {
		out.Outcomes[k] = v
	}
	return out
}

func (b *legacyBackend) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, in := range b.instances {
		if in != nil {
			in.cancel()
			<-in.done
		}
	}
}
