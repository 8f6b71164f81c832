package main

import (
	"bytes"
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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// namePrefix of the pods: kubespawn-<user>-<hash>.
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
	StartTimeout, StopTimeout  time.Duration
	ImagePullGrace             time.Duration
	DeleteGracePeriod          *time.Duration

	// SweepInterval: the sweeper runs every SweepInterval while this
	// replica holds the Lease kubespawn-sweeper-<Instance> in
	// LeaseNamespace; 0 disables it. It deletes the instance's pods the
	// user table does not know (older than OrphanMinAge) and, if MaxAge > 0,
	// those older than MaxAge.
	SweepInterval  time.Duration
	OrphanMinAge   time.Duration
	MaxAge         time.Duration
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
}

// Server is the demo spawner service: a user table in memory, one pod per
// user started and stopped through the spawner package.
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

	mu    sync.Mutex
	users map[string]*userServer // by user
}

// userServer is one entry of the user table: what the service believes.
type userServer struct {
	user, pod string
	state     string // starting, running, stopping
	uid       types.UID
	podIP     string
	progress  *progressLog
	// cancel cancels this start (a client that asked for
	// cancelOnDisconnect went away); the start then deletes its pod.
	cancel context.CancelCauseFunc
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
	s := &Server{cfg: cfg, logger: klog.Background(), users: map[string]*userServer{},
		auth: service.NewAuth(cfg.Token), streams: service.NewStreamLimiter(cfg.Streams)}
	if cfg.Logger != nil {
		s.logger = *cfg.Logger
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
		s.cfg.Metrics = cfg.Metrics
	}
	// One pod watch for every kubespawn pod of the namespace (all
	// instances: the scope does not name ours, so instances share it).
	var err error
	s.pods, err = cfg.Factory.Pods(reflector.Scope{Namespaces: []string{cfg.Namespace}, LabelSelector: spawner.LabelManagedBy + "=" + spawner.ManagedByValue})
	if err != nil {
		return nil, err
	}
	ev, err := events.For(cfg.Factory, reflector.Scope{Namespaces: []string{cfg.Namespace}}, events.Options{})
	if err != nil {
		return nil, err
	}
	s.sp, err = spawner.New(spawner.Options{
		Client: cfg.Factory.Client(), Pods: s.pods, Events: ev,
		Instance: cfg.Instance, NamePrefix: namePrefix,
		StartTimeout: cfg.StartTimeout, StopTimeout: cfg.StopTimeout, ImagePullGrace: cfg.ImagePullGrace,
		DeleteGracePeriod: cfg.DeleteGracePeriod,
		Logger:            &s.logger,
		Registerer:        prometheus.WrapRegistererWith(prometheus.Labels{"spawner": cfg.Instance}, cfg.Metrics),
	})
	if err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), s.logger))
	s.handler = s.routes()
	return s, nil
}

// Start runs the sweeper (if enabled) under leader election.
func (s *Server) Start() {
	if s.cfg.SweepInterval <= 0 {
		return
	}
	s.wg.Go(func() {
		err := s.sp.RunSweeper(s.ctx, spawner.SweeperOptions{
			Policy: spawner.SweepPolicy{
				Namespace: s.cfg.Namespace, Delete: true,
				Select: s.orphan, MinAge: s.cfg.OrphanMinAge, MaxAge: s.cfg.MaxAge,
			},
			Interval:       s.cfg.SweepInterval,
			LeaseName:      "kubespawn-sweeper-" + s.cfg.Instance,
			LeaseNamespace: s.cfg.LeaseNamespace,
			Identity:       s.cfg.Identity,
			LeaseDuration:  s.cfg.LeaseDuration, RenewDeadline: s.cfg.RenewDeadline, RetryPeriod: s.cfg.RetryPeriod,
		})
		if err != nil {
			s.logger.Error(err, "Sweeper not running")
		}
	})
}

// Shutdown cancels starts in flight (each deletes its pod) and stops the
// sweeper (releasing its Lease); running pods are left running.
func (s *Server) Shutdown() { s.cancel() }

// Close shuts down and waits for background work (starts, the sweeper).
func (s *Server) Close() {
	s.Shutdown()
	s.wg.Wait()
}

// orphan is the sweeper's selection: a pod the user table does not have
// is an orphan.
func (s *Server) orphan(_ context.Context, pod *corev1.Pod) (spawner.SweepReason, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[pod.Annotations[spawner.AnnotationKey]]
	if u != nil && u.pod == pod.Name && (u.uid == "" || u.uid == pod.UID) {
		return "", nil
	}
	return spawner.SweepReasonOrphan, nil
}

