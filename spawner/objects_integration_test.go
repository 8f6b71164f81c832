//go:build integration

package spawner

// Claims and owned objects against the real API server. The package's
// cluster runs no controller-manager, so an object found gone there was
// deleted by the spawner; gcCluster runs the garbage collector and the
// claim protection controller, for what they do.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/podsim"
	"github.com/kubespawn/kubespawn/reflector"
)

func homeClaim(name, size string, modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolumeClaim {
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "home"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: modes,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

// withClaim mounts claim in the request's pod, as a user's home.
func withClaim(req Request, claim *corev1.PersistentVolumeClaim) Request {
	req.Claims = append(req.Claims, claim)
	req.Spec.Volumes = append(req.Spec.Volumes, corev1.Volume{Name: "home",
		VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name}}})
	return req
}

// startWithHome starts key's pod with a 1Gi home claim named claim and
// requires it to succeed: where the tests of what becomes of a claim
// afterwards begin.
func (e *ienv) startWithHome(t *testing.T, key, claim string) *Result {
	t.Helper()
	res, err := e.sp.Start(t.Context(), withClaim(e.request(key, ""), homeClaim(claim, "1Gi")))
	require.NoError(t, err)
	return res
}

// startAndStopWithHome is startWithHome followed by a Stop: the claim stays
// behind, as it does between a user's sessions, and the next start of the
// key meets it.
func (e *ienv) startAndStopWithHome(t *testing.T, key, claim string) *Result {
	t.Helper()
	res := e.startWithHome(t, key, claim)
	e.stop(t, res.Name)
	return res
}

func (e *ienv) claim(t *testing.T, name string) (*corev1.PersistentVolumeClaim, error) {
	t.Helper()
	return e.direct.CoreV1().PersistentVolumeClaims(e.ns).Get(context.Background(), name, metav1.GetOptions{})
}

// noPod asserts the API server has no pod of that name: a start that
// failed on a claim created none.
func (e *ienv) noPod(t *testing.T, name string) {
	t.Helper()
	_, err := e.direct.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "pod %s exists (err %v)", name, err)
}

// objectGone asserts, at once, that the API server has no object of kind
// and name: nothing else deletes it on the package's cluster.
func (e *ienv) objectGone(t *testing.T, kind, name string) {
	t.Helper()
	_, err := kindAPI(e.direct, kind).get(context.Background(), e.ns, name)
	require.True(t, apierrors.IsNotFound(err), "%s %s still on the API server (err %v)", kind, name, err)
}

func TestIntegrationClaimCreatedKeptAcrossStopsAndAdopted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	req := withClaim(e.request("alice", ""), homeClaim("claim-alice", "1Gi"))
	res, err := e.sp.Start(t.Context(), req)
	require.NoError(t, err)
	require.Len(t, res.Claims, 1)
	first := res.Claims[0]
	assert.True(t, first.Created)
	assert.Equal(t, KindClaim, first.Kind)
	c, err := e.claim(t, "claim-alice")
	require.NoError(t, err)
	assert.Equal(t, first.UID, c.UID)
	assert.Equal(t, "home", c.Labels["app"], "the request's labels")
	assert.Equal(t, KeyHash("alice"), c.Labels[LabelKeyHash])
	assert.Equal(t, "it", c.Labels[LabelInstance])
	assert.Equal(t, "alice", c.Annotations[AnnotationKey])
	assert.Empty(t, c.OwnerReferences, "a claim outlives its pods: no owner")

	e.stop(t, res.Name)
	c, err = e.claim(t, "claim-alice")
	require.NoError(t, err, "Stop never deletes a claim")
	assert.Nil(t, c.DeletionTimestamp)

	// Growing it is the one change a claim takes, and only once bound (no
	// volume binds here): the API server's refusal is the error, and no
	// pod is created.
	_, err = e.sp.Start(t.Context(), withClaim(e.request("alice", ""), homeClaim("claim-alice", "2Gi")))
	require.ErrorIs(t, err, ErrClaimIncompatible)
	assert.Contains(t, err.Error(), "refused to expand it")
	e.noPod(t, res.Name)

	// The next start of the key adopts the same claim (KubeSpawner #937:
	// never a new, empty one); a smaller request takes it as it is.
	res, err = e.sp.Start(t.Context(), withClaim(e.request("alice", ""), homeClaim("claim-alice", "500Mi")))
	require.NoError(t, err)
	require.Len(t, res.Claims, 1)
	assert.False(t, res.Claims[0].Created)
	assert.Equal(t, first.UID, res.Claims[0].UID)
	c, err = e.claim(t, "claim-alice")
	require.NoError(t, err)
	assert.Equal(t, "1Gi", ptr.To(c.Spec.Resources.Requests[corev1.ResourceStorage]).String(), "claims never shrink")
	e.stop(t, res.Name)
}

