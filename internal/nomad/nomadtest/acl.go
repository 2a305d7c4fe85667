package nomadtest

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// ACLs (more/ README section 3): tokens and policies, the ACL endpoints,
// and the 403 every endpoint answers a caller its policies do not allow.
//
// A request's token is resolved once, in ServeHTTP: an unknown or
// malformed secret is refused there (334-336, 340), no secret is the
// anonymous token, whose policy is the one named "anonymous" if it exists.
// Each handler then checks the capability its endpoint needs at the point
// the agent's RPC does, after the HTTP layer's own parsing.

// ErrACLsDisabled is returned by the ACL methods of a Server started
// without Options.ACLs or Options.ACLToken.
var ErrACLsDisabled = errors.New("acls are not enabled: set Options.ACLs or Options.ACLToken")

type aclState struct {
	enabled   bool
	bootstrap uint64 // index of the bootstrap; 0 before it
	policies  map[string]*aclPolicy
	tokens    map[string]*aclToken // by SecretID
}

func newACLState(enabled bool) aclState {
	return aclState{enabled: enabled, policies: map[string]*aclPolicy{}, tokens: map[string]*aclToken{}}
}

// aclPolicy is the wire form of a policy read back (more/ 306).
type aclPolicy struct {
	Name        string
	Description string
	Rules       string
	RulesJSON   any
	JobACL      any
	Hash        string
	CreateIndex uint64
	ModifyIndex uint64

	rules *policyRules
}

// aclToken is the wire form of a token (more/ 303, 307), keys in recorded
// order. ExpirationTTL is a duration the agent prints as "" when unset.
type aclToken struct {
	ExpirationTTL  string
	AccessorID     string
	SecretID       string
	Name           string
	Type           string
	Policies       []string
	Roles          []string
	Global         bool
	Hash           string
	CreateTime     time.Time
	ExpirationTime *time.Time
	CreateIndex    uint64
	ModifyIndex    uint64
}

func (t *aclToken) setHash() {
	sum := sha256.Sum256(mustJSON([]any{t.Name, t.Type, t.Policies, t.Global}))
	t.Hash = base64.StdEncoding.EncodeToString(sum[:])
}

// identity is the caller a request was resolved to.
type identity struct {
	token *aclToken // nil for the anonymous caller
	acl   *aclObj
}

type identityKey struct{}

// aclOf is the caller's compiled ACL; nil, which allows everything, when
// ACLs are off.
func aclOf(r *http.Request) *aclObj {
	if id, ok := r.Context().Value(identityKey{}).(*identity); ok {
		return id.acl
	}
	return nil
}

func tokenOf(r *http.Request) *aclToken {
	if id, ok := r.Context().Value(identityKey{}).(*identity); ok {
		return id.token
	}
	return nil
}

// openPath is answered whatever the token: health and leader (more/ 301,
// 302, 342), and the bootstrap, which is how the first token comes to be.
func openPath(p string) bool {
	switch p {
	case "/v1/agent/health", "/v1/status/leader", "/v1/acl/bootstrap":
		return true
	}
	return false
}

func isVarPath(p string) bool { return p == "/v1/vars" || strings.HasPrefix(p, "/v1/var/") }

// requestSecret reads X-Nomad-Token, or else "Authorization: Bearer"
// (more/ 337).
func requestSecret(r *http.Request) string {
	if tok := r.Header.Get("X-Nomad-Token"); tok != "" {
		return tok
	}
	b, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(b)
}

// identify resolves the request's token. It returns nil when ACLs are off,
// and known false for a secret no token has.
func (s *Server) identify(r *http.Request) (*identity, bool) {
	return s.identifySecret(requestSecret(r))
}

