package podsim

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
)

// nodeIP is the simulated node's InternalIP and every pod's hostIP: a
// loopback address, so nothing that dials it leaves the machine.
const nodeIP = "127.0.0.1"

// ensureNode creates the fake Node or, if it exists, refreshes its status.
func (s *Simulator) ensureNode(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	want := s.desiredNode()
	created, err := s.client.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
	switch {
	case err == nil:
		logger.V(2).Info("Created node")
		// Nodes keep their status on create, but write it through the
		// status subresource too in case a future strategy drops it.
		if created.Status.Conditions != nil {
			return nil
		}
	case apierrors.IsAlreadyExists(err):
		logger.V(2).Info("Reusing node")
	default:
		return fmt.Errorf("podsim: create node %q: %w", s.opts.NodeName, err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := s.client.CoreV1().Nodes().Get(ctx, s.opts.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		node.Status = want.Status
		_, err = s.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("podsim: update node %q status: %w", s.opts.NodeName, err)
	}
	return nil
}

// nodeResources is the fake Node's capacity (and allocatable).
func nodeResources() v1.ResourceList {
	return v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("64"),
		v1.ResourceMemory:           resource.MustParse("256Gi"),
		v1.ResourcePods:             resource.MustParse("10000"),
		v1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	}
}

func (s *Simulator) desiredNode() *v1.Node {
	now := metav1.Now()
	resources := nodeResources()
	cond := func(t v1.NodeConditionType, status v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: status, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: s.opts.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname":        s.opts.NodeName,
				"kubernetes.io/os":              "linux",
				"kubernetes.io/arch":            "amd64",
				"podsim.kubespawn.io/simulated": "true",
			},
		},
		Status: v1.NodeStatus{
			Capacity:    resources,
			Allocatable: resources.DeepCopy(),
			Phase:       v1.NodeRunning,
			Conditions: []v1.NodeCondition{
				cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
			},
			Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: s.nodeIP},
				{Type: v1.NodeHostName, Address: s.opts.NodeName},
			},
			DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: 10250}},
			NodeInfo: v1.NodeSystemInfo{
				OperatingSystem:         "linux",
				Architecture:            "amd64",
				OSImage:                 "podsim",
				KernelVersion:           "podsim",
				ContainerRuntimeVersion: "containerd://podsim",
				KubeletVersion:          "v0.0.0-podsim",
			},
		},
	}
}

// ipPool hands out unique pod IPs from Options.PodCIDR, skipping the
// range's first and last addresses, those ending in .0 or .255 (which some
// software takes for network or broadcast addresses), and addresses still
// in use.
type ipPool struct {
	mu     sync.Mutex
	prefix netip.Prefix
	size   uint32 // addresses in prefix
	next   uint32 // offset of the next address to try
	inUse  map[string]bool
}

func newIPPool(prefix netip.Prefix) *ipPool {
	return &ipPool{prefix: prefix, size: prefixSize(prefix), next: 1, inUse: map[string]bool{}}
}

func (p *ipPool) allocate() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.size {
		n := p.next
		p.next = (p.next + 1) % p.size
		a := addrAt(p.prefix, n)
		if b := a.As4()[3]; n == 0 || n == p.size-1 || b == 0 || b == 255 {
			continue
		}
		ip := a.String()
		if !p.inUse[ip] {
			p.inUse[ip] = true
			return ip, nil
		}
	}
	return "", fmt.Errorf("podsim: pod IP range %s exhausted", p.prefix)
}

// reserve marks an IP found on an adopted pod as used.
func (p *ipPool) reserve(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse[ip] = true
}

func (p *ipPool) release(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inUse, ip)
}
