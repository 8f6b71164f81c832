package main

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubespawn/kubespawn/examples/internal/servicetest"
	"github.com/kubespawn/kubespawn/spawner"
)

// TestBadFlagsAreUsageErrors: the library's validation is the only copy of
// its rules (StallTimeout at least 4s, FailureTimeout at least
// StallTimeout); the demo spawner reports its error as a usage error, exit
// status 2, with the library's message.
func TestBadFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	o := servicetest.CheckReflectorFlags(t, parseFlags, "--instance=demo")
	assert.Zero(t, o.cache.StallTimeout, "0: the library's default")
}

// TestSpawnerFlagsAreTheLibrarysToCheck (issue 18, item 4): the flags of
// spawner.Options and of the sweep policy default to 0, the library's
// default, and only the library checks them: a bad value is still a usage
// error (exit status 2) whose message is the library's and names the flag.
func TestSpawnerFlagsAreTheLibrarysToCheck(t *testing.T) {
	t.Parallel()
	o := servicetest.MustParse(t, parseFlags, "--instance=demo")
	assert.Zero(t, o.startTimeout, "0: spawner.Options' default (5m)")
	assert.Zero(t, o.stopTimeout, "0: spawner.Options' default (1m)")
	assert.Zero(t, o.imagePullGrace, "0: spawner.Options' default (30s)")
	assert.Zero(t, o.orphanMinAge, "0: the sweep policy's default (the start timeout)")
	assert.Zero(t, o.maxClaimAge, "0: claims are never deleted by the sweeper")
	for _, c := range []struct {
		flag, msg string
		is        error
	}{
		{"--start-timeout=-1s", "StartTimeout must not be negative", spawner.ErrInvalidOptions},
		{"--stop-timeout=-1s", "StopTimeout must not be negative", spawner.ErrInvalidOptions},
		{"--image-pull-grace=-1s", "ImagePullGrace must not be negative", spawner.ErrInvalidOptions},
		{"--orphan-min-age=-1s", "must not be negative", spawner.ErrInvalidArgument},
		{"--max-age=-1s", "must not be negative", spawner.ErrInvalidArgument},
		{"--max-claim-age=-1s", "must not be negative", spawner.ErrInvalidArgument},
	} {
		_, err := parseFlags([]string{"--instance=demo", c.flag}, io.Discard)
		require.ErrorIs(t, err, c.is, c.flag)
		servicetest.AssertUsageError(t, err, c.flag, c.msg, strings.SplitN(c.flag, "=", 2)[0])
	}
}

// TestStorageFlags: the claim per user as Zero to JupyterHub's
// singleuser.storage (type dynamic) configures it: no claim without
// --storage-capacity; the name from a KubeSpawner-style template whose
// {username} is the user's escaped, hashed form (as in pod names), so two
// users never share a claim; bad values are usage errors.
func TestStorageFlags(t *testing.T) {
	t.Parallel()
	o := servicetest.MustParse(t, parseFlags, "--instance=demo")
	assert.Nil(t, o.storage, "no --storage-capacity: no claim (KubeSpawner's storage_capacity unset)")
	assert.False(t, o.servicesEnabled, "KubeSpawner's services_enabled defaults to false")
	assert.Equal(t, int32(8888), o.port, "KubeSpawner's port")
	assert.Equal(t, "cluster.local", o.clusterDomain, "the end of KubeSpawner's dns_name_template")

	o = servicetest.MustParse(t, parseFlags, "--instance=demo", "--storage-capacity=10Gi")
	require.NotNil(t, o.storage)
	assert.Equal(t, "10Gi", o.storage.Capacity.String())
	assert.Nil(t, o.storage.Class, "no --storage-class: the cluster's default class")
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, o.storage.AccessModes)
	assert.Equal(t, "/home/jovyan", o.storage.MountPath)
	assert.Equal(t, "claim-{username}", o.storage.NameTemplate)
	name, err := o.storage.claimName("Alice@Example.com")
	require.NoError(t, err)
	hashed, err := spawner.PodName("", "Alice@Example.com")
	require.NoError(t, err)
	assert.Equal(t, "claim-"+hashed, name, "{username} is escaped as in pod names")
	other, err := o.storage.claimName("alice@example.com")
	require.NoError(t, err)
	assert.NotEqual(t, name, other, "users whose readable forms are equal get distinct claims")
	long, err := o.storage.claimName(strings.Repeat("ü-x", 100))
	require.NoError(t, err)
	assert.Empty(t, validation.IsDNS1123Subdomain(long))

	o = servicetest.MustParse(t, parseFlags, "--instance=demo", "--storage-capacity=1Gi", "--storage-class=", "--storage-access-modes=ReadWriteMany,ReadOnlyMany",
		"--storage-name-template=home-{username}{servername}", "--storage-mount-path=/home/user", "--services-enabled", "--port=9000", "--cluster-domain=corp.example")
	require.NotNil(t, o.storage.Class, "--storage-class= asks for no class, as KubeSpawner's empty string")
	assert.Empty(t, *o.storage.Class)
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany, corev1.ReadOnlyMany}, o.storage.AccessModes)
	assert.Equal(t, "/home/user", o.storage.MountPath)
	name, err = o.storage.claimName("bob")
	require.NoError(t, err)
	hashed, err = spawner.PodName("", "bob")
	require.NoError(t, err)
	assert.Equal(t, "home-"+hashed, name, "{servername} is empty: the demo runs default servers only")
	assert.True(t, o.servicesEnabled)
	assert.Equal(t, int32(9000), o.port)
	assert.Equal(t, "corp.example", o.clusterDomain)

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--storage-capacity=ten"}, "--storage-capacity"},
		{[]string{"--storage-capacity=0"}, "--storage-capacity"},
		{[]string{"--storage-capacity=-1Gi"}, "--storage-capacity"},
		{[]string{"--storage-capacity=1Gi", "--storage-access-modes=ReadWriteSometimes"}, "ReadWriteSometimes"},
		{[]string{"--storage-capacity=1Gi", "--storage-access-modes="}, "--storage-access-modes"},
		{[]string{"--storage-capacity=1Gi", "--storage-name-template=home"}, "{username}"},
		{[]string{"--storage-capacity=1Gi", "--storage-name-template=Claim-{username}"}, "--storage-name-template"},
		{[]string{"--storage-capacity=1Gi", "--storage-name-template=claim-{userid}"}, "{userid}"},
		{[]string{"--storage-capacity=1Gi", "--storage-mount-path=home"}, "--storage-mount-path"},
		{[]string{"--port=0"}, "--port"},
		{[]string{"--port=70000"}, "--port"},
		{[]string{"--cluster-domain=Cluster_Local"}, "--cluster-domain"},
		{[]string{"--cluster-domain="}, "--cluster-domain"},
	} {
		_, err := parseFlags(append([]string{"--instance=demo"}, c.args...), io.Discard)
		servicetest.AssertUsageError(t, err, fmt.Sprint(c.args), c.msg)
	}
}