// Two replicas of a service (two Spawners, so no shared name lock) start
// one key at once: one claim, and neither start fails because of it.
func TestIntegrationRacingStartsShareOneClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.AdoptRunning = true })
	other := e.spawner(t, nil)
	var wg sync.WaitGroup
	results := make([]*Result, 2)
	errs := make([]error, 2)
	for i, sp := range []*Spawner{e.sp, other} {
		wg.Go(func() {
			results[i], errs[i] = sp.Start(t.Context(), withClaim(e.request("bob", ""), homeClaim("claim-bob", "1Gi")))
		})
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, results[0].Claims[0].UID, results[1].Claims[0].UID, "one claim")
	assert.NotEqual(t, results[0].Claims[0].Created, results[1].Claims[0].Created, "exactly one start created it")
	list, err := e.direct.CoreV1().PersistentVolumeClaims(e.ns).List(t.Context(), metav1.ListOptions{LabelSelector: LabelKeyHash + "=" + KeyHash("bob")})
	require.NoError(t, err)
	assert.Len(t, list.Items, 1)
	e.stop(t, results[0].Name)
}

func TestIntegrationClaimThatIsNotOursFailsBeforeThePod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	claims := e.direct.CoreV1().PersistentVolumeClaims(e.ns)

	// Made by hand, no labels.
	_, err := claims.Create(ctx, homeClaim("claim-carol", "1Gi"), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.sp.Start(ctx, withClaim(e.request("carol", ""), homeClaim("claim-carol", "1Gi")))
	require.ErrorIs(t, err, ErrClaimConflict)
	assert.Contains(t, err.Error(), "claim-carol")
	e.noPod(t, e.podName("carol"))

	// Another key's claim of this instance.
	e.startAndStopWithHome(t, "dave", "claim-shared")
	_, err = e.sp.Start(ctx, withClaim(e.request("erin", ""), homeClaim("claim-shared", "1Gi")))
	require.ErrorIs(t, err, ErrClaimConflict)
	e.noPod(t, e.podName("erin"))

	// Another instance's claim of the same key.
	other := e.spawner(t, func(o *Options) { o.Instance = "other" })
	_, err = other.Start(ctx, withClaim(e.request("dave", ""), homeClaim("claim-shared", "1Gi")))
	require.ErrorIs(t, err, ErrClaimConflict)
	e.noPod(t, e.podName("dave"))
}

func TestIntegrationIncompatibleClaimSaysWhichField(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	res := e.startAndStopWithHome(t, "frank", "claim-frank")

	_, err := e.sp.Start(ctx, withClaim(e.request("frank", ""), homeClaim("claim-frank", "1Gi", corev1.ReadWriteMany)))
	require.ErrorIs(t, err, ErrClaimIncompatible)
	assert.Contains(t, err.Error(), "spec.accessModes")
	e.noPod(t, res.Name)

	fast := homeClaim("claim-frank", "1Gi")
	fast.Spec.StorageClassName = ptr.To("fast")
	_, err = e.sp.Start(ctx, withClaim(e.request("frank", ""), fast))
	require.ErrorIs(t, err, ErrClaimIncompatible)
	assert.Contains(t, err.Error(), "spec.storageClassName")
	e.noPod(t, res.Name)
}

// With no controller to remove the kubernetes.io/pvc-protection finalizer
// (the package's cluster runs none), a deleted claim stays Terminating:
// DeleteClaims says so when its time is up, and a start of the key fails
// on it without creating a pod.
func TestIntegrationClaimStuckTerminating(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.StopTimeout = 3 * time.Second })
	ctx := t.Context()
	res := e.startAndStopWithHome(t, "grace", "claim-grace")

	deleted, err := e.sp.DeleteClaims(ctx, e.ns, "grace")
	require.ErrorIs(t, err, ErrStopTimeout)
	assert.Contains(t, err.Error(), "claim-grace")
	assert.Empty(t, deleted)
	c, err := e.claim(t, "claim-grace")
	require.NoError(t, err)
	require.NotNil(t, c.DeletionTimestamp)

	_, err = e.sp.Start(ctx, withClaim(e.request("grace", ""), homeClaim("claim-grace", "1Gi")))
	require.ErrorIs(t, err, ErrClaimTerminating)
	assert.Contains(t, err.Error(), "kubernetes.io/pvc-protection")
	e.noPod(t, res.Name)
}

