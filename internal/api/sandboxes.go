package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// ItemList is the body of GET /v1/sandboxes. Revision is the store
// revision the list was read at: watching from it misses nothing.
// StoreID names the store the revision belongs to: each instance of a
// cluster has its own, numbered apart, so a watch passes it back as
// ?store= and is served by that store or refused.
type ItemList struct {
	Items    []Item `json:"items"`
	Revision uint64 `json:"revision"`
	StoreID  string `json:"storeID"`
}

// EventList is the body of GET /v1/sandboxes/{namespace}/{name}/events,
// oldest event first.
type EventList struct {
	Items []Event `json:"items"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	sel, err := parseSelector("selector", r.URL.Query().Get("selector"))
	if err != nil {
		return err
	}
	recs, rev, err := s.opts.Store.List(r.Context(), store.ListOptions{
		Namespace: r.URL.Query().Get("namespace"),
		Selector:  sel,
	})
	if err != nil {
		return err
	}
	out := ItemList{Items: make([]Item, 0, len(recs)), Revision: rev, StoreID: s.opts.Store.StoreID()}
	for _, rec := range recs {
		if rec.Pool == nil { // pools are listed by GET /v1/pools
			out.Items = append(out.Items, itemOf(rec))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	rec, err := s.getSandbox(r.Context(), pathKey(r))
	if err != nil {
		return notFoundAs(err, r)
	}
	writeJSON(w, http.StatusOK, itemOf(rec))
	return nil
}

// delete marks the sandbox for deletion and answers 202: the record stays,
// with deletionRequestedAt set, until the reconciler has removed its Nomad
// job. Deleting a sandbox already marked answers the same.
func (s *Server) delete(w http.ResponseWriter, r *http.Request) error {
	if rec, err := s.opts.Store.Get(r.Context(), pathKey(r)); err == nil && rec.Pool != nil {
		return notFoundAs(store.ErrNotFound, r)
	}
	rec, err := s.opts.Store.Delete(r.Context(), pathKey(r))
	if err != nil {
		return notFoundAs(err, r)
	}
	writeJSON(w, http.StatusAccepted, itemOf(rec))
	return nil
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	evs, err := s.opts.Store.Events(r.Context(), pathKey(r))
	if err != nil {
		return notFoundAs(err, r)
	}
	writeJSON(w, http.StatusOK, EventList{Items: eventsOf(evs)})
	return nil
}

// getSandbox reads a sandbox: a pool under the key is not one.
func (s *Server) getSandbox(ctx context.Context, key string) (store.Record, error) {
	rec, err := s.opts.Store.Get(ctx, key)
	if err == nil && rec.Pool != nil {
		return store.Record{}, fmt.Errorf("%q is a pool: %w", key, store.ErrNotFound)
	}
	return rec, err
}

func pathKey(r *http.Request) string {
	return r.PathValue("namespace") + "/" + r.PathValue("name")
}

// notFoundAs names the sandbox in a not-found answer.
func notFoundAs(err error, r *http.Request) error {
	ae := storeError(err)
	if ae.status == http.StatusNotFound {
		ae.message = "No sandbox " + r.PathValue("name") + " exists in namespace " + r.PathValue("namespace") + "."
	}
	return ae
}

func parseSelector(param, text string) (store.Selector, error) {
	sel, err := store.ParseSelector(text)
	if err != nil {
		return store.Selector{}, errorf(http.StatusBadRequest, CodeInvalid, "The %s %q is not a valid label selector.", param, text).
			with(err.Error())
	}
	return sel, nil
}
