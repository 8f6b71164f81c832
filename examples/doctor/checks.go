package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubespawn/kubespawn/reflector"
)

// labelRun marks the doctor's objects and selects its probe watches: a
// value of its own per run, which matches nothing else.
const labelRun = "kubespawn.io/doctor-run"

// Probe watches: timeoutSeconds, and how long past it the doctor waits
// before it calls the watch path stalled.
const (
	watchListTimeout = 2 * time.Second
	bookmarkTimeout  = 3 * time.Second // the server's pre-timeout bookmark comes 2s before the end
	probeSlack       = 3 * time.Second
)

type doctor struct {
	cfg    *rest.Config
	client kubernetes.Interface
	rt     http.RoundTripper
	o      *options
	eff    reflector.Options
	runID  string
	rep    *Report
	m      measured
	// findings in the order found.
	findings []Finding
}

func newDoctor(cfg *rest.Config, o *options, eff reflector.Options) (*doctor, error) {
	// The doctor's own requests are few: no client-side limit of its own
	// (the config's is reported, not applied to the doctor).
	own := rest.CopyConfig(cfg)
	own.QPS, own.Burst, own.RateLimiter = -1, 0, nil
	client, err := kubernetes.NewForConfig(own)
	if err != nil {
		return nil, err
	}
	rt, err := rest.TransportFor(own)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &doctor{cfg: cfg, client: client, rt: rt, o: o, eff: eff, runID: hex.EncodeToString(b)}, nil
}

func (d *doctor) find(sev, check, msg, fix string) {
	d.findings = append(d.findings, Finding{Severity: sev, Check: check, Message: msg, Fix: fix})
}

// req bounds one request by the request timeout (within the run's bound).
func (d *doctor) req(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.o.requestTimeout)
}

// examine runs every check and computes the verdict. It returns an error
// only for what makes a report meaningless (errCannotRun).
func (d *doctor) examine(ctx context.Context) (*Report, error) {
	start := time.Now()
	d.rep = &Report{
		Host: d.cfg.Host, Namespace: d.o.namespace, CanaryNamespace: d.o.canaryNamespace, Mode: "read-only",
		Watch:   WatchReport{ProxyHeaders: map[string]string{}, RefusedStatus: []int{}},
		Canary:  CanaryReport{Kind: d.o.canaryKind, MissingVerbs: []string{}},
		Options: optionsReport(d.eff),
	}
	d.clientProxy()
	if err := d.checkServer(ctx); err != nil {
		return nil, err
	}
	for _, ns := range slices.Compact([]string{d.o.namespace, d.o.canaryNamespace}) {
		if ns == "" {
			continue
		}
		if err := d.checkNamespace(ctx, ns); err != nil {
			return nil, err
		}
	}
	d.checkWatchList(ctx)
	d.checkBookmarks(ctx)
	d.checkPriority(ctx)
	d.checkRateLimit()
	if d.o.canaryNamespace != "" {
		if err := d.checkCanary(ctx); err != nil {
			return nil, err
		}
	}
	d.verdict()
	d.rep.Elapsed = Seconds(time.Since(start))
	return d.rep, nil
}

// clientProxy records the proxy the client itself goes through, as
// client-go picks it: the config's, else the environment's.
func (d *doctor) clientProxy() {
	host := d.cfg.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	req, err := http.NewRequest(http.MethodGet, host, nil)
	if err != nil {
		return
	}
	proxy := d.cfg.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	if u, err := proxy(req); err == nil && u != nil {
		d.rep.Watch.ClientProxy = u.Redacted()
	}
}

