package podproc

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestExpandLikeTheKubelet(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	cases := map[string]string{
		"$(A)":          "x",
		"pre-$(A)-$(A)": "pre-x-x",
		"$(EMPTY)!":     "!",
		"$(UNDEFINED)":  "$(UNDEFINED)",
		"$$(A)":         "$(A)",
		"$$":            "$",
		"$A":            "$A",
		"$(A":           "$(A",
		"cost $5":       "cost $5",
		"end$":          "end$",
		"plain":         "plain",
	}
	for in, want := range cases {
		assert.Equal(t, want, expand(in, lookup), in)
	}
}
