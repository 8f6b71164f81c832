package podsim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Annotation keys read from a pod to select its simulated behaviour.
const (
	// AnnotationScenario selects the pod's scenario; its value is one of the
	// Scenario constants. An absent or empty value is ScenarioNormal. An
	// unknown value is logged and treated as ScenarioNormal.
	AnnotationScenario = "podsim.kubespawn.io/scenario"
	// AnnotationStartDelay is a Go duration (time.ParseDuration) that
	// overrides Options.StartDelay (and the slow-start default) for this pod.
	// An invalid or negative value is logged and ignored. For a process pod
	// it is how long the image pull takes before the process starts.
	AnnotationStartDelay = "podsim.kubespawn.io/start-delay"
)

// Scenario values for AnnotationScenario.
const (
	// ScenarioNormal: bound, images pulled, containers created and started,
	// phase Running, all containers and the pod Ready.
	ScenarioNormal = ""
	// ScenarioImagePullFailure: Pulling, then Warning Failed; containers
	// waiting with reason ErrImagePull, then ImagePullBackOff with a Warning
	// BackOff event. Phase stays Pending.
	ScenarioImagePullFailure = "image-pull-failure"
	// ScenarioInvalidImageName: Warning InspectFailed and Failed; containers
	// waiting with reason InvalidImageName. Phase stays Pending.
	ScenarioInvalidImageName = "invalid-image-name"
	// ScenarioCreateContainerConfigError: Pulling, Pulled, Warning Failed;
	// containers waiting with reason CreateContainerConfigError. Phase stays
	// Pending.
	ScenarioCreateContainerConfigError = "create-container-config-error"
	// ScenarioCrashLoop: containers start, exit with code 1 and are restarted
	// with a growing back-off: restartCount increments, containers wait with
	// reason CrashLoopBackOff, Warning BackOff events. Phase Running, never
	// Ready. With restartPolicy Never it behaves like ScenarioFail.
	ScenarioCrashLoop = "crash-loop"
	// ScenarioUnschedulable: never bound; condition PodScheduled=False with
	// reason Unschedulable and a Warning FailedScheduling event.
	ScenarioUnschedulable = "unschedulable"
	// ScenarioNeverReady: phase Running, containers running but not ready,
	// Ready condition False, one Warning Unhealthy event.
	ScenarioNeverReady = "never-ready"
	// ScenarioEvict: starts like ScenarioNormal, then StartDelay later the
	// pod is evicted: phase Failed, status.reason Evicted, status.message
	// "The node was low on resource: memory.", Warning Evicted and Normal
	// Killing events, DisruptionTarget condition True.
	ScenarioEvict = "evict"
	// ScenarioFail: containers start and exit with code 1 (reason Error);
	// phase Failed. The pod is never Ready.
	ScenarioFail = "fail"
	// ScenarioComplete: containers start and exit with code 0 (reason
	// Completed); phase Succeeded. The pod is never Ready.
	ScenarioComplete = "complete"
	// ScenarioSlowStart is ScenarioNormal with a start delay of
	// DefaultSlowStartDelay unless AnnotationStartDelay is set.
	ScenarioSlowStart = "slow-start"
)

// Defaults for Options.
const (
	DefaultNodeName       = "kubespawn-sim-node"
	DefaultStartDelay     = 300 * time.Millisecond
	DefaultStepDelay      = 50 * time.Millisecond
	DefaultMaxGracePeriod = time.Second
	// DefaultSlowStartDelay is the start delay of ScenarioSlowStart pods
	// without an AnnotationStartDelay.
	DefaultSlowStartDelay = 5 * time.Second
)

const (
	schedulerName = "default-scheduler"
	kubeletName   = "kubelet"
	workers       = 4
	// eventShards is the number of event broadcasters. A broadcaster writes
	// its events one at a time and silently drops what does not fit in its
	// queue of 1000, which a burst of a few hundred pods overflows; pods are
	// spread over several broadcasters by UID, so each pod's events keep
	// their order while several are written at once.
	eventShards = 4
)

// eventShard is one event broadcaster with a recorder per source.
type eventShard struct {
	broadcaster record.EventBroadcaster
	scheduler   record.EventRecorderLogger
	kubelet     record.EventRecorderLogger
}

// shard returns the event shard of a pod incarnation.
func (s *Simulator) shard(uid types.UID) *eventShard {
	h := fnv.New32a()
	h.Write([]byte(uid))
	return &s.events[h.Sum32()%uint32(len(s.events))]
}

