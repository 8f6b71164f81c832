//go:build integration

package reflector_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/internal/faultproxy"
	"github.com/kubespawn/kubespawn/reflector"
)

// A cache loads its state with a WatchList by default and with a LIST
// under Options.NoWatchList: the requests the proxy saw say which.
func TestNoWatchListLoadsWithAList(t *testing.T) {
	t.Parallel()
	for _, noWatchList := range []bool{false, true} {
		e := newEnv(t)
		e.pod("a", nil)
		e.pod("b", nil)
		pods := e.start(reflector.Options{NoWatchList: noWatchList, ProbeInterval: -1, AuditInterval: -1}, reflector.Scope{})
		waitSynced(t, pods)
		require.Eventually(t, func() bool { _, ok := cached(pods, e.ns, "b"); return ok }, 10*time.Second, 10*time.Millisecond)
		lists := e.proxy.Stats()[faultproxy.Key{Verb: faultproxy.VerbList, Resource: "pods"}].Requests
		if noWatchList {
			assert.Positive(t, lists, "NoWatchList: the state came from a LIST")
		} else {
			assert.Zero(t, lists, "by default the state comes from a WatchList, not a LIST")
		}
	}
}
