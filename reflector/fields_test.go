//go:build integration

package reflector_test

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/reflector"
)

// TestSelectableFieldsMatchTheAPIServer: the cache evaluates a field-
// selected scope locally (to tell whether an object the API returned is in
// scope) with hand-written copies of the apiserver's selectable fields.
// For every field and operator, the local answer must be the server's, so
// the copies cannot drift silently.
func TestSelectableFieldsMatchTheAPIServer(t *testing.T) {
	t.Parallel()
	ns := cluster.Namespace(t, "fields")
	client := cluster.Client(t)
	ctx := context.Background()

	mk := func(name string, mutate func(*corev1.Pod)) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "example.invalid/app:1"}}, TerminationGracePeriodSeconds: ptr.To[int64](0)}}
		mutate(p)
		status := p.Status
		created, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
		if status.Phase != "" {
			created.Status = status
			_, err = client.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
			require.NoError(t, err)
		}
	}
	mk("plain", func(*corev1.Pod) {})
	mk("on-node", func(p *corev1.Pod) {
		p.Spec.NodeName, p.Spec.RestartPolicy, p.Spec.SchedulerName = "node-a", corev1.RestartPolicyNever, "custom-scheduler"
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.7", PodIPs: []corev1.PodIP{{IP: "10.0.0.7"}}}
	})
	mk("host-net", func(p *corev1.Pod) {
		p.Spec.HostNetwork, p.Spec.ServiceAccountName = true, "default"
		p.Status = corev1.PodStatus{Phase: corev1.PodPending, NominatedNodeName: "node-b"}
	})
	mk("failed", func(p *corev1.Pod) {
		p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
		p.Status = corev1.PodStatus{Phase: corev1.PodFailed}
	})
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pods.Items, 4)
	compare(t, "pods", fieldSets(pods.Items, reflector.PodFieldsForTest), selectedNames(func(o metav1.ListOptions) (runtime.Object, error) {
		return client.CoreV1().Pods(ns).List(ctx, o)
	}))

	mkEvent := func(name, kind, reason, typ, source, controller string) {
		e := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: name},
			InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: ns, Name: "p-" + name, UID: types.UID("uid-" + name), APIVersion: "v1", ResourceVersion: "7", FieldPath: "spec.containers{c}"},
			Reason:         reason, Message: "m", Type: typ, Source: corev1.EventSource{Component: source},
			ReportingController: controller, ReportingInstance: "i", FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
		}
		_, err := client.CoreV1().Events(ns).Create(ctx, e, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	mkEvent("scheduled", "Pod", "Scheduled", corev1.EventTypeNormal, "default-scheduler", "")
	mkEvent("pulled", "Pod", "Pulled", corev1.EventTypeNormal, "kubelet", "")
	mkEvent("backoff", "Pod", "BackOff", corev1.EventTypeWarning, "", "kubelet") // source from reportingController
	mkEvent("node", "Node", "NodeReady", corev1.EventTypeNormal, "kubelet", "")
	evs, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, evs.Items, 4)
	compare(t, "events", fieldSets(evs.Items, reflector.EventFieldsForTest), selectedNames(func(o metav1.ListOptions) (runtime.Object, error) {
		return client.CoreV1().Events(ns).List(ctx, o)
	}))
}

// fieldSets is the cache's selectable fields of each item, computed by
// fieldsOf (one of the package's own functions): compare's local side.
func fieldSets[T any](items []T, fieldsOf func(*T) fields.Set) []fields.Set {
	var sets []fields.Set
	for i := range items {
		sets = append(sets, fieldsOf(&items[i]))
	}
	return sets
}

// selectedNames is compare's server side for one kind: the names of the
// objects list returns for a field selector, as the API server selects
// them.
func selectedNames(list func(metav1.ListOptions) (runtime.Object, error)) func(selector string) ([]string, error) {
	return func(sel string) ([]string, error) {
		l, err := list(metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, err
		}
		var names []string
		err = meta.EachListItem(l, func(o runtime.Object) error {
			m, err := meta.Accessor(o)
			if err != nil {
				return err
			}
			names = append(names, m.GetName())
			return nil
		})
		return names, err
	}
}

// compare checks, for every field of sets and every value it takes (and
// one it never takes), that field=value and field!=value select the same
// objects locally as on the server.
func compare(t *testing.T, what string, sets []fields.Set, server func(selector string) ([]string, error)) {
	t.Helper()
	values := map[string][]string{}
	for _, s := range sets {
		for k, v := range s {
			if !slices.Contains(values[k], v) {
				values[k] = append(values[k], v)
			}
		}
	}
	checked := 0
	for field, vals := range values {
		for _, v := range append(vals, "no-such-value") {
			for _, sel := range []fields.Selector{fields.OneTermEqualSelector(field, v), fields.OneTermNotEqualSelector(field, v)} {
				want, err := server(sel.String())
				require.NoError(t, err, "%s: the apiserver refuses %q: a field the cache claims is not selectable", what, sel)
				var got []string
				for _, s := range sets {
					if sel.Matches(s) {
						got = append(got, s["metadata.name"])
					}
				}
				assert.ElementsMatch(t, want, got, "%s %q: local match differs from the apiserver's", what, sel)
				checked++
			}
		}
	}
	t.Logf("%s: %d selectors over %d fields agree with the apiserver", what, checked, len(values))
	require.Positive(t, checked)
}
