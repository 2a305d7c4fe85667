package nomadtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// nodePool is the wire form of a node pool, as a Nomad 2.0.5 dev agent
// answers GET /v1/node/pools. The pools here only exist to be named: the
// simulated node stays in "default", and jobs in any pool are placed on it
// (see "Where it differs" in the package documentation).
type nodePool struct {
	Name                   string
	Description            string
	Meta                   map[string]string
	SchedulerConfiguration any
	NodeIdentityTTL        int64
	Hash                   any
	CreateIndex            uint64
	ModifyIndex            uint64
}

// The agent's built-in pools: created with the cluster, never modified.
var builtinNodePools = []string{"all", "default"}

// nodePoolName is the agent's rule for a pool name.
var nodePoolName = regexp.MustCompile(`^[a-zA-Z0-9-_]{1,128}$`)

const nodeIdentityTTL = 24 * 60 * 60 * 1e9 // the agent's default, in ns

// nodePoolsLocked returns the pools, creating the built-in ones on first
// use. s.mu must be held.
func (s *Server) nodePoolsLocked() map[string]*nodePool {
	if s.nodePools == nil {
		s.nodePools = map[string]*nodePool{
			"all":     {Name: "all", Description: "Node pool with all nodes in the cluster.", NodeIdentityTTL: nodeIdentityTTL, CreateIndex: 1, ModifyIndex: 1},
			"default": {Name: "default", Description: "Default node pool.", NodeIdentityTTL: nodeIdentityTTL, CreateIndex: 1, ModifyIndex: 1},
		}
	}
	return s.nodePools
}

// handleNodePools is GET (list) and PUT or POST (create or update) of
// /v1/node/pools, which is where api.NodePools().Register writes.
func (s *Server) handleNodePools(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		if !aclOf(r).nodeRead() {
			s.deny(w, r)
			return
		}
		s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
			pools := s.nodePoolsLocked()
			out := make([]*nodePool, 0, len(pools))
			for _, p := range pools {
				out = append(out, p)
			}
			slices.SortFunc(out, func(a, b *nodePool) int { return strings.Compare(a.Name, b.Name) })
			return queryResult{index: s.tables["node_pools"], body: out}, s.watch.ch("node_pools")
		})
	case http.MethodPut, http.MethodPost:
		if !aclOf(r).isManagement() {
			s.deny(w, r)
			return
		}
		s.upsertNodePool(w, r)
	default:
		invalidMethod(w)
	}
}

// upsertNodePool answers as the agent does: 200 with an empty body and the
// index, 400 with the agent's texts for a body that does not decode, a
// name it refuses or a built-in pool.
func (s *Server) upsertNodePool(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name        string
		Description string
		Meta        map[string]string
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if !nodePoolName.MatchString(in.Name) {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("invalid node pool %q: %s", in.Name,
			multiError{fmt.Errorf("invalid name %q, must match regex %s", in.Name, nodePoolName)}.Error()))
		return
	}
	if slices.Contains(builtinNodePools, in.Name) {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("modifying node pool %q is not allowed", in.Name))
		return
	}
	s.mu.Lock()
	pools := s.nodePoolsLocked()
	idx := s.nextIndex()
	p := pools[in.Name]
	if p == nil {
		p = &nodePool{Name: in.Name, NodeIdentityTTL: nodeIdentityTTL, CreateIndex: idx}
		pools[in.Name] = p
	}
	p.Description, p.Meta, p.ModifyIndex = in.Description, in.Meta, idx
	s.touch(idx, "node_pools")
	s.mu.Unlock()
	writeEmpty(w, idx)
}

// handleNodePool is GET and DELETE of /v1/node/pool/{name}.
func (s *Server) handleNodePool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	switch r.Method {
	case http.MethodGet:
		if !aclOf(r).nodeRead() {
			s.deny(w, r)
			return
		}
		s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
			p := s.nodePoolsLocked()[name]
			if p == nil {
				return queryResult{index: s.tables["node_pools"], status: http.StatusNotFound, text: "node pool not found"}, s.watch.ch("node_pools")
			}
			return queryResult{index: p.ModifyIndex, body: p}, s.watch.ch("node_pools")
		})
	case http.MethodDelete:
		if !aclOf(r).isManagement() {
			s.deny(w, r)
			return
		}
		s.deleteNodePool(w, name)
	default:
		invalidMethod(w)
	}
}

// deleteNodePool answers 500 with the agent's texts for a built-in pool,
// an unknown one, and one that live jobs still use.
func (s *Server) deleteNodePool(w http.ResponseWriter, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pools := s.nodePoolsLocked()
	switch {
	case name == "all":
		writeText(w, http.StatusInternalServerError, `deleting node pool "all" is not allowed`)
		return
	case name == "default":
		// The simulated node is in it.
		writeText(w, http.StatusInternalServerError, multiError{fmt.Errorf("node pool %q has nodes in regions: [global]", name)}.Error())
		return
	case pools[name] == nil:
		writeText(w, http.StatusInternalServerError, fmt.Sprintf("node pool %s not found", name))
		return
	}
	for _, je := range s.jobs {
		if deref(je.job.NodePool) == name && deref(je.job.Status) != "dead" {
			writeText(w, http.StatusInternalServerError, multiError{fmt.Errorf("node pool %q has non-terminal jobs in regions: [global]", name)}.Error())
			return
		}
	}
	delete(pools, name)
	idx := s.nextIndex()
	s.touch(idx, "node_pools")
	writeEmpty(w, idx)
}