func TestIntegrationDeleteClaimsConfirmsThemGone(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, gcCluster(t), reflector.Options{StallTimeout: 5 * time.Second}, nil)
	ctx := t.Context()
	res := e.startWithHome(t, "heidi", "claim-heidi")

	_, err := e.sp.DeleteClaims(ctx, e.ns, "heidi")
	require.ErrorIs(t, err, ErrClaimInUse, "the pod still uses it")
	_, err = e.claim(t, "claim-heidi")
	require.NoError(t, err, "refused: nothing deleted")

	e.stop(t, res.Name)
	deleted, err := e.sp.DeleteClaims(ctx, e.ns, "heidi")
	require.NoError(t, err)
	require.Len(t, deleted, 1)
	assert.Equal(t, res.Claims[0].UID, deleted[0].UID)
	_, err = e.claim(t, "claim-heidi")
	require.True(t, apierrors.IsNotFound(err), "confirmed gone by the API server when DeleteClaims returns (err %v)", err)

	deleted, err = e.sp.DeleteClaims(ctx, e.ns, "heidi")
	require.NoError(t, err, "idempotent")
	assert.Empty(t, deleted)

	// And the next start gets a new, empty claim.
	res = e.startWithHome(t, "heidi", "claim-heidi")
	assert.True(t, res.Claims[0].Created)
	e.stop(t, res.Name)
	_, err = e.sp.DeleteClaims(ctx, e.ns, "heidi")
	require.NoError(t, err)
}

// A ResourceQuota that allows no claim (with the real quota controller
// keeping its usage): the start fails with the API server's answer and
// leaves neither claim nor pod.
func TestIntegrationClaimRefusedByQuota(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, gcCluster(t), reflector.Options{StallTimeout: 5 * time.Second}, nil)
	ctx := t.Context()
	quotas := e.direct.CoreV1().ResourceQuotas(e.ns)
	_, err := quotas.Create(ctx, &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "no-claims"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePersistentVolumeClaims: resource.MustParse("0")}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		q, err := quotas.Get(ctx, "no-claims", metav1.GetOptions{})
		return err == nil && len(q.Status.Hard) > 0
	}, time.Minute, 100*time.Millisecond, "the quota controller computes the quota's usage")

	_, err = e.sp.Start(ctx, withClaim(e.request("ivan", ""), homeClaim("claim-ivan", "1Gi")))
	require.ErrorIs(t, err, ErrClaimFailed)
	assert.True(t, apierrors.IsForbidden(err), "the API server's answer is kept: %v", err)
	assert.Contains(t, err.Error(), "exceeded quota")
	_, cerr := e.claim(t, "claim-ivan")
	assert.True(t, apierrors.IsNotFound(cerr))
	e.noPod(t, e.podName("ivan"))
}