// checkServer reads the version: the first request, so it is also the
// connection check.
func (d *doctor) checkServer(ctx context.Context) error {
	rctx, cancel := d.req(ctx)
	defer cancel()
	t0 := time.Now()
	body, err := d.client.Discovery().RESTClient().Get().AbsPath("/version").Do(rctx).Raw()
	rtt := time.Since(t0)
	if err != nil {
		switch {
		case apierrors.IsUnauthorized(err):
			return fmt.Errorf("%w: the API server at %s refused the credentials (401 Unauthorized)", errCannotRun, d.cfg.Host)
		case apierrors.IsForbidden(err):
			return fmt.Errorf("%w: the API server at %s: %v", errCannotRun, d.cfg.Host, err)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is said once
		}
		return fmt.Errorf("%w: cannot reach the API server at %s: %v", errCannotRun, d.cfg.Host, err)
	}
	var v version.Info
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%w: %s/version is not an API server's answer: %v", errCannotRun, d.cfg.Host, err)
	}
	d.rep.Server.Version, d.rep.Server.Platform = v.GitVersion, v.Platform
	d.rep.Latency.Request = Seconds(rtt)
	return nil
}

// checkNamespace makes a namespace that does not exist an error. Without
// permission to read namespaces it cannot tell, and says so.
func (d *doctor) checkNamespace(ctx context.Context, ns string) error {
	rctx, cancel := d.req(ctx)
	defer cancel()
	_, err := d.client.CoreV1().Namespaces().Get(rctx, ns, metav1.GetOptions{})
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: namespace %q does not exist", errCannotRun, ns)
	case apierrors.IsForbidden(err):
		d.find(sevInfo, "namespace", fmt.Sprintf("cannot check that namespace %s exists (no permission to get namespaces)", ns), "")
		return nil
	default:
		d.find(sevWarn, "namespace", fmt.Sprintf("reading namespace %s: %v", ns, err), "")
		return nil
	}
}

// watchEvent is a watch event as the API server writes it in JSON.
type watchEvent struct {
	Type   string `json:"type"`
	Object struct {
		metav1.TypeMeta
		Metadata metav1.ObjectMeta `json:"metadata"`
	} `json:"object"`
}

// probeResult is one raw probe watch.
type probeResult struct {
	status int
	open   time.Duration
	header http.Header
	// bookmark is the first bookmark and when it came; initialEnd
	// whether it was WatchList's initial-events-end.
	bookmark   bool
	initialEnd bool
	after      time.Duration
	// closed: the server ended the watch; stalled: the doctor's deadline
	// passed first.
	closed  bool
	stalled bool
	// deadline is the doctor's bound on the whole probe.
	deadline time.Duration
	err      error
	body     string
}

// probe sends one watch of the spawner's pods (with a selector of the
// run's own, which matches nothing: the path, not the content) through
// the config's transport, as client-go would, and reads it until its
// first bookmark, the server's close or the deadline.
func (d *doctor) probe(ctx context.Context, q url.Values, timeout time.Duration) probeResult {
	q.Set("watch", "true")
	q.Set("labelSelector", labelRun+"="+d.runID)
	q.Set("allowWatchBookmarks", "true")
	q.Set("timeoutSeconds", strconv.Itoa(int(timeout.Seconds())))
	u := d.client.CoreV1().RESTClient().Get().Namespace(d.o.namespace).Resource("pods").URL()
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, timeout+probeSlack)
	defer cancel()
	r := probeResult{deadline: timeout + probeSlack}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Accept", "application/json")
	d.rep.Watch.Probes++
	t0 := time.Now()
	resp, err := d.rt.RoundTrip(req)
	if err != nil {
		r.err, r.stalled = err, ctx.Err() != nil
		return r
	}
	defer resp.Body.Close()
	r.open, r.status, r.header = time.Since(t0), resp.StatusCode, resp.Header
	if d.rep.Watch.Protocol == "" || resp.StatusCode == http.StatusOK {
		d.rep.Watch.Protocol, d.rep.Watch.HTTP2 = resp.Proto, resp.ProtoMajor == 2
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		r.body = statusMessage(b)
		return r
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				r.stalled = true
			} else if errors.Is(err, io.EOF) {
				r.closed = true
			} else {
				r.err = err
			}
			return r
		}
		if ev.Type == string(watch.Bookmark) {
			r.bookmark, r.after = true, time.Since(t0)
			r.initialEnd = ev.Object.Metadata.Annotations[metav1.InitialEventsAnnotationKey] == "true"
			return r
		}
	}
}

