package slim

import (
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
)

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
//
// Whole values are shared the same way when pods have them alike: the
// slim containers of a spec (name, image, ports: the same for every pod of
// one spawner profile, 1.3 KB a pod of container structs that are mostly
// empty fields) and a node's host IPs. A shared value is the table's own
// copy, never a slice of a pod given to Pod, so that a caller changing
// its own pod afterwards changes no cached one.

const (
	internSlots = 1 << 14
	// maxInterned bounds the strings worth a slot: names, images, label
	// values; longer ones (JSON in annotations) are rarely shared.
	maxInterned = 256
	// valueSlots: distinct container lists and nodes are few (profiles,
	// nodes); a new one only takes over its slot.
	valueSlots = 1 << 10
)

var (
	internTable     [internSlots]atomic.Pointer[string]
	containersTable [valueSlots]atomic.Pointer[[]corev1.Container]
	hostIPsTable    [valueSlots]atomic.Pointer[[]corev1.HostIP]
)

// FNV-1a: deterministic, so which values share a slot is the same on
// every run.
const fnvOffset = uint32(2166136261)

func fnvString(h uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	// A separator, so that ("ab", "c") and ("a", "bc") differ.
	return (h ^ 0xff) * 16777619
}

func fnvInt(h uint32, v int32) uint32 {
	for range 4 {
		h = (h ^ uint32(v&0xff)) * 16777619
		v >>= 8
	}
	return h
}

// intern returns the table's copy of s when it has one, and otherwise
// makes s the slot's copy.
func intern(s string) string {
	if s == "" || len(s) > maxInterned {
		return s
	}
	h := fnvOffset
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

// internContainers returns the slim view of cs (of each container its
// name, image and ports), shared with every other pod whose containers
// have the same: the table's copy when it has one, else a new copy that
// takes over the slot.
func internContainers(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	h := fnvOffset
	for i := range cs {
		c := &cs[i]
		h = fnvString(fnvString(h, c.Name), c.Image)
		h = fnvInt(h, int32(len(c.Ports)))
		for _, p := range c.Ports {
			h = fnvString(fnvString(fnvString(h, p.Name), string(p.Protocol)), p.HostIP)
			h = fnvInt(fnvInt(h, p.ContainerPort), p.HostPort)
		}
	}
	slot := &containersTable[h&(valueSlots-1)]
	if p := slot.Load(); p != nil && slimContainersEqual(*p, cs) {
		return *p
	}
	out := make([]corev1.Container, len(cs))
	for i := range cs {
		out[i] = corev1.Container{Name: intern(cs[i].Name), Image: intern(cs[i].Image)}
		if ps := cs[i].Ports; ps != nil {
			out[i].Ports = make([]corev1.ContainerPort, len(ps))
			for j, p := range ps {
				p.Name, p.Protocol = intern(p.Name), corev1.Protocol(intern(string(p.Protocol)))
				out[i].Ports[j] = p
			}
		}
	}
	slot.Store(&out)
	return out
}

// slimContainersEqual reports whether slim containers a are the slim view
// of cs; nil and empty port lists differ, as they do in the pod.
func slimContainersEqual(a, cs []corev1.Container) bool {
	if len(a) != len(cs) {
		return false
	}
	for i := range a {
		x, y := &a[i], &cs[i]
		if x.Name != y.Name || x.Image != y.Image || len(x.Ports) != len(y.Ports) || (x.Ports == nil) != (y.Ports == nil) {
			return false
		}
		for j := range x.Ports {
			if x.Ports[j] != y.Ports[j] {
				return false
			}
		}
	}
	return true
}

// internHostIPs returns ips, shared with every other pod on a node with
// the same host IPs (the table's copy, or a new one taking over the slot).
func internHostIPs(ips []corev1.HostIP) []corev1.HostIP {
	if len(ips) == 0 {
		return ips // nil, or the pod's own empty list: nothing to share
	}
	h := fnvOffset
	for _, ip := range ips {
		h = fnvString(h, ip.IP)
	}
	slot := &hostIPsTable[h&(valueSlots-1)]
	if p := slot.Load(); p != nil && equalHostIPs(*p, ips) {
		return *p
	}
	out := make([]corev1.HostIP, len(ips))
	for i, ip := range ips {
		out[i] = corev1.HostIP{IP: intern(ip.IP)}
	}
	slot.Store(&out)
	return out
}

func equalHostIPs(a, b []corev1.HostIP) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
