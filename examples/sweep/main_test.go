package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/spawner"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}

// env is one test's namespace, a direct admin client and a kubeconfig file
// for the CLI. No scheduler or kubelet runs in this package: pods stay
// Pending and unbound (never scheduled, no status.startTime) unless a test
// sets status.startTime itself, and the API server deletes unbound pods at
// once.
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
	// startedAgo, if positive, sets status.startTime that long ago (as a
	// kubelet would have when the pod started); zero leaves the pod never
	// scheduled, without startTime.
	startedAgo time.Duration
	labels     map[string]string
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
	if l.startedAgo > 0 {
		pod.Status.StartTime = ptr.To(metav1.NewTime(time.Now().Add(-l.startedAgo)))
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

// present reports whether the API server still has the pod (same UID).
func (e *env) present(p *corev1.Pod) bool {
	e.t.Helper()
	got, err := e.direct.CoreV1().Pods(e.ns).Get(context.Background(), p.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(e.t, err)
	return got.UID == p.UID
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
	t.Logf("sweep %s\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	return out.String(), errOut.String(), err
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