// statusMessage is the message of a Status body, or the body.
func statusMessage(b []byte) string {
	var st metav1.Status
	if json.Unmarshal(b, &st) == nil && st.Message != "" {
		return st.Message
	}
	return strings.TrimSpace(string(b))
}

// probeFailed records what a probe that did not answer 200 means; it
// returns true when it did not.
func (d *doctor) probeFailed(r probeResult, what string) bool {
	w := &d.rep.Watch
	switch {
	case r.err != nil && r.stalled:
		w.Stalled = true
		w.Error = fmt.Sprintf("%s: no response headers within %s", what, r.deadline)
		return true
	case r.err != nil:
		w.Error = fmt.Sprintf("%s: %v", what, r.err)
		d.find(sevFail, "watch", w.Error, "check the network path to the API server")
		return true
	case r.status == http.StatusForbidden:
		w.Error = fmt.Sprintf("%s: no permission to watch pods in namespace %s (verb watch missing): %s", what, d.o.namespace, r.body)
		d.find(sevFail, "watch", w.Error, "grant the spawner's identity list and watch on pods in "+d.o.namespace)
		return true
	case r.status == http.StatusTooManyRequests || r.status >= 500:
		w.Refused++
		w.RefusedStatus = append(w.RefusedStatus, r.status)
		w.Error = fmt.Sprintf("%s: answered %d %s: %s", what, r.status, http.StatusText(r.status), r.body)
		return true
	case r.status != http.StatusOK:
		w.Error = fmt.Sprintf("%s: answered %d %s: %s", what, r.status, http.StatusText(r.status), r.body)
		return true
	}
	return false
}

// checkWatchList sends a WatchList request (sendInitialEvents=true,
// resourceVersionMatch=NotOlderThan): a server that serves it ends the
// initial events with a bookmark annotated k8s.io/initial-events-end.
func (d *doctor) checkWatchList(ctx context.Context) {
	q := url.Values{}
	q.Set("sendInitialEvents", "true")
	q.Set("resourceVersionMatch", string(metav1.ResourceVersionMatchNotOlderThan))
	r := d.probe(ctx, q, watchListTimeout)
	d.headers(r)
	if r.status == http.StatusBadRequest || r.status == http.StatusUnprocessableEntity {
		return // an older server refuses the parameters: not served
	}
	if d.probeFailed(r, "WatchList watch") {
		return
	}
	d.rep.Latency.WatchOpen = Seconds(r.open)
	d.m.watchOpen = r.open
	switch {
	case r.initialEnd:
		d.rep.Server.WatchList = true
		d.rep.Server.Bookmarks = true
		d.rep.Server.BookmarkAfter = Seconds(r.after)
	case r.stalled:
		d.rep.Watch.Stalled = true
		d.rep.Watch.Error = fmt.Sprintf("the WatchList watch delivered nothing within %s, not even its initial-events-end bookmark, and the server's %s timeout never closed it: the watch path is stalled", watchListTimeout+probeSlack, watchListTimeout)
	}
}

// checkBookmarks watches from a list's resourceVersion with
// allowWatchBookmarks: the server sends a bookmark 2s before the watch's
// timeout (and about once a minute), which is what keeps a quiet
// kubespawn watch from counting as idle.
func (d *doctor) checkBookmarks(ctx context.Context) {
	rctx, cancel := d.req(ctx)
	list, err := d.client.CoreV1().Pods(d.o.namespace).List(rctx, metav1.ListOptions{LabelSelector: labelRun + "=" + d.runID, Limit: 1})
	cancel()
	if err != nil {
		if apierrors.IsForbidden(err) {
			d.find(sevFail, "watch", fmt.Sprintf("no permission to list pods in namespace %s (verb list missing)", d.o.namespace), "grant the spawner's identity list and watch on pods in "+d.o.namespace)
			return
		}
		d.find(sevFail, "watch", fmt.Sprintf("listing pods in %s: %v", d.o.namespace, err), "")
		return
	}
	q := url.Values{}
	q.Set("resourceVersion", list.ResourceVersion)
	r := d.probe(ctx, q, bookmarkTimeout)
	d.headers(r)
	if d.probeFailed(r, "bookmark watch") {
		return
	}
	if d.m.watchOpen == 0 || r.open < d.m.watchOpen {
		d.rep.Latency.WatchOpen, d.m.watchOpen = Seconds(r.open), r.open
	}
	switch {
	case r.bookmark:
		if !d.rep.Server.Bookmarks {
			d.rep.Server.Bookmarks, d.rep.Server.BookmarkAfter = true, Seconds(r.after)
		}
	case r.stalled:
		d.rep.Watch.Stalled = true
		d.rep.Watch.Error = fmt.Sprintf("a watch with a %s timeout was neither closed by the server nor delivered a bookmark within %s: the watch path is stalled", bookmarkTimeout, bookmarkTimeout+probeSlack)
	case r.closed && !d.rep.Server.Bookmarks:
		// The server closed the watch without the pre-timeout bookmark.
	}
}

