package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/reflector"
)

// Config configures a Server.
type Config struct {
	// Factory gives the pod and event caches; the caller starts it and
	// shuts it down. Its client is the sidecar's identity.
	Factory *reflector.Factory
	// Namespaces to watch (at least one).
	Namespaces []string
	// Selector is the label selector of the pods to watch ("" for all).
	Selector string
	// Token, if not empty, is required ("Authorization: Bearer <Token>")
	// by every route that reads or deletes pods, and enables
	// DELETE /pods/{namespace}/{name}. Without it the pod routes are
	// unauthenticated and run must listen on loopback only.
	Token string
	// Streams caps the event streams open at once (0: no cap).
	Streams service.StreamLimits
	// APITimeout bounds each request this server makes to the API server
	// on behalf of an HTTP client (0: 30s).
	APITimeout time.Duration
	// KeepAlive is the interval of SSE keep-alive comments (0: 15s).
	KeepAlive time.Duration
	// Metrics is served on /metrics (the factory's Registerer's registry).
	Metrics prometheus.Gatherer
	// Logger; default klog.Background().
	Logger *klog.Logger
}

// eventStreamer is what the SSE handler needs from package events.
type eventStreamer interface {
	Stream(ctx context.Context, pod events.PodRef) (<-chan events.Update, error)
	Status() reflector.Status
}

// Server is the sidecar: the factory's pod cache and event index for its
// scope, served over HTTP/JSON. Create it with newServer and serve
// Handler.
type Server struct {
	cfg     Config
	logger  klog.Logger
	pods    *reflector.PodCache
	events  *events.Index
	stream  eventStreamer
	client  kubernetes.Interface // for DELETE, never cached
	handler http.Handler
	auth    service.Auth
	scope   labels.Selector // --selector: pods outside it are never served or deleted
	streams *service.StreamLimiter

	// done is closed by CloseStreams: it ends every SSE stream so that
	// http.Server.Shutdown does not wait for them.
	done      chan struct{}
	closeOnce sync.Once
}

const (
	defaultAPITimeout = 30 * time.Second
	defaultKeepAlive  = 15 * time.Second
	userAgent         = "kubespawn-sidecar"
)

// newServer gets the caches from the factory and builds the HTTP handler.
func newServer(cfg Config) (*Server, error) {
	if cfg.Factory == nil {
		return nil, errors.New("sidecar: no reflector.Factory")
	}
	if len(cfg.Namespaces) == 0 {
		return nil, errors.New("sidecar: at least one namespace is needed")
	}
	scope, err := labels.Parse(cfg.Selector)
	if err != nil {
		return nil, fmt.Errorf("sidecar: bad --selector %q: %w", cfg.Selector, err)
	}
	cfg.APITimeout = cmp.Or(cfg.APITimeout, defaultAPITimeout)
	cfg.KeepAlive = cmp.Or(cfg.KeepAlive, defaultKeepAlive)
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, logger: klog.Background(), done: make(chan struct{}), client: cfg.Factory.Client(),
		auth: service.NewAuth(cfg.Token), scope: scope, streams: service.NewStreamLimiter(cfg.Streams)}
	if cfg.Logger != nil {
		s.logger = *cfg.Logger
	}
	if s.pods, err = cfg.Factory.Pods(reflector.Scope{Namespaces: cfg.Namespaces, LabelSelector: cfg.Selector}); err != nil {
		return nil, fmt.Errorf("sidecar: pod cache: %w", err)
	}
	idx, err := events.IndexFor(cfg.Factory, reflector.Scope{Namespaces: cfg.Namespaces}, events.Options{})
	if err != nil {
		return nil, fmt.Errorf("sidecar: event index: %w", err)
	}
	s.events, s.stream = idx, idx
	s.handler = s.routes()
	return s, nil
}

// CloseStreams ends every SSE stream (for http.Server.RegisterOnShutdown).
func (s *Server) CloseStreams() { s.closeOnce.Do(func() { close(s.done) }) }

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// Every route that reads or deletes pods needs the token (when one is
	// configured); health, status and metrics hold no pod data.
	pods := func(h http.HandlerFunc) http.Handler { return s.auth.Require("kubespawn-sidecar", h) }
	mux.Handle("GET /pods", pods(s.listPods))
	mux.Handle("/pods", service.MethodNotAllowed("GET, HEAD"))
	mux.Handle("GET /pods/{namespace}/{name}", pods(s.getPod))
	podMethods := "GET, HEAD"
	if s.auth.Enabled() {
		mux.Handle("DELETE /pods/{namespace}/{name}", pods(s.deletePod))
		podMethods = "GET, HEAD, DELETE"
	}
	mux.Handle("/pods/{namespace}/{name}", service.MethodNotAllowed(podMethods))
	mux.Handle("GET /pods/{namespace}/{name}/events", pods(s.streams.Limit(s.podEvents)))
	mux.Handle("/pods/{namespace}/{name}/events", service.MethodNotAllowed("GET, HEAD"))
	for path, h := range map[string]http.HandlerFunc{
		"/status": s.status, "/readyz": service.Readyz(s.cfg.Factory), "/livez": service.Livez(s.cfg.Factory),
	} {
		mux.HandleFunc("GET "+path, h)
		mux.Handle(path, service.MethodNotAllowed("GET, HEAD"))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))
	mux.Handle("/metrics", service.MethodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		service.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s", r.URL.Path))
	})
	return service.LogRequests(s.logger, mux)
}

