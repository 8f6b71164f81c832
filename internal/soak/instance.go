package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// instanceEnv makes a soak binary (the test binary or cmd/soak) run one
// service instance instead of the soak: the controller re-executes itself
// with it, so that an instance is a process of its own that a crash can
// kill.
const instanceEnv = "KUBESPAWN_SOAK_INSTANCE"

// instanceConfig is what the controller passes to an instance process, as
// JSON in instanceEnv.
type instanceConfig struct {
	Kubeconfig   string        `json:"kubeconfig"`
	Namespace    string        `json:"namespace"`
	Instance     string        `json:"instance"`
	Identity     string        `json:"identity"`
	StartTimeout time.Duration `json:"startTimeout"`
	StopTimeout  time.Duration `json:"stopTimeout"`
	StallTimeout time.Duration `json:"stallTimeout"`
	// FailureTimeout of the caches; their entries into failed are
	// recorded (the demo spawner exits on the first: Factory.Failed).
	FailureTimeout time.Duration `json:"failureTimeout"`
	OrphanMinAge   time.Duration `json:"orphanMinAge"`
	SweepEvery     time.Duration `json:"sweepEvery"`
	LeaseTimings   [3]time.Duration
}

// IsInstance reports whether this process was started as a service
// instance of a soak; call it first in main or TestMain, and then
// os.Exit(RunInstance()).
func IsInstance() bool { return os.Getenv(instanceEnv) != "" }

// RunInstance runs the service instance described by the environment until
// SIGTERM (or SIGKILL: a crash), and returns the exit status.
func RunInstance() int {
	var c instanceConfig
	if err := json.Unmarshal([]byte(os.Getenv(instanceEnv)), &c); err != nil {
		fmt.Fprintf(os.Stderr, "soak instance: bad %s: %v\n", instanceEnv, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := runInstance(ctx, c); err != nil {
		fmt.Fprintf(os.Stderr, "soak instance %s: %v\n", c.Instance, err)
		return 1
	}
	return 0
}

// service is one instance of the spawner service: the shape of the demo
// spawner (examples/spawner), reduced to what the soak drives.
type service struct {
	sp *spawner.Spawner
	// metrics is the spawner's registry (absence decisions).
	metrics prometheus.Gatherer
	pods    *reflector.PodCache
	c       instanceConfig
	logger  klog.Logger

	mu    sync.Mutex
	users map[string]*userEntry // the service's table: what it believes
	// health records when the pod cache started and ceased to claim
	// health.
	health   []healthChange
	outcomes map[string]int
	failures *failureLog
	// swept counts the owned objects the sweeper deleted (their pod was
	// gone); reported is the most claims one sweep reported.
	swept, reported int
}

// CacheFailure is one entry of a cache into the failed state, with these
// problems active.
type CacheFailure struct {
	At       time.Time           `json:"at"`
	Instance string              `json:"instance"`
	Cache    string              `json:"cache"`
	Problems []reflector.Problem `json:"problems"`
	Reason   string              `json:"reason"`
}

// ProbesOnly reports whether failing probes were the cache's only
// problem: a failure that must never happen.
func (f CacheFailure) ProbesOnly() bool {
	for _, p := range f.Problems {
		if p != reflector.ProblemProbesFailing {
			return false
		}
	}
	return true
}

// failureLog records the caches' entries into failed, every one (the
// factory's Failed signals only the first). The instance does not exit on
// them, as the demo spawner does: its table would be lost, which is the
// service's concern, not the caches'; the soak reports them.
type failureLog struct {
	mu       sync.Mutex
	instance string
	list     []CacheFailure
}

func (l *failureLog) add(st reflector.Status) {
	f := CacheFailure{At: time.Now(), Cache: st.Name, Reason: st.Reason}
	for _, p := range st.Problems {
		f.Problems = append(f.Problems, p.Problem)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f.Instance = l.instance
	l.list = append(l.list, f)
}

// stateSource is what watch reads of a cache (reflector.PodCache and
// EventCache).
type stateSource interface {
	NotifyState() (<-chan struct{}, func())
	State() reflector.State
	Status() reflector.Status
}

// watch records each entry of c into failed until ctx ends.
func (l *failureLog) watch(ctx context.Context, c stateSource) {
	ch, cancel := c.NotifyState()
	defer cancel()
	was := c.State()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		st := c.Status()
		if st.State == reflector.StateFailed && was != reflector.StateFailed {
			l.add(st)
		}
		was = st.State
	}
}

func (l *failureLog) all() []CacheFailure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]CacheFailure(nil), l.list...)
}

type userEntry struct {
	pod string
	uid types.UID
}

