//go:build integration

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/spawner"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	// The tests spend their time waiting for their pods to age on the API
	// server's clock (ageTiers), not on the CPU: unless -parallel is given,
	// let them all wait at once instead of GOMAXPROCS at a time.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "16")
	}
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// env is one test's namespace, a direct admin client and a kubeconfig file
// for the CLI. No scheduler or kubelet runs in this package: pods stay
// Pending and unbound (never scheduled, no status.startTime) unless a test
// plays the kubelet (leak.running), and the API server deletes unbound pods
// at once.
//
// Ages are real. The CLI ages a pod from its creationTimestamp, which the
// API server sets on create and never lets anyone change, on the API
// server's clock: a test makes a pod old by creating it early and waiting
// (ageTiers), never by writing a timestamp.
type env struct {
	t          *testing.T
	ns         string
	direct     kubernetes.Interface
	kubeconfig string
}

// newEnv makes a fresh namespace named after prefix.
func newEnv(t *testing.T, prefix string) *env {
	t.Helper()
	ns := cluster.Namespace(t, prefix)
	return &env{t: t, ns: ns, direct: cluster.Client(t), kubeconfig: testcluster.KubeConfig(t, cluster.Config())}
}

// leak describes a pod as a spawner left it behind.
type leak struct {
	// instance is the spawner instance label; default "default".
	instance string
	// running marks the pod Running with a status.startTime, as a kubelet
	// does once it has started the pod; otherwise the pod is never
	// scheduled, Pending without startTime.
	running bool
	// nodeClock, with running, is how far the clock of the pod's node is
	// off (negative: behind): the kubelet writes status.startTime with it.
	// A node clock behind makes a pod look older than it is, had the CLI
	// trusted startTime.
	nodeClock time.Duration
	labels    map[string]string
	// finalizer keeps the pod from going away once deleted.
	finalizer bool
}

// leak creates a pod labelled as spawner would for user and returns it.
func (e *env) leak(user string, l leak) *corev1.Pod {
	e.t.Helper()
	name, err := spawner.PodName("kubespawn", user)
	require.NoError(e.t, err)
	lbls := maps.Clone(l.labels)
	if lbls == nil {
		lbls = map[string]string{}
	}
	lbls[spawner.LabelManagedBy] = spawner.ManagedByValue
	lbls[spawner.LabelInstance] = cmpOr(l.instance, "default")
	lbls[spawner.LabelKeyHash] = spawner.KeyHash(user)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls, Annotations: map[string]string{spawner.AnnotationKey: user}},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{{Name: "notebook", Image: "example.org/notebook:1"}},
			TerminationGracePeriodSeconds: ptr.To[int64](1),
		},
	}
	if l.finalizer {
		pod.Finalizers = []string{"example.org/hold"}
	}
	pod, err = e.direct.CoreV1().Pods(e.ns).Create(e.t.Context(), pod, metav1.CreateOptions{})
	require.NoError(e.t, err)
	if l.running {
		pod.Status.StartTime = ptr.To(metav1.NewTime(time.Now().Add(l.nodeClock)))
		pod.Status.Phase = corev1.PodRunning
		pod, err = e.direct.CoreV1().Pods(e.ns).UpdateStatus(e.t.Context(), pod, metav1.UpdateOptions{})
		require.NoError(e.t, err)
	}
	return pod
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// leakMany creates n pods for users prefix-0 .. prefix-(n-1).
func (e *env) leakMany(prefix string, n int, l leak) []*corev1.Pod {
	e.t.Helper()
	pods := make([]*corev1.Pod, n)
	for i := range pods {
		pods[i] = e.leak(fmt.Sprintf("%s-%d", prefix, i), l)
	}
	return pods
}

