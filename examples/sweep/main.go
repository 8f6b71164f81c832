package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/spawner"
)

func main() { os.Exit(exitCode(service.Main(run), os.Stderr)) }

// errUsage marks bad flags (exit status 2), as service.ParseFlags does.
var errUsage = service.ErrUsage

// errDeleteFailed is returned when at least one selected pod could not be
// deleted or confirmed gone (exit status 1).
var errDeleteFailed = errors.New("some deletions failed")

func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "sweep: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "sweep: %v\n", err)
		return 1
	}
}

// options are the command-line flags.
type options struct {
	kubeconfig   string
	namespace    string
	instance     string
	allInstances bool
	selector     string
	olderThan    time.Duration
	nameContains string
	orphansFrom  string
	orphanMinAge time.Duration
	// reportClaims lists the claims of keys without a pod; maxClaimAge
	// (which implies it) selects those older than it for deletion.
	reportClaims bool
	maxClaimAge  time.Duration
	pageSize     int64
	delete       bool
	gracePeriod  time.Duration
	timeout      time.Duration
	concurrency  int
	// requestTimeout is SweepPolicy.RequestTimeout: 0 is the library's
	// default, and the library validates it.
	requestTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, labels.Selector, error) {
	o := &options{}
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config)")
	fs.StringVar(&o.namespace, "namespace", "", "namespace to sweep (required)")
	fs.StringVar(&o.instance, "instance", "", "spawner instance whose pods to sweep (label "+spawner.LabelInstance+"); required unless --all-instances")
	fs.BoolVar(&o.allInstances, "all-instances", false, "sweep the pods of every spawner instance in the namespace")
	fs.StringVar(&o.selector, "selector", "", "extra label selector, ANDed with "+spawner.LabelManagedBy+"="+spawner.ManagedByValue+" (e.g. 'tier=free,image!=big')")
	fs.DurationVar(&o.olderThan, "older-than", 0, "select pods older than this Go duration (e.g. 4h, 90m); age from metadata.creationTimestamp, on the API server's clock (never status.startTime: a node's clock)")
	fs.StringVar(&o.nameContains, "name-contains", "", "only pods whose name contains this string")
	fs.StringVar(&o.orphansFrom, "orphans-from", "", "URL answering the JSON list of pod names the service knows; pods it does not list (and older than --orphan-min-age) are orphans")
	fs.DurationVar(&o.orphanMinAge, "orphan-min-age", 10*time.Minute, "with --orphans-from: younger pods are never orphans (they may be starting); use at least the service's start timeout. With --report-claims: younger claims are not reported")
	fs.BoolVar(&o.reportClaims, "report-claims", false, "also list the spawner's claims whose key has no pod (a user's home directory that no server uses); they are only reported")
	fs.DurationVar(&o.maxClaimAge, "max-claim-age", 0, "with --delete, delete the claims of keys without a pod older than this (implies --report-claims; 0: never delete a claim). A claim's age runs from its creation, not its last use")
	fs.Int64Var(&o.pageSize, "page-size", 500, "pods per list page")
	fs.BoolVar(&o.delete, "delete", false, "delete the selected pods (default: dry run, delete nothing)")
	fs.DurationVar(&o.gracePeriod, "grace-period", -1, "grace period of the deletes (rounded up to seconds); negative: each pod's terminationGracePeriodSeconds")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for each deleted pod to be confirmed gone")
	fs.IntVar(&o.concurrency, "concurrency", 8, "deletes in flight at once")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 0, "deadline of each request of the scan (the read of the API server's clock, each list page): a stalled API server fails the run instead of hanging it; 0: the library's default")
	if err := service.ParseFlags(fs, args); err != nil {
		return nil, nil, err
	}
	var problems []string
	if o.namespace == "" {
		problems = append(problems, "--namespace is required")
	}
	if o.instance == "" && !o.allInstances {
		problems = append(problems, "--instance is required (or --all-instances): two services sharing a namespace must never sweep each other's pods")
	}
	if o.maxClaimAge != 0 {
		o.reportClaims = true
		if o.allInstances {
			problems = append(problems, "--max-claim-age cannot be combined with --all-instances: claims are deleted for one instance, whose pods the CLI can check")
		}
	}
	if o.olderThan == 0 && o.orphansFrom == "" && !o.reportClaims {
		problems = append(problems, "nothing selects pods: set --older-than, --orphans-from or both (or --report-claims, for claims only)")
	}
	if o.olderThan < 0 {
		problems = append(problems, fmt.Sprintf("--older-than must be positive, got %s", o.olderThan))
	}
	if o.orphanMinAge <= 0 {
		problems = append(problems, fmt.Sprintf("--orphan-min-age must be positive, got %s", o.orphanMinAge))
	}
	if o.orphansFrom != "" {
		if !strings.HasPrefix(o.orphansFrom, "http://") && !strings.HasPrefix(o.orphansFrom, "https://") {
			problems = append(problems, fmt.Sprintf("--orphans-from must be an http:// or https:// URL, got %q", o.orphansFrom))
		}
		if o.allInstances {
			problems = append(problems, "--orphans-from cannot be combined with --all-instances: a service knows only its own instance's pods")
		}
	}
	if o.pageSize <= 0 {
		problems = append(problems, fmt.Sprintf("--page-size must be positive, got %d", o.pageSize))
	}
	if o.timeout <= 0 || o.concurrency <= 0 {
		problems = append(problems, "--timeout and --concurrency must be positive")
	}
	sel, err := labels.Parse(o.selector)
	if err != nil {
		problems = append(problems, fmt.Sprintf("--selector %q: %v", o.selector, err))
	}
	if len(problems) > 0 {
		return nil, nil, service.UsageErrorf("%s", strings.Join(problems, "; "))
	}
	return o, sel, nil
}

