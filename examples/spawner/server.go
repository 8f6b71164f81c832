package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/pager"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// namePrefix starts every pod name: the spawner's NamePrefix is
// spawner.InstancePrefix(namePrefix, Instance), so pod names are
// kubespawn-<instance>-<instance hash>-<user>-<user hash> and two
// instances in one namespace never share one (neither can block, report
// or delete the other's pod by name).
const namePrefix = "kubespawn"

// Config configures a Server.
type Config struct {
	// Factory gives the shared pod and event caches and the client; the
	// caller starts it and shuts it down. Servers sharing a Factory share
	// their watches.
	Factory *reflector.Factory
	// Metrics gets each Server's spawner metrics, labelled
	// spawner=<Instance>, and is served on /metrics (the factory's
	// Registerer should be it too).
	Metrics *prometheus.Registry

	Namespace, Instance, Image string
	// StartTimeout, StopTimeout, ImagePullGrace and DeleteGracePeriod are
	// spawner.Options': 0 (nil) for the library's defaults, which checks
	// them. StopTimeout also bounds DELETE /users/{user}/claims.
	StartTimeout, StopTimeout time.Duration
	ImagePullGrace            time.Duration
	DeleteGracePeriod         *time.Duration

	// Storage, if set, gives each user a claim, mounted in their pod and
	// kept across stops; DELETE /users/{user}/claims deletes it. A start
	// whose body has "claims" has the body's instead, unless
	// Storage.Force.
	Storage *Storage
	// ServicesEnabled fronts each pod with a Service of its name, port
	// "http" to Port (KubeSpawner's services_enabled); it goes with the
	// pod. A start whose body has "services" has the body's instead.
	ServicesEnabled bool
	// PodPolicy is what a start may ask for beyond Pod Security baseline
	// (the zero policy: baseline); a start that asks for more is refused
	// (403) before anything is created.
	PodPolicy PodPolicy
	// Port of the notebook server in the pod (its container port, and the
	// Service's). Default 8888.
	Port int32
	// ClusterDomain is the cluster's DNS domain, for the DNS names of the
	// Services a start answer reports (<name>.<namespace>.svc.<domain>).
	// Default DefaultClusterDomain.
	ClusterDomain string

	// StopRetryInterval and StopRetryMaxInterval pace the service's own
	// retries of a stop that could not complete (the row is then
	// stop-pending) and of the start-up rebuild of the user table: the
	// first after StopRetryInterval, doubling up to StopRetryMaxInterval.
	// Defaults 1s and 1m.
	StopRetryInterval, StopRetryMaxInterval time.Duration

	// SweepInterval: the sweeper runs every SweepInterval while this
	// replica holds the Lease kubespawn-sweeper-<Instance> in
	// LeaseNamespace; 0 disables it. It runs only once the user table is
	// rebuilt from the API server. It deletes the instance's pods the user
	// table does not know or holds as stop-pending (older than
	// OrphanMinAge; 0: the library's default, the start timeout) and, if
	// MaxAge > 0, those older than MaxAge. With Storage (or MaxClaimAge)
	// it reports the claims of users the table has no server for, at
	// least OrphanMinAge old, and deletes those older than MaxClaimAge if
	// it is positive (0: never).
	SweepInterval  time.Duration
	OrphanMinAge   time.Duration
	MaxAge         time.Duration
	MaxClaimAge    time.Duration
	LeaseNamespace string
	Identity       string
	// LeaseDuration, RenewDeadline, RetryPeriod: 0 for the defaults.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// Token, if not empty, is required ("Authorization: Bearer <Token>")
	// by every /users route and /known-pods. Without it run listens on
	// loopback only.
	Token string
	// Streams caps the progress streams open at once (0: no cap).
	Streams service.StreamLimits

	Logger *klog.Logger
	// Clock paces the retries; default the real clock.
	Clock clock.WithTicker
}

// Server is the demo spawner service: a user table in memory, rebuilt
// from the API server at start-up, one pod per user started and stopped
// through the spawner package.
type Server struct {
	cfg     Config
	logger  klog.Logger
	sp      *spawner.Spawner
	pods    *reflector.PodCache
	handler http.Handler
	auth    service.Auth
	streams *service.StreamLimiter

	// ctx bounds background work (starts, the sweeper); cancelled by
	// Shutdown, which cancels starts in flight (they delete their pods).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// rebuilt is closed once the user table holds every pod of this
	// instance on the API server: until then no /users route, no
	// /known-pods and no sweep.
	rebuilt chan struct{}

	mu         sync.Mutex
	users      map[string]*userServer // by user
	rebuildErr error                  // the last failed rebuild, until one succeeds
}

// The states of a row of the user table.
const (
	stateStarting = "starting"
	stateRunning  = "running"
	stateStopping = "stopping"
	// stateStopPending: a stop could not complete (API errors, timeout).
	// The service owns the cleanup: it retries in the background until
	// the API server confirms the pod gone, the sweeper selects the pod,
	// and a start for the user answers 409 meanwhile.
	stateStopPending = "stop-pending"
)

// sweepReasonStopPending: the sweeper deletes a stop-pending row's pod.
const sweepReasonStopPending spawner.SweepReason = "stop_pending"

// sweepReasonNoServer: the sweeper reports a claim of a user the table has
// no server for.
const sweepReasonNoServer spawner.SweepReason = "no_server"

// errNotRebuilt: the sweeper selects nothing before the user table is
// rebuilt (an empty table is not "nobody has a server").
var errNotRebuilt = errors.New("the user table is not rebuilt yet")

// userServer is one entry of the user table: what the service believes.
type userServer struct {
	user, pod string // pod: the pod's name (the row's, not recomputed)
	state     string
	uid       types.UID
	podIP     string
	// progress of the start; nil for a row that no start of this process
	// made (a stop of an unknown user).
	progress *progressLog
	// cancel cancels this start (a client that asked for
	// cancelOnDisconnect went away); the start then deletes its pod.
	cancel context.CancelCauseFunc
	// stopErr: why the last stop attempt failed (stop-pending); retrying:
	// a retrier runs for this row.
	stopErr  string
	retrying bool
}