// proxyHeaderNames are response headers proxies add; the API server sets
// none of them.
var proxyHeaderNames = []string{"Via", "Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Server", "X-Cache", "X-Envoy-Upstream-Service-Time", "X-Amz-Cf-Id", "Cf-Ray"}

// headers records what a probe's response headers say: proxies and API
// priority and fairness.
func (d *doctor) headers(r probeResult) {
	if r.header == nil {
		return
	}
	for _, h := range proxyHeaderNames {
		if v := r.header.Get(h); v != "" {
			d.rep.Watch.ProxyHeaders[h] = v
		}
	}
	for k, v := range r.header {
		if strings.HasPrefix(strings.ToLower(k), "x-envoy-") && len(v) > 0 {
			d.rep.Watch.ProxyHeaders[k] = v[0]
		}
	}
	p := &d.rep.Priority
	if fs := r.header.Get("X-Kubernetes-Pf-Flowschema-Uid"); fs != "" {
		p.Enabled, p.FlowSchemaUID = true, fs
	}
	if pl := r.header.Get("X-Kubernetes-Pf-Prioritylevel-Uid"); pl != "" {
		p.Enabled, p.PriorityLevelUID = true, pl
	}
}

// checkPriority names the flow schema and priority level of the watch,
// when the credentials may read them.
func (d *doctor) checkPriority(ctx context.Context) {
	p := &d.rep.Priority
	if !p.Enabled {
		return
	}
	rctx, cancel := d.req(ctx)
	defer cancel()
	fss, err := d.client.FlowcontrolV1().FlowSchemas().List(rctx, metav1.ListOptions{})
	if err != nil {
		p.Note = "names not read: " + shortErr(err, "list", "flowschemas.flowcontrol.apiserver.k8s.io")
		return
	}
	for _, fs := range fss.Items {
		if string(fs.UID) == p.FlowSchemaUID {
			p.FlowSchema = fs.Name
		}
	}
	pls, err := d.client.FlowcontrolV1().PriorityLevelConfigurations().List(rctx, metav1.ListOptions{})
	if err != nil {
		p.Note = "priority level not read: " + shortErr(err, "list", "prioritylevelconfigurations.flowcontrol.apiserver.k8s.io")
		return
	}
	for _, pl := range pls.Items {
		if string(pl.UID) != p.PriorityLevelUID {
			continue
		}
		p.PriorityLevel, p.PriorityLevelType = pl.Name, string(pl.Spec.Type)
		if l := pl.Spec.Limited; l != nil {
			if l.NominalConcurrencyShares != nil {
				p.NominalConcurrencyShares = *l.NominalConcurrencyShares
			}
			p.LimitResponse = string(l.LimitResponse.Type)
		}
	}
	if p.PriorityLevel == "catch-all" || p.LimitResponse == "Reject" {
		d.find(sevWarn, "priority", fmt.Sprintf("the spawner's watches are in priority level %s (%s, %d shares): under load they are rejected with 429, and kubespawn's probes with them", p.PriorityLevel, p.LimitResponse, p.NominalConcurrencyShares),
			"give the spawner's identity a FlowSchema of its own with a priority level that queues")
	}
}