func runInstance(ctx context.Context, c instanceConfig) error {
	logger := klog.Background().WithValues("instance", c.Instance)
	ctx = klog.NewContext(ctx, logger)
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "kubespawn-soak-" + c.Instance
	// HTTP/1.1 only: no HTTP/2 ping notices a silent stream, as in 2018;
	// the library alone must.
	cfg.NextProtos = []string{"http/1.1"}
	failures := &failureLog{instance: c.Identity}
	f, err := reflector.NewFactory(cfg, reflector.Options{StallTimeout: c.StallTimeout, FailureTimeout: c.FailureTimeout})
	if err != nil {
		return err
	}
	defer f.Shutdown()
	pods, err := f.Pods(reflector.Scope{Namespaces: []string{c.Namespace}, LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
	if err != nil {
		return err
	}
	idx, err := events.IndexFor(f, reflector.Scope{Namespaces: []string{c.Namespace}}, events.Options{})
	if err != nil {
		return err
	}
	eventCache, err := f.Events(reflector.Scope{Namespaces: []string{c.Namespace}}) // the index's, shared
	if err != nil {
		return err
	}
	// The spawner's own metrics are where the soak reads its absence
	// decisions, as an operator's Prometheus would.
	reg := prometheus.NewRegistry()
	sp, err := spawner.New(spawner.Options{
		Client: f.Client(), Pods: pods, Events: idx, Instance: c.Instance, NamePrefix: "soak", Registerer: reg,
		StartTimeout: c.StartTimeout, MaxStartTimeout: c.StartTimeout, StopTimeout: c.StopTimeout,
		ImagePullGrace: time.Second, FallbackInterval: time.Second, DeleteGracePeriod: ptr.To(time.Second),
	})
	if err != nil {
		return err
	}
	s := &service{sp: sp, metrics: reg, pods: pods, c: c, logger: logger, users: map[string]*userEntry{}, outcomes: map[string]int{}, failures: failures}
	f.Start(ctx)

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.watchStalls(ctx) })
	wg.Go(func() { failures.watch(ctx, pods) })
	wg.Go(func() { failures.watch(ctx, eventCache) })
	wg.Go(func() {
		err := sp.RunSweeper(ctx, spawner.SweeperOptions{
			// Claims of users the table does not have are reported, and
			// never deleted: no MaxClaimAge.
			Policy:        spawner.SweepPolicy{Namespace: c.Namespace, Select: s.orphan, ClaimSelect: s.unknownClaim, MinAge: c.OrphanMinAge, Delete: true},
			Interval:      c.SweepEvery,
			OnSweep:       s.onSweep,
			Identity:      c.Identity,
			LeaseDuration: c.LeaseTimings[0], RenewDeadline: c.LeaseTimings[1], RetryPeriod: c.LeaseTimings[2],
		})
		if err != nil {
			logger.Error(err, "Sweeper not running")
		}
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /start", s.start)
	mux.HandleFunc("POST /stop", s.stop)
	mux.HandleFunc("GET /stats", s.stats)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// The controller reads the address from the first line of stdout.
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() { <-ctx.Done(); _ = hs.Close() }()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// watchStalls notes when the pod cache stops claiming health (a stall
// found, or any other problem) and when it claims it again, so that the
// controller can time how long each silent stall went unnoticed.
func (s *service) watchStalls(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	healthy := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.pods.State() == reflector.StateSynced
		if now != healthy {
			healthy = now
			s.mu.Lock()
			s.health = append(s.health, healthChange{At: time.Now(), Healthy: now})
			s.mu.Unlock()
		}
	}
}

// healthChange is the pod cache starting or ceasing to claim health.
type healthChange struct {
	At      time.Time `json:"at"`
	Healthy bool      `json:"healthy"`
}

// orphan is the sweeper's selection: a pod the table does not have.
func (s *service) orphan(_ context.Context, pod *corev1.Pod) (spawner.SweepReason, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[pod.Annotations[spawner.AnnotationKey]]; u != nil && u.pod == pod.Name && (u.uid == "" || u.uid == pod.UID) {
		return "", nil
	}
	return spawner.SweepReasonOrphan, nil
}

// unknownClaim is the sweeper's report of claims: those of users the
// table does not have (after a crash, every one).
func (s *service) unknownClaim(_ context.Context, claim *corev1.PersistentVolumeClaim) (spawner.SweepReason, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[claim.Annotations[spawner.AnnotationKey]] != nil {
		return "", nil
	}
	return spawner.SweepReasonOrphan, nil
}

func (s *service) onSweep(res spawner.SweepResult, _ error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range res.Objects {
		if o.Deleted {
			s.swept++
		}
	}
	s.reported = max(s.reported, len(res.Claims))
}

// claimName is the claim of a user's home, in both runs (KubeSpawner's
// default pvc_name_template, claim-{username}).
func claimName(user string) string { return "claim-" + user }

// homeClaim is the user's claim, kept across its servers.
func homeClaim(user string, labels map[string]string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claimName(user), Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

// notebookSpec is the user's pod: one container, its home on the claim.
func notebookSpec(image, claim string) *corev1.PodSpec {
	return &corev1.PodSpec{
		Containers: []corev1.Container{{Name: "notebook", Image: image,
			VolumeMounts: []corev1.VolumeMount{{Name: "home", MountPath: "/home/jovyan"}}}},
		Volumes: []corev1.Volume{{Name: "home", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		TerminationGracePeriodSeconds: ptr.To[int64](1),
	}
}

// podService and podSecret are what KubeSpawner makes per pod with
// services_enabled and internal_ssl: a Service in front of the server and
// the Secret of its certificates. Named after the pod.
func podService(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "http", Port: 8888, TargetPort: intstr.FromInt32(8888)}}}}
}

func podSecret(name string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"ssl.key": "soak", "ssl.crt": "soak"}}
}