func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// Every route that creates, deletes or reads pods needs the token
	// (when one is configured); health and metrics hold no pod data.
	authed := func(h http.HandlerFunc) http.Handler { return s.auth.Require("kubespawn-spawner", h) }
	mux.Handle("POST /users/{user}/server", authed(s.startServer))
	mux.Handle("DELETE /users/{user}/server", authed(s.stopServer))
	mux.Handle("GET /users/{user}/server", authed(s.pollServer))
	mux.Handle("GET /users/{user}/server/progress", authed(s.streams.Limit(s.progress)))
	mux.Handle("GET /known-pods", authed(s.knownPods))
	mux.HandleFunc("GET /healthz", service.Livez(s.cfg.Factory))
	mux.HandleFunc("GET /readyz", service.Readyz(s.cfg.Factory))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))
	return mux
}

// --- start ---

type startBody struct {
	Image string `json:"image,omitempty"`
	// Annotations are added to the pod (demo only: a real service would not
	// let users set them; tests use them to pick a podsim scenario).
	Annotations map[string]string `json:"annotations,omitempty"`
}

// serverJSON is the answer to a start (also the final SSE event).
type serverJSON struct {
	User            string         `json:"user"`
	Pod             string         `json:"pod"`
	UID             types.UID      `json:"uid,omitempty"`
	State           string         `json:"state"` // running, failed
	PodIP           string         `json:"podIP,omitempty"`
	DurationSeconds float64        `json:"durationSeconds,omitempty"`
	Error           string         `json:"error,omitempty"`
	Reason          string         `json:"reason,omitempty"`
	PodDeleted      *bool          `json:"podDeleted,omitempty"`
	CleanupFailed   bool           `json:"cleanupFailed,omitempty"`
	Events          []string       `json:"events,omitempty"`
	Progress        []progressJSON `json:"progress,omitempty"`
	Status          int            `json:"status"` // the HTTP status of a synchronous answer
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
func userRef(w http.ResponseWriter, r *http.Request) (user, pod string, ok bool) {
	user = r.PathValue("user")
	bad := len(user) > maxUserLen || !utf8.ValidString(user) || strings.ContainsFunc(user, unicode.IsControl)
	name, err := spawner.PodName(namePrefix, user)
	if bad || err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad user name %q: 1 to %d characters of valid UTF-8, no control characters", user, maxUserLen))
		return "", "", false
	}
	return user, name, true
}

func (s *Server) startServer(w http.ResponseWriter, r *http.Request) {
	user, name, ok := userRef(w, r)
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
	var body startBody
	raw, err := service.ReadBody(w, r, 1<<20)
	if err == nil && len(bytes.TrimSpace(raw)) > 0 {
		err = json.Unmarshal(raw, &body)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return
	}
	req := spawner.Request{
		Key: user, Namespace: s.cfg.Namespace, Annotations: body.Annotations,
		Spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: cmp.Or(body.Image, s.cfg.Image)}}},
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
	u := &userServer{user: user, pod: name, state: "starting", progress: newProgressLog(), cancel: cancel}
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
	service.ExtendWrite(w, s.cfg.StartTimeout+s.cfg.StopTimeout+service.WriteTimeout)
	select {
	case <-u.progress.done:
		res := u.progress.final
		writeJSON(w, res.Status, res)
	case <-r.Context().Done():
	}
}

