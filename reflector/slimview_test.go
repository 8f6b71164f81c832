package reflector_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubespawn/kubespawn/internal/benchpod"
	"github.com/kubespawn/kubespawn/internal/slim"
	"github.com/kubespawn/kubespawn/reflector"
)

// TestCachesServeTheSlimViewByDefault: default options give slim pods from
// the cache and from the API server alike; FullPods gives full pods
// without managedFields.
func TestCachesServeTheSlimViewByDefault(t *testing.T) {
	t.Parallel()
	for _, full := range []bool{false, true} {
		t.Run("FullPods="+strconv.FormatBool(full), func(t *testing.T) {
			a, b := benchpod.Realistic("users", 1), benchpod.Realistic("users", 2)
			client := fake.NewClientset(a)
			f, err := reflector.NewFactoryForClient(client, reflector.Options{ProbeInterval: -1, FullPods: full})
			require.NoError(t, err)
			defer f.Shutdown()
			pods, err := f.Pods(reflector.Scope{Namespaces: []string{"users"}})
			require.NoError(t, err)
			f.Start(t.Context())
			require.NoError(t, pods.WaitForSync(t.Context()))
			check := func(got *corev1.Pod, want *corev1.Pod) {
				t.Helper()
				assert.Nil(t, got.ManagedFields)
				if full {
					assert.Equal(t, want.Spec.Containers[0].Env, got.Spec.Containers[0].Env)
					assert.Contains(t, got.Annotations, corev1.LastAppliedConfigAnnotation)
				} else {
					assert.Equal(t, slim.Pod(want), got)
				}
			}
			got, src, err := pods.Get(t.Context(), "users", a.Name)
			require.NoError(t, err)
			assert.Equal(t, reflector.SourceCache, src)
			check(got, a)
			list, _, err := pods.List(t.Context(), "", nil)
			require.NoError(t, err)
			require.Len(t, list, 1)
			check(list[0], a)

			// A stopped cache answers from the API server, through the
			// same transform.
			_, err = client.CoreV1().Pods("users").Create(t.Context(), b, metav1.CreateOptions{})
			require.NoError(t, err)
			f.Shutdown()
			got, src, err = pods.Get(t.Context(), "users", b.Name)
			require.NoError(t, err)
			assert.Equal(t, reflector.SourceAPI, src)
			check(got, b)
			list, src, err = pods.List(t.Context(), "", nil)
			require.NoError(t, err)
			assert.Equal(t, reflector.SourceAPI, src)
			require.Len(t, list, 2)
			for _, p := range list {
				want := a
				if p.Name == b.Name {
					want = b
				}
				check(p, want)
			}
			_, _, err = pods.Get(t.Context(), "users", "nobody")
			require.True(t, apierrors.IsNotFound(err))
		})
	}
}
