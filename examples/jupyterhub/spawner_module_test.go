//go:build integration

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kubespawn/kubespawn/examples/jupyterhub/internal/hub"
)

// TestSpawnerModule runs the Python tests of kubespawn_spawner.py (every
// test_*.py here: the class against a stand-in service, no hub; the
// JupyterHub 4, 5 and 6 paths with fakes of those versions) with Debian's
// interpreter, the one the hub runs the class with.
func TestSpawnerModule(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("test_*.py")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test_*.py beside kubespawn_spawner.py (%v)", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hub.Python, "-m", "unittest", "discover", "-s", ".", "-p", "test_*.py", "-v")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("the Python tests of kubespawn_spawner.py failed: %v", err)
	}
	// Discovery that found nothing (an import error hidden, a renamed
	// file) must not pass: every file ran, and tests ran.
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no test count in the output")
	}
	if n, _ := strconv.Atoi(string(m[1])); n == 0 {
		t.Fatalf("no Python test ran")
	}
	for _, f := range files {
		mod := f[:len(f)-len(".py")]
		if !regexp.MustCompile(`\(` + regexp.QuoteMeta(mod) + `\.`).Match(out) {
			t.Errorf("%s: none of its tests ran", f)
		}
	}
}