// Options configures a Simulator. The zero value of every field selects its
// default.
type Options struct {
	// NodeName is the name of the fake Node; default DefaultNodeName. The
	// Node is created (or reused, its status refreshed) with a Ready
	// condition, capacity and an address.
	NodeName string
	// StartDelay is the time from scheduling to Running and Ready for a
	// normal pod; default DefaultStartDelay. It is a lower bound.
	StartDelay time.Duration
	// StepDelay is the time between lifecycle steps (Pulling, Pulled,
	// Created, Started, ...); default DefaultStepDelay.
	StepDelay time.Duration
	// MaxGracePeriod caps the graceful deletion of a bound pod: the final
	// delete happens min(pod grace period, MaxGracePeriod) after the
	// simulator first saw the deletionTimestamp; default
	// DefaultMaxGracePeriod.
	MaxGracePeriod time.Duration
	// Logger receives the simulator's contextual logs; default
	// klog.FromContext of the context given to Start.
	Logger klog.Logger
	// ProcessRuntimeClass, if set, is the name of the RuntimeClass whose
	// pods the simulator runs as local processes (see "Process pods" in the
	// package documentation; DefaultProcessRuntimeClass is the usual name).
	// Start creates the RuntimeClass (EnsureRuntimeClass). Empty: no pod's
	// process is run.
	ProcessRuntimeClass string
	// ProcessDir is where each process pod gets its directory (HOME,
	// TMPDIR, default working directory, log); default a new temporary
	// directory that Stop removes (one given here is left in place). A
	// process run as another user (runAsUser) must be able to traverse it.
	ProcessDir string
	// ImageEntrypoints maps an image to its ENTRYPOINT, which a process
	// pod's container without command runs with its args (an empty one runs
	// the args as the command, like tini -g --). Without an entry such a
	// container fails with CreateContainerError.
	ImageEntrypoints map[string][]string
	// MaxProbePeriod caps the periodSeconds of process pods' readiness
	// probes; default DefaultMaxProbePeriod.
	MaxProbePeriod time.Duration
	// PodCIDR is the IPv4 range pod IPs are allocated from; default
	// DefaultPodCIDR (loopback). It must be a network address with a
	// prefix of at most /28 that does not contain the node's address
	// (127.0.0.1). The API server refuses loopback addresses in
	// EndpointSlices: for pods that are endpoints of Services, use a
	// routable range such as BenchmarkPodCIDR. Start makes such a range
	// local if it is not (a route on lo, which needs root: see the package
	// documentation).
	PodCIDR string
	// PodIP, if set, is the IP every simulated pod of the node reports
	// (status.podIP and podIPs) instead of a unique one from PodCIDR. It
	// must be a loopback address: one stand-in server
	// listening there (a simulated notebook server, say) then answers at
	// the IP of every pod, as the pod's own process would on a real node.
	// Process pods (ProcessRuntimeClass) always get an IP of their own:
	// their processes listen there, and two of them on one port must not
	// collide.
	PodIP string
}

// podKey identifies one incarnation of a pod: a pod recreated with the same
// name has another UID and so another key, plan and state.
type podKey struct {
	Namespace string
	Name      string
	UID       types.UID
}

func (k podKey) String() string { return k.Namespace + "/" + k.Name + " (" + string(k.UID) + ")" }

