package nomadtest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// namespace is the wire form of a namespace (more/ 401, 402).
type namespace struct {
	Name                  string
	Description           string
	Quota                 string
	Capabilities          any
	NodePoolConfiguration any
	VaultConfiguration    any
	ConsulConfiguration   any
	Meta                  map[string]string
	Hash                  string
	CreateIndex           uint64
	ModifyIndex           uint64
	RequiredExtraClaims   any
	OptionalExtraClaims   any
}

func (ns *namespace) setHash() {
	sum := sha256.Sum256(mustJSON([]any{ns.Name, ns.Description, ns.Meta}))
	ns.Hash = base64.StdEncoding.EncodeToString(sum[:])
}

func (s *Server) handleNamespaces(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	acl := aclOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		out := make([]*namespace, 0, len(s.namespaces))
		for _, ns := range s.namespaces {
			// A caller sees the namespaces it has any capability in.
			if acl.allowNamespace(ns.Name) {
				out = append(out, ns)
			}
		}
		slices.SortFunc(out, func(a, b *namespace) int { return strings.Compare(a.Name, b.Name) })
		return queryResult{index: s.tables["namespaces"], body: out}, s.watch.ch("namespaces")
	})
}

// handleNamespaceCreate is POST /v1/namespace with the name in the body
// (more/ 404).
func (s *Server) handleNamespaceCreate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		invalidMethod(w)
		return
	}
	if !aclOf(r).isManagement() {
		s.deny(w, r)
		return
	}
	s.upsertNamespace(w, r, "")
}

func (s *Server) handleNamespace(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// Reading a namespace needs some capability in it; writing one is for
	// management tokens (more/ 364).
	allowed := aclOf(r).isManagement()
	if r.Method == http.MethodGet {
		allowed = aclOf(r).allowNamespace(name)
	}
	if !allowed {
		s.deny(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
			ns := s.namespaces[name]
			if ns == nil {
				return queryResult{index: s.tables["namespaces"], status: http.StatusNotFound, text: "Namespace not found"}, s.watch.ch("namespaces")
			}
			return queryResult{index: ns.ModifyIndex, body: ns}, s.watch.ch("namespaces")
		})
	case http.MethodPut, http.MethodPost:
		s.upsertNamespace(w, r, name)
	case http.MethodDelete:
		s.deleteNamespace(w, name)
	default:
		invalidMethod(w)
	}
}

// upsertNamespace answers 200 with an empty body and the index; rewriting
// an identical namespace still takes an index (more/ 400, 404).
func (s *Server) upsertNamespace(w http.ResponseWriter, r *http.Request, name string) {
	var in struct {
		Name        string
		Description string
		Meta        map[string]string
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if name == "" {
		name = in.Name
	}
	if name == "" {
		writeText(w, http.StatusBadRequest, "Namespace name required")
		return
	}
	s.mu.Lock()
	idx := s.nextIndex()
	ns := s.namespaces[name]
	if ns == nil {
		ns = &namespace{Name: name, CreateIndex: idx}
		s.namespaces[name] = ns
	}
	ns.Description, ns.Meta, ns.ModifyIndex = in.Description, in.Meta, idx
	ns.setHash()
	s.touch(idx, "namespaces")
	s.mu.Unlock()
	setWriteIndex(w, idx)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// deleteNamespace refuses while the namespace has live jobs, with the text
// of more/ 449.
func (s *Server) deleteNamespace(w http.ResponseWriter, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "default" {
		writeText(w, http.StatusInternalServerError, multiError{fmt.Errorf("default namespace can not be deleted")}.Error())
		return
	}
	var liveJobs, liveAllocs bool
	for k, je := range s.jobs {
		if k.ns != name {
			continue
		}
		if deref(je.job.Status) != "dead" {
			liveJobs = true
		}
		for _, a := range je.allocs {
			if !clientTerminal(a) {
				liveAllocs = true
			}
		}
	}
	var errs multiError
	if liveJobs {
		errs = append(errs, fmt.Errorf("namespace %q has non-terminal jobs in regions: [global]", name))
	}
	if liveAllocs {
		errs = append(errs, fmt.Errorf("namespace %q has non-terminal allocations in regions: [global]", name))
	}
	if len(errs) > 0 {
		writeText(w, http.StatusInternalServerError, errs.Error())
		return
	}
	idx := s.nextIndex()
	delete(s.namespaces, name)
	s.touch(idx, "namespaces")
	setWriteIndex(w, idx)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}