func shortErr(err error, verb, resource string) string {
	if apierrors.IsForbidden(err) {
		return fmt.Sprintf("no permission to %s %s", verb, resource)
	}
	return err.Error()
}

// checkRateLimit reports the client-side limit of the config.
func (d *doctor) checkRateLimit() {
	rl := &d.rep.RateLimit
	rl.QPS, rl.Burst, rl.Custom = d.cfg.QPS, d.cfg.Burst, d.cfg.RateLimiter != nil
	switch {
	case rl.Custom:
		rl.Effective, rl.ClassOf1000 = "a custom RateLimiter set in the config", never
	case rl.QPS < 0:
		rl.Effective = "none (QPS < 0): the API server's priority and fairness is the limit"
	default:
		qps, burst := rl.QPS, rl.Burst
		what := "set in the config"
		if qps == 0 {
			qps, what = rest.DefaultQPS, "client-go's default: the config sets none"
		}
		burst = cmp.Or(burst, rest.DefaultBurst)
		rl.ClassOf1000 = Seconds(time.Duration(float64(max(0, 1000-burst)) / float64(qps) * float64(time.Second)))
		rl.Effective = fmt.Sprintf("%g requests/s, burst %d (%s); 1,000 creates at once would take %s", qps, burst, what, rl.ClassOf1000)
		if rl.QPS == 0 {
			rl.Effective += "; reflector.NewFactory lifts it (no limit: priority and fairness decides), a clientset built from the config keeps it"
		} else if rl.ClassOf1000 > Seconds(20*time.Second) {
			d.find(sevWarn, "rate-limit", fmt.Sprintf("the config's client-side limit (%g/s, burst %d) holds a class of 1,000 starting at once to %s of creates", qps, burst, rl.ClassOf1000),
				"leave QPS unset (reflector.NewFactory then leaves the limit to priority and fairness) or raise it deliberately")
		}
	}
}

// canaryOps are the calls of one canary kind.
type canaryOps struct {
	resource, group string
	list            func(ctx context.Context, opts metav1.ListOptions) (string, error)
	watch           func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	create          func(ctx context.Context, meta metav1.ObjectMeta) (metav1.Object, error)
	delete          func(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// listVersion is a list call that returns only the list's resourceVersion:
// where the canary's watch starts.
func listVersion[L interface{ GetResourceVersion() string }](list func(context.Context, metav1.ListOptions) (L, error)) func(context.Context, metav1.ListOptions) (string, error) {
	return func(ctx context.Context, opts metav1.ListOptions) (string, error) {
		l, err := list(ctx, opts)
		if err != nil {
			return "", err
		}
		return l.GetResourceVersion(), nil
	}
}

func (d *doctor) canaryOps() canaryOps {
	ns := d.o.canaryNamespace
	if d.o.canaryKind == kindLease {
		c := d.client.CoordinationV1().Leases(ns)
		return canaryOps{resource: "leases", group: "coordination.k8s.io",
			list:  listVersion(c.List),
			watch: c.Watch,
			create: func(ctx context.Context, meta metav1.ObjectMeta) (metav1.Object, error) {
				holder := "kubespawn-doctor"
				return c.Create(ctx, &coordinationv1.Lease{ObjectMeta: meta, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{})
			},
			delete: c.Delete}
	}
	c := d.client.CoreV1().ConfigMaps(ns)
	return canaryOps{resource: "configmaps",
		list:  listVersion(c.List),
		watch: c.Watch,
		create: func(ctx context.Context, meta metav1.ObjectMeta) (metav1.Object, error) {
			return c.Create(ctx, &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"purpose": "kubespawn doctor canary: created, watched and deleted at once"}}, metav1.CreateOptions{})
		},
		delete: c.Delete}
}

// missingVerbs asks the API server which of the canary's verbs the
// credentials lack, before anything is created: a canary that could be
// created but not deleted would be left behind.
func (d *doctor) missingVerbs(ctx context.Context, ops canaryOps) []string {
	var missing []string
	for _, verb := range []string{"create", "delete", "list", "watch"} {
		rctx, cancel := d.req(ctx)
		r, err := d.client.AuthorizationV1().SelfSubjectAccessReviews().Create(rctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: d.o.canaryNamespace, Verb: verb, Group: ops.group, Resource: ops.resource,
			}},
		}, metav1.CreateOptions{})
		cancel()
		if err != nil {
			continue // cannot ask: the calls themselves will say
		}
		if !r.Status.Allowed {
			missing = append(missing, verb)
		}
	}
	return missing
}

