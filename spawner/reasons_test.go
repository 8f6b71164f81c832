package spawner

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestReasonTableIsComplete: every sentinel a StartError can carry has
// exactly one row, a distinct label, and fail-fast matches the contract.
func TestReasonTableIsComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range startReasons {
		assert.False(t, seen[r.label], "label %s twice", r.label)
		seen[r.label] = true
		assert.Same(t, r.err, reasonOf(r.err).err)
		assert.Equal(t, r.label, reasonOf(r.err).label)
		assert.False(t, r.warned && !r.failFast, "%s: only fail-fast reasons wait for a warning", r.label)
	}
	assert.Len(t, startReasons, 20) // 14, and six of claims and owned objects
	assert.Equal(t, "error", reasonOf(errors.New("other")).label)
	assert.True(t, reasonOf(ErrImagePull).failFast)
	assert.False(t, reasonOf(ErrStartTimeout).failFast)
}
