package main

import (
	"context"
	"errors"
	"net/http"

	"k8s.io/klog/v2"

	"github.com/kubespawn/kubespawn/examples/internal/service"
	"github.com/kubespawn/kubespawn/spawner"
)

// claimsJSON is the answer of DELETE /users/{user}/claims.
type claimsJSON struct {
	User string `json:"user"`
	// State is "deleted" once the API server confirmed every claim gone.
	State string `json:"state,omitempty"`
	// Claims are the claims deleted and confirmed gone (also on error).
	Claims []objectJSON `json:"claims"`
	Error  string       `json:"error,omitempty"`
	// Reason: claim_in_use (stop the server first), timeout (not
	// confirmed gone within the stop timeout), error.
	Reason string `json:"reason,omitempty"`
	// ServiceState and Pod, with claim_in_use, say what uses the claims.
	ServiceState string `json:"serviceState,omitempty"`
	Pod          string `json:"pod,omitempty"`
}

// deleteClaims is JupyterHub's delete_forever: the user's claims (this
// instance's, of this user, whatever their name) are deleted with their
// UIDs as preconditions, and the answer waits (up to the stop timeout)
// until the API server confirms each one gone. Never while the user has a
// server: the table's row, or the API server's pod (spawner.ErrClaimInUse),
// is a 409. A user without claims is a 200 with none.
func (s *Server) deleteClaims(w http.ResponseWriter, r *http.Request) {
	user, _, ok := s.userRef(w, r)
	if !ok {
		return
	}
	out := claimsJSON{User: user, Claims: []objectJSON{}}
	s.mu.Lock()
	u := s.users[user]
	s.mu.Unlock()
	if u != nil {
		out.Error, out.Reason, out.ServiceState, out.Pod = "the user's server is "+u.state+": stop it first, its claims are in use", "claim_in_use", u.state, u.pod
		writeJSON(w, http.StatusConflict, out)
		return
	}
	// DeleteClaims holds the user's name lock (no start of the user runs
	// meanwhile) and is bounded by the stop timeout; it completes if the
	// client goes away.
	release := service.HoldWrite(w)
	deleted, err := s.sp.DeleteClaims(context.WithoutCancel(r.Context()), s.cfg.Namespace, user)
	release()
	out.Claims = objectsJSON(deleted)
	switch {
	case err == nil:
		out.State = "deleted"
		klog.FromContext(r.Context()).Info("Claims deleted", "user", user, "claims", len(deleted))
		writeJSON(w, http.StatusOK, out)
	case errors.Is(err, spawner.ErrClaimInUse):
		out.Error, out.Reason = err.Error(), "claim_in_use"
		writeJSON(w, http.StatusConflict, out)
	case errors.Is(err, spawner.ErrInvalidArgument):
		out.Error, out.Reason = err.Error(), "invalid_request"
		writeJSON(w, http.StatusBadRequest, out)
	default:
		// Not confirmed gone (a claim stays Terminating while a pod uses
		// it), or the API server refused or did not answer: the delete is
		// idempotent, the caller retries.
		out.Error, out.Reason = err.Error(), "error"
		if errors.Is(err, spawner.ErrStopTimeout) {
			out.Reason = "timeout"
		}
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, out)
	}
}
