package reflector

import "sync/atomic"

// Interning: among thousands of cached pods most strings are the same few
// (label and annotation keys and common values, images, image IDs, the
// namespace and node, condition types), yet each decoded object carries
// its own copy. The slim view replaces them with one shared copy.
//
// The table is a fixed, direct-mapped cache of strings: a lookup is a
// hash and a compare, a string unique to one pod only takes over its slot,
// and memory is bounded (internSlots pointers) with nothing to expire.
// Package unique was measured first: its weak handles cost about 4 µs for
// each new string, 30 µs a realistic pod, which the initial sync of
// 100,000 pods cannot afford.

const (
	internSlots = 1 << 14
	// maxInterned bounds the strings worth a slot: names, images, label
	// values; longer ones (JSON in annotations) are rarely shared.
	maxInterned = 256
)

var internTable [internSlots]atomic.Pointer[string]

// intern returns the table's copy of s when it has one, and otherwise
// makes s the slot's copy.
func intern(s string) string {
	if s == "" || len(s) > maxInterned {
		return s
	}
	// FNV-1a: deterministic, so which strings share a slot is the same on
	// every run.
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	slot := &internTable[h&(internSlots-1)]
	if p := slot.Load(); p != nil && *p == s {
		return *p
	}
	slot.Store(&s)
	return s
}