// identifySecret resolves a token's secret, "" for the anonymous caller.
func (s *Server) identifySecret(secret string) (*identity, bool) {
	// enabled is set once, in New.
	if !s.acl.enabled {
		return nil, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if secret == "" {
		return &identity{acl: s.compileLocked([]string{"anonymous"})}, true
	}
	tok := s.acl.tokens[secret]
	if tok == nil {
		return nil, false
	}
	if tok.Type == "management" {
		return &identity{token: tok, acl: &aclObj{management: true}}, true
	}
	return &identity{token: tok, acl: s.compileLocked(tok.Policies)}, true
}

// compileLocked compiles the named policies that exist; a token may name
// policies that were never written or were deleted since.
func (s *Server) compileLocked(names []string) *aclObj {
	var rules []*policyRules
	for _, n := range names {
		if p := s.acl.policies[n]; p != nil {
			rules = append(rules, p.rules)
		}
	}
	return compileACL(rules)
}

// deny answers 403 "Permission denied" with no X-Nomad headers (more/ 300,
// 309, 334-336), except X-Nomad-Index: 0 on variable writes (331, 333, 360).
// A denied event stream gets the stream's 200 instead (322, 324).
func (s *Server) deny(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/event/stream" {
		s.denyStream(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/var/") && r.Method != http.MethodGet && !r.URL.Query().Has("lock-renew") {
		w.Header().Set("X-Nomad-Index", "0")
	}
	writeText(w, http.StatusForbidden, "Permission denied")
}

// denied is the 403 of a read whose namespace is known only once the
// object is found, as for an allocation or evaluation by ID.
func denied() queryResult {
	return queryResult{bare: true, status: http.StatusForbidden, text: "Permission denied"}
}

// deniedStreamClose is how long a denied event stream stays open. The agent
// closes it at an unpredictable time, from 0.3s to more than 25s (more/
// 326); a client must give up on a stream that sends no `{}` within a
// second or two anyway.
const deniedStreamClose = time.Second

// denyStream answers a denied event stream as the agent does: 200 with
// the stream headers, then not one byte, not even the `{}` heartbeat, and
// the connection closed after deniedStreamClose (more/ 322, 324).
func (s *Server) denyStream(w http.ResponseWriter, r *http.Request) {
	_, _, done, closeConn, ok := openStream(w)
	if !ok {
		return
	}
	defer closeConn()
	if done == nil {
		done = r.Context().Done()
	}
	st, remove, ok := s.addStream(nil)
	if !ok {
		return
	}
	defer remove()
	t := time.NewTimer(deniedStreamClose)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	case <-st.cut:
	}
}

// bootstrapLocked creates the bootstrap management token (more/ 303).
func (s *Server) bootstrapLocked(secret string) *aclToken {
	idx := s.nextIndex()
	if secret == "" {
		secret = newUUID()
	}
	tok := &aclToken{
		AccessorID:  newUUID(),
		SecretID:    secret,
		Name:        "Bootstrap Token",
		Type:        "management",
		Global:      true,
		CreateTime:  s.now().UTC(),
		CreateIndex: idx,
		ModifyIndex: idx,
	}
	tok.setHash()
	s.acl.tokens[secret] = tok
	s.acl.bootstrap = idx
	s.tables["acl_token"] = idx
	return tok
}

// handleACLBootstrap answers the management token once, and then 400 with
// the index of the bootstrap (more/ 303, 304). The agent also takes an
// operator-chosen BootstrapSecret in the body, and so does this.
func (s *Server) handleACLBootstrap(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		invalidMethod(w)
		return
	}
	var in struct{ BootstrapSecret string }
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil && !errors.Is(err, io.EOF) {
			writeText(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.acl.enabled {
		writeText(w, http.StatusBadRequest, "ACL support disabled")
		return
	}
	if s.acl.bootstrap != 0 {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("ACL bootstrap already done (reset index: %d)", s.acl.bootstrap))
		return
	}
	tok := s.bootstrapLocked(in.BootstrapSecret)
	setWriteIndex(w, tok.ModifyIndex)
	writeJSON(w, http.StatusOK, tok)
}

