package main

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubespawn/kubespawn/reflector"
	"github.com/kubespawn/kubespawn/spawner"
)

// TestOwnedJSONAddresses: a Service's answer has its DNS name under the
// cluster domain and the ClusterIP the API server holds for that very
// Service (UID); a headless one, one replaced since, one the read could
// not get leave the ClusterIP out, and the start's answer is still given.
func TestOwnedJSONAddresses(t *testing.T) {
	svc := func(name, uid, ip string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "users", Name: name, UID: types.UID(uid)}, Spec: corev1.ServiceSpec{ClusterIP: ip}}
	}
	client := fake.NewClientset(svc("web", "u-web", "10.96.0.7"), svc("headless", "u-h", corev1.ClusterIPNone), svc("replaced", "u-new", "10.96.0.9"))
	client.PrependReactor("get", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.GetAction).GetName() == "flaky" {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	f, err := reflector.NewFactoryForClient(client, reflector.Options{})
	require.NoError(t, err)
	defer f.Shutdown()
	s := unitServer(Config{Factory: f, ClusterDomain: "cluster.local"})
	ref := func(kind, name, uid string) spawner.ObjectRef {
		return spawner.ObjectRef{Kind: kind, Namespace: "users", Name: name, UID: types.UID(uid), Created: true}
	}
	got := s.ownedJSON(context.Background(), []spawner.ObjectRef{
		ref(spawner.KindSecret, "creds", "u-s"),
		ref(spawner.KindService, "web", "u-web"),
		ref(spawner.KindService, "headless", "u-h"),
		ref(spawner.KindService, "replaced", "u-old"),
		ref(spawner.KindService, "flaky", "u-f"),
		ref(spawner.KindService, "gone", "u-g"),
	})
	dns := func(name string) string { return name + ".users.svc.cluster.local" }
	assert.Equal(t, []objectJSON{
		{Kind: spawner.KindSecret, Name: "creds", UID: "u-s", Created: true},
		{Kind: spawner.KindService, Name: "web", UID: "u-web", Created: true, ClusterIP: "10.96.0.7", DNSName: dns("web")},
		{Kind: spawner.KindService, Name: "headless", UID: "u-h", Created: true, DNSName: dns("headless")},
		{Kind: spawner.KindService, Name: "replaced", UID: "u-old", Created: true, DNSName: dns("replaced")},
		{Kind: spawner.KindService, Name: "flaky", UID: "u-f", Created: true, DNSName: dns("flaky")},
		{Kind: spawner.KindService, Name: "gone", UID: "u-g", Created: true, DNSName: dns("gone")},
	}, got)
}
