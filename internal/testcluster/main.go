package testcluster

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// Main is for a test package's TestMain: it starts one control plane for
// the whole package, stores it in *cp, runs the tests, stops the cluster
// and exits. If the control plane cannot start, it prints why (with the
// processes' logs) and exits 1: a missing control plane fails loudly, it
// never skips tests. When tests fail, the logs' tails are printed too.
func Main(m *testing.M, cp **Cluster) {
	os.Exit(run(m, cp))
}

func run(m *testing.M, cp **Cluster) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	start := time.Now()
	c, err := Start(ctx, Options{})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: testcluster: the control plane did not start: %v\n", err)
		return 1
	}
	defer c.Stop()
	fmt.Fprintf(os.Stderr, "testcluster: control plane ready at %s in %s\n", c.URL(), time.Since(start).Round(time.Millisecond))
	*cp = c
	code := m.Run()
	if code != 0 {
		fmt.Fprint(os.Stderr, c.LogTail(30))
	}
	return code
}