// errClientGone cancels a start whose client asked for cancelOnDisconnect
// and went away (a hub that died with its start, say).
var errClientGone = errors.New("the client that asked for this start went away (cancelOnDisconnect)")

// newServer gets the shared caches from the factory and builds the
// spawner; the sweeper starts with Start.
func newServer(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Factory == nil {
		return nil, errors.New("spawner service: no reflector.Factory")
	}
	if cfg.StopRetryInterval < 0 || cfg.StopRetryMaxInterval < 0 {
		return nil, errors.New("spawner service: negative StopRetryInterval or StopRetryMaxInterval")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("spawner service: Port %d is not a TCP port", cfg.Port)
	}
	cfg.Port = cmp.Or(cfg.Port, DefaultPort)
	cfg.ClusterDomain = cmp.Or(cfg.ClusterDomain, DefaultClusterDomain)
	if cfg.Storage != nil {
		st, err := cfg.Storage.withDefaults()
		if err != nil {
			return nil, fmt.Errorf("spawner service: storage: %w", err)
		}
		cfg.Storage = &st
	}
	if err := cfg.PodPolicy.validate(); err != nil {
		return nil, fmt.Errorf("spawner service: pod policy: %w", err)
	}
	cfg.StopRetryInterval = cmp.Or(cfg.StopRetryInterval, time.Second)
	cfg.StopRetryMaxInterval = max(cmp.Or(cfg.StopRetryMaxInterval, time.Minute), cfg.StopRetryInterval)
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	prefix, err := spawner.InstancePrefix(namePrefix, cfg.Instance)
	if err != nil {
		return nil, fmt.Errorf("spawner service: %w", err)
	}
	s := &Server{cfg: cfg, logger: klog.Background(), users: map[string]*userServer{},
		auth: service.NewAuth(cfg.Token), streams: service.NewStreamLimiter(cfg.Streams),
		rebuilt: make(chan struct{})}
	if cfg.Logger != nil {
		s.logger = *cfg.Logger
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
		s.cfg.Metrics = cfg.Metrics
	}
	// One pod watch for every kubespawn pod of the namespace (all
	// instances: the scope does not name ours, so instances share it).
	s.pods, err = cfg.Factory.Pods(reflector.Scope{Namespaces: []string{cfg.Namespace}, LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
	if err != nil {
		return nil, err
	}
	ev, err := events.IndexFor(cfg.Factory, reflector.Scope{Namespaces: []string{cfg.Namespace}}, events.Options{})
	if err != nil {
		return nil, err
	}
	o := cfg.spawnerOptions()
	o.Client, o.Pods, o.Events, o.NamePrefix, o.Logger = cfg.Factory.Client(), s.pods, ev, prefix, &s.logger
	o.Registerer = prometheus.WrapRegistererWith(prometheus.Labels{"spawner": cfg.Instance}, cfg.Metrics)
	s.sp, err = spawner.New(o)
	if err != nil {
		return nil, err
	}
	// The sweep policy is the library's to check, now rather than when the
	// sweeper starts.
	if err := checkSweeper(s.sp, s.sweeperOptions()); err != nil {
		s.sp.Close()
		return nil, fmt.Errorf("spawner service: sweeper: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), s.logger))
	s.handler = s.routes()
	return s, nil
}

// spawnerOptions are the spawner's options cfg sets (client, caches,
// names, logger and metrics aside).
func (cfg Config) spawnerOptions() spawner.Options {
	return spawner.Options{Instance: cfg.Instance,
		StartTimeout: cfg.StartTimeout, StopTimeout: cfg.StopTimeout, ImagePullGrace: cfg.ImagePullGrace,
		DeleteGracePeriod: cfg.DeleteGracePeriod}
}

// Start rebuilds the user table from the API server (retrying until it
// succeeds), then serves the users and runs the sweeper (if enabled)
// under leader election.
func (s *Server) Start() {
	s.wg.Go(func() {
		if !s.rebuild(s.ctx) || s.cfg.SweepInterval <= 0 {
			return
		}
		if err := s.sp.RunSweeper(s.ctx, s.sweeperOptions()); err != nil {
			s.logger.Error(err, "Sweeper not running")
		}
	})
}

// sweeperOptions: the sweeper deletes the pods the table does not know and
// those of stop-pending rows (orphan), with MaxAge those older than it,
// and the owned objects (Services) whose pod is gone; with Storage (or
// MaxClaimAge) it reports the claims of users without a server and, with
// MaxClaimAge, deletes those older than it.
func (s *Server) sweeperOptions() spawner.SweeperOptions {
	p := spawner.SweepPolicy{
		Namespace: s.cfg.Namespace, Delete: true,
		Select: s.orphan, MinAge: s.cfg.OrphanMinAge, MaxAge: s.cfg.MaxAge,
	}
	// Without storage, no claim to look at (and no permission needed to
	// list them), unless a policy to delete old ones is asked for.
	if s.cfg.Storage != nil || s.cfg.MaxClaimAge != 0 {
		p.ClaimSelect, p.MaxClaimAge = s.claimOfNoServer, s.cfg.MaxClaimAge
	}
	return spawner.SweeperOptions{
		Policy:         p,
		Interval:       max(s.cfg.SweepInterval, 0),
		LeaseName:      "kubespawn-sweeper-" + s.cfg.Instance,
		LeaseNamespace: s.cfg.LeaseNamespace,
		Identity:       s.cfg.Identity,
		LeaseDuration:  s.cfg.LeaseDuration, RenewDeadline: s.cfg.RenewDeadline, RetryPeriod: s.cfg.RetryPeriod,
		OnSweep: s.logSweep,
	}
}

// checkSweeper applies the library's rules to o, their only copy:
// RunSweeper checks its options first and, given a context that has
// already ended, returns then, having sent no request.
func checkSweeper(sp *spawner.Spawner, o spawner.SweeperOptions) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return sp.RunSweeper(ctx, o)
}

// logSweep logs what a sweep found and did beside the pods (the library's
// "Sweep done" line has the counts too): at the default level when it
// deleted or failed to delete anything, else at V(2).
func (s *Server) logSweep(res spawner.SweepResult, _ error) {
	var selected, deleted, failed, objDeleted, objFailed int
	for _, c := range res.Claims {
		selected += b2i(c.Selected)
		deleted += b2i(c.Deleted)
		failed += b2i(c.Err != nil)
	}
	for _, o := range res.Objects {
		objDeleted += b2i(o.Deleted)
		objFailed += b2i(o.Err != nil)
	}
	logger := s.logger.V(2)
	if deleted+failed+objDeleted+objFailed > 0 {
		logger = s.logger.V(0)
	}
	logger.Info("Sweep of claims and owned objects",
		"claimsOfUsersWithoutServer", len(res.Claims), "claimsOlderThanMaxClaimAge", selected, "claimsDeleted", deleted, "claimsFailed", failed,
		"ownerlessObjects", len(res.Objects), "ownerlessObjectsDeleted", objDeleted, "ownerlessObjectsFailed", objFailed)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Shutdown cancels starts in flight (each deletes its pod), the retries of
// pending stops and the sweeper (releasing its Lease); running pods are
// left running. Under s.mu: no background work is added after it.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel()
}

// Close shuts down, waits for background work (starts, the sweeper) and
// closes the spawner (its metrics unregistered).
func (s *Server) Close() {
	s.Shutdown()
	s.wg.Wait()
	s.sp.Close() // its metrics unregistered: a new Server may register them again
}

// orphan is the sweeper's selection: a pod the user table does not have
// is an orphan, and a stop-pending row's pod is to be deleted too. Before
// the table is rebuilt nothing is selected: an empty table is not "every
// pod is an orphan".
func (s *Server) orphan(_ context.Context, pod *corev1.Pod) (spawner.SweepReason, error) {
	if !s.isRebuilt() {
		return "", errNotRebuilt
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[pod.Annotations[spawner.AnnotationKey]]
	if u != nil && u.pod == pod.Name && (u.uid == "" || u.uid == pod.UID) {
		if u.state == stateStopPending {
			return sweepReasonStopPending, nil
		}
		return "", nil
	}
	return spawner.SweepReasonOrphan, nil
}

// claimOfNoServer is the sweeper's selection of claims: a claim of a user
// the table has no server for is reported (and, with MaxClaimAge, deleted
// once older than it: the library deletes it only once the API server says
// the user has no pod, and asks this again under the user's lock first).
// The demo's table knows the users that have a server, not every user: a
// real service asks its user database here, so that a user who merely
// stopped is not reported. Before the rebuild nothing is reported.
func (s *Server) claimOfNoServer(_ context.Context, claim *corev1.PersistentVolumeClaim) (spawner.SweepReason, error) {
	if !s.isRebuilt() {
		return "", errNotRebuilt
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[claim.Annotations[spawner.AnnotationKey]] != nil {
		return "", nil
	}
	return sweepReasonNoServer, nil
}

func (s *Server) isRebuilt() bool {
	select {
	case <-s.rebuilt:
		return true
	default:
		return false
	}
}

// --- the user table at start-up ---

// listPageTimeout bounds each page of the rebuild's LIST.
const listPageTimeout = 30 * time.Second

// rebuild fills the user table with every pod of this instance that the
// API server has (a paginated LIST by label, never the cache), retrying
// until one succeeds; then it opens the routes. A pod's row is its user
// (spawner.AnnotationKey), name and UID: "running", or "stop-pending"
// for a pod already terminating (its stop is then owned and confirmed).
// A pod without a key cannot be anyone's: the sweeper takes it. It
// returns false if ctx ended first.
func (s *Server) rebuild(ctx context.Context) bool {
	logger := klog.FromContext(ctx)
	b := s.backoff()
	for {
		pods, err := s.listOwnPods(ctx)
		if err == nil {
			s.install(ctx, pods)
			return true
		}
		s.mu.Lock()
		s.rebuildErr = err
		s.mu.Unlock()
		logger.Error(err, "Rebuilding the user table from the API server failed; retrying (no user is served and nothing is swept until it succeeds)")
		if !s.sleep(ctx, b()) {
			return false
		}
	}
}

func (s *Server) listOwnPods(ctx context.Context) ([]*corev1.Pod, error) {
	pods := s.cfg.Factory.Client().CoreV1().Pods(s.cfg.Namespace)
	sel := labels.SelectorFromSet(labels.Set{spawner.LabelManagedBy: spawner.ManagedByValue, spawner.LabelInstance: s.cfg.Instance})
	lp := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		ctx, cancel := context.WithTimeout(ctx, listPageTimeout)
		defer cancel()
		return pods.List(ctx, opts)
	})
	lp.PageSize = 500
	var out []*corev1.Pod
	err := lp.EachListItem(ctx, metav1.ListOptions{LabelSelector: sel.String()}, func(obj runtime.Object) error {
		if pod, ok := obj.(*corev1.Pod); ok {
			out = append(out, pod)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of instance %q in %s: %w", s.cfg.Instance, s.cfg.Namespace, err)
	}
	return out, nil
}

func (s *Server) install(ctx context.Context, pods []*corev1.Pod) {
	logger := klog.FromContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	running, pending := 0, 0
	for _, pod := range pods {
		user := pod.Annotations[spawner.AnnotationKey]
		if user == "" {
			logger.Info("Pod of this instance without a user: left to the sweeper", "pod", klog.KObj(pod))
			continue
		}
		if have := s.users[user]; have != nil {
			logger.Info("Second pod for one user: left to the sweeper", "user", user, "pod", klog.KObj(pod), "kept", have.pod)
			continue
		}
		u := &userServer{user: user, pod: pod.Name, uid: pod.UID, podIP: pod.Status.PodIP, state: stateRunning, progress: newProgressLog()}
		u.progress.finish(serverJSON{User: user, Pod: pod.Name, Namespace: pod.Namespace, UID: pod.UID, State: stateRunning, PodIP: pod.Status.PodIP, Status: http.StatusOK})
		s.users[user] = u
		if pod.DeletionTimestamp != nil {
			s.stopPendingLocked(u, errors.New("the pod was terminating when the service started"))
			pending++
		} else {
			running++
		}
	}
	s.rebuildErr = nil
	close(s.rebuilt)
	logger.Info("User table rebuilt from the API server", "running", running, "stopPending", pending, "pods", len(pods))
}

// afterRebuild answers 503 until the user table is rebuilt: a route
// served from an empty table would tell a restarted service's users their
// pods are unknown.
func (s *Server) afterRebuild(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.isRebuilt() {
			s.notRebuilt(w)
			return
		}
		h(w, r)
	}
}

func (s *Server) notRebuilt(w http.ResponseWriter) {
	msg := "the service is rebuilding its user table from the API server"
	s.mu.Lock()
	if s.rebuildErr != nil {
		msg += " (last attempt: " + s.rebuildErr.Error() + ")"
	}
	s.mu.Unlock()
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "error": msg, "errors": []string{msg}})
}

// readyz: ready once the user table is rebuilt and the caches are.
func (s *Server) readyz() http.HandlerFunc {
	caches := service.Readyz(s.cfg.Factory)
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.isRebuilt() {
			s.notRebuilt(w)
			return
		}
		caches(w, r)
	}
}

// backoff returns the retry schedule: StopRetryInterval, doubling up to
// StopRetryMaxInterval.
func (s *Server) backoff() func() time.Duration {
	next := s.cfg.StopRetryInterval
	return func() time.Duration {
		d := next
		next = min(2*next, s.cfg.StopRetryMaxInterval)
		return d
	}
}

// sleep waits d on the Config's clock; false if ctx ended first.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	t := s.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// Every route that creates, deletes or reads pods needs the token
	// (when one is configured); health and metrics hold no pod data.
	// They all wait for the user table's rebuild (503 until then).
	authed := func(h http.HandlerFunc) http.Handler { return s.auth.Require("kubespawn-spawner", s.afterRebuild(h)) }
	mux.Handle("POST /users/{user}/server", authed(s.startServer))
	mux.Handle("DELETE /users/{user}/server", authed(s.stopServer))
	mux.Handle("GET /users/{user}/server", authed(s.pollServer))
	mux.Handle("GET /users/{user}/server/progress", authed(s.streams.Limit(s.progress)))
	mux.Handle("DELETE /users/{user}/claims", authed(s.deleteClaims))
	mux.Handle("GET /known-pods", authed(s.knownPods))
	mux.HandleFunc("GET /healthz", service.Livez(s.cfg.Factory))
	mux.HandleFunc("GET /readyz", s.readyz())
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))
	return mux
}

