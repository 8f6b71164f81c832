package spawner

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kubespawn/kubespawn/events"
	"github.com/kubespawn/kubespawn/reflector"
)

// PodCache is what the spawner needs from a pod cache;
// *reflector.PodCache implements it. Get must only report NotFound when
// the API server said so (the cache never proves absence). Notify returns
// a coalescing signal channel poked on every change of the named pod and
// on every health change of the cache. ExpectWrite is told of every pod
// the API server returns to the spawner (creates, and reads while waiting,
// including those after a delete), so that a cache whose watch misses them
// finds out within about a second.
type PodCache interface {
	Get(ctx context.Context, namespace, name string) (*corev1.Pod, reflector.Source, error)
	Notify(namespace, name string) (<-chan struct{}, func())
	ExpectWrite(pod *corev1.Pod)
}

// EventSource is what the spawner needs from an event index;
// *events.Index implements it. ForgetPod is called once a pod the
// spawner created or stopped is confirmed gone.
type EventSource interface {
	Stream(ctx context.Context, pod events.PodRef) (<-chan events.Update, error)
	Events(pod events.PodRef) []*corev1.Event
	ForgetPod(uid types.UID)
}

// Options configures a Spawner. Client and Pods are required; every other
// zero field selects its default.
type Options struct {
	// Client talks to the API server. Every create, delete and every
	// decision that a pod does not exist goes through it.
	Client kubernetes.Interface
	// Pods is the shared pod cache (one watch per scope and process), from
	// reflector.Factory.Pods. Nil makes every read a live GET and every
	// wait poll every FallbackInterval: for one-shot programs that only
	// sweep or stop (a CLI on a flooded cluster should open no watch); a
	// service gives its shared cache.
	Pods PodCache
	// Events, if set, feeds Request.Progress and the Warning events of a
	// StartError; from events.IndexFor.
	Events EventSource

	// Instance identifies this service instance; it is the value of
	// LabelInstance on every pod and names the sweeper's Lease. Required,
	// and a valid label value: two services sharing a namespace with the
	// same Instance would take each other's pods for their own (and their
	// sweepers each other's pods for orphans), so there is no default.
	Instance string
	// NamePrefix is the prefix of pod names (see PodName). Default
	// "kubespawn".
	NamePrefix string

	// StartTimeout bounds a Start (create, retries and waiting). Default 5m.
	StartTimeout time.Duration
	// MaxStartTimeout is the longest Request.StartTimeout accepted; a longer
	// one is rejected with ErrInvalidArgument. It is also the default
	// SweepPolicy.OrphanMinAge, so that the orphan sweep never selects the
	// pod of a start still in progress (set it alike in every process that
	// starts or sweeps the same pods). Default: StartTimeout; must not be
	// below it.
	MaxStartTimeout time.Duration
	// StopTimeout bounds waiting for a pod to be gone, in Stop, in the
	// cleanup of a failed start and per pod in Sweep. Default 1m.
	StopTimeout time.Duration
	// ImagePullGrace is how long a container may wait in ErrImagePull or
	// ImagePullBackOff before the start fails with ErrImagePull (pulls can
	// fail transiently). Default 30s.
	ImagePullGrace time.Duration
	// FallbackInterval: while waiting, a live GET is sent to the API server
	// whenever no notification arrived for this long, so a stalled watch
	// cannot make a running (or deleted) pod look stuck. Default 5s.
	FallbackInterval time.Duration
	// DeleteGracePeriod is the grace period of the spawner's deletes
	// (rounded up to whole seconds). Nil uses the pod's
	// terminationGracePeriodSeconds.
	DeleteGracePeriod *time.Duration
	// AdoptRunning makes Start adopt a pod of ours with the same name that
	// is already running or starting instead of failing with
	// ErrAlreadyRunning. An adopted pod that then fails to become ready is
	// deleted like one the Start created.
	AdoptRunning bool
	// CreateBackoff returns the retry schedule for transient create errors.
	// Default: exponential from 200ms, max elapsed time 30s.
	CreateBackoff func() backoff.BackOff

	// Clock drives timeouts and fallbacks. Default: the real clock.
	Clock clock.WithTicker
	// Logger is used when the context carries no logger. Default
	// klog.Background().
	Logger *klog.Logger
	// Registerer, if set, gets the spawner's metrics (prefix
	// kubespawn_spawner_).
	Registerer prometheus.Registerer
}