// --- reads ---

type podResponse struct {
	Source reflector.Source `json:"source"`
	Pod    *corev1.Pod      `json:"pod"`
}

type listResponse struct {
	Source reflector.Source `json:"source"`
	Items  []*corev1.Pod    `json:"items"`
}

type errorResponse struct {
	Source reflector.Source `json:"source,omitempty"`
	Error  string           `json:"error"`
	// OutOfScope: the pod exists but is outside --selector (403).
	OutOfScope bool `json:"outOfScope,omitempty"`
}

func (s *Server) apiContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.APITimeout)
}

// podRef reads and checks the {namespace} and {name} of the path: names
// the API server would reject are a 400 here, not an API error.
func (s *Server) podRef(w http.ResponseWriter, r *http.Request) (ns, name string, ok bool) {
	ns, name = r.PathValue("namespace"), r.PathValue("name")
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad namespace %q: %s", ns, strings.Join(errs, "; ")))
		return "", "", false
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad pod name %q: %s", name, strings.Join(errs, "; ")))
		return "", "", false
	}
	return ns, name, true
}

// outOfScope answers 403 for a pod that exists but is outside --selector:
// never served, never deleted, and never a 404 (it is not gone).
func (s *Server) outOfScope(w http.ResponseWriter, pod *corev1.Pod) bool {
	if s.scope.Matches(labels.Set(pod.Labels)) {
		return false
	}
	writeJSON(w, http.StatusForbidden, errorResponse{Source: reflector.SourceAPI, OutOfScope: true,
		Error: fmt.Sprintf("pod %s/%s exists but is outside this sidecar's scope (--selector %q)", pod.Namespace, pod.Name, s.cfg.Selector)})
	return true
}

func (s *Server) getPod(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := s.podRef(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.apiContext(r)
	defer cancel()
	pod, src, err := s.pods.Get(ctx, ns, name)
	if err != nil {
		s.writeReadError(w, src, err)
		return
	}
	if s.outOfScope(w, pod) {
		return
	}
	writeJSON(w, http.StatusOK, podResponse{Source: src, Pod: podView(pod)})
}

func (s *Server) listPods(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if ns := q.Get("namespace"); ns != "" && len(validation.IsDNS1123Label(ns)) > 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad namespace %q", ns))
		return
	}
	sel, err := labels.Parse(q.Get("selector"))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad selector: %v", err))
		return
	}
	ctx, cancel := s.apiContext(r)
	defer cancel()
	pods, src, err := s.pods.List(ctx, q.Get("namespace"), sel)
	if err != nil {
		s.writeReadError(w, src, err)
		return
	}
	items := make([]*corev1.Pod, 0, len(pods))
	for _, p := range pods {
		items = append(items, podView(p))
	}
	slices.SortFunc(items, func(a, b *corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	writeJSON(w, http.StatusOK, listResponse{Source: src, Items: items})
}

// writeReadError maps a reflector error: 404 only for the API server's
// NotFound, 400 for bad input (a namespace out of scope), 503 otherwise.
func (s *Server) writeReadError(w http.ResponseWriter, src reflector.Source, err error) {
	switch {
	case apierrors.IsNotFound(err) && src == reflector.SourceAPI:
		writeJSON(w, http.StatusNotFound, errorResponse{Source: reflector.SourceAPI, Error: err.Error()})
	case errors.Is(err, reflector.ErrOutOfScope), errors.Is(err, reflector.ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	}
}

// --- health ---

// statusJSON is a reflector.Status whose reason is always present (empty
// while synced).
type statusJSON struct {
	reflector.Status
	Reason string `json:"reason"`
}

func newStatusJSON(st reflector.Status) statusJSON { return statusJSON{Status: st, Reason: st.Reason} }

// statusResponse is the pod reflector's status, plus the event
// reflector's under "events".
type statusResponse struct {
	statusJSON
	Events statusJSON `json:"events"`
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, statusResponse{statusJSON: newStatusJSON(s.pods.Status()), Events: newStatusJSON(s.stream.Status())})
}

// --- delete ---

type deleteResponse struct {
	Deleted     bool `json:"deleted"`
	AlreadyGone bool `json:"alreadyGone,omitempty"`
}

// deletePod always asks the API server: the cache never decides whether a
// pod exists. The pod is read from the API server first: one outside
// --selector is refused (403), and the DELETE carries that pod's UID as a
// precondition, so a pod that replaced it in between is never deleted.
func (s *Server) deletePod(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := s.podRef(w, r)
	if !ok {
		return
	}
	if !slices.Contains(s.cfg.Namespaces, ns) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("namespace %q is not served by this sidecar", ns))
		return
	}
	q := r.URL.Query()
	opts := metav1.DeleteOptions{}
	if g := q.Get("gracePeriodSeconds"); g != "" {
		n, err := strconv.ParseInt(g, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad gracePeriodSeconds %q", g))
			return
		}
		opts.GracePeriodSeconds = &n
	}
	ctx, cancel := s.apiContext(r)
	defer cancel()
	pod, err := s.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		if s.outOfScope(w, pod) {
			return
		}
		uid := pod.UID
		if want := q.Get("uid"); want != "" {
			uid = types.UID(want) // another incarnation's UID: the API server answers Conflict
		}
		opts.Preconditions = metav1.NewUIDPreconditions(string(uid))
		err = s.client.CoreV1().Pods(ns).Delete(ctx, name, opts)
	}
	switch {
	case err == nil:
		s.logger.Info("Deleted pod", "pod", klog.KRef(ns, name), "uid", pod.UID)
		writeJSON(w, http.StatusOK, deleteResponse{Deleted: true})
	case apierrors.IsNotFound(err):
		writeJSON(w, http.StatusOK, deleteResponse{AlreadyGone: true})
	case apierrors.IsConflict(err):
		writeJSON(w, http.StatusConflict, errorResponse{Source: reflector.SourceAPI, Error: err.Error()})
	default:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	}
}