// --- start ---

// serverJSON is the answer to a start (also the final SSE event).
type serverJSON struct {
	User string `json:"user"`
	Pod  string `json:"pod"`
	// Namespace of the pod and its objects (a hub's dns_name_template
	// has {namespace}).
	Namespace       string    `json:"namespace,omitempty"`
	UID             types.UID `json:"uid,omitempty"`
	State           string    `json:"state"` // running, failed
	PodIP           string    `json:"podIP,omitempty"`
	DurationSeconds float64   `json:"durationSeconds,omitempty"`
	Error           string    `json:"error,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	PodDeleted      *bool     `json:"podDeleted,omitempty"`
	CleanupFailed   bool      `json:"cleanupFailed,omitempty"`
	Events          []string  `json:"events,omitempty"`
	// Claims are the user's claims as the start ensured them, Objects the
	// pod's owned objects (its Service).
	Claims   []objectJSON   `json:"claims,omitempty"`
	Objects  []objectJSON   `json:"objects,omitempty"`
	Progress []progressJSON `json:"progress,omitempty"`
	Status   int            `json:"status"` // the HTTP status of a synchronous answer
}

// objectJSON is a claim or an owned object of a start or a delete.
type objectJSON struct {
	Kind string    `json:"kind"`
	Name string    `json:"name"`
	UID  types.UID `json:"uid,omitempty"`
	// Created: by this start (not adopted from an earlier one).
	Created bool `json:"created,omitempty"`
	// Of a Service a start ensured: its ClusterIP as the API server
	// allocated it (read back after the start, so absent if that read
	// failed or the Service is headless) and its DNS name under
	// Config.ClusterDomain (what cluster DNS would serve; whether the
	// hub can resolve it is the hub's cluster's business).
	ClusterIP string `json:"clusterIP,omitempty"`
	DNSName   string `json:"dnsName,omitempty"`
}

func objectsJSON(refs []spawner.ObjectRef) []objectJSON {
	out := make([]objectJSON, 0, len(refs))
	for _, r := range refs {
		out = append(out, objectJSON{Kind: r.Kind, Name: r.Name, UID: r.UID, Created: r.Created})
	}
	return out
}

// DefaultClusterDomain is Config.ClusterDomain unless set: the kubelet's
// and KubeSpawner's default (its dns_name_template ends in it).
const DefaultClusterDomain = "cluster.local"

// serviceGetTimeout bounds the read of each Service a start ensured, for
// its ClusterIP.
const serviceGetTimeout = 10 * time.Second

// ownedJSON is objectsJSON with the address of each Service: its DNS name,
// and its ClusterIP read from the API server (one GET each, with a
// deadline). The start succeeded either way: a failed read only leaves the
// ClusterIP out (the hub then says so), and a Service of another UID (the
// one the start ensured is gone) gives none.
func (s *Server) ownedJSON(ctx context.Context, refs []spawner.ObjectRef) []objectJSON {
	out := objectsJSON(refs)
	for i := range out {
		o := &out[i]
		if o.Kind != spawner.KindService {
			continue
		}
		o.DNSName = o.Name + "." + s.cfg.Namespace + ".svc." + s.cfg.ClusterDomain
		gctx, cancel := context.WithTimeout(ctx, serviceGetTimeout)
		svc, err := s.cfg.Factory.Client().CoreV1().Services(s.cfg.Namespace).Get(gctx, o.Name, metav1.GetOptions{})
		cancel()
		switch {
		case err != nil:
			klog.FromContext(ctx).Info("Service's ClusterIP unknown: the start's answer leaves it out", "service", klog.KRef(s.cfg.Namespace, o.Name), "err", err)
		case svc.UID != o.UID:
			klog.FromContext(ctx).Info("Service replaced since the start ensured it: its ClusterIP is left out", "service", klog.KObj(svc), "uid", svc.UID, "ensured", o.UID)
		case svc.Spec.ClusterIP != corev1.ClusterIPNone:
			o.ClusterIP = svc.Spec.ClusterIP
		}
	}
	return out
}

type progressJSON struct {
	Message  string `json:"message"`
	Progress int    `json:"progress"`
	Warning  bool   `json:"warning"`
	Degraded bool   `json:"degraded"`
	Reason   string `json:"reason,omitempty"`
}

// maxUserLen bounds {user}: a key, not a document.
const maxUserLen = 256

// userRef reads and checks {user} and returns its pod name: empty, too
// long, invalid UTF-8 or control characters are a 400.
func (s *Server) userRef(w http.ResponseWriter, r *http.Request) (user, pod string, ok bool) {
	user = r.PathValue("user")
	bad := len(user) > maxUserLen || !utf8.ValidString(user) || strings.ContainsFunc(user, unicode.IsControl)
	name, err := s.sp.PodName(user)
	if bad || err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad user name %q: 1 to %d characters of valid UTF-8, no control characters", user, maxUserLen))
		return "", "", false
	}
	return user, name, true
}

func (s *Server) startServer(w http.ResponseWriter, r *http.Request) {
	user, name, ok := s.userRef(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	stream := q.Get("progress") == "sse"
	if stream {
		release, ok := s.streams.Acquire(r)
		if !ok {
			service.TooManyStreams(w, s.cfg.Streams)
			return
		}
		defer release()
	}
	raw, err := service.ReadBody(w, r, 1<<20)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return
	}
	// Refused before anything is created, the user's row included: the
	// body's and the policy's problems, each named by its field.
	body, refused := decodeStartBody(raw)
	var req spawner.Request
	if refused == nil {
		req, refused = s.request(user, name, body)
	}
	if refused != nil {
		klog.FromContext(r.Context()).Info("Start refused", "user", user, "reason", refused.reason, "field", refused.errs[0].Field, "err", refused.Error(), "problems", len(refused.errs))
		refused.write(w, user, name)
		return
	}
	s.mu.Lock()
	if u := s.users[user]; u != nil {
		s.mu.Unlock()
		writeJSON(w, http.StatusConflict, map[string]string{"error": "server is " + u.state, "state": u.state, "pod": u.pod})
		return
	}
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	u := &userServer{user: user, pod: name, state: stateStarting, progress: newProgressLog(), cancel: cancel}
	s.users[user] = u // known before the create: the sweeper never takes it for an orphan
	s.wg.Add(1)
	s.mu.Unlock()

	req.Progress = func(up events.Update) { u.progress.add(toProgress(up)) }
	go s.start(ctx, u, req)

	// By default the start goes on if the client goes away (it can poll
	// or reattach); with cancelOnDisconnect it is cancelled, and deletes
	// its pod.
	if q.Get("cancelOnDisconnect") == "true" {
		defer func() {
			select {
			case <-u.progress.done:
			default:
				cancel(errClientGone)
			}
		}()
	}
	if stream {
		s.streamProgress(w, r, u.progress)
		return
	}
	// The start is bounded by the spawner's timeouts; the connection is
	// kept meanwhile.
	release := service.HoldWrite(w)
	select {
	case <-u.progress.done:
		release()
		res := u.progress.final
		writeJSON(w, res.Status, res)
	case <-r.Context().Done():
		release()
	}
}

// start runs in the background, bounded by the server's lifetime, not the
// request's.
func (s *Server) start(ctx context.Context, u *userServer, req spawner.Request) {
	defer s.wg.Done()
	defer u.cancel(nil)
	res, err := s.sp.Start(ctx, req)
	out := serverJSON{User: u.user, Pod: u.pod, Namespace: s.cfg.Namespace}
	var owned []objectJSON
	if err == nil {
		owned = s.ownedJSON(ctx, res.Owned) // before the lock: it reads the API server
	}
	s.mu.Lock()
	if err == nil {
		u.uid, u.podIP = res.UID, res.PodIP
		if u.state == stateStarting {
			u.state = stateRunning
		}
		out.UID, out.PodIP, out.State, out.Status = res.UID, res.PodIP, "running", http.StatusOK
		out.DurationSeconds = res.Duration.Seconds()
		out.Claims, out.Objects = objectsJSON(res.Claims), owned
	} else {
		var se *spawner.StartError
		isStartErr := errors.As(err, &se)
		switch {
		case s.users[u.user] != u:
		case isStartErr && se.Cleanup != nil && se.UID != "":
			// The pod could not be confirmed deleted: the row stays,
			// stop-pending, and the service retries until it is gone.
			u.uid = se.UID
			s.stopPendingLocked(u, se.Cleanup)
		default:
			delete(s.users, u.user) // the pod is gone
		}
		out.State, out.Error = "failed", err.Error()
		out.Reason, out.Status = classify(err)
		if isStartErr {
			out.UID = se.UID
			out.PodDeleted = &se.Deleted
			out.CleanupFailed = se.Cleanup != nil
			for _, ev := range se.Events {
				out.Events = append(out.Events, events.Message(ev))
			}
		}
	}
	s.mu.Unlock()
	u.progress.finish(out)
}

// classify maps a Start error to a stable reason (the label of
// kubespawn_spawner_starts_total) and an HTTP status: 4xx when the
// request, the configuration or the state of the user's objects is the
// problem, 503 when the cluster or the API server refused or could not
// answer (an API server that found a claim or Service invalid: 422), 504
// for a timeout.
func classify(err error) (string, int) {
	reason, status := classifyReason(err)
	if (reason == "claim_failed" || reason == "owned_object_failed") && (apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)) {
		status = http.StatusUnprocessableEntity // the object as configured, not the cluster
	}
	return reason, status
}

func classifyReason(err error) (string, int) {
	for _, c := range []struct {
		err    error
		reason string
		status int
	}{
		{spawner.ErrInvalidArgument, "invalid_request", http.StatusBadRequest},
		{spawner.ErrAlreadyRunning, "already_running", http.StatusConflict},
		{spawner.ErrNameConflict, "name_conflict", http.StatusConflict},
		{spawner.ErrStopRequested, "stopped", http.StatusConflict},
		{spawner.ErrImagePull, "image_pull", http.StatusUnprocessableEntity},
		{spawner.ErrInvalidImage, "invalid_image", http.StatusUnprocessableEntity},
		{spawner.ErrCreateContainerConfig, "create_container_config", http.StatusUnprocessableEntity},
		{spawner.ErrCrashLoop, "crash_loop", http.StatusUnprocessableEntity},
		{spawner.ErrPodFailed, "pod_failed", http.StatusUnprocessableEntity},
		{spawner.ErrRejected, "rejected", http.StatusUnprocessableEntity},
		// A claim of that name is someone else's, or being deleted; a
		// Service of the pod's name is not ours: the admin's or the
		// user's to resolve.
		{spawner.ErrClaimConflict, "claim_conflict", http.StatusConflict},
		{spawner.ErrClaimTerminating, "claim_terminating", http.StatusConflict},
		{spawner.ErrOwnedObjectConflict, "owned_object_conflict", http.StatusConflict},
		// The user's existing claim cannot take the configured spec.
		{spawner.ErrClaimIncompatible, "claim_incompatible", http.StatusUnprocessableEntity},
		// The API server refused the create (a quota, a webhook) or could
		// not be read.
		{spawner.ErrClaimFailed, "claim_failed", http.StatusServiceUnavailable},
		{spawner.ErrOwnedObjectFailed, "owned_object_failed", http.StatusServiceUnavailable},
		{spawner.ErrUnschedulable, "unschedulable", http.StatusServiceUnavailable},
		{spawner.ErrCreateFailed, "create_failed", http.StatusServiceUnavailable},
		{spawner.ErrDeletedExternally, "deleted_externally", http.StatusServiceUnavailable},
		{spawner.ErrStartCancelled, "cancelled", http.StatusServiceUnavailable},
		{spawner.ErrStartTimeout, "timeout", http.StatusGatewayTimeout},
	} {
		if errors.Is(err, c.err) {
			return c.reason, c.status
		}
	}
	return "error", http.StatusInternalServerError
}

func toProgress(u events.Update) progressJSON {
	p := progressJSON{Message: u.Message, Progress: u.Progress, Warning: u.Warning, Degraded: u.Degraded}
	if u.Event != nil {
		p.Reason = u.Event.Reason
	}
	return p
}

// --- progress ---

// progressLog records a start's progress for any number of readers.
type progressLog struct {
	mu      sync.Mutex
	updates []progressJSON
	changed chan struct{} // closed and replaced on every change
	done    chan struct{} // closed once final is set
	final   serverJSON
}

func newProgressLog() *progressLog {
	return &progressLog{changed: make(chan struct{}), done: make(chan struct{})}
}

func (l *progressLog) add(p progressJSON) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.updates = append(l.updates, p)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *progressLog) finish(res serverJSON) {
	l.mu.Lock()
	defer l.mu.Unlock()
	res.Progress = slices.Clone(l.updates)
	l.final = res
	close(l.done)
	close(l.changed)
	l.changed = make(chan struct{})
}

// since returns the updates from index i, whether the start is over, and a
// channel closed on the next change.
func (l *progressLog) since(i int) ([]progressJSON, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return slices.Clone(l.updates[i:]), true, nil
	default:
		return slices.Clone(l.updates[i:]), false, l.changed
	}
}

// streamProgress sends Server-Sent Events: "progress" per update (replayed
// from the start), then one "result" with the start's outcome. It ends
// early when the client goes away or stops reading (a write misses its
// deadline).
func (s *Server) streamProgress(w http.ResponseWriter, r *http.Request, l *progressLog) {
	es := service.StartEventStream(w)
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	sent := 0
	for {
		ups, done, changed := l.since(sent)
		for _, u := range ups {
			if writeSSE(es, "progress", u) != nil {
				return
			}
		}
		sent += len(ups)
		if done {
			_ = writeSSE(es, "result", l.final)
			return
		}
		select {
		case <-changed:
		case <-keepAlive.C:
			if es.Comment("keep-alive") != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func writeSSE(es *service.EventStream, event string, v any) error {
	b, _ := json.Marshal(v)
	return es.Event(event, b)
}

func (s *Server) progress(w http.ResponseWriter, r *http.Request) {
	user, _, ok := s.userRef(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	u := s.users[user]
	s.mu.Unlock()
	if u == nil || u.progress == nil {
		writeError(w, http.StatusNotFound, "no server started by this service for this user")
		return
	}
	s.streamProgress(w, r, u.progress)
}

// --- stop, poll ---

// stopServer always sends the DELETE to the API server, whatever the
// table says. With the pod's UID in the row (checked when the pod was
// created or the table rebuilt) it needs no read first. Stop cancels a
// start in progress (which deletes its pod) and completes even if the
// client goes away. A stop that could not complete (API errors, a pod not
// gone in time) leaves the row stop-pending: 202, and the service retries
// until the API server confirms the pod gone. A pod that is not this
// instance's is never deleted (403) and leaves no row behind.
func (s *Server) stopServer(w http.ResponseWriter, r *http.Request) {
	user, name, ok := s.userRef(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	u := s.users[user]
	switch {
	case u == nil:
		// A row for the stop, so that one that fails stays owned (and a
		// start meanwhile answers 409).
		u = &userServer{user: user, pod: name, state: stateStopping}
		s.users[user] = u
	case u.state != stateStopPending:
		u.state = stateStopping
	}
	pod, uid := u.pod, u.uid
	s.mu.Unlock()
	release := service.HoldWrite(w) // the stop is bounded by the spawner's StopTimeout
	err := s.stopPod(context.WithoutCancel(r.Context()), pod, uid)
	release()
	s.stopDone(u, err)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, map[string]string{"user": user, "pod": pod, "state": "stopped"})
	case errors.Is(err, spawner.ErrNotOwned):
		writeJSON(w, http.StatusForbidden, map[string]any{"outOfScope": true, "error": err.Error()})
	default:
		klog.FromContext(r.Context()).Info("Stop not completed; the service retries", "user", user, "pod", klog.KRef(s.cfg.Namespace, pod), "err", err)
		writeJSON(w, http.StatusAccepted, map[string]any{"user": user, "pod": pod, "uid": uid, "state": stateStopPending,
			"error":   err.Error(),
			"message": "the stop could not complete yet: the service keeps deleting the pod until the API server confirms it gone; poll to follow"})
	}
}

// stopPod deletes the pod name and waits until the API server confirms it
// gone. With uid the DELETE goes at once, with that UID as precondition.
// Without (a start in progress that has not created its pod yet, a user
// the table does not have), spawner.Stop cancels a start in progress, reads
// the pod of the name from the API server and deletes it only if it is
// this instance's, with its UID as precondition; another's is an error
// wrapping spawner.ErrNotOwned.
func (s *Server) stopPod(ctx context.Context, name string, uid types.UID) error {
	return s.sp.Stop(ctx, s.cfg.Namespace, name, spawner.StopOptions{UID: uid})
}

// stopDone records a stop attempt of u's pod: confirmed gone, or not ours
// to delete, the row goes; otherwise it is stop-pending, with a retrier.
func (s *Server) stopDone(u *userServer, err error) (done bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done = err == nil || errors.Is(err, spawner.ErrNotOwned)
	if s.users[u.user] != u {
		return done
	}
	if done {
		delete(s.users, u.user)
	} else {
		s.stopPendingLocked(u, err)
	}
	return done
}

// stopPendingLocked makes u stop-pending and sees that one retrier runs
// for it (none once the service shuts down: the pod, still there, is
// found again by the next process's rebuild). s.mu is held.
func (s *Server) stopPendingLocked(u *userServer, err error) {
	u.state, u.stopErr = stateStopPending, err.Error()
	if u.retrying || s.ctx.Err() != nil {
		return
	}
	u.retrying = true
	s.wg.Add(1)
	go s.retryStop(u)
}

// retryStop retries the stop of a stop-pending row, with backoff, each
// attempt bounded by the stop timeout, until the API server confirms the
// pod gone (or that it is not ours), or the service shuts down.
func (s *Server) retryStop(u *userServer) {
	defer s.wg.Done()
	logger := s.logger.WithValues("user", u.user, "pod", klog.KRef(s.cfg.Namespace, u.pod))
	next := s.backoff()
	for attempt := 1; s.sleep(s.ctx, next()); attempt++ {
		s.mu.Lock()
		if s.users[u.user] != u || u.state != stateStopPending {
			u.retrying = false
			s.mu.Unlock()
			return
		}
		pod, uid := u.pod, u.uid
		s.mu.Unlock()
		err := s.stopPod(s.ctx, pod, uid)
		if s.stopDone(u, err) {
			logger.Info("Pending stop completed", "attempts", attempt, "err", err)
			return
		}
		logger.Info("Pending stop failed again; retrying", "attempt", attempt, "err", err)
	}
}

type pollJSON struct {
	User         string           `json:"user"`
	Pod          string           `json:"pod"`
	Namespace    string           `json:"namespace,omitempty"`
	ServiceState string           `json:"serviceState,omitempty"` // starting, running, stopping, stop-pending; empty: unknown to the service
	State        spawner.State    `json:"state"`
	Ready        bool             `json:"ready"`
	Terminating  bool             `json:"terminating,omitempty"`
	Reason       string           `json:"reason,omitempty"`
	Message      string           `json:"message,omitempty"`
	ExitCode     *int32           `json:"exitCode,omitempty"`
	UID          types.UID        `json:"uid,omitempty"`
	PodIP        string           `json:"podIP,omitempty"`
	Source       reflector.Source `json:"source"`
	// Deleted: the pod had terminated on its own and this poll deleted it.
	Deleted bool `json:"deleted,omitempty"`
}

// inScope: the pod is a spawner's pod of this instance.
func (s *Server) inScope(pod *corev1.Pod) bool {
	return pod.Labels[spawner.LabelManagedBy] == spawner.ManagedByValue && pod.Labels[spawner.LabelInstance] == s.cfg.Instance
}

// writeOutOfScope answers 403 for a pod that is not this instance's:
// never reported, never deleted, and never a 404 (it is not gone).
func (s *Server) writeOutOfScope(w http.ResponseWriter, pod *corev1.Pod) {
	writeJSON(w, http.StatusForbidden, map[string]any{"outOfScope": true,
		"error": fmt.Sprintf("pod %s/%s exists but is not a pod of this service (instance %q)", pod.Namespace, pod.Name, s.cfg.Instance)})
}

func (s *Server) pollServer(w http.ResponseWriter, r *http.Request) {
	user, name, ok := s.userRef(w, r)
	if !ok {
		return
	}
	// The row as it was before the poll: only a pod it already knew can
	// be the one the poll finds gone.
	var running *userServer
	var runningUID types.UID
	s.mu.Lock()
	if u := s.users[user]; u != nil {
		name = u.pod // the row's pod, whatever the name scheme that made it
		if u.state == stateRunning {
			running, runningUID = u, u.uid
		}
	}
	s.mu.Unlock()
	// Poll and the stop of a terminated pod are bounded by the spawner's
	// timeouts; the connection is kept meanwhile, and released before
	// any write.
	release := service.HoldWrite(w)
	st, err := s.sp.Poll(r.Context(), s.cfg.Namespace, name)
	release()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error()) // unknown: never "gone"
		return
	}
	if st.Pod != nil && !s.inScope(st.Pod) {
		s.mu.Lock()
		if u := s.users[user]; u != nil && u.uid != "" && u.uid != st.Pod.UID {
			// Our pod is gone and the name holds another's: the row is
			// not ours to keep (it would block every later start).
			delete(s.users, user)
		}
		s.mu.Unlock()
		s.writeOutOfScope(w, st.Pod)
		return
	}
	out := pollJSON{User: user, Pod: name, Namespace: s.cfg.Namespace, State: st.State, Ready: st.Ready, Terminating: st.Terminating,
		Reason: st.Reason, Message: st.Message, ExitCode: st.ExitCode, Source: st.Source}
	if st.Pod != nil {
		out.UID, out.PodIP = st.Pod.UID, st.Pod.Status.PodIP
	}
	if st.State == spawner.StateStopped && st.Pod != nil {
		// Terminated on its own (evicted, failed, completed): whoever is
		// told "stopped" will not stop it (JupyterHub never calls stop()
		// after a poll() that says so), so it is deleted now, before the
		// answer. Until that is confirmed the answer is 503: unknown.
		release := service.HoldWrite(w)
		err := s.sp.Stop(context.WithoutCancel(r.Context()), s.cfg.Namespace, name, spawner.StopOptions{UID: st.Pod.UID})
		release()
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "the pod terminated and could not be deleted yet: "+err.Error())
			return
		}
		out.Deleted = true
		s.mu.Lock()
		if u := s.users[user]; u != nil && u.state != stateStarting && (u.uid == "" || u.uid == st.Pod.UID) {
			delete(s.users, user)
		}
		s.mu.Unlock()
	}
	// st.Pod nil: the API server said NotFound (Poll never takes absence
	// from the cache).
	vanished := st.Pod == nil && running != nil && s.forgetVanished(w, r, running, runningUID)
	s.mu.Lock()
	if u := s.users[user]; u != nil {
		if u.state == stateStopPending && st.Pod == nil && !vanished {
			// The API server said NotFound: the pending stop is done.
			delete(s.users, user)
		} else {
			out.ServiceState = u.state
		}
	}
	s.mu.Unlock()
	code := http.StatusOK
	if st.State == spawner.StateStopped && st.Reason == "NotFound" {
		code = http.StatusNotFound // the API server said so
	}
	writeJSON(w, code, out)
}

// forgetVanished: the API server says the pod of u, a row that was
// running with pod uid before the poll, does not exist (deleted behind the
// service's back). The poll answers 404, after which the hub forgets the
// server without calling stop(), so the row must go too, or every later
// start of the user is a 409. It goes the way a stop goes: Stop with that
// UID (a pod known gone: never a successor) deletes what the pod owned
// (its Service); if that cannot complete the row is stop-pending and
// retried (a start answers 409 meanwhile), as for any stop. A row that
// changed since (a stop, a new start) is its operation's to settle;
// stop-pending ones are dropped by the caller. tried: this poll ran that
// stop.
func (s *Server) forgetVanished(w http.ResponseWriter, r *http.Request, u *userServer, uid types.UID) (tried bool) {
	s.mu.Lock()
	if s.users[u.user] != u || u.state != stateRunning || u.uid != uid || uid == "" {
		s.mu.Unlock()
		return false
	}
	pod := u.pod
	s.mu.Unlock()
	logger := klog.FromContext(r.Context()).WithValues("user", u.user, "pod", klog.KRef(s.cfg.Namespace, pod), "uid", uid)
	logger.Info("The user's pod is gone (the API server has no such pod): forgetting the server")
	release := service.HoldWrite(w) // bounded by the spawner's StopTimeout
	err := s.stopPod(context.WithoutCancel(r.Context()), pod, uid)
	release()
	if !s.stopDone(u, err) {
		logger.Info("The vanished pod's objects could not all be deleted yet; the service retries", "err", err)
	}
	return true
}

// --- known pods, health ---

// KnownPods is the answer of GET /known-pods, the format the sweep CLI's
// --orphans-from reads: the pods of the user table (starting, running or
// stopping), by their names. Stop-pending pods are not listed: the CLI
// may delete them, as the service's own sweeper does.
type KnownPods struct {
	Namespace string   `json:"namespace"`
	Instance  string   `json:"instance"`
	Pods      []string `json:"pods"`
}

func (s *Server) knownPods(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := KnownPods{Namespace: s.cfg.Namespace, Instance: s.cfg.Instance, Pods: make([]string, 0, len(s.users))}
	for _, u := range s.users {
		if u.state != stateStopPending {
			out.Pods = append(out.Pods, u.pod)
		}
	}
	s.mu.Unlock()
	slices.Sort(out.Pods)
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) { service.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, msg string) { service.WriteError(w, code, msg) }