const (
	defaultNamePrefix       = "kubespawn"
	defaultStartTimeout     = 5 * time.Minute
	defaultStopTimeout      = time.Minute
	defaultImagePullGrace   = 30 * time.Second
	defaultFallbackInterval = 5 * time.Second
	defaultCreateMaxElapsed = 30 * time.Second
)

func (o Options) withDefaults() (Options, error) {
	var problems []string
	if o.Client == nil {
		problems = append(problems, "Client is required")
	}
	if o.Pods == nil && o.Client != nil {
		o.Pods = apiReads{o.Client}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"StartTimeout", o.StartTimeout}, {"MaxStartTimeout", o.MaxStartTimeout}, {"StopTimeout", o.StopTimeout}, {"ImagePullGrace", o.ImagePullGrace}, {"FallbackInterval", o.FallbackInterval}} {
		if d.v < 0 {
			problems = append(problems, fmt.Sprintf("%s must not be negative, got %s", d.name, d.v))
		}
	}
	if o.DeleteGracePeriod != nil && *o.DeleteGracePeriod < 0 {
		problems = append(problems, fmt.Sprintf("DeleteGracePeriod must not be negative, got %s", *o.DeleteGracePeriod))
	}
	if o.Instance == "" {
		problems = append(problems, "Instance is required (two services in one namespace must not share one)")
	} else if errs := validation.IsValidLabelValue(o.Instance); len(errs) > 0 {
		problems = append(problems, fmt.Sprintf("Instance %q: %s", o.Instance, strings.Join(errs, "; ")))
	}
	if o.NamePrefix == "" {
		o.NamePrefix = defaultNamePrefix
	}
	if _, err := PodName(o.NamePrefix, "x"); err != nil {
		problems = append(problems, fmt.Sprintf("NamePrefix: %v", err))
	}
	if len(problems) > 0 {
		return o, fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(problems, "; "))
	}
	o.StartTimeout = cmp.Or(o.StartTimeout, defaultStartTimeout)
	o.MaxStartTimeout = cmp.Or(o.MaxStartTimeout, o.StartTimeout)
	if o.MaxStartTimeout < o.StartTimeout {
		return o, fmt.Errorf("%w: MaxStartTimeout %s is below StartTimeout %s", ErrInvalidOptions, o.MaxStartTimeout, o.StartTimeout)
	}
	o.StopTimeout = cmp.Or(o.StopTimeout, defaultStopTimeout)
	o.ImagePullGrace = cmp.Or(o.ImagePullGrace, defaultImagePullGrace)
	o.FallbackInterval = cmp.Or(o.FallbackInterval, defaultFallbackInterval)
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.CreateBackoff == nil {
		clk := o.Clock
		o.CreateBackoff = func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval = 200 * time.Millisecond
			b.MaxInterval = 5 * time.Second
			b.MaxElapsedTime = defaultCreateMaxElapsed
			b.Clock = clk // elapsed time follows the injected clock
			b.Reset()
			return b
		}
	}
	if o.Logger == nil {
		l := klog.Background()
		o.Logger = &l
	}
	return o, nil
}

// apiReads is the PodCache of a Spawner given none: every read is a live
// GET, and nothing notifies, so waits poll every FallbackInterval.
type apiReads struct{ client kubernetes.Interface }

func (a apiReads) Get(ctx context.Context, namespace, name string) (*corev1.Pod, reflector.Source, error) {
	pod, err := a.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	return pod, reflector.SourceAPI, err
}

func (apiReads) Notify(string, string) (<-chan struct{}, func()) { return nil, func() {} }

func (apiReads) ExpectWrite(*corev1.Pod) {}
