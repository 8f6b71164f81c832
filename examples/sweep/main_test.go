package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/testcluster"
	"github.com/kubespawn/kubespawn/spawner"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) { testcluster.Main(m, &cluster) }

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

func newEnv(t *testing.T) *env { return newNamedEnv(t, "") }

// newNamedEnv uses namespace name (generated if empty).
func newNamedEnv(t *testing.T, name string) *env {
	t.Helper()
	require.NotNil(t, cluster, "testcluster did not start")
	direct, err := kubernetes.NewForConfig(cluster.Config())
	require.NoError(t, err)
	meta := metav1.ObjectMeta{Name: name}
	if name == "" {
		meta.GenerateName = "sweep-"
	}
	ns, err := direct.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: meta}, metav1.CreateOptions{})
	require.NoError(t, err)
	e := &env{t: t, ns: ns.Name, direct: direct, kubeconfig: writeKubeconfig(t, cluster.Config())}
	// No test leaves pods behind: what a test kept on purpose (dry runs,
	// pods that must survive) is removed here, finalizers first. No
	// namespace controller runs, so pods are deleted by hand.
	t.Cleanup(func() {
		ctx := context.Background()
		pods, err := direct.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		if assert.NoError(t, err) {
			for _, p := range pods.Items {
				if len(p.Finalizers) > 0 {
					p.Finalizers = nil
					_, err := direct.CoreV1().Pods(e.ns).Update(ctx, &p, metav1.UpdateOptions{})
					assert.NoError(t, err)
				}
			}
		}
		assert.NoError(t, direct.CoreV1().Pods(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{}))
		left, err := direct.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		if assert.NoError(t, err) {
			assert.Empty(t, left.Items, "pods left behind in %s", e.ns)
		}
		_ = direct.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{})
	})
	return e
}

// writeKubeconfig writes a kubeconfig file for cfg (host, CA, bearer
// token) and returns its path.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
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
	return runCLI(e.t, append([]string{"--kubeconfig", e.kubeconfig, "--namespace", e.ns}, args...)...)
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
