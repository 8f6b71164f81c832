package spawner

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Labels and annotations the spawner puts on every pod it creates, so that
// its pods can always be found again (by Stop, Poll, the sweeper, and after a
// restart of the service).
const (
	// LabelManagedBy = ManagedByValue marks kubespawn's pods.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "kubespawn"
	// LabelInstance holds Options.Instance, the service instance owning the pod.
	LabelInstance = "kubespawn.io/instance"
	// LabelKeyHash holds KeyHash(key), a label-safe form of the user/session key.
	LabelKeyHash = "kubespawn.io/key-hash"
	// AnnotationKey holds the raw user/session key.
	AnnotationKey = "kubespawn.io/key"
	// AnnotationStartID identifies the Start call that created the pod, so a
	// retried create that actually succeeded is recognised as our own and a
	// cleanup never deletes a pod created by another Start.
	AnnotationStartID = "kubespawn.io/start-id"
)

const (
	// maxPrefixLen leaves room in a 63-character name for the key's safe
	// form and the hash.
	maxPrefixLen = 40
	// nameHashLen base32 characters (50 bits) of SHA-256 make names of
	// distinct keys distinct; the readable part alone is not injective.
	nameHashLen = 10
)

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// PodName returns the pod name for a user/session key: prefix, a readable
// form of the key (lower-case letters and digits, other runs of characters
// replaced by '-') and a hash of the raw key. The result is a valid DNS-1123
// label of at most 63 characters, the same for the same inputs (across
// processes and versions of this package), and different for different keys
// (up to a 50-bit hash collision). prefix may be empty; otherwise it must be
// a DNS-1123 label of at most 40 characters. key must not be empty.
func PodName(prefix, key string) (string, error) {
	if key == "" {
		return "", invalidRequest("empty key")
	}
	if prefix != "" {
		if len(prefix) > maxPrefixLen {
			return "", invalidRequest("name prefix %q longer than %d characters", prefix, maxPrefixLen)
		}
		if errs := validation.IsDNS1123Label(prefix); len(errs) > 0 {
			return "", invalidRequest("name prefix %q: %s", prefix, strings.Join(errs, "; "))
		}
	}
	sum := sha256.Sum256([]byte(key))
	hash := lowerBase32.EncodeToString(sum[:])[:nameHashLen]

	room := validation.DNS1123LabelMaxLength - len(hash) - 1
	if prefix != "" {
		room -= len(prefix) + 1
	}
	safe := safeChars(key, room)

	parts := make([]string, 0, 3)
	for _, p := range []string{prefix, safe, hash} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "-"), nil
}

// instanceHashLen base32 characters (30 bits) of SHA-256 keep the prefixes
// of instances whose readable forms are equal ("Hub_A", "hub-a") apart.
const instanceHashLen = 6

// InstancePrefix returns a name prefix (for Options.NamePrefix and PodName)
// that names the instance: prefix, a readable form of instance and a hash
// of it, a DNS-1123 label of at most 40 characters. PodName keeps the keys
// of one instance apart, but not two instances: with the same NamePrefix,
// two instances in one namespace derive the same pod name for a key, and
// each sees the other's pod under its own pod's name. With
// NamePrefix = InstancePrefix(prefix, Instance) the names of distinct
// instances differ. prefix may be empty; otherwise it must be a DNS-1123
// label of at most 33 characters. instance must be a valid label value
// (like Options.Instance) and not empty.
//
// Changing an existing deployment's NamePrefix renames its pods: pods
// created under the old prefix are no longer found by name (the sweeper
// still finds them by their labels).
func InstancePrefix(prefix, instance string) (string, error) {
	if instance == "" {
		return "", invalidRequest("empty instance")
	}
	if errs := validation.IsValidLabelValue(instance); len(errs) > 0 {
		return "", invalidRequest("instance %q: %s", instance, strings.Join(errs, "; "))
	}
	room := maxPrefixLen - instanceHashLen - 1
	if prefix != "" {
		if len(prefix) > room {
			return "", invalidRequest("name prefix %q longer than %d characters", prefix, room)
		}
		if errs := validation.IsDNS1123Label(prefix); len(errs) > 0 {
			return "", invalidRequest("name prefix %q: %s", prefix, strings.Join(errs, "; "))
		}
		room -= len(prefix) + 1
	}
	sum := sha256.Sum256([]byte(instance))
	hash := lowerBase32.EncodeToString(sum[:])[:instanceHashLen]
	parts := make([]string, 0, 3)
	for _, p := range []string{prefix, safeChars(instance, room), hash} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "-"), nil
}

// PodName returns the name of the pod Start creates for key:
// PodName(Options.NamePrefix, key). Services should take names from here
// rather than repeat the prefix.
func (s *Spawner) PodName(key string) (string, error) {
	return PodName(s.opts.NamePrefix, key)
}

// safeChars lower-cases s, keeps [a-z0-9], turns every other run into one
// '-', trims dashes and truncates to max characters (no trailing dash).
func safeChars(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			dash = b.Len() > 0 // never a leading dash
			continue
		}
		need := 1
		if dash {
			need = 2
		}
		if b.Len()+need > max {
			break
		}
		if dash {
			b.WriteByte('-')
			dash = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// KeyHash is the label-safe form of a key stored in LabelKeyHash: 40 hex
// characters of its SHA-256.
func KeyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:20])
}

// LabelPodUID, on an owned object (Request.Services, Secrets, ConfigMaps),
// holds the UID of the pod it belongs to, so that Stop, a failed Start and
// the sweeper find a pod's objects with one selector, whether or not the
// garbage collector has run.
const LabelPodUID = "kubespawn.io/pod-uid"