func keyOf(pod *v1.Pod) podKey {
	return podKey{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
}

// Simulator plays the default scheduler and the kubelet of one fake Node for
// every pod in the cluster. Create it with Start; it is safe for concurrent
// use.
type Simulator struct {
	client  kubernetes.Interface
	opts    Options
	logger  klog.Logger
	nodeIP  string
	podCIDR netip.Prefix // resolved Options.PodCIDR

	ctx    context.Context
	cancel context.CancelFunc

	factory informers.SharedInformerFactory
	lister  corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[podKey]
	events  []eventShard

	mu         sync.Mutex
	pods       map[podKey]*podState
	ips        *ipPool
	procs      map[podKey]*procPod               // live process pods
	procByName map[types.NamespacedName]*procPod // latest incarnation, kept until Stop

	procDir    string         // resolved Options.ProcessDir
	ownProcDir bool           // procDir is ours to remove
	procWG     sync.WaitGroup // process pods' probe, exit and stop goroutines

	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
}

// Start creates (or reuses) the fake Node, starts a pod informer over all
// namespaces through client, and drives every pod that is unbound or bound to
// the node like a scheduler and kubelet would. It returns once the informer
// has synced, or with an error if the Node cannot be written or ctx ends
// first.
//
// client should have direct admin access to the API server and a client-side
// rate limit suited to the pod count (see the package documentation).
//
// The simulator runs until ctx is cancelled or Stop is called.
func Start(ctx context.Context, client kubernetes.Interface, opts Options) (*Simulator, error) {
	if client == nil {
		return nil, errors.New("podsim: nil client")
	}
	if opts.NodeName == "" {
		opts.NodeName = DefaultNodeName
	}
	opts.StartDelay = cmp.Or(opts.StartDelay, DefaultStartDelay)
	opts.StepDelay = cmp.Or(opts.StepDelay, DefaultStepDelay)
	opts.MaxGracePeriod = cmp.Or(opts.MaxGracePeriod, DefaultMaxGracePeriod)
	opts.MaxProbePeriod = cmp.Or(opts.MaxProbePeriod, DefaultMaxProbePeriod)
	if opts.StartDelay < 0 || opts.StepDelay < 0 || opts.MaxGracePeriod < 0 || opts.MaxProbePeriod < 0 {
		return nil, fmt.Errorf("%w: negative delay in options %+v", ErrInvalidOptions, opts)
	}
	if opts.PodIP != "" {
		if ip, err := netip.ParseAddr(opts.PodIP); err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: PodIP %q is not a loopback address", ErrInvalidOptions, opts.PodIP)
		}
	}
	podCIDR, err := parsePodCIDR(opts.PodCIDR)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger.GetSink() == nil {
		logger = klog.FromContext(ctx)
	}
	logger = logger.WithName("podsim").WithValues("node", opts.NodeName)
	// Before anything is written: a pod must never get an IP nothing
	// can reach.
	if err := ensureLocal(klog.NewContext(ctx, logger), podCIDR, routeCommand()); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(klog.NewContext(ctx, logger))
	s := &Simulator{
		client:     client,
		opts:       opts,
		logger:     logger,
		nodeIP:     nodeIP,
		podCIDR:    podCIDR,
		ctx:        ctx,
		cancel:     cancel,
		pods:       map[podKey]*podState{},
		ips:        newIPPool(podCIDR),
		procs:      map[podKey]*procPod{},
		procByName: map[types.NamespacedName]*procPod{},
		stopped:    make(chan struct{}),
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[podKey](50*time.Millisecond, 10*time.Second)),
	}

	if err := s.ensureNode(ctx); err != nil {
		cancel()
		s.queue.ShutDown()
		return nil, err
	}
	if opts.ProcessRuntimeClass != "" {
		if err := s.setUpProcesses(ctx); err != nil {
			cancel()
			s.queue.ShutDown()
			return nil, err
		}
	}

	for range eventShards {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		b.StartStructuredLogging(4)
		s.events = append(s.events, eventShard{
			broadcaster: b,
			scheduler:   b.NewRecorder(scheme.Scheme, v1.EventSource{Component: schedulerName}).WithLogger(logger),
			kubelet:     b.NewRecorder(scheme.Scheme, v1.EventSource{Component: kubeletName, Host: opts.NodeName}).WithLogger(logger),
		})
	}

	s.factory = informers.NewSharedInformerFactory(client, 0)
	podInformer := s.factory.Core().V1().Pods()
	s.lister = podInformer.Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: s.enqueue,
		UpdateFunc: func(oldObj, newObj any) {
			if o, ok := oldObj.(*v1.Pod); ok {
				if n, ok := newObj.(*v1.Pod); ok && o.UID != n.UID {
					// Replaced between two lists: let the old key clean up.
					s.enqueue(oldObj)
				}
			}
			s.enqueue(newObj)
		},
		DeleteFunc: s.enqueue,
	}); err != nil {
		s.Stop()
		return nil, fmt.Errorf("podsim: add pod event handler: %w", err)
	}
	s.factory.Start(ctx.Done())
	for typ, ok := range s.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			s.Stop()
			return nil, fmt.Errorf("podsim: informer for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}

	// Pods already on the node (an earlier simulator's) keep their IPs:
	// reserve them before any new pod gets one.
	existing, err := s.lister.List(labels.Everything())
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("podsim: list cached pods: %w", err)
	}
	for _, pod := range existing {
		if pod.Spec.NodeName == opts.NodeName && pod.Status.PodIP != "" {
			s.ips.reserve(pod.Status.PodIP)
		}
	}

	for range workers {
		s.wg.Go(s.runWorker)
	}
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-s.stopped:
		}
	}()
	logger.Info("Pod simulator started", "podCIDR", podCIDR, "startDelay", opts.StartDelay, "stepDelay", opts.StepDelay, "maxGracePeriod", opts.MaxGracePeriod)
	return s, nil
}