// orphans selects the pods the service does not know (--orphans-from).
func orphans(known map[string]bool) func(context.Context, *corev1.Pod) (spawner.SweepReason, error) {
	return func(_ context.Context, pod *corev1.Pod) (spawner.SweepReason, error) {
		if known[pod.Name] {
			return "", nil
		}
		return spawner.SweepReasonOrphan, nil
	}
}

// KnownPods is the answer --orphans-from expects: either this object or a
// bare JSON array of pod names. Namespace and Instance, when present, must
// match --namespace and --instance, so a list from the wrong service never
// turns every pod into an orphan.
type KnownPods struct {
	Namespace string   `json:"namespace,omitempty"`
	Instance  string   `json:"instance,omitempty"`
	Pods      []string `json:"pods"`
}

func fetchKnown(ctx context.Context, url string, o *options) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("--orphans-from: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("--orphans-from: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("--orphans-from %s: reading the answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("--orphans-from %s: HTTP %d: %.200s", url, resp.StatusCode, body)
	}
	var kp KnownPods
	trimmed := strings.TrimSpace(string(body))
	if strings.HasPrefix(trimmed, "[") {
		err = json.Unmarshal(body, &kp.Pods)
	} else {
		err = json.Unmarshal(body, &kp)
		if err == nil && kp.Pods == nil {
			err = errors.New(`no "pods" field`)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--orphans-from %s: expected a JSON array of pod names or {\"pods\": [...]}: %w", url, err)
	}
	if kp.Namespace != "" && kp.Namespace != o.namespace {
		return nil, fmt.Errorf("--orphans-from %s lists the pods of namespace %q, not %q", url, kp.Namespace, o.namespace)
	}
	if kp.Instance != "" && kp.Instance != o.instance {
		return nil, fmt.Errorf("--orphans-from %s lists the pods of instance %q, not %q (--instance)", url, kp.Instance, o.instance)
	}
	known := make(map[string]bool, len(kp.Pods))
	for _, n := range kp.Pods {
		known[n] = true
	}
	return known, nil
}

// run is the whole program, driven by tests with their own args and
// writers. It returns nil on success, an error wrapping errUsage for bad
// flags and errDeleteFailed when a deletion failed.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, labelSel, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg, err := service.RESTConfig(o.kubeconfig)
	if err != nil {
		return fmt.Errorf("API server configuration: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubespawn-sweep"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	policy := spawner.SweepPolicy{
		Namespace:    o.namespace,
		AllInstances: o.allInstances,
		Selector:     labelSel,
		NameContains: o.nameContains,
		MaxAge:       o.olderThan,
		MinAge:       o.orphanMinAge,
		Delete:       o.delete,
		PageSize:     o.pageSize,
		Concurrency:  o.concurrency,
		// Validated by the library (an invalid policy is a usage error).
		RequestTimeout: o.requestTimeout,
		MaxClaimAge:    o.maxClaimAge,
	}
	if o.reportClaims {
		policy.ClaimSelect = claimsWithoutPod(client)
		if policy.MaxAge == 0 && o.orphansFrom == "" {
			policy.Select = noPods // claims only
		}
	}
	if o.orphansFrom != "" {
		// Fetched before listing: a pod started after this answer is
		// younger than --orphan-min-age, so never taken for an orphan.
		known, err := fetchKnown(ctx, o.orphansFrom, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s knows %d pods\n", o.orphansFrom, len(known))
		policy.Select = orphans(known)
	}
	if o.gracePeriod >= 0 {
		policy.GracePeriod = &o.gracePeriod
	}

	// Quiet by default: the table is the output. -v style logging is for
	// the library's own use. No pod cache: a one-shot CLI on a flooded
	// cluster opens no watch, every read is a live GET.
	logger := klog.Background().V(1)
	sp, err := spawner.New(spawner.Options{
		Client:           client,
		Instance:         cmp.Or(o.instance, "sweep-cli"), // with --all-instances it only names the CLI; it filters nothing
		StopTimeout:      o.timeout,
		FallbackInterval: time.Second,
		Logger:           &logger,
	})
	if err != nil {
		return service.UsageErrorf("%v", err)
	}
	res, sweepErr := sp.Sweep(ctx, policy)
	failed := len(res.Failed) + countFailed(res.Objects) + countFailed(res.Claims)
	if sweepErr != nil && failed == 0 && len(res.Deleted) == 0 && countDeleted(res.Objects)+countDeleted(res.Claims) == 0 {
		if errors.Is(sweepErr, spawner.ErrInvalidArgument) {
			return service.UsageErrorf("%v", sweepErr) // the policy the flags make, refused before any API request
		}
		return sweepErr // a list failed and nothing was deleted: no table
	}
	report(stdout, o, res)
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d pods, %d objects and %d claims not deleted (see the tables)", errDeleteFailed, len(res.Failed), len(res.Selected), countFailed(res.Objects), countFailed(res.Claims))
	}
	return sweepErr // nil, or a list that failed after deletions (shown)
}

// noPods selects no pod: with --report-claims alone, the sweep is of
// claims (and of owned objects whose pod is gone).
func noPods(context.Context, *corev1.Pod) (spawner.SweepReason, error) { return "", nil }

// reasonNoPod: a claim whose key has no pod.
const reasonNoPod spawner.SweepReason = "no_pod"

// claimsWithoutPod reports a claim whose key has no pod on the API server:
// none of the claim's instance with its key hash and key, found by label
// with a live LIST, so that pod names (a service's NamePrefix) do not
// matter. The CLI has no user table: a user who merely stopped is
// reported too. The library asks again, under the key's lock, just before
// it deletes a claim.
func claimsWithoutPod(client kubernetes.Interface) func(context.Context, *corev1.PersistentVolumeClaim) (spawner.SweepReason, error) {
	return func(ctx context.Context, claim *corev1.PersistentVolumeClaim) (spawner.SweepReason, error) {
		key := claim.Annotations[spawner.AnnotationKey]
		if key == "" {
			return reasonNoPod, nil // no key: no pod can be its (and the library never deletes it)
		}
		sel := labels.SelectorFromSet(labels.Set{spawner.LabelManagedBy: spawner.ManagedByValue,
			spawner.LabelInstance: claim.Labels[spawner.LabelInstance], spawner.LabelKeyHash: spawner.KeyHash(key)})
		pods, err := client.CoreV1().Pods(claim.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return "", err
		}
		for _, p := range pods.Items {
			if p.Annotations[spawner.AnnotationKey] == key {
				return "", nil
			}
		}
		return reasonNoPod, nil
	}
}

func countFailed(objs []spawner.SweptObject) int {
	n := 0
	for _, o := range objs {
		if o.Err != nil {
			n++
		}
	}
	return n
}

func countDeleted(objs []spawner.SweptObject) int {
	n := 0
	for _, o := range objs {
		if o.Deleted {
			n++
		}
	}
	return n
}

// reasonLabel is a reason as the table shows it.
func reasonLabel(r spawner.SweepReason) string {
	if r == spawner.SweepReasonMaxAge {
		return "too-old"
	}
	return string(r)
}

type row struct {
	pod    spawner.SweptPod
	phase  string
	reason string
	action string
}

func report(w io.Writer, o *options, res spawner.SweepResult) {
	scope := "instance " + o.instance
	if o.allInstances {
		scope = "all instances"
	}
	terminating := 0
	for _, s := range res.Skipped {
		if s.Reason == "terminating" {
			terminating++
		}
	}
	fmt.Fprintf(w, "scanned %d kubespawn pods in namespace %s (%s), %d already terminating\n", res.Scanned, o.namespace, scope, terminating)
	reportPods(w, res)
	reportObjects(w, res)
	if o.reportClaims {
		reportClaims(w, res)
	}
}

func reportPods(w io.Writer, res spawner.SweepResult) {
	if len(res.Selected) == 0 {
		fmt.Fprintln(w, "no pods matched")
		return
	}
	status := map[types.UID]string{}
	for _, p := range res.Deleted {
		status[p.UID] = "deleted"
	}
	for _, p := range res.Failed {
		status[p.UID] = "failed: " + p.Err.Error()
	}
	rows := make([]row, 0, len(res.Selected))
	for _, p := range res.Selected {
		r := row{pod: p, phase: string(p.Phase), reason: reasonLabel(p.Reason), action: "would-delete"}
		if r.phase == "" {
			r.phase = "Unknown"
		}
		if !res.DryRun {
			r.action = cmp.Or(status[p.UID], "failed: no result")
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(strings.Compare(a.pod.Namespace, b.pod.Namespace), strings.Compare(a.pod.Name, b.pod.Name))
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tAGE\tPHASE\tREASON\tACTION")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.pod.Namespace, r.pod.Name, duration.HumanDuration(r.pod.Age), r.phase, r.reason, r.action)
	}
	tw.Flush()
	dry := "no"
	if res.DryRun {
		dry = "yes"
	}
	fmt.Fprintf(w, "%d pods matched, %d deleted, %d failed (dry run: %s)\n", len(res.Selected), len(res.Deleted), len(res.Failed), dry)
	if res.DryRun {
		fmt.Fprintln(w, "dry run: nothing was deleted; add --delete to delete these pods")
	}
}

// action is what was done with an object or claim a sweep found.
func action(so spawner.SweptObject, dryRun bool) string {
	switch {
	case so.Deleted:
		return "deleted"
	case so.Err != nil:
		return "failed: " + so.Err.Error()
	case so.Selected && dryRun:
		return "would-delete"
	case so.Selected:
		return "failed: no result"
	case so.Kind == spawner.KindClaim && so.Reason != reasonNoPod:
		return "kept:" + string(so.Reason) // selected, then left alone under its key's lock (in_use, busy, gone, ...)
	default:
		return "report"
	}
}

func sortObjects(objs []spawner.SweptObject) []spawner.SweptObject {
	objs = slices.Clone(objs)
	slices.SortFunc(objs, func(a, b spawner.SweptObject) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Name, b.Name))
	})
	return objs
}

