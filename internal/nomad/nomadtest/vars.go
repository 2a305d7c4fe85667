package nomadtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Variables (more/ README section 1) and their ACL checks; the lock
// operations are in locks.go.

// variable is the wire form of a stored variable, keys in recorded order
// (more/ 100).
type variable struct {
	Namespace   string
	Path        string
	Lock        *varLock
	CreateIndex uint64
	CreateTime  int64
	ModifyIndex uint64
	ModifyTime  int64
	Items       map[string]string
}

// variableMeta is a variable without Items, as lists, events and lock
// renewals carry it (more/ 120, 180, 204).
type variableMeta struct {
	Namespace   string
	Path        string
	Lock        *varLock
	CreateIndex uint64
	CreateTime  int64
	ModifyIndex uint64
	ModifyTime  int64
}

func (v *variable) meta() variableMeta {
	return variableMeta{v.Namespace, v.Path, v.Lock, v.CreateIndex, v.CreateTime, v.ModifyIndex, v.ModifyTime}
}

// seenBy is the variable as a caller sees it: only management callers see
// the Lock, holders included (more/ 354-356). Without ACLs every caller
// counts as management (201).
func (v *variable) seenBy(a *aclObj) *variable {
	if v.Lock == nil || a.isManagement() {
		return v
	}
	c := *v
	c.Lock = nil
	return &c
}

const maxVariableSize = 64 * 1024

var validVarPath = regexp.MustCompile(`^[a-zA-Z0-9-_~/]{1,128}$`)

// varPathError returns the RPC error for a path the server refuses
// (more/ 140-148), or "".
func varPathError(p string) string {
	if !validVarPath.MatchString(p) {
		return fmt.Sprintf("RPC Error:: 400,invalid path %q", p)
	}
	parts := strings.Split(p, "/")
	if parts[0] != "nomad" {
		return ""
	}
	if len(parts) == 1 {
		return `RPC Error:: 400,"nomad" is a reserved top-level directory path, but you may write variables to "nomad/jobs", "nomad/job-templates", "nomad/sentinel", or below`
	}
	switch parts[1] {
	case "jobs", "job-templates", "sentinel":
		return ""
	}
	return `RPC Error:: 400,only paths at "nomad/jobs" or "nomad/job-templates" and below are valid paths under the top-level "nomad" directory`
}

func varWatchKey(k nsKey) string { return "var:" + k.String() }

// varListKey is the watch key of a blocking list on a prefix: only writes
// inside the prefix wake it (more/ 175, 176).
func varListKey(ns, prefix string) string { return "vars:" + ns + "\x00" + prefix }

func (s *Server) varChanged(idx uint64, v *variable, deleted bool) {
	k := nsKey{v.Namespace, v.Path}
	s.tables["variables"] = idx
	s.watch.fire(varWatchKey(k))
	for key := range s.watch.chans {
		rest, ok := strings.CutPrefix(key, "vars:")
		if !ok {
			continue
		}
		ns, prefix, _ := strings.Cut(rest, "\x00")
		if (ns == "*" || ns == k.ns) && strings.HasPrefix(k.id, prefix) {
			s.watch.fire(key)
		}
	}
	s.publish(idx, event{
		Topic:     "Variable",
		Type:      "VariableUpdated",
		Key:       v.Path,
		Namespace: v.Namespace,
		Index:     idx,
		Payload:   mustJSON(map[string]any{"Metadata": v.meta(), "Deleted": deleted}),
	})
}

// varHeaders adds the second Vary header every /v1/var* response has.
func varHeaders(w http.ResponseWriter) {
	w.Header().Add("Vary", "Origin")
}