// checkCanary creates a small object, times its delivery by a watch
// opened before the create from the list's resourceVersion, and deletes
// it with a UID precondition. It returns an error only when the
// namespace turns out not to exist.
func (d *doctor) checkCanary(ctx context.Context) error {
	c := &d.rep.Canary
	ops := d.canaryOps()
	ns := d.o.canaryNamespace
	resource := ops.resource
	if ops.group != "" {
		resource += "." + ops.group
	}
	if missing := d.missingVerbs(ctx, ops); len(missing) > 0 {
		c.MissingVerbs = missing
		c.Error = fmt.Sprintf("no permission to %s %s in namespace %s (verb %s missing): read-only checks only", strings.Join(missing, ", "), resource, ns, strings.Join(missing, ", "))
		d.find(sevFail, "canary", c.Error, fmt.Sprintf("grant the doctor's identity create, delete, list and watch on %s in %s, or run it without --canary-namespace", resource, ns))
		return nil
	}
	forbidden := func(verb string, err error) bool {
		if !apierrors.IsForbidden(err) {
			return false
		}
		c.MissingVerbs = append(c.MissingVerbs, verb)
		c.Error = fmt.Sprintf("no permission to %s %s in namespace %s (verb %s missing): read-only checks only", verb, resource, ns, verb)
		d.find(sevFail, "canary", c.Error, fmt.Sprintf("grant the doctor's identity create, delete, list and watch on %s in %s", resource, ns))
		return true
	}
	sel := labelRun + "=" + d.runID
	rctx, cancel := d.req(ctx)
	rv, err := ops.list(rctx, metav1.ListOptions{LabelSelector: sel, Limit: 1})
	cancel()
	if err != nil {
		if !forbidden("list", err) {
			c.Error = fmt.Sprintf("listing %s in %s: %v", resource, ns, err)
			d.find(sevFail, "canary", c.Error, "")
		}
		return nil
	}
	// The watch lives until the canary is delivered or its time is up;
	// its timeoutSeconds is long, so that it is not one of the short
	// watches (probes) a proxy may treat apart.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wt := int64(max(60*time.Second, d.o.canaryTimeout+d.o.requestTimeout).Seconds())
	octx, ocancel := d.req(wctx)
	w, err := openWatch(octx, wctx, ops, metav1.ListOptions{LabelSelector: sel, ResourceVersion: rv, TimeoutSeconds: &wt})
	ocancel()
	if err != nil {
		if !forbidden("watch", err) {
			c.Error = fmt.Sprintf("watching %s in %s: %v", resource, ns, err)
			d.find(sevFail, "canary", c.Error, "")
		}
		return nil
	}
	defer w.Stop()

	rctx, cancel = d.req(ctx)
	t0 := time.Now()
	obj, err := ops.create(rctx, metav1.ObjectMeta{GenerateName: "kubespawn-doctor-", Labels: map[string]string{labelRun: d.runID}})
	t1 := time.Now()
	cancel()
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: namespace %q does not exist", errCannotRun, ns)
		}
		if !forbidden("create", err) {
			c.Error = fmt.Sprintf("creating the canary in %s: %v", ns, err)
			d.find(sevFail, "canary", c.Error, "")
		}
		return nil
	}
	d.rep.Mode = "read-write"
	c.Ran, c.Name, c.UID, c.Write = true, obj.GetName(), string(obj.GetUID()), Seconds(t1.Sub(t0))
	// Whatever happens next, the canary is deleted (even after the run's
	// bound), with its UID as precondition.
	defer d.deleteCanary(context.WithoutCancel(ctx), ops, obj.GetName(), obj.GetUID())

	timer := time.NewTimer(d.o.canaryTimeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				c.Error = "the watch ended before it delivered the canary"
				d.find(sevFail, "canary", c.Error, "")
				return nil
			}
			if ev.Type == watch.Error {
				c.Error = fmt.Sprintf("the watch reported an error: %v", apierrors.FromObject(ev.Object))
				d.find(sevFail, "canary", c.Error, "")
				return nil
			}
			m, err := metaOf(ev.Object)
			if err != nil || m.GetUID() != obj.GetUID() {
				continue
			}
			t2 := time.Now()
			c.Delivered, c.Delivery, c.AfterWrite = true, Seconds(t2.Sub(t0)), Seconds(max(0, t2.Sub(t1)))
			return nil
		case <-timer.C:
			c.Error = fmt.Sprintf("created at resourceVersion %s, not delivered by a watch opened before the create within %s: the watch path is stalled", obj.GetResourceVersion(), d.o.canaryTimeout)
			return nil
		case <-ctx.Done():
			c.Error = fmt.Sprintf("not delivered within the run's bound (%s): the watch path is stalled", d.o.timeout)
			return nil
		}
	}
}