// reportObjects lists the owned objects (Services, Secrets, ConfigMaps)
// whose pod is gone: the garbage collector has not collected them.
// --delete deletes them, whatever their age (their pod is proven gone).
func reportObjects(w io.Writer, res spawner.SweepResult) {
	if len(res.Objects) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tAGE\tACTION")
	for _, so := range sortObjects(res.Objects) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", so.Kind, so.Name, duration.HumanDuration(so.Age), action(so, res.DryRun))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d objects whose pod is gone, %d deleted, %d failed (dry run: %s)\n", len(res.Objects), countDeleted(res.Objects), countFailed(res.Objects), yesNo(res.DryRun))
}

// reportClaims lists the claims of keys without a pod: reported; only
// those older than --max-claim-age are deleted, with --delete.
func reportClaims(w io.Writer, res spawner.SweepResult) {
	selected := 0
	for _, c := range res.Claims {
		if c.Selected || c.Deleted {
			selected++
		}
	}
	if len(res.Claims) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CLAIM\tAGE\tREASON\tACTION\tKEY")
		for _, so := range sortObjects(res.Claims) {
			// Every claim here was reported for its key having no pod;
			// a skip reason (kept:...) is in ACTION.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", so.Name, duration.HumanDuration(so.Age), reasonNoPod, action(so, res.DryRun), so.Key)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "%d claims of keys without a pod, %d older than --max-claim-age, %d deleted, %d failed (dry run: %s)\n",
		len(res.Claims), selected, countDeleted(res.Claims), countFailed(res.Claims), yesNo(res.DryRun))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
