package api

import (
	"context"
	"net/http"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Controller is the running reconcile loop as the API reaches it: the
// leader's when the controller runs as several instances.
type Controller interface {
	// GC says whether garbage collection is on, and if not, why.
	GC() GCStatus
	// ConfirmGC is an operator's word that the store is the desired
	// state: the hold is released and owned jobs the store does not
	// declare are purged.
	ConfirmGC(ctx context.Context) (GCStatus, error)
	// Requeue asks for a look at the sandbox under key now.
	Requeue(key string)
}

// GCStatus is the body of GET /v1/gc and POST /v1/gc/confirm.
type GCStatus struct {
	Enabled bool `json:"enabled"`
	// Reason says why garbage collection is off.
	Reason string `json:"reason,omitempty"`
	// Hold is the refusal an operator may release with POST
	// /v1/gc/confirm; absent when garbage collection is on, or off for a
	// reason a confirmation cannot lift (an incomplete replicated copy).
	Hold *store.GCHold `json:"hold,omitempty"`
}

// ReconcileResponse is the body of POST .../{name}/reconcile.
type ReconcileResponse struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Queued    bool   `json:"queued"`
}

const (
	routeGC        = "GET /v1/gc"
	routeGCConfirm = "POST /v1/gc/confirm"
	routeReconcile = "POST /v1/sandboxes/{namespace}/{name}/reconcile"
)

func (s *Server) controller() (Controller, error) {
	if s.opts.Controller == nil {
		return nil, errorf(http.StatusServiceUnavailable, CodeNotReady, "This instance runs no reconcile loop.").retry()
	}
	return s.opts.Controller, nil
}

func (s *Server) gcStatus(w http.ResponseWriter, r *http.Request) error {
	c, err := s.controller()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c.GC())
	return nil
}

// gcConfirm releases a garbage collection hold. Confirming while
// collection is on answers the state and changes nothing.
func (s *Server) gcConfirm(w http.ResponseWriter, r *http.Request) error {
	c, err := s.controller()
	if err != nil {
		return err
	}
	st := c.GC()
	switch {
	case st.Enabled:
		writeJSON(w, http.StatusOK, st)
		return nil
	case st.Hold == nil:
		return errorf(http.StatusConflict, CodeConflict, "Garbage collection is off and a confirmation cannot turn it on: %s", st.Reason)
	}
	if st, err = c.ConfirmGC(r.Context()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// reconcileNow queues a sandbox for a look now, ahead of its next
// scheduled attempt.
func (s *Server) reconcileNow(w http.ResponseWriter, r *http.Request) error {
	c, err := s.controller()
	if err != nil {
		return err
	}
	key := pathKey(r)
	if _, err := s.opts.Store.Get(r.Context(), key); err != nil {
		return notFoundAs(err, r)
	}
	c.Requeue(key)
	writeJSON(w, http.StatusAccepted, ReconcileResponse{Namespace: r.PathValue("namespace"), Name: r.PathValue("name"), Queued: true})
	return nil
}