// serverNow is the API server's clock, in whole seconds: the
// creationTimestamp it gives a SelfSubjectReview, which is how the CLI
// reads it too, and the resolution of every pod's creationTimestamp.
func (e *env) serverNow() time.Time {
	e.t.Helper()
	review, err := e.direct.AuthenticationV1().SelfSubjectReviews().Create(e.t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	require.False(e.t, review.CreationTimestamp.IsZero(), "the SelfSubjectReview carries no creationTimestamp")
	return review.CreationTimestamp.Time
}

// waitServerTime polls the API server's clock until it reads at least
// target. It waits for the server's clock, never for a fixed time; the
// deadline only catches a server whose clock stopped.
func (e *env) waitServerTime(target time.Time) {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // tiers are seconds apart
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for e.serverNow().Before(target) {
		require.True(e.t, time.Now().Before(deadline), "the API server's clock did not reach %s", target)
		select {
		case <-tick.C:
		case <-e.t.Context().Done():
			e.t.Fatalf("waiting for the API server's clock: %v", e.t.Context().Err())
		}
	}
}

// tier is pods that ageTiers creates together (create does, with e.leak)
// and the age they must have reached when it returns.
type tier struct {
	age    time.Duration // whole seconds
	create func()
}

// ageTiers creates tiers, which must come oldest first, each once the one
// before it is old enough, and returns when every tier has reached its
// age. Create the youngest tier (age 0) last, right before the sweep.
//
// A tier's age is an exact lower bound of the age the CLI measures in any
// sweep that starts after ageTiers returns: both are whole seconds on the
// API server's clock, and a tier is aged from a server time read after its
// last pod was created, so no rounding can make it look younger. A pod must
// be older than --older-than to be selected: a tier meant to be selected
// needs age >= threshold+1s (past). How much older than its age a tier is
// at a sweep depends on the machine's speed, so a tier that must NOT be
// selected is created as late as possible, with a threshold that leaves
// the run several seconds to spare (see each test).
func (e *env) ageTiers(tiers ...tier) {
	e.t.Helper()
	var ref, target time.Time
	for i, tr := range tiers {
		if i > 0 {
			require.GreaterOrEqual(e.t, tiers[i-1].age, tr.age, "tiers must come oldest first")
			e.waitServerTime(ref.Add(tiers[i-1].age - tr.age))
		}
		tr.create()
		ref = e.serverNow() // every pod of the tier was created at or before it
		if at := ref.Add(tr.age); at.After(target) {
			target = at
		}
	}
	e.waitServerTime(target)
}

// limit is the --older-than and --orphan-min-age of most tests. A young
// tier, created right before a sweep, is not selected unless more than
// limit-1s pass on the API server's clock between its creation and the
// sweep's read of that clock (ages are whole seconds): a stall of several
// seconds of the loaded machine is fine. Old tiers are past(limit).
const limit = 10 * time.Second

// past is the age a tier needs to be selected by threshold d: the CLI
// selects pods older than d, and ages are whole seconds.
func past(d time.Duration) time.Duration { return d + time.Second }

// requireAgeAtLeast checks a table row's AGE column: at least d, as the
// CLI measured it.
func requireAgeAtLeast(t *testing.T, row []string, d time.Duration) {
	t.Helper()
	require.Len(t, row, 6)
	age, err := time.ParseDuration(row[2])
	require.NoError(t, err, "AGE %q of %s", row[2], row[1])
	assert.GreaterOrEqual(t, age, d, "AGE of %s", row[1])
}

// sameObject reports whether a Get of an object whose UID was uid found
// it: not when NotFound, nor when another object now holds the name. Any
// other error fails the test.
func sameObject(t *testing.T, got metav1.Object, err error, uid types.UID) bool {
	t.Helper()
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	return got.GetUID() == uid
}

// present reports whether the API server still has the pod (same UID).
func (e *env) present(p *corev1.Pod) bool {
	e.t.Helper()
	got, err := e.direct.CoreV1().Pods(e.ns).Get(context.Background(), p.Name, metav1.GetOptions{})
	return sameObject(e.t, got, err, p.UID)
}

func (e *env) requirePresent(pods ...*corev1.Pod) {
	e.t.Helper()
	for _, p := range pods {
		require.True(e.t, e.present(p), "pod %s should still exist", p.Name)
	}
}

func (e *env) requireGone(pods ...*corev1.Pod) {
	e.t.Helper()
	for _, p := range pods {
		require.False(e.t, e.present(p), "pod %s should be gone", p.Name)
	}
}

// sweep runs the CLI with --kubeconfig and --namespace of the env
// prepended to args.
func (e *env) sweep(args ...string) (stdout, stderr string, err error) {
	e.t.Helper()
	base := []string{"--kubeconfig", e.kubeconfig, "--namespace", e.ns}
	if !slices.Contains(args, "--instance") && !slices.Contains(args, "--all-instances") {
		base = append(base, "--instance", "default")
	}
	return runCLI(e.t, append(base, args...)...)
}

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, &out, &errOut)
	t.Logf("sweep %s\n%s%serror: %v", strings.Join(args, " "), out.String(), errOut.String(), err)
	return out.String(), errOut.String(), err
}

// sweepRows runs the CLI (sweep), which must succeed, and returns its
// output and its table's rows by pod name.
func (e *env) sweepRows(args ...string) (string, map[string][]string) {
	e.t.Helper()
	out, _, err := e.sweep(args...)
	require.NoError(e.t, err)
	return out, table(e.t, out)
}

// table parses the CLI's table into name -> row fields (NAMESPACE, NAME,
// AGE, PHASE, REASON, ACTION).
func table(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	inTable := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "NAMESPACE" {
			inTable = true
			require.Equal(t, []string{"NAMESPACE", "NAME", "AGE", "PHASE", "REASON", "ACTION"}, f)
			continue
		}
		if strings.Contains(line, "pods matched") { // the summary ends the table
			inTable = false
		}
		if !inTable || len(f) < 6 {
			inTable = false
			continue
		}
		rows[f[1]] = f
	}
	return rows
}

func names(pods ...[]*corev1.Pod) []string {
	var out []string
	for _, ps := range pods {
		for _, p := range ps {
			out = append(out, p.Name)
		}
	}
	return out
}
