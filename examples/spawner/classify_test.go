package main

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubespawn/kubespawn/spawner"
)

// TestClassifyClaimsAndOwnedObjects: a start that failed on its claim or
// its Service answers what it is: 4xx when the user's or the admin's
// configuration is the problem (a claim of that name that is someone
// else's, an existing claim that cannot take the spec, a claim being
// deleted, a Service of the pod's name that is not ours), 503 when the API
// server refused or could not answer (a quota, a webhook), 422 when it
// found the object invalid. The reason is the library's label.
func TestClassifyClaimsAndOwnedObjects(t *testing.T) {
	t.Parallel()
	gr := schema.GroupResource{Resource: "persistentvolumeclaims"}
	quota := apierrors.NewForbidden(gr, "claim-a", fmt.Errorf("exceeded quota: no-claims"))
	invalid := apierrors.NewInvalid(schema.GroupKind{Kind: "PersistentVolumeClaim"}, "claim-a", nil)
	for _, c := range []struct {
		err    error
		reason string
		status int
	}{
		{&spawner.StartError{Reason: spawner.ErrClaimConflict}, "claim_conflict", http.StatusConflict},
		{&spawner.StartError{Reason: spawner.ErrClaimIncompatible}, "claim_incompatible", http.StatusUnprocessableEntity},
		{&spawner.StartError{Reason: spawner.ErrClaimTerminating}, "claim_terminating", http.StatusConflict},
		{&spawner.StartError{Reason: spawner.ErrClaimFailed, Err: quota}, "claim_failed", http.StatusServiceUnavailable},
		{&spawner.StartError{Reason: spawner.ErrClaimFailed, Err: invalid}, "claim_failed", http.StatusUnprocessableEntity},
		{&spawner.StartError{Reason: spawner.ErrOwnedObjectConflict}, "owned_object_conflict", http.StatusConflict},
		{&spawner.StartError{Reason: spawner.ErrOwnedObjectFailed, Err: quota}, "owned_object_failed", http.StatusServiceUnavailable},
		{&spawner.StartError{Reason: spawner.ErrOwnedObjectFailed, Err: invalid}, "owned_object_failed", http.StatusUnprocessableEntity},
		// Unchanged.
		{&spawner.StartError{Reason: spawner.ErrImagePull}, "image_pull", http.StatusUnprocessableEntity},
		{&spawner.StartError{Reason: spawner.ErrStartTimeout}, "timeout", http.StatusGatewayTimeout},
	} {
		reason, status := classify(c.err)
		assert.Equal(t, c.reason, reason, "%v", c.err)
		assert.Equal(t, c.status, status, "%v", c.err)
	}
}