// podObjects are a Secret, a ConfigMap and a Service (no selector: the
// spawner's) for one pod.
func podObjects(req Request, prefix string) Request {
	req.Secrets = []*corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-tls"}, StringData: map[string]string{"tls.key": "k"}}}
	req.ConfigMaps = []*corev1.ConfigMap{{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-env"}, Data: map[string]string{"A": "1"}}}
	req.Services = []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-svc"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8888}}}}}
	return req
}

func TestIntegrationOwnedObjectsBelongToThePodAndGoWithStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	res, err := e.sp.Start(ctx, podObjects(e.request("judy", ""), "judy"))
	require.NoError(t, err)
	require.Len(t, res.Owned, 3)
	kinds := map[string]ObjectRef{}
	for _, o := range res.Owned {
		assert.True(t, o.Created)
		kinds[o.Kind] = o
	}
	require.Contains(t, kinds, KindService)
	require.Contains(t, kinds, KindSecret)
	require.Contains(t, kinds, KindConfigMap)
	for _, o := range res.Owned {
		obj, err := kindAPI(e.direct, o.Kind).get(ctx, e.ns, o.Name)
		require.NoError(t, err)
		require.Len(t, obj.GetOwnerReferences(), 1, o.Kind)
		ref := obj.GetOwnerReferences()[0]
		assert.Equal(t, res.UID, ref.UID, o.Kind)
		assert.Equal(t, "Pod", ref.Kind)
		assert.Equal(t, string(res.UID), obj.GetLabels()[LabelPodUID])
	}
	svc, err := e.direct.CoreV1().Services(e.ns).Get(ctx, "judy-svc", metav1.GetOptions{})
	require.NoError(t, err)
	for k, v := range svc.Spec.Selector {
		assert.Equal(t, v, res.Pod.Labels[k], "the Service selects the pod")
	}

	e.stop(t, res.Name)
	for _, o := range res.Owned {
		e.objectGone(t, o.Kind, o.Name)
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(e.sp.metrics.ownedDeleted.WithLabelValues(KindService, "stop")))
}

func TestIntegrationFailedStartDeletesItsOwnedObjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, err := e.sp.Start(t.Context(), podObjects(e.request("ken", podsim.ScenarioImagePullFailure), "ken"))
	var se *StartError
	require.ErrorAs(t, err, &se)
	require.ErrorIs(t, err, ErrImagePull)
	assert.True(t, se.Deleted)
	e.gone(t, se.Name, "")
	for _, n := range []struct{ kind, name string }{{KindSecret, "ken-tls"}, {KindConfigMap, "ken-env"}, {KindService, "ken-svc"}} {
		e.objectGone(t, n.kind, n.name)
	}
}

// An object of an earlier pod of the key that the garbage collector has
// not collected (none runs here) is replaced; a foreign object of the name
// fails the start, is left alone, and the pod is deleted.
func TestIntegrationOwnedObjectOfAnEarlierPodOrOfNobody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	svcs := e.direct.CoreV1().Services(e.ns)
	stale := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "leo-svc", Labels: map[string]string{
		LabelManagedBy: ManagedByValue, LabelInstance: "it", LabelKeyHash: KeyHash("leo"), LabelPodUID: "earlier-pod"},
		Annotations: map[string]string{AnnotationKey: "leo"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	old, err := svcs.Create(ctx, stale, metav1.CreateOptions{})
	require.NoError(t, err)
	req := e.request("leo", "")
	req.Services = []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "leo-svc"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8888}}}}}
	res, err := e.sp.Start(ctx, req)
	require.NoError(t, err)
	got, err := svcs.Get(ctx, "leo-svc", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotEqual(t, old.UID, got.UID, "replaced")
	assert.Equal(t, res.UID, got.OwnerReferences[0].UID)
	e.stop(t, res.Name)

	foreign, err := svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "mia-svc"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	req = e.request("mia", "")
	req.Services = []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "mia-svc"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8888}}}}}
	_, err = e.sp.Start(ctx, req)
	var se *StartError
	require.ErrorAs(t, err, &se)
	require.ErrorIs(t, err, ErrOwnedObjectConflict)
	assert.True(t, se.Deleted)
	e.gone(t, se.Name, "")
	got, err = svcs.Get(ctx, "mia-svc", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, foreign.UID, got.UID, "a foreign object is never touched")
}

// A real validating admission webhook (an HTTPS server of the test that
// the API server calls) refuses the Service: the start fails with a typed
// error, and the pod and the Secret created before the Service are gone.
func TestIntegrationServiceRefusedByAWebhook(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	rejectServicesIn(t, e, "no services for this test")

	req := e.request("nina", "")
	req.Secrets = []*corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: "nina-tls"}, StringData: map[string]string{"k": "v"}}}
	req.Services = []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "nina-svc"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8888}}}}}
	_, err := e.sp.Start(ctx, req)
	var se *StartError
	require.ErrorAs(t, err, &se)
	require.ErrorIs(t, err, ErrOwnedObjectFailed)
	assert.Contains(t, err.Error(), "no services for this test", "the webhook's message")
	assert.True(t, se.Deleted)
	e.gone(t, se.Name, "")
	e.objectGone(t, KindSecret, "nina-tls")
	e.objectGone(t, KindService, "nina-svc")
}