// start runs in the background, bounded by the server's lifetime, not the
// request's.
func (s *Server) start(ctx context.Context, u *userServer, req spawner.Request) {
	defer s.wg.Done()
	defer u.cancel(nil)
	res, err := s.sp.Start(ctx, req)
	out := serverJSON{User: u.user, Pod: u.pod}
	s.mu.Lock()
	if err == nil {
		u.uid, u.podIP = res.UID, res.PodIP
		if u.state == "starting" {
			u.state = "running"
		}
		out.UID, out.PodIP, out.State, out.Status = res.UID, res.PodIP, "running", http.StatusOK
		out.DurationSeconds = res.Duration.Seconds()
	} else {
		if s.users[u.user] == u {
			delete(s.users, u.user) // the pod is gone (or left for the sweeper)
		}
		out.State, out.Error = "failed", err.Error()
		out.Reason, out.Status = classify(err)
		var se *spawner.StartError
		if errors.As(err, &se) {
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
// kubespawn_spawner_starts_total) and an HTTP status.
func classify(err error) (string, int) {
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
	user, _, ok := userRef(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	u := s.users[user]
	s.mu.Unlock()
	if u == nil {
		writeError(w, http.StatusNotFound, "no server started by this service for this user")
		return
	}
	s.streamProgress(w, r, u.progress)
}

// --- stop, poll ---

func (s *Server) stopServer(w http.ResponseWriter, r *http.Request) {
	user, name, ok := userRef(w, r)
	if !ok {
		return
	}
	service.ExtendWrite(w, s.cfg.StopTimeout+service.WriteTimeout)
	// The pod of the name, if any, must be in scope: a pod of another
	// instance, or not created by a spawner, is never deleted.
	st, err := s.sp.Poll(r.Context(), s.cfg.Namespace, name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if s.outOfScope(w, st.Pod) {
		return
	}
	s.mu.Lock()
	u := s.users[user]
	var uid types.UID
	if u != nil {
		u.state, uid = "stopping", u.uid
	} else if st.Pod != nil {
		uid = st.Pod.UID // not ours to track: exactly the pod that was checked
	}
	s.mu.Unlock()
	// Always a DELETE to the API server, whatever the table says. Stop
	// cancels a start in progress (which deletes its pod). The stop
	// completes even if the client goes away.
	err = s.sp.Stop(context.WithoutCancel(r.Context()), s.cfg.Namespace, name, spawner.StopOptions{UID: uid})
	s.mu.Lock()
	if u != nil && s.users[user] == u {
		// Forgotten even if the stop failed: the pod, if any, is then an
		// orphan and the sweeper retries.
		delete(s.users, user)
	}
	s.mu.Unlock()
	switch {
	case errors.Is(err, spawner.ErrStopTimeout):
		writeError(w, http.StatusGatewayTimeout, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, map[string]string{"user": user, "pod": name, "state": "stopped"})
	}
}

type pollJSON struct {
	User         string           `json:"user"`
	Pod          string           `json:"pod"`
	ServiceState string           `json:"serviceState,omitempty"` // starting, running, stopping; empty: unknown to the service
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

// outOfScope answers 403 for a pod (not nil) that is not this instance's:
// never reported, never deleted, and never a 404 (it is not gone).
func (s *Server) outOfScope(w http.ResponseWriter, pod *corev1.Pod) bool {
	if pod == nil || s.inScope(pod) {
		return false
	}
	writeJSON(w, http.StatusForbidden, map[string]any{"outOfScope": true,
		"error": fmt.Sprintf("pod %s/%s exists but is not a pod of this service (instance %q)", pod.Namespace, pod.Name, s.cfg.Instance)})
	return true
}

func (s *Server) pollServer(w http.ResponseWriter, r *http.Request) {
	user, name, ok := userRef(w, r)
	if !ok {
		return
	}
	service.ExtendWrite(w, s.cfg.StopTimeout+service.WriteTimeout)
	st, err := s.sp.Poll(r.Context(), s.cfg.Namespace, name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error()) // unknown: never "gone"
		return
	}
	if s.outOfScope(w, st.Pod) {
		return
	}
	out := pollJSON{User: user, Pod: name, State: st.State, Ready: st.Ready, Terminating: st.Terminating,
		Reason: st.Reason, Message: st.Message, ExitCode: st.ExitCode, Source: st.Source}
	if st.Pod != nil {
		out.UID, out.PodIP = st.Pod.UID, st.Pod.Status.PodIP
	}
	if st.State == spawner.StateStopped && st.Pod != nil {
		// Terminated on its own (evicted, failed, completed): whoever is
		// told "stopped" will not stop it (JupyterHub never calls stop()
		// after a poll() that says so), so it is deleted now, before the
		// answer. Until that is confirmed the answer is 503: unknown.
		if err := s.sp.Stop(context.WithoutCancel(r.Context()), s.cfg.Namespace, name, spawner.StopOptions{UID: st.Pod.UID}); err != nil {
			writeError(w, http.StatusServiceUnavailable, "the pod terminated and could not be deleted yet: "+err.Error())
			return
		}
		out.Deleted = true
		s.mu.Lock()
		if u := s.users[user]; u != nil && u.state != "starting" && (u.uid == "" || u.uid == st.Pod.UID) {
			delete(s.users, user)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	if u := s.users[user]; u != nil {
		out.ServiceState = u.state
	}
	s.mu.Unlock()
	code := http.StatusOK
	if st.State == spawner.StateStopped && st.Reason == "NotFound" {
		code = http.StatusNotFound // the API server said so
	}
	writeJSON(w, code, out)
}

// --- known pods, health ---

// KnownPods is the answer of GET /known-pods, the format the sweep CLI's
// --orphans-from reads: the pods of the user table (starting, running or
// stopping).
type KnownPods struct {
	Namespace string   `json:"namespace"`
	Instance  string   `json:"instance"`
	Pods      []string `json:"pods"`
}

func (s *Server) knownPods(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := KnownPods{Namespace: s.cfg.Namespace, Instance: s.cfg.Instance, Pods: make([]string, 0, len(s.users))}
	for _, u := range s.users {
		out.Pods = append(out.Pods, u.pod)
	}
	s.mu.Unlock()
	slices.Sort(out.Pods)
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) { service.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, msg string) { service.WriteError(w, code, msg) }
