package spawner

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestPodName(t *testing.T) {
	cases := []struct{ prefix, key, wantStart string }{
		{"jupyter", "alice", "jupyter-alice-"},
		{"jupyter", "Alice@Example.COM", "jupyter-alice-example-com-"},
		{"jupyter", "ipython/ipython-in-depth/master", "jupyter-ipython-ipython-in-depth-master-"},
		{"", "bob", "bob-"},
		{"x", "---", "x-"},
		{"x", "日本語", "x-"},
		{"x", strings.Repeat("a", 500), "x-aaaa"},
	}
	for _, c := range cases {
		name, err := PodName(c.prefix, c.key)
		require.NoError(t, err, c.key)
		assert.Truef(t, strings.HasPrefix(name, c.wantStart), "%q -> %q", c.key, name)
		assert.Empty(t, validation.IsDNS1123Label(name), name)
		again, _ := PodName(c.prefix, c.key)
		assert.Equal(t, name, again, "deterministic")
	}
	// Keys with the same readable form get different names.
	a, _ := PodName("j", "a.b")
	b, _ := PodName("j", "a-b")
	c, _ := PodName("j", "A.B")
	assert.NotEqual(t, a, b)
	assert.NotEqual(t, a, c)
	// Stable across versions: changing this breaks finding existing pods.
	got, _ := PodName("jupyter", "alice")
	assert.Equal(t, "jupyter-alice-"+lowerBase32.EncodeToString(sha("alice"))[:nameHashLen], got)
}

func TestPodNameRejectsBadInput(t *testing.T) {
	for _, c := range []struct{ prefix, key string }{
		{"jupyter", ""},
		{"Jupyter", "a"},
		{"-x", "a"},
		{"x-", "a"},
		{"a.b", "a"},
		{strings.Repeat("p", 41), "a"},
	} {
		_, err := PodName(c.prefix, c.key)
		assert.ErrorIsf(t, err, ErrInvalidArgument, "%q %q", c.prefix, c.key)
	}
}

// FuzzPodName: every output is a valid DNS-1123 label of at most 63
// characters, deterministic, and distinct keys give distinct names.
func FuzzPodName(f *testing.F) {
	f.Add("jupyter", "alice", "bob")
	f.Add("", "a.b", "a-b")
	f.Add("k", "A", "a")
	f.Add("kubespawn", strings.Repeat("x", 100), strings.Repeat("x", 101))
	f.Add("p", "\x00\xff", "--")
	f.Fuzz(func(t *testing.T, prefix, k1, k2 string) {
		n1, err := PodName(prefix, k1)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("untyped error %v", err)
			}
			prefixOK := prefix == "" || (len(prefix) <= maxPrefixLen && len(validation.IsDNS1123Label(prefix)) == 0)
			if k1 != "" && prefixOK {
				t.Fatalf("PodName(%q, %q) rejected valid input: %v", prefix, k1, err)
			}
			return
		}
		if errs := validation.IsDNS1123Label(n1); len(errs) > 0 {
			t.Fatalf("PodName(%q, %q) = %q: %v", prefix, k1, n1, errs)
		}
		if len(n1) > 63 {
			t.Fatalf("too long: %q", n1)
		}
		if prefix != "" && !strings.HasPrefix(n1, prefix+"-") {
			t.Fatalf("%q lacks prefix %q", n1, prefix)
		}
		if again, _ := PodName(prefix, k1); again != n1 {
			t.Fatalf("not deterministic: %q vs %q", n1, again)
		}
		if n2, err := PodName(prefix, k2); err == nil && k1 != k2 && n1 == n2 {
			t.Fatalf("collision: %q and %q both -> %q", k1, k2, n1)
		}
	})
}

// TestInstancePrefix: prefixes naming the instance keep the pod names of
// two instances apart, are valid NamePrefixes, and are stable.
func TestInstancePrefix(t *testing.T) {
	seen := map[string]string{}
	for _, c := range []struct{ prefix, instance string }{
		{"kubespawn", "hub-a"},
		{"kubespawn", "hub-b"},
		{"kubespawn", "Hub_A"}, // the same readable form as hub-a
		{"kubespawn", "hub.a"},
		{"", "hub-a"},
		{"kubespawn", strings.Repeat("i", 63)},
		{strings.Repeat("p", 33), "hub-a"},
	} {
		p, err := InstancePrefix(c.prefix, c.instance)
		require.NoError(t, err, c)
		assert.LessOrEqual(t, len(p), maxPrefixLen, p)
		assert.Empty(t, validation.IsDNS1123Label(p), p)
		again, _ := InstancePrefix(c.prefix, c.instance)
		assert.Equal(t, p, again, "deterministic")
		assert.NotContains(t, seen, p, "%v and %s", c, seen[p])
		seen[p] = c.prefix + "/" + c.instance
		name, err := PodName(p, "alice")
		require.NoError(t, err, "a valid NamePrefix")
		sp, err := New(Options{Client: newFakeClient(), Instance: c.instance, NamePrefix: p})
		require.NoError(t, err)
		got, err := sp.PodName("alice")
		require.NoError(t, err)
		assert.Equal(t, name, got, "the spawner's names")
	}
	a, _ := InstancePrefix("kubespawn", "hub-a")
	b, _ := InstancePrefix("kubespawn", "hub-b")
	na, _ := PodName(a, "alice")
	nb, _ := PodName(b, "alice")
	assert.NotEqual(t, na, nb, "one key, two instances, two names")
	// Stable across versions: changing this renames every pod.
	assert.Equal(t, "kubespawn-hub-a-"+lowerBase32.EncodeToString(sha("hub-a"))[:instanceHashLen], a)

	for _, c := range []struct{ prefix, instance string }{
		{"kubespawn", ""},
		{"kubespawn", "-bad"},
		{"kubespawn", strings.Repeat("i", 64)},
		{"Kubespawn", "hub"},
		{strings.Repeat("p", 34), "hub"},
	} {
		_, err := InstancePrefix(c.prefix, c.instance)
		assert.ErrorIs(t, err, ErrInvalidArgument, c)
	}
}
