//go:build integration

package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hub"
)

// TestSpawnerModule runs the Python tests of kubespawn_spawner.py
// (test_kubespawn_spawner.py: the class against a stand-in service, no
// hub) with Debian's interpreter, the one the hub runs the class with.
func TestSpawnerModule(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hub.Python, "-m", "unittest", "-v", "test_kubespawn_spawner")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("the Python tests of kubespawn_spawner.py failed: %v", err)
	}
}