// Stop stops the workers, the informer and the event broadcaster and waits
// for the workers to return; it stops every process of a process pod
// (SIGTERM, then SIGKILL to its process group after min(grace period,
// MaxGracePeriod)) and waits until they are gone. Events not yet written to
// the API server may be lost. Stop is idempotent and is also called when the
// context given to Start is cancelled. It does not delete the Node, the
// RuntimeClass or any pod (process pods keep their last status, as on a node
// that died).
func (s *Simulator) Stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		s.queue.ShutDown()
		s.wg.Wait()
		s.stopProcesses()
		if s.factory != nil {
			s.factory.Shutdown()
		}
		for _, sh := range s.events {
			sh.broadcaster.Shutdown()
		}
		close(s.stopped)
		s.logger.Info("Pod simulator stopped")
	})
}

// NodeName returns the name of the simulator's Node.
func (s *Simulator) NodeName() string { return s.opts.NodeName }

// PodCIDR returns the range the simulator allocates pod IPs from
// (Options.PodCIDR, or DefaultPodCIDR).
func (s *Simulator) PodCIDR() netip.Prefix { return s.podCIDR }

// enqueue is the informer event handler: it queues the key of every pod the
// simulator is responsible for (unbound, or bound to its node).
func (s *Simulator) enqueue(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != s.opts.NodeName {
		return
	}
	s.queue.Add(keyOf(pod))
}

func (s *Simulator) runWorker() {
	for s.processNext() {
	}
}

func (s *Simulator) processNext() bool {
	key, shutdown := s.queue.Get()
	if shutdown {
		return false
	}
	defer s.queue.Done(key)
	logger := klog.LoggerWithValues(s.logger, "pod", klog.KRef(key.Namespace, key.Name), "podUID", key.UID)
	ctx := klog.NewContext(s.ctx, logger)
	err := s.sync(ctx, key)
	switch {
	case err == nil:
		s.queue.Forget(key)
	case s.ctx.Err() != nil:
		// Shutting down.
	case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err):
		// The simulator wrote something the API server rejects: a bug
		// here, not a transient failure. Say so loudly, and keep retrying
		// with back-off like a real component.
		logger.Error(err, "API server rejected a simulator write, retrying")
		s.queue.AddRateLimited(key)
	default:
		logger.V(2).Info("Retrying pod", "err", err)
		s.queue.AddRateLimited(key)
	}
	return true
}

// sync reconciles one pod incarnation. Errors are retried with back-off.
func (s *Simulator) sync(ctx context.Context, key podKey) error {
	pod, err := s.lister.Pods(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		s.forget(ctx, key)
		return nil
	}
	if err != nil {
		return err
	}
	if pod.UID != key.UID || (pod.Spec.NodeName != "" && pod.Spec.NodeName != s.opts.NodeName) {
		s.forget(ctx, key)
		return nil
	}
	st := s.state(ctx, key, pod)
	err = s.reconcile(ctx, st, pod)
	if errors.Is(err, errPodGone) {
		klog.FromContext(ctx).V(4).Info("Pod gone or replaced")
		s.forget(ctx, key)
		return nil
	}
	return err
}

// state returns the state of a pod incarnation, creating it on first sight.
func (s *Simulator) state(ctx context.Context, key podKey, pod *v1.Pod) *podState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.pods[key]; ok {
		return st
	}
	st := newPodState(ctx, key, pod, s.opts)
	s.pods[key] = st
	if s.isProcessPod(pod) {
		st.proc = s.newProcPod(ctx, st, pod)
	}
	return st
}

// forget drops the state of a pod incarnation that is gone and frees its IP.
func (s *Simulator) forget(ctx context.Context, key podKey) {
	s.mu.Lock()
	st, ok := s.pods[key]
	delete(s.pods, key)
	s.mu.Unlock()
	if ok {
		if st.proc != nil {
			s.releaseProcess(key, st.proc)
		}
		if st.ip != "" {
			s.ips.release(st.ip)
		}
		klog.FromContext(ctx).V(4).Info("Forgot pod")
	}
}

// errPodGone reports that the pod incarnation being worked on no longer
// exists (NotFound, or its name now belongs to another UID).
var errPodGone = errors.New("pod gone or replaced")