// rejectServicesIn registers a validating webhook, served by the test,
// that refuses every Service created in e's namespace with message.
func rejectServicesIn(t *testing.T, e *ienv, message string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: false,
			Result: &metav1.Status{Code: http.StatusForbidden, Message: message}}
		review.Request = nil
		_ = json.NewEncoder(w).Encode(review)
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	hooks := e.direct.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	name := "reject-services-" + e.ns
	_, err := hooks.Create(t.Context(), &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "reject-services.kubespawn.test",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(srv.URL + "/validate"), CABundle: ca},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"services"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: e.ns}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](5),
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = hooks.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	// The API server picks the configuration up from its own watch: wait
	// until a dry-run create is refused.
	probe := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "webhook-probe"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	require.Eventually(t, func() bool {
		_, err := e.direct.CoreV1().Services(e.ns).Create(t.Context(), probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), message)
	}, 30*time.Second, 50*time.Millisecond, "the webhook is in force")
}

// With the real garbage collector: a pod deleted behind the spawner's back
// takes its owned objects with it.
func TestIntegrationGarbageCollectorTakesOwnedObjectsWithThePod(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, gcCluster(t), reflector.Options{StallTimeout: 5 * time.Second}, nil)
	ctx := t.Context()
	res, err := e.sp.Start(ctx, podObjects(e.request("olga", ""), "olga"))
	require.NoError(t, err)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(ctx, res.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0),
		Preconditions: &metav1.Preconditions{UID: &res.UID}}))
	for _, o := range res.Owned {
		require.Eventually(t, func() bool {
			_, err := kindAPI(e.direct, o.Kind).get(ctx, e.ns, o.Name)
			return apierrors.IsNotFound(err)
		}, time.Minute, 100*time.Millisecond, "the garbage collector deletes %s", o)
	}
}

// With no garbage collector (the package's cluster), a pod deleted behind
// the spawner's back leaves its objects: the sweeper finds them by their
// pod's absence on the API server, shows them in a dry run, and deletes
// them; a live pod's objects are left alone.
func TestIntegrationSweepDeletesObjectsOfGonePods(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()
	lost, err := e.sp.Start(ctx, podObjects(e.request("pat", ""), "pat"))
	require.NoError(t, err)
	live, err := e.sp.Start(ctx, podObjects(e.request("quin", ""), "quin"))
	require.NoError(t, err)
	require.NoError(t, e.direct.CoreV1().Pods(e.ns).Delete(ctx, lost.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0),
		Preconditions: &metav1.Preconditions{UID: &lost.UID}}))
	require.Eventually(t, func() bool {
		_, err := e.direct.CoreV1().Pods(e.ns).Get(ctx, lost.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 50*time.Millisecond)

	policy := SweepPolicy{Namespace: e.ns, MaxAge: time.Hour}
	dry, err := e.sp.Sweep(ctx, policy)
	require.NoError(t, err)
	require.Len(t, dry.Objects, 3, "the lost pod's three objects, not the live pod's")
	for _, o := range dry.Objects {
		assert.Equal(t, SweepReasonOwnerGone, o.Reason)
		assert.True(t, o.Selected)
		assert.False(t, o.Deleted, "a dry run")
		assert.Equal(t, "pat", o.Key)
		_, err := kindAPI(e.direct, o.Kind).get(ctx, e.ns, o.Name)
		require.NoError(t, err, "a dry run deletes nothing")
	}

	policy.Delete = true
	res, err := e.sp.Sweep(ctx, policy)
	require.NoError(t, err)
	require.Len(t, res.Objects, 3)
	for _, o := range res.Objects {
		assert.True(t, o.Deleted)
		e.objectGone(t, o.Kind, o.Name)
	}
	for _, o := range live.Owned {
		_, err := kindAPI(e.direct, o.Kind).get(ctx, e.ns, o.Name)
		require.NoError(t, err, "%s of a live pod", o)
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(e.sp.metrics.ownedDeleted.WithLabelValues(KindSecret, "sweeper")))
	e.stop(t, live.Name)
}

// Claims of keys the service does not know are reported, never deleted by
// default; MaxClaimAge deletes them (with the real claim protection
// controller), but never one whose key still has a pod.
func TestIntegrationSweepReportsUnknownClaimsAndDeletesOnlyByPolicy(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, gcCluster(t), reflector.Options{StallTimeout: 5 * time.Second}, nil)
	ctx := t.Context()
	for _, key := range []string{"known", "lost"} {
		e.startAndStopWithHome(t, key, "claim-"+key)
	}
	running := e.startWithHome(t, "busy", "claim-busy")
	// The same instance under another NamePrefix (a renamed deployment):
	// its pod uses its claim as much, though not under PodName(key).
	renamed := e.spawner(t, func(o *Options) { o.NamePrefix = "renamed" })
	alt, err := renamed.Start(ctx, withClaim(e.request("alt", ""), homeClaim("claim-alt", "1Gi")))
	require.NoError(t, err)
	unknown := func(_ context.Context, c *corev1.PersistentVolumeClaim) (SweepReason, error) {
		if c.Annotations[AnnotationKey] == "known" {
			return "", nil
		}
		return "unknown_key", nil
	}
	policy := SweepPolicy{Namespace: e.ns, MaxAge: time.Hour, MinAge: time.Millisecond, ClaimSelect: unknown, Delete: true}
	res, err := e.sp.Sweep(ctx, policy)
	require.NoError(t, err)
	require.Len(t, res.Claims, 3, "lost, busy and alt reported")
	for _, c := range res.Claims {
		assert.Equal(t, SweepReason("unknown_key"), c.Reason)
		assert.False(t, c.Selected, "no MaxClaimAge: reported only")
		assert.False(t, c.Deleted)
	}
	assert.Equal(t, 3.0, testutil.ToFloat64(e.sp.metrics.unknownClaims.WithLabelValues(e.ns)))
	for _, n := range []string{"claim-known", "claim-lost", "claim-busy"} {
		_, err := e.claim(t, n)
		require.NoError(t, err, "%s kept", n)
	}

	policy.MaxClaimAge = time.Nanosecond
	var byName map[string]SweptObject
	require.Eventually(t, func() bool { // ages have a resolution of a second
		res, err = e.sp.Sweep(ctx, policy)
		require.NoError(t, err)
		byName = map[string]SweptObject{}
		for _, c := range res.Claims {
			byName[c.Name] = c
		}
		return byName["claim-lost"].Deleted
	}, 30*time.Second, 200*time.Millisecond)
	_, err = e.claim(t, "claim-lost")
	assert.True(t, apierrors.IsNotFound(err), "confirmed gone")
	assert.Equal(t, skipInUse, byName["claim-busy"].Reason, "the key's pod runs")
	assert.False(t, byName["claim-busy"].Deleted)
	_, err = e.claim(t, "claim-busy")
	require.NoError(t, err)
	_, err = e.claim(t, "claim-known")
	require.NoError(t, err)
	assert.Equal(t, skipInUse, byName["claim-alt"].Reason, "the key's pod is found by its labels, whatever its name")
	_, err = e.claim(t, "claim-alt")
	require.NoError(t, err)
	e.stop(t, running.Name)
	require.NoError(t, renamed.Stop(ctx, e.ns, alt.Name, StopOptions{UID: alt.UID}))
}