// openWatch opens w with a deadline on its response headers (octx) and
// the lifetime lctx: client-go's Watch uses one context for both.
func openWatch(octx, lctx context.Context, ops canaryOps, opts metav1.ListOptions) (watch.Interface, error) {
	type res struct {
		w   watch.Interface
		err error
	}
	ch := make(chan res, 1)
	wctx, cancel := context.WithCancel(lctx)
	go func() {
		w, err := ops.watch(wctx, opts)
		ch <- res{w, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			cancel()
			return nil, r.err
		}
		return &cancelWatch{Interface: r.w, cancel: cancel}, nil
	case <-octx.Done():
		cancel()
		r := <-ch // returns promptly once its context is cancelled
		if r.w != nil {
			r.w.Stop()
		}
		return nil, fmt.Errorf("no response headers within the request timeout: %w", octx.Err())
	}
}

type cancelWatch struct {
	watch.Interface
	cancel context.CancelFunc
}

func (c *cancelWatch) Stop() { c.Interface.Stop(); c.cancel() }

func metaOf(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", obj)
	}
	return m, nil
}

func (d *doctor) deleteCanary(ctx context.Context, ops canaryOps, name string, uid types.UID) {
	rctx, cancel := d.req(ctx)
	defer cancel()
	err := ops.delete(rctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err == nil || apierrors.IsNotFound(err) {
		d.rep.Canary.Deleted = true
		return
	}
	d.find(sevFail, "canary", fmt.Sprintf("the canary %s/%s (uid %s) was not deleted: %v", d.o.canaryNamespace, name, uid, err),
		fmt.Sprintf("delete it: kubectl -n %s delete %s %s", d.o.canaryNamespace, ops.resource, name))
}

// verdict turns the measurements into the findings and the bounds.
func (d *doctor) verdict() {
	rep := d.rep
	w := rep.Watch
	d.m.http2 = w.HTTP2
	d.m.proxied = len(w.ProxyHeaders) > 0 || w.ClientProxy != ""
	d.m.probesRefused = w.Refused > 0
	d.m.restTimeout = d.cfg.Timeout
	d.m.readIdle, d.m.pingTimeout = http2Health(os.Getenv)

	var f []Finding
	add := func(sev, check, msg, fix string) {
		f = append(f, Finding{Severity: sev, Check: check, Message: msg, Fix: fix})
	}
	c := rep.Canary
	switch {
	case c.Ran && !c.Delivered:
		add(sevFail, "canary", fmt.Sprintf("%s %s %s", c.Kind, c.Name, c.Error),
			"find what holds watch responses back between the spawner and the API server (a proxy, a load balancer's idle timeout, an overloaded API server); kubespawn finds such a stall within the bounds below and relists, a plain informer does not")
	case c.Delivered && time.Duration(c.AfterWrite) > probeGrace(d.eff):
		add(sevFail, "latency", fmt.Sprintf("the canary reached the watch %s after its write, past kubespawn's probe grace (%s): healthy watches would be taken for stalled", c.AfterWrite, probeGrace(d.eff)),
			"find the watch delay (API server load, its watch cache); a longer ProbeInterval lengthens the grace (ProbeInterval/2, at most 2s)")
	case c.Delivered && time.Duration(c.AfterWrite) > d.eff.CanaryWindow:
		add(sevWarn, "latency", fmt.Sprintf("the canary reached the watch %s after its write, past CanaryWindow (%s): every spawner write would cost a probe", c.AfterWrite, d.eff.CanaryWindow), "raise --canary-window (reflector.Options.CanaryWindow)")
	}
	if w.Stalled {
		add(sevFail, "watch", w.Error, "find what holds watch responses back (a proxy, a load balancer, the API server); the watch path is silent now")
	} else if w.Refused > 0 {
		add(sevFail, "watch", fmt.Sprintf("%d of %d short watches (kubespawn's probes are such) were refused: %s", w.Refused, w.Probes, w.Error),
			"kubespawn then stays degraded (probes_failing) and finds a stall only by its idle rule or audit: give the spawner's identity a FlowSchema and priority level of its own, or raise the level's shares")
	} else if w.Error != "" && !slices.ContainsFunc(d.findings, func(x Finding) bool { return x.Check == "watch" }) {
		add(sevWarn, "watch", w.Error, "")
	}
	if !w.Stalled && w.Refused == 0 && d.m.watchOpen > 0 && d.m.watchOpen+probeServerTimeout > probeDeadline(d.eff) {
		add(sevFail, "latency", fmt.Sprintf("a watch takes %s to open: kubespawn's probes (1s on the server) would miss their %s deadline and quiet watches be taken for hung", roundDuration(d.m.watchOpen), probeDeadline(d.eff)),
			"shorten the path to the API server; the probe deadline grows with StallTimeout up to 3s (StallTimeout 10s or more)")
	}
	if !w.Stalled && w.Refused == 0 && w.Error == "" && !rep.Server.Bookmarks && d.eff.IdleTimeout > 0 {
		add(sevFail, "server", "no bookmark arrived on a watch that asked for them (allowWatchBookmarks): kubespawn's idle rule would restart quiet watches every IdleTimeout",
			"set --idle-timeout (reflector.Options.IdleTimeout) negative, or find what drops bookmarks")
	}
	if w.Protocol == "HTTP/1.1" {
		add(sevWarn, "protocol", "watches run over HTTP/1.1: nothing below the application notices a dead connection, so a plain informer would serve a frozen cache forever (kubespawn's probes do not depend on the protocol)",
			"use HTTP/2 end to end where possible (a proxy that terminates TLS often downgrades)")
	}
	if len(w.ProxyHeaders) > 0 || w.ClientProxy != "" {
		add(sevWarn, "protocol", "a proxy is in the path: an HTTP/2 ping checks only the hop to it, and it may hold streams back or end idle ones", "")
	}
	d.findings = append(d.findings, f...)
	rep.Verdict.Findings = d.findings
	if rep.Verdict.Findings == nil {
		rep.Verdict.Findings = []Finding{}
	}

	ks := kubespawnDetection(d.eff, d.m)
	inf := informerDetection(d.m)
	loop := loopDetection()
	rep.Verdict.Detections = slices.Concat(ks, inf, loop)
	rep.Verdict.Kubespawn = max(worst(ks, caseStreamDies), worst(ks, caseAllWatches))
	if worst(ks, caseStreamDies) < 0 || worst(ks, caseAllWatches) < 0 {
		rep.Verdict.Kubespawn = never
	}
	rep.Verdict.AfterWrite = worst(ks, caseAfterWrite)
	rep.Verdict.Informer = worst(inf, caseDeadConn)
	rep.Verdict.Loop = worst(loop, caseWatchOnly)
	rep.Verdict.Healthy = !slices.ContainsFunc(rep.Verdict.Findings, func(x Finding) bool { return x.Severity == sevFail })
}