// writeEmpty answers 200 with an empty body and the index, as policy and
// namespace writes do (more/ 305, 364).
func writeEmpty(w http.ResponseWriter, idx uint64) {
	setWriteIndex(w, idx)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleACLPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	switch r.Method {
	case http.MethodGet:
		// A client token may read the policies it holds.
		if tok := tokenOf(r); !aclOf(r).isManagement() && (tok == nil || !slices.Contains(tok.Policies, name)) {
			s.deny(w, r)
			return
		}
		s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
			p := s.acl.policies[name]
			if p == nil {
				return queryResult{index: s.tables["acl_policy"], status: http.StatusNotFound, text: "ACL policy not found"}, s.watch.ch("acl_policy")
			}
			return queryResult{index: p.ModifyIndex, body: p}, s.watch.ch("acl_policy")
		})
	case http.MethodPut, http.MethodPost:
		if !aclOf(r).isManagement() {
			s.deny(w, r)
			return
		}
		var in struct{ Name, Description, Rules string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeText(w, http.StatusBadRequest, err.Error())
			return
		}
		if in.Name != "" && in.Name != name {
			writeText(w, http.StatusBadRequest, "ACL policy name does not match request path")
			return
		}
		idx, err := s.setPolicy(name, in.Description, in.Rules)
		if err != nil {
			writeText(w, http.StatusBadRequest, "RPC Error:: 400,policy 0 invalid: "+err.Error())
			return
		}
		writeEmpty(w, idx)
	case http.MethodDelete:
		if !aclOf(r).isManagement() {
			s.deny(w, r)
			return
		}
		s.mu.Lock()
		idx := s.nextIndex()
		delete(s.acl.policies, name)
		s.touch(idx, "acl_policy")
		s.mu.Unlock()
		writeEmpty(w, idx)
	default:
		invalidMethod(w)
	}
}

// setPolicy validates and stores a policy and returns the write's index.
func (s *Server) setPolicy(name, description, rules string) (uint64, error) {
	if !validPolicyName.MatchString(name) {
		return 0, fmt.Errorf("invalid name %q", name)
	}
	pr, diags := parsePolicy(name, rules)
	if diags.HasErrors() {
		return 0, fmt.Errorf("Failed to parse ACL Policy: %w", diags)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.acl.enabled {
		return 0, ErrACLsDisabled
	}
	idx := s.nextIndex()
	p := &aclPolicy{Name: name, Description: description, Rules: rules, RulesJSON: pr.rulesJSON(rules), rules: pr, CreateIndex: idx, ModifyIndex: idx}
	if old := s.acl.policies[name]; old != nil {
		p.CreateIndex = old.CreateIndex
	}
	sum := sha256.Sum256(mustJSON([]string{name, description, rules}))
	p.Hash = base64.StdEncoding.EncodeToString(sum[:])
	s.acl.policies[name] = p
	s.touch(idx, "acl_policy")
	return idx, nil
}

// SetACLPolicy creates or replaces the ACL policy name. rules are in
// Nomad's policy language, for example
//
//	namespace "default" {
//	  policy       = "read"
//	  capabilities = ["submit-job"]
//	  variables {
//	    path "locks/*" { capabilities = ["read", "write"] }
//	  }
//	}
//	node { policy = "read" }
//
// The error carries HCL diagnostics that point at the offending attribute.
func (s *Server) SetACLPolicy(name, rules string) error {
	if _, err := s.setPolicy(name, "", rules); err != nil {
		return fmt.Errorf("set acl policy %q: %w", name, err)
	}
	return nil
}

func (s *Server) handleACLPolicies(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	a, tok := aclOf(r), tokenOf(r)
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		type stub struct {
			Name, Description, Hash  string
			CreateIndex, ModifyIndex uint64
		}
		out := []stub{}
		for _, name := range sortedKeys(s.acl.policies) {
			if !a.isManagement() && (tok == nil || !slices.Contains(tok.Policies, name)) {
				continue
			}
			p := s.acl.policies[name]
			out = append(out, stub{p.Name, p.Description, p.Hash, p.CreateIndex, p.ModifyIndex})
		}
		return queryResult{index: s.tables["acl_policy"], body: out}, s.watch.ch("acl_policy")
	})
}

