package spawner

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/reflector"
)

const testNS = "users"

func randUID() types.UID {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return types.UID("uid-" + hex.EncodeToString(b[:]))
}

// newFakeClient is a fake clientset that, like the API server, gives new pods
// a UID and a creationTimestamp and honours UID preconditions on delete.
func newFakeClient(objs ...runtime.Object) *fake.Clientset {
	c := fake.NewClientset(objs...)
	c.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if pod, ok := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod); ok && pod.UID == "" {
			pod.UID = randUID()
			pod.CreationTimestamp = metav1.Now()
		}
		return false, nil, nil // on to the object tracker
	})
	// A dry-run create stores nothing (the object tracker ignores DryRun):
	// the API server's answer, AlreadyExists included, without the write.
	// Prepended last, so it runs first.
	defer c.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca, ok := a.(k8stesting.CreateActionImpl)
		if !ok || len(ca.GetCreateOptions().DryRun) == 0 || a.GetSubresource() != "" {
			return false, nil, nil
		}
		obj := ca.GetObject()
		m, err := meta.Accessor(obj)
		if err != nil {
			return true, nil, err
		}
		if _, err := c.Tracker().Get(a.GetResource(), a.GetNamespace(), m.GetName()); err == nil {
			return true, nil, apierrors.NewAlreadyExists(a.GetResource().GroupResource(), m.GetName())
		}
		return true, obj, nil
	})
	// The server's clock, as a SelfSubjectReview tells it (see serverClock).
	c.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &authenticationv1.SelfSubjectReview{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.Now()}}, nil
	})
	c.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteAction)
		pre := d.GetDeleteOptions().Preconditions
		if pre == nil || pre.UID == nil {
			return false, nil, nil
		}
		obj, err := c.Tracker().Get(corev1.SchemeGroupVersion.WithResource("pods"), d.GetNamespace(), d.GetName())
		if err != nil {
			return true, nil, err
		}
		if obj.(*corev1.Pod).UID != *pre.UID {
			return true, nil, apierrors.NewConflict(corev1.Resource("pods"), d.GetName(), errPrecondition)
		}
		return false, nil, nil
	})
	return c
}

var errPrecondition = &preconditionError{}

type preconditionError struct{}

func (*preconditionError) Error() string {
	return "Precondition failed: UID in precondition does not match"
}

// fakeCache is a PodCache fed by a watch on a fake clientset. stalled
// simulates a silent watch: changes are neither stored nor notified, so the
// cache serves what it last saw (the 2018 failure).
type fakeCache struct {
	client  kubernetes.Interface
	stalled atomic.Bool
	// lie makes Get answer NotFound for everything, to prove that no
	// decision depends on the cache saying "absent".
	lie atomic.Bool

	mu       sync.Mutex
	pods     map[string]*corev1.Pod
	subs     map[string]map[chan struct{}]struct{}
	expected []string // resourceVersions reported with ExpectWrite
	gets     atomic.Int64
}

func newFakeCache(t *testing.T, client kubernetes.Interface) *fakeCache {
	fc := &fakeCache{client: client, pods: map[string]*corev1.Pod{}, subs: map[string]map[chan struct{}]struct{}{}}
	w, err := client.CoreV1().Pods("").Watch(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	t.Cleanup(w.Stop)
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || fc.stalled.Load() {
				continue
			}
			key := pod.Namespace + "/" + pod.Name
			fc.mu.Lock()
			if ev.Type == watch.Deleted {
				delete(fc.pods, key)
			} else {
				fc.pods[key] = pod.DeepCopy()
			}
			for ch := range fc.subs[key] {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			fc.mu.Unlock()
		}
	}()
	return fc
}

func (fc *fakeCache) Get(ctx context.Context, ns, name string) (*corev1.Pod, reflector.Source, error) {
	fc.gets.Add(1)
	if fc.lie.Load() {
		return nil, reflector.SourceCache, apierrors.NewNotFound(corev1.Resource("pods"), name)
	}
	fc.mu.Lock()
	p := fc.pods[ns+"/"+name]
	fc.mu.Unlock()
	if p != nil {
		return p.DeepCopy(), reflector.SourceCache, nil
	}
	pod, err := fc.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	return pod, reflector.SourceAPI, err
}

func (fc *fakeCache) Notify(ns, name string) (<-chan struct{}, func()) {
	key := ns + "/" + name
	ch := make(chan struct{}, 1)
	fc.mu.Lock()
	if fc.subs[key] == nil {
		fc.subs[key] = map[chan struct{}]struct{}{}
	}
	fc.subs[key][ch] = struct{}{}
	fc.mu.Unlock()
	return ch, func() {
		fc.mu.Lock()
		delete(fc.subs[key], ch)
		fc.mu.Unlock()
	}
}

