//go:build integration

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/internal/testcluster"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []string{"default"}, o.namespaces.values)
	assert.Equal(t, "127.0.0.1:8081", o.listen, "loopback unless told otherwise")
	assert.Zero(t, o.cache.StallTimeout, "the library's default")
	assert.Zero(t, o.cache.FailureTimeout, "the library's default")
	assert.Empty(t, o.kubeconfig)
	assert.Empty(t, o.tokenFile)
	assert.Empty(t, o.selector)

	o, err = parseFlags([]string{"--namespace=a", "--namespace", "b,c", "--selector=component=singleuser-server",
		"--listen=0.0.0.0:9000", "--stall-timeout=5s", "--kubeconfig=/k", "--token-file=/t"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c"}, o.namespaces.values)
	assert.Equal(t, "component=singleuser-server", o.selector)
	assert.Equal(t, "0.0.0.0:9000", o.listen)
	assert.Equal(t, 5*time.Second, o.cache.StallTimeout)
	assert.Equal(t, "/k", o.kubeconfig)
	assert.Equal(t, "/t", o.tokenFile)

	for _, args := range [][]string{
		{"--stall-timeout=soon"},
		{"--stall-timeout=500ms"},
		{"--namespace="},
		{"--no-such-flag"},
		{"extra"},
		{"--failure-timeout=-1s"},
		{"--stall-timeout=10s", "--failure-timeout=5s"},
	} {
		_, err := parseFlags(args, io.Discard)
		assert.Error(t, err, "%v", args)
	}
	_, err = parseFlags([]string{"-h"}, io.Discard)
	assert.ErrorIs(t, err, flag.ErrHelp)
}

func TestReadToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tok, err := service.ReadTokenFile("")
	require.NoError(t, err)
	assert.Empty(t, tok, "no file: DELETE disabled")

	path := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(path, []byte("  abc123\n"), 0o600))
	tok, err = service.ReadTokenFile(path)
	require.NoError(t, err)
	assert.Equal(t, "abc123", tok)

	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	_, err = service.ReadTokenFile(empty)
	assert.ErrorContains(t, err, "empty", "a token file that enables nothing is an error")
	_, err = service.ReadTokenFile(filepath.Join(dir, "missing"))
	assert.Error(t, err)

	// run refuses to start on a bad token file.
	err = run(t.Context(), []string{"--kubeconfig=" + testcluster.KubeConfig(t, cluster.Config()), "--token-file=" + empty, "--listen=127.0.0.1:0"}, io.Discard)
	assert.ErrorContains(t, err, "empty")
}

// TestRunReturnsErrorOnReflectorFailure: a sidecar whose credentials are
// refused never gets healthy; once recovery has failed for
// --failure-timeout, run returns an error (which main turns into exit
// status 1) naming the cause.
func TestRunReturnsErrorOnReflectorFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	saCfg, err := cluster.ServiceAccountConfig(t.Context(), e.ns, "no-permissions")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{
			"--kubeconfig=" + testcluster.KubeConfig(t, saCfg), "--namespace=" + e.ns,
			"--listen=127.0.0.1:0", "--stall-timeout=4s", "--failure-timeout=4s",
		}, io.Discard)
	}()
	servicetest.AssertReflectorFailure(t, returned(t, done, 120*time.Second))
}

// TestRunGracefulShutdown: when its context ends (SIGTERM), run shuts the
// HTTP server down, closing open event streams, and returns nil.
func TestRunGracefulShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.pod("jupyter-alice", nil)
	addr := servicetest.FreeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig=" + testcluster.KubeConfig(t, cluster.Config()), "--namespace=" + e.ns, "--listen=" + addr}, io.Discard)
	}()
	base := "http://" + addr
	servicetest.AwaitOK(t, base+"/readyz", 60*time.Second, "run serving")

	// An open event stream must not hold the shutdown up.
	resp, err := http.Get(base + "/pods/" + e.ns + "/" + pod.Name + "/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	cancel()
	runErr := returned(t, done, 60*time.Second)
	require.NoError(t, runErr)
	_, err = io.ReadAll(resp.Body) // the stream was ended by the server
	require.NoError(t, err)
	_, err = http.Get(base + "/livez")
	require.Error(t, err, "no longer listening")
}

// runChild runs main() in a child process (the test binary, see TestMain).
func runChild(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	cmd.Stdout = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, stderr
}

// syncBuffer is a bytes.Buffer safe for the exec copier and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestProcessExitsNonZeroOnFailure: the real process exits with status 1
// when its reflectors fail, so that Kubernetes restarts it.
func TestProcessExitsNonZeroOnFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	saCfg, err := cluster.ServiceAccountConfig(t.Context(), e.ns, "no-permissions")
	require.NoError(t, err)
	cmd, out := runChild(t, "--kubeconfig="+testcluster.KubeConfig(t, saCfg), "--namespace="+e.ns,
		"--listen="+servicetest.FreeAddr(t), "--stall-timeout=4s", "--failure-timeout=4s")
	err = cmd.Wait()
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "exit error, got %v; output:\n%s", err, out)
	assert.Equal(t, 1, exitErr.ExitCode(), "output:\n%s", out)
	assert.Contains(t, out.String(), "forbidden")
}

// TestProcessExitsZeroOnSIGTERM: SIGTERM is a graceful shutdown, exit 0.
func TestProcessExitsZeroOnSIGTERM(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addr := servicetest.FreeAddr(t)
	cmd, out := runChild(t, "--kubeconfig="+testcluster.KubeConfig(t, cluster.Config()), "--namespace="+e.ns, "--listen="+addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("child's output:\n%s", out)
		}
	})
	servicetest.AwaitOK(t, "http://"+addr+"/livez", 60*time.Second, "child serving")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "output:\n%s", out)
	assert.Contains(t, out.String(), "Shutting down")
}

// returned waits up to timeout for run to return and gives its error.
func returned(t *testing.T, done <-chan error, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		t.Fatalf("run did not return within %s", timeout)
		return nil
	}
}
