//go:build integration

package faultproxy_test

import (
	"os"
	"testing"

	"github.com/kubespawn/kubespawn/internal/testcluster"
)

// cluster is the real etcd + kube-apiserver shared by the integration tests
// of this package. The unit tests do not use it.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	cluster = testcluster.MustStart(testcluster.Options{})
	os.Exit(cluster.Run(m))
}