// ExpectWrite records the canaries the spawner reports.
func (fc *fakeCache) ExpectWrite(pod *corev1.Pod) {
	fc.mu.Lock()
	fc.expected = append(fc.expected, pod.ResourceVersion)
	fc.mu.Unlock()
}

// put stores a pod in the cache without the API server knowing.
func (fc *fakeCache) put(pod *corev1.Pod) {
	fc.mu.Lock()
	fc.pods[pod.Namespace+"/"+pod.Name] = pod.DeepCopy()
	fc.mu.Unlock()
}

// fakeKubelet applies mutate to the status of every pod created after it
// starts, delay after the create.
func fakeKubelet(t *testing.T, client kubernetes.Interface, delay time.Duration, mutate func(*corev1.Pod)) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := client.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				pod, isPod := ev.Object.(*corev1.Pod)
				if ev.Type != watch.Added || !isPod {
					continue
				}
				go func() {
					select {
					case <-time.After(delay):
					case <-ctx.Done():
						return
					}
					// Like a kubelet, act only on this incarnation of the name,
					// and never on a pod that has ended (Failed, Succeeded): a
					// kubelet does not run one again. The watch reports the
					// pods a test put in the tracker beforehand as added.
					p, err := client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
					if err != nil || p.UID != pod.UID || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
						return
					}
					mutate(p)
					_, _ = client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
				}()
			}
		}
	}()
}

func setReady(p *corev1.Pod) {
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = "10.0.0.7"
	p.Status.StartTime = &now
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
}

func setWaiting(reason string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: p.Spec.Containers[0].Name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "simulated " + reason}},
		}}
	}
}

func testSpec() *corev1.PodSpec {
	return &corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook", Image: "jupyter/base:latest"}}}
}

// fastBackoff retries at once, forever (bounded by the start timeout).
func fastBackoff() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Millisecond) }

type fixture struct {
	client *fake.Clientset
	cache  *fakeCache
	sp     *Spawner
}

func newFixture(t *testing.T, mod func(*Options), objs ...runtime.Object) *fixture {
	client := newFakeClient(objs...)
	cache := newFakeCache(t, client)
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(4)))
	o := Options{
		Client: client, Pods: cache, Logger: &logger, Instance: "default",
		StartTimeout: 10 * time.Second, StopTimeout: 5 * time.Second,
		FallbackInterval: 50 * time.Millisecond, ImagePullGrace: 100 * time.Millisecond,
		CreateBackoff: fastBackoff,
	}
	if mod != nil {
		mod(&o)
	}
	sp, err := New(o)
	require.NoError(t, err)
	// The server's clock is the spawner's unless a test says otherwise.
	serverClock := sp.opts.Clock
	client.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &authenticationv1.SelfSubjectReview{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(serverClock.Now())}}, nil
	})
	return &fixture{client: client, cache: cache, sp: sp}
}

func (f *fixture) podExists(t *testing.T, name string) bool {
	_, err := f.client.CoreV1().Pods(testNS).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	return true
}

// verbs returns "verb resource" of every action, e.g. "create pods".
func verbs(c *fake.Clientset) []string {
	var out []string
	for _, a := range c.Actions() {
		if a.GetVerb() == "watch" {
			continue
		}
		out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
	}
	return out
}

// fakeEvents is an EventSource returning fixed events.
type fakeEvents struct {
	mu        sync.Mutex
	events    []*corev1.Event
	updates   []events.Update
	forgotten []types.UID
}

func (f *fakeEvents) Stream(ctx context.Context, pod events.PodRef) (<-chan events.Update, error) {
	ch := make(chan events.Update)
	f.mu.Lock()
	ups := append([]events.Update(nil), f.updates...)
	f.mu.Unlock()
	go func() {
		defer close(ch)
		for _, u := range ups {
			select {
			case ch <- u:
			case <-ctx.Done():
				return
			}
		}
		<-ctx.Done()
	}()
	return ch, nil
}

func (f *fakeEvents) Events(pod events.PodRef) []*corev1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events
}

func (f *fakeEvents) ForgetPod(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten = append(f.forgotten, uid)
}

// orphansOf turns an "is this pod known" test into a SweepPolicy.Select:
// unknown pods are orphans.
func orphansOf(isKnown func(context.Context, *corev1.Pod) (bool, error)) func(context.Context, *corev1.Pod) (SweepReason, error) {
	return func(ctx context.Context, pod *corev1.Pod) (SweepReason, error) {
		known, err := isKnown(ctx, pod)
		if err != nil || known {
			return "", err
		}
		return SweepReasonOrphan, nil
	}
}

func sha(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}