// A pod the API server's admission refuses (here Pod Security Admission)
// leaves nothing behind on a first start: the pod is tried with a dry-run
// create before a claim is created, so the user's new claim is not left
// empty. A claim that already existed stays, with its UID.
func TestIntegrationPodRefusedByAdmissionLeavesNoNewClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := t.Context()

	e.startAndStopWithHome(t, "kept", "claim-kept")
	kept, err := e.claim(t, "claim-kept")
	require.NoError(t, err)

	ns, err := e.direct.CoreV1().Namespaces().Get(ctx, e.ns, metav1.GetOptions{})
	require.NoError(t, err)
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	_, err = e.direct.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
	require.NoError(t, err)

	_, err = e.sp.Start(ctx, withClaim(e.request("new", ""), homeClaim("claim-new", "1Gi")))
	require.ErrorIs(t, err, ErrRejected)
	assert.Contains(t, err.Error(), "violates PodSecurity", "the API server's answer is kept")
	_, cerr := e.claim(t, "claim-new")
	assert.True(t, apierrors.IsNotFound(cerr), "the refused first start left its claim (err %v)", cerr)
	e.noPod(t, e.podName("new"))

	_, err = e.sp.Start(ctx, withClaim(e.request("kept", ""), homeClaim("claim-kept", "1Gi")))
	require.ErrorIs(t, err, ErrRejected)
	again, cerr := e.claim(t, "claim-kept")
	require.NoError(t, cerr, "an existing claim is the user's: a refused start keeps it")
	assert.Equal(t, kept.UID, again.UID)
	e.noPod(t, e.podName("kept"))
}