func (s *Server) handleVar(w http.ResponseWriter, r *http.Request) {
	varHeaders(w)
	p := r.PathValue("path")
	if p == "" {
		writeText(w, http.StatusBadRequest, "missing variable path")
		return
	}
	switch r.Method {
	case http.MethodGet:
		k := nsKey{requestNamespace(r), p}
		a := aclOf(r)
		if !a.allowVar(k.ns, p, varCapRead) {
			s.deny(w, r)
			return
		}
		s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
			ch := s.watch.ch(varWatchKey(k))
			v := s.vars[k]
			if v == nil {
				return queryResult{index: s.tables["variables"], status: http.StatusNotFound, text: "variable not found"}, ch
			}
			return queryResult{index: v.ModifyIndex, body: v.seenBy(a)}, ch
		})
	case http.MethodPut, http.MethodPost:
		// The HTTP layer refuses these before any RPC (more/ 221, 222).
		q := r.URL.Query()
		op, err := lockOperation(q)
		if err != nil {
			writeText(w, http.StatusBadRequest, err.Error())
			return
		}
		if op != "" && q.Get("cas") != "" {
			writeText(w, http.StatusBadRequest, "CAS can't be used with lock operations")
			return
		}
		switch op {
		case "":
			s.putVar(w, r, p)
		case opRenew:
			s.renewLock(w, r, p)
		default:
			s.applyLock(w, r, p, op)
		}
	case http.MethodDelete:
		s.deleteVar(w, r, p)
	default:
		invalidMethod(w)
	}
}

// varRequest is the body of a variable write or lock operation.
type varRequest struct {
	Namespace string
	Path      string
	Items     map[string]string
	Lock      *lockRequest
}

// lockRequest is a request's lock. The api client sends its durations as
// strings, and a bad one is a 400 with time.ParseDuration's text (220).
type lockRequest struct {
	ID        string
	TTL       lockDuration
	LockDelay lockDuration
}

// lockDuration reads a duration as the agent's VariableLock does: a string
// for time.ParseDuration, "" for zero, or a number of nanoseconds.
type lockDuration time.Duration

func (d *lockDuration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case float64:
		*d = lockDuration(x)
	case string:
		if x == "" {
			*d = 0
			return nil
		}
		p, err := time.ParseDuration(x)
		if err != nil {
			return err
		}
		*d = lockDuration(p)
	}
	return nil
}

func decodeVarRequest(r *http.Request) (varRequest, error) {
	// Decoding errors name the agent's type (more/ 130).
	type VariableDecrypted varRequest
	var in VariableDecrypted
	err := json.NewDecoder(r.Body).Decode(&in)
	return varRequest(in), err
}

// itemsSize is what the 64KiB limit counts: keys and values (more/ 1.3).
func itemsSize(items map[string]string) int {
	size := 0
	for k, v := range items {
		size += len(k) + len(v)
	}
	return size
}

// rpcError answers a variable write the RPC refused before raft: 400 with
// X-Nomad-Index: 0 (more/ 146, 218, 228).
func rpcError(w http.ResponseWriter, text string) {
	w.Header().Set("X-Nomad-Index", "0")
	writeText(w, http.StatusBadRequest, text)
}

// parseCAS reads ?cas=; its error text is recorded (more/ 109).
func parseCAS(r *http.Request) (uint64, bool, string) {
	v := r.URL.Query().Get("cas")
	if !r.URL.Query().Has("cas") {
		return 0, false, ""
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, "can not parse cas: " + err.Error()
	}
	return n, true, ""
}

// casConflict answers 409 with the current variable, or a zero one
// (more/ 105, 108).
func casConflict(w http.ResponseWriter, ns, p string, cur *variable) {
	body := cur
	if body == nil {
		body = &variable{Namespace: ns, Path: p}
	}
	// The agent sets no Content-Type here: net/http sniffs text/plain from
	// the JSON, and a gzipped answer has none (more/ 105, 242).
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(body.ModifyIndex, 10))
	w.WriteHeader(http.StatusConflict)
	_, _ = w.Write(mustJSON(body))
}