// startAnswer is the answer to POST /start.
type startAnswer struct {
	OK     bool      `json:"ok"`
	Pod    string    `json:"pod"`
	UID    types.UID `json:"uid,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// start runs a Start bounded by the request: a client that goes away
// cancels it (and the Start then deletes its pod).
func (s *service) start(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, scenario := q.Get("user"), q.Get("scenario")
	name, err := spawner.PodName("soak", user)
	if err != nil {
		writeJSON(w, startAnswer{Error: err.Error()})
		return
	}
	// Known from before the create: a starting pod is never an orphan.
	s.mu.Lock()
	s.users[user] = &userEntry{pod: name}
	s.mu.Unlock()
	ann := map[string]string{}
	if scenario != "" {
		ann[podsim.AnnotationScenario] = scenario
	}
	res, err := s.sp.Start(r.Context(), spawner.Request{Key: user, Namespace: s.c.Namespace, Annotations: ann,
		Spec:     notebookSpec("example.org/notebook:1", claimName(user)),
		Claims:   []*corev1.PersistentVolumeClaim{homeClaim(user, map[string]string{"component": "singleuser-storage"})},
		Services: []*corev1.Service{podService(name)},
		Secrets:  []*corev1.Secret{podSecret(name)},
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		var se *spawner.StartError
		reason := "error"
		if errors.As(err, &se) {
			reason = se.Reason.Error()
			if se.Cleanup == nil {
				delete(s.users, user) // deleted and confirmed gone
			}
		}
		s.outcomes[reason]++
		writeJSON(w, startAnswer{Pod: name, Reason: reason, Error: err.Error()})
		return
	}
	s.users[user] = &userEntry{pod: name, uid: res.UID}
	s.outcomes["running"]++
	writeJSON(w, startAnswer{OK: true, Pod: name, UID: res.UID})
}

// stop runs a Stop with the UID the caller names (a late Stop carries an
// earlier pod's).
func (s *service) stop(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, uid := q.Get("user"), types.UID(q.Get("uid"))
	name, err := spawner.PodName("soak", user)
	if err != nil {
		writeJSON(w, startAnswer{Error: err.Error()})
		return
	}
	if err := s.sp.Stop(r.Context(), s.c.Namespace, name, spawner.StopOptions{UID: uid}); err != nil {
		writeJSON(w, startAnswer{Pod: name, Error: err.Error()})
		return
	}
	s.mu.Lock()
	if u := s.users[user]; u != nil && (uid == "" || u.uid == uid || u.uid == "") {
		delete(s.users, user)
	}
	s.mu.Unlock()
	writeJSON(w, startAnswer{OK: true, Pod: name})
}

// instanceStats is the answer to GET /stats.
type instanceStats struct {
	Health   [][]healthChange `json:"health"` // one list per instance process
	Outcomes map[string]int   `json:"outcomes"`
	Absence  map[string]int   `json:"absence"`
	State    reflector.State  `json:"state"`
	Failures []CacheFailure   `json:"failures,omitempty"`
	// Swept counts the owned objects the sweepers deleted; Reported is
	// the most claims one sweep reported (and kept).
	Swept    int `json:"swept"`
	Reported int `json:"reported"`
}

func (s *service) stats(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	st := instanceStats{Health: [][]healthChange{append([]healthChange(nil), s.health...)}, Outcomes: map[string]int{}, Absence: map[string]int{}, State: s.pods.State(), Failures: s.failures.all(), Swept: s.swept, Reported: s.reported}
	absence, err := absenceDecisions(s.metrics)
	if err != nil {
		s.mu.Unlock()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	st.Absence = absence
	for k, v := range s.outcomes {
		st.Outcomes[k] = v
	}
	s.mu.Unlock()
	writeJSON(w, st)
}

// absenceDecisions reads kubespawn_spawner_absence_decisions_total from
// the spawner's registry: how many decisions that a pod does not exist
// rested on each source of answer ("api" for every one, by invariant 1).
func absenceDecisions(g prometheus.Gatherer) (map[string]int, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, mf := range mfs {
		if mf.GetName() != "kubespawn_spawner_absence_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" {
					out[l.GetValue()] += int(m.GetCounter().GetValue())
				}
			}
		}
		return out, nil
	}
	return nil, errors.New("the spawner exports no absence_decisions_total")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