// createToken stores a new token. Policies that do not exist are allowed,
// as by the agent: they grant nothing until written.
func (s *Server) createToken(name, typ string, policies []string, global bool) (*aclToken, error) {
	switch typ {
	case "client":
		if len(policies) == 0 {
			return nil, errors.New("client token missing policies or roles")
		}
	case "management":
		if len(policies) > 0 {
			return nil, errors.New("management token cannot be associated with policies or roles")
		}
	default:
		return nil, errors.New("token type must be client or management")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.acl.enabled {
		return nil, ErrACLsDisabled
	}
	idx := s.nextIndex()
	tok := &aclToken{
		AccessorID:  newUUID(),
		SecretID:    newUUID(),
		Name:        name,
		Type:        typ,
		Policies:    policies,
		Global:      global,
		CreateTime:  s.now().UTC(),
		CreateIndex: idx,
		ModifyIndex: idx,
	}
	tok.setHash()
	s.acl.tokens[tok.SecretID] = tok
	s.touch(idx, "acl_token")
	return tok, nil
}

// CreateACLToken creates a client token holding the named policies and
// returns its secret, for X-Nomad-Token or api.Config.SecretID. Unlike the
// HTTP endpoint, which accepts any name, it refuses a policy that does not
// exist, so that a typo fails the test that made it.
func (s *Server) CreateACLToken(name string, policies ...string) (string, error) {
	s.mu.Lock()
	for _, p := range policies {
		if s.acl.policies[p] == nil {
			s.mu.Unlock()
			return "", fmt.Errorf("create acl token %q: no policy %q", name, p)
		}
	}
	s.mu.Unlock()
	tok, err := s.createToken(name, "client", policies, false)
	if err != nil {
		return "", fmt.Errorf("create acl token %q: %w", name, err)
	}
	return tok.SecretID, nil
}

// handleACLTokenCreate is POST /v1/acl/token (more/ 307).
func (s *Server) handleACLTokenCreate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		invalidMethod(w)
		return
	}
	if !aclOf(r).isManagement() {
		s.deny(w, r)
		return
	}
	var in struct {
		Name     string
		Type     string
		Policies []string
		Global   bool
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	tok, err := s.createToken(in.Name, in.Type, in.Policies, in.Global)
	if err != nil {
		writeText(w, http.StatusBadRequest, "RPC Error:: 400,token 0 invalid: "+err.Error())
		return
	}
	setWriteIndex(w, tok.ModifyIndex)
	writeJSON(w, http.StatusOK, tok)
}

// handleACLTokenSelf answers the caller's own token (more/ 308); an
// unknown secret never gets here (340), and neither does the anonymous
// caller, which has no token to show.
func (s *Server) handleACLTokenSelf(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	tok := tokenOf(r)
	if tok == nil {
		s.deny(w, r)
		return
	}
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		return queryResult{index: tok.ModifyIndex, body: tok}, s.watch.ch("acl_token")
	})
}

// handleACLToken reads or deletes a token by accessor, for management
// callers and for the token itself.
func (s *Server) handleACLToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	self := tokenOf(r) != nil && tokenOf(r).AccessorID == id
	if !aclOf(r).isManagement() && !(self && r.Method == http.MethodGet) {
		s.deny(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
			for _, tok := range s.acl.tokens {
				if tok.AccessorID == id {
					return queryResult{index: tok.ModifyIndex, body: tok}, s.watch.ch("acl_token")
				}
			}
			return queryResult{index: s.tables["acl_token"], status: http.StatusNotFound, text: "ACL token not found"}, s.watch.ch("acl_token")
		})
	case http.MethodDelete:
		s.mu.Lock()
		idx := s.nextIndex()
		for secret, tok := range s.acl.tokens {
			if tok.AccessorID == id {
				delete(s.acl.tokens, secret)
			}
		}
		s.touch(idx, "acl_token")
		s.mu.Unlock()
		writeEmpty(w, idx)
	default:
		invalidMethod(w)
	}
}

// aclTokenStub is a token as lists show it, without its secret.
type aclTokenStub struct {
	AccessorID     string
	Name           string
	Type           string
	Policies       []string
	Roles          []string
	Global         bool
	Hash           string
	CreateTime     time.Time
	ExpirationTime *time.Time
	CreateIndex    uint64
	ModifyIndex    uint64
}

// handleACLTokens lists token stubs for management callers.
func (s *Server) handleACLTokens(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	if !aclOf(r).isManagement() {
		s.deny(w, r)
		return
	}
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		out := []aclTokenStub{}
		for _, t := range s.acl.tokens {
			out = append(out, aclTokenStub{t.AccessorID, t.Name, t.Type, t.Policies, t.Roles, t.Global, t.Hash,
				t.CreateTime, t.ExpirationTime, t.CreateIndex, t.ModifyIndex})
		}
		slices.SortFunc(out, func(a, b aclTokenStub) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
		return queryResult{index: s.tables["acl_token"], body: out}, s.watch.ch("acl_token")
	})
}
