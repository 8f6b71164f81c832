//go:build integration

package events

import (
	"os"
	"testing"

	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	// Lets `go test ./events/ -args -v=4` show the reflector's logs.
	klog.InitFlags(nil)
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}
