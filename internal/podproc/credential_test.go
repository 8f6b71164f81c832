package podproc_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/kubespawn/kubespawn/internal/podproc"
)

// TestRunAsUser: as root, the process runs as the security context's user
// and groups, in directories given to it; otherwise the context is ignored,
// with a note.
func TestRunAsUser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// t.TempDir's directories are private: let the user through.
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	pod := testPod(v1.Container{Name: "c", Command: []string{"/bin/sh", "-c", `echo "ids $(id -u) $(id -g) $(id -G)"; touch "$HOME/ok"`},
		SecurityContext: &v1.SecurityContext{RunAsGroup: ptr.To[int64](2345)}})
	pod.Spec.SecurityContext = &v1.PodSecurityContext{RunAsUser: ptr.To[int64](1234), RunAsGroup: ptr.To[int64](1), SupplementalGroups: []int64{3456}, FSGroup: ptr.To[int64](4567)}
	spec, err := podproc.Resolve(context.Background(), fake.NewClientset(), pod, "c", podproc.Config{IP: ip, Dir: filepath.Join(dir, "pod")})
	require.NoError(t, err)
	if os.Geteuid() != 0 {
		assert.Nil(t, spec.Credential)
		require.Len(t, spec.Notes, 1)
		assert.Contains(t, spec.Notes[0], "ignored: the simulator is not root")
		return
	}
	require.NotNil(t, spec.Credential)
	assert.Equal(t, uint32(1234), spec.Credential.Uid)
	assert.Equal(t, uint32(2345), spec.Credential.Gid, "the container's runAsGroup wins")
	assert.Equal(t, []uint32{3456, 4567}, spec.Credential.Groups)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "pod"), 0o755))
	p, err := podproc.Start(spec)
	require.NoError(t, err)
	<-p.Done()
	ex, _ := p.Exit()
	b, _ := os.ReadFile(p.LogPath())
	require.Equal(t, int32(0), ex.Code, string(b))
	line := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "ids ") {
			line = l
		}
	}
	assert.Equal(t, "ids 1234 2345", line[:len("ids 1234 2345")], line)
	assert.Contains(t, line, "3456")
	assert.Contains(t, line, "4567")
	fi, err := os.Stat(filepath.Join(dir, "pod", "home", "ok"))
	require.NoError(t, err, "HOME is not the user's")
	assert.True(t, fi.Mode().IsRegular())
}