func (s *Server) putVar(w http.ResponseWriter, r *http.Request, p string) {
	cas, hasCAS, casErr := parseCAS(r)
	if casErr != "" {
		writeText(w, http.StatusBadRequest, casErr)
		return
	}
	in, err := decodeVarRequest(r)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(in.Items) == 0 {
		writeText(w, http.StatusBadRequest, "variable missing required Items object")
		return
	}
	// The body's namespace wins over ?namespace=, unlike jobs (more/ 138).
	ns := cmpOr(in.Namespace, requestNamespace(r))
	if !aclOf(r).allowVar(ns, p, varCapWrite) {
		s.deny(w, r)
		return
	}
	if e := varPathError(p); e != "" {
		rpcError(w, e)
		return
	}
	if in.Lock != nil && (in.Lock.TTL != 0 || in.Lock.LockDelay != 0) {
		rpcError(w, "RPC Error:: 400,RPC Error:: 400,variable should not contain lock definition")
		return
	}
	if itemsSize(in.Items) > maxVariableSize {
		rpcError(w, "RPC Error:: 400,variables are limited to 64KiB in total size")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	k := nsKey{ns, p}
	cur := s.vars[k]
	// A failed check-and-set still takes a raft index (more/ 1.2).
	idx := s.nextIndex()
	if casMismatch(hasCAS, cas, cur) {
		casConflict(w, ns, p, cur)
		return
	}
	now := s.now().UnixNano()
	v := &variable{Namespace: ns, Path: p, CreateIndex: idx, CreateTime: now, ModifyIndex: idx, ModifyTime: now, Items: in.Items}
	if cur != nil {
		v.CreateIndex, v.CreateTime = cur.CreateIndex, cur.CreateTime
	}
	if cur != nil && cur.Lock != nil {
		// Only the holder may write a locked variable, and its write keeps
		// the lock, with TTL and LockDelay back at their defaults: the
		// agent stores the request's lock, defaulted (more/ 206, 207, 251).
		if in.Lock == nil || in.Lock.ID != cur.Lock.ID {
			casConflict(w, ns, p, nil)
			return
		}
		v.Lock = newVarLock(cur.Lock.ID, defaultLockTTL, defaultLockDelay)
	}
	s.vars[k] = v
	s.varChanged(idx, v, false)
	setWriteIndex(w, idx)
	writeJSON(w, http.StatusOK, v)
}

// casMismatch is a failed check-and-set: cas 0 wants no variable, any
// other value the variable's current ModifyIndex.
func casMismatch(hasCAS bool, cas uint64, cur *variable) bool {
	return hasCAS && (cur == nil && cas != 0 || cur != nil && cur.ModifyIndex != cas)
}

// deleteVar answers 204 even for a missing variable, and 409 on a failed
// check-and-set (more/ 110-115).
func (s *Server) deleteVar(w http.ResponseWriter, r *http.Request, p string) {
	cas, hasCAS, casErr := parseCAS(r)
	if casErr != "" {
		writeText(w, http.StatusBadRequest, casErr)
		return
	}
	ns := requestNamespace(r)
	if !aclOf(r).allowVar(ns, p, varCapDestroy) {
		s.deny(w, r)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := nsKey{ns, p}
	cur := s.vars[k]
	idx := s.nextIndex()
	if casMismatch(hasCAS, cas, cur) {
		casConflict(w, ns, p, cur)
		return
	}
	// A locked variable cannot be deleted: there is no way to pass the
	// lock ID, so the holder releases first (more/ 209).
	if cur != nil && cur.Lock != nil {
		casConflict(w, ns, p, nil)
		return
	}
	if cur != nil {
		delete(s.vars, k)
		s.varChanged(idx, cur, true)
	}
	setWriteIndex(w, idx)
	w.WriteHeader(http.StatusNoContent)
}

// handleVars lists variable metadata sorted by namespace and path, with a
// plain string prefix and "<namespace>.<path>" next tokens (more/ 120-126).
// With ACLs the list holds only the paths the caller may list, and no
// caller but management sees a Lock (more/ 332, 355).
func (s *Server) handleVars(w http.ResponseWriter, r *http.Request) {
	varHeaders(w)
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	a := aclOf(r)
	q := r.URL.Query()
	ns := requestNamespace(r)
	prefix := q.Get("prefix")
	perPage, _ := strconv.Atoi(q.Get("per_page"))
	tokNS, tokPath, hasToken := parseNextToken(q.Get("next_token"))
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		ch := s.watch.ch(varListKey(ns, prefix))
		var keys []nsKey
		for k := range s.vars {
			if (ns == "*" || k.ns == ns) && strings.HasPrefix(k.id, prefix) {
				keys = append(keys, k)
			}
		}
		slices.SortFunc(keys, func(a, b nsKey) int {
			return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.id, b.id))
		})
		res := queryResult{index: s.tables["variables"]}
		out := []variableMeta{}
		for _, k := range keys {
			if hasToken && cmp.Or(strings.Compare(k.ns, tokNS), strings.Compare(k.id, tokPath)) < 0 {
				continue
			}
			if !a.allowVar(k.ns, k.id, varCapList) {
				continue
			}
			if perPage > 0 && len(out) == perPage {
				res.nextToken = k.ns + "." + k.id
				break
			}
			out = append(out, s.vars[k].seenBy(a).meta())
		}
		res.body = out
		return res, ch
	})
}