// --- server-sent events ---

type progressEvent struct {
	Message  string `json:"message"`
	Progress int    `json:"progress"`
	Warning  bool   `json:"warning"`
	Degraded bool   `json:"degraded"`
	Reason   string `json:"reason,omitempty"`
	Type     string `json:"type,omitempty"`
	// Time is when the step happened (events.Update.Time), when known.
	Time *time.Time `json:"time,omitempty"`
}

type goneEvent struct {
	Message string `json:"message"`
}

// podEvents streams the progress of one pod (one UID) as Server-Sent
// Events until the client goes away or the pod is gone.
func (s *Server) podEvents(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := s.podRef(w, r)
	if !ok {
		return
	}
	getCtx, cancel := s.apiContext(r)
	pod, src, err := s.pods.Get(getCtx, ns, name)
	cancel()
	if err != nil {
		s.writeReadError(w, src, err)
		return
	}
	if s.outOfScope(w, pod) {
		return
	}
	if want := r.URL.Query().Get("uid"); want != "" && types.UID(want) != pod.UID {
		writeJSON(w, http.StatusConflict, errorResponse{Source: src, Error: fmt.Sprintf("pod %s/%s has uid %s, not %s", ns, name, pod.UID, want)})
		return
	}
	uid := pod.UID

	ctx, cancelStream := context.WithCancel(r.Context())
	defer cancelStream()
	updates, err := s.stream.Stream(ctx, events.PodRef{Namespace: ns, Name: name, UID: uid})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	// The pod's notifications tell when it may be gone; the ticker covers a
	// degraded cache (a Get then asks the API server).
	changed, unsubscribe := s.pods.Notify(ns, name)
	defer unsubscribe()
	check := time.NewTicker(max(s.cfg.Factory.Options().StallTimeout, 5*time.Second))
	defer check.Stop()
	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()

	es := service.StartEventStream(w)
	if es.Comment(fmt.Sprintf("pod %s/%s uid %s", ns, name, uid)) != nil {
		return
	}
	gone := func() (bool, string) {
		gctx, cancel := s.apiContext(r)
		defer cancel()
		p, src, err := s.pods.Get(gctx, ns, name)
		switch {
		case apierrors.IsNotFound(err) && src == reflector.SourceAPI:
			return true, "pod deleted"
		case err != nil:
			return false, "" // cannot tell: keep streaming
		case p.UID != uid:
			return true, "pod replaced by another pod with the same name"
		}
		return false, ""
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			data, _ := json.Marshal(toProgress(u))
			if es.Event("progress", data) != nil {
				return
			}
		case <-changed:
			if isGone, why := gone(); isGone {
				endGone(es, why)
				return
			}
		case <-check.C:
			if isGone, why := gone(); isGone {
				endGone(es, why)
				return
			}
		case <-keepAlive.C:
			if es.Comment("keep-alive") != nil {
				return
			}
		}
	}
}

func endGone(es *service.EventStream, why string) {
	data, _ := json.Marshal(goneEvent{Message: why})
	_ = es.Event("gone", data)
}

func toProgress(u events.Update) progressEvent {
	p := progressEvent{Message: u.Message, Progress: u.Progress, Warning: u.Warning, Degraded: u.Degraded}
	if e := u.Event; e != nil {
		p.Reason, p.Type = e.Reason, e.Type
	}
	if !u.Time.IsZero() {
		t := u.Time.UTC()
		p.Time = &t
	}
	return p
}

// --- helpers ---

func writeJSON(w http.ResponseWriter, code int, v any) { service.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, msg string) { service.WriteError(w, code, msg) }
