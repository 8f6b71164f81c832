package testcluster

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
)

// EnvExistingKubeConfig names the environment variable that points the
// integration tests at an existing cluster instead of a local control
// plane (like envtest's USE_EXISTING_CLUSTER): its value is the path of a
// kubeconfig file whose current context the tests use.
const EnvExistingKubeConfig = "KUBESPAWN_TEST_KUBECONFIG"

// ErrExistingCluster: the operation needs the local control plane's
// processes (a restart of kube-apiserver, say), which a test run against an
// existing cluster does not own.
var ErrExistingCluster = errors.New("testcluster: not possible on an existing cluster (" + EnvExistingKubeConfig + " is set): it needs the local control plane")

// Existing returns a Cluster for the cluster of the kubeconfig file at
// path. Nothing is started or stopped (Stop leaves the cluster as it is),
// LogTail is empty and RestartAPIServer fails with ErrExistingCluster. The
// pod simulator runs against it as against a local control plane: the
// kubelet of a fake Node of its own, binding the test pods to it. The
// cluster's own controller-manager collects garbage and deletes namespaces,
// so Options.ControllerManager and Options.Controllers are ignored there.
func Existing(path string) (*Cluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("testcluster: %s=%s: %w", EnvExistingKubeConfig, path, err)
	}
	cfg.QPS = -1 // as for the local control plane: tests create hundreds of objects
	return &Cluster{existing: cfg}, nil
}

// startForTests is what MustStart starts: the existing cluster if
// KUBESPAWN_TEST_KUBECONFIG is set, else a local control plane.
func startForTests(opts Options) (*Cluster, error) {
	path := os.Getenv(EnvExistingKubeConfig)
	if path == "" {
		return nil, nil
	}
	// Flags cannot be honoured on a cluster that is not ours; the
	// controller-manager option can (the cluster runs one), so it is
	// ignored.
	if len(opts.APIServerArgs) > 0 || len(opts.EtcdArgs) > 0 || len(opts.ControllerManagerArgs) > 0 {
		return nil, fmt.Errorf("testcluster: %s is set, but this package needs its own control plane flags (%q, %q, %q)", EnvExistingKubeConfig, opts.APIServerArgs, opts.EtcdArgs, opts.ControllerManagerArgs)
	}
	return Existing(path)
}

// IsExisting reports whether c is an existing cluster (Existing) rather
// than a local control plane.
func (c *Cluster) IsExisting() bool { return c.existing != nil }
