package nomadtest

import (
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Variable locks (more/ README section 2): ?lock-acquire, ?lock-renew and
// ?lock-release on /v1/var/<path>, with the agent's timers.
//
// After an acquire or a renew a timer of 2 x TTL runs. When it fires the
// lock is not removed yet: a LockDelay timer starts, and only when that one
// fires is the lock cleared, by a write that bumps ModifyIndex and keeps
// the Items (230-233). The TTL timers are kept by lock ID, as the agent's
// are; the delay timers are not, so a release in the delay window does not
// stop the pending delay, which later clears whatever lock the variable
// then holds (the bug of 258, reproduced on purpose).

const (
	opAcquire = "lock-acquire"
	opRenew   = "lock-renew"
	opRelease = "lock-release"

	defaultLockTTL   = 15 * time.Second
	defaultLockDelay = 15 * time.Second
	minLockTTL       = 10 * time.Second
	maxLockTTL       = 24 * time.Hour
)

// varLock is the wire form of a stored lock, keys in recorded order
// (more/ 200); the durations print as time.Duration does.
type varLock struct {
	TTL       string
	LockDelay string
	ID        string

	ttl, delay time.Duration
}

func newVarLock(id string, ttl, delay time.Duration) *varLock {
	return &varLock{TTL: ttl.String(), LockDelay: delay.String(), ID: id, ttl: ttl, delay: delay}
}

// lockTimer is the running 2 x TTL timer of one held lock. Its delay and
// variable are those of the acquire that armed it: a renew resets the
// timer but keeps what happens when it fires, as the agent's does.
type lockTimer struct {
	t     *time.Timer
	key   nsKey
	delay time.Duration
}

// lockOperation reads which lock operation a write asks for; the key is
// enough, with or without "=" (more/ 241). Two are refused (222).
func lockOperation(q url.Values) (string, error) {
	op := ""
	for _, o := range []string{opAcquire, opRenew, opRelease} {
		if !q.Has(o) {
			continue
		}
		if op != "" {
			return "", errors.New("multiple lock operations")
		}
		op = o
	}
	return op, nil
}

// lockConflict answers 409 with a zero variable and no index header, the
// answer to an acquire or release against another holder (more/ 202,
// 210). Like casConflict it sets no Content-Type: net/http sniffs
// text/plain, and a gzipped answer has none (242).
func lockConflict(w http.ResponseWriter, ns, p string) {
	w.WriteHeader(http.StatusConflict)
	_, _ = w.Write(mustJSON(&variable{Namespace: ns, Path: p}))
}

// applyLock runs an acquire or a release: both are raft writes that take an
// index even when they fail, as the agent's do (more/ 202-213).
func (s *Server) applyLock(w http.ResponseWriter, r *http.Request, p, op string) {
	in, err := decodeVarRequest(r)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	// The URL's path wins over the body's, which the api client leaves
	// empty on release (more/ 244).
	ns := cmpOr(in.Namespace, requestNamespace(r))
	if !aclOf(r).allowVar(ns, p, varCapWrite) {
		s.deny(w, r)
		return
	}
	reqID := ""
	if in.Lock != nil {
		reqID = in.Lock.ID
	}
	if op == opRelease && reqID == "" {
		rpcError(w, "RPC Error:: 400,missing lock information")
		return
	}
	if e := varPathError(p); e != "" {
		rpcError(w, e)
		return
	}
	ttl, delay := defaultLockTTL, defaultLockDelay
	if in.Lock != nil && in.Lock.TTL != 0 {
		ttl = time.Duration(in.Lock.TTL)
	}
	if in.Lock != nil && in.Lock.LockDelay != 0 {
		delay = time.Duration(in.Lock.LockDelay)
	}
	if op == opAcquire {
		if ttl < minLockTTL || ttl > maxLockTTL {
			rpcError(w, "RPC Error:: 400,1 error occurred:\n\t* TTL must be between 10 seconds and 24 hours\n\n")
			return
		}
		if itemsSize(in.Items) > maxVariableSize {
			rpcError(w, "RPC Error:: 400,variables are limited to 64KiB in total size")
			return
		}
	}
	// The response carries the request's Items, {} for none: a release
	// answers {} although the stored Items are kept (more/ 211, 212).
	items := in.Items
	if items == nil {
		items = map[string]string{}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	k := nsKey{ns, p}
	cur := s.vars[k]
	idx := s.nextIndex()
	if op == opRelease {
		switch {
		case cur == nil:
			w.Header().Set("X-Nomad-Index", "0")
			writeText(w, http.StatusInternalServerError, "variable doesn't exist")
			return
		case cur.Lock == nil:
			w.Header().Set("X-Nomad-Index", "0")
			writeText(w, http.StatusInternalServerError, "variable doesn't hold a lock")
			return
		case cur.Lock.ID != reqID:
			lockConflict(w, ns, p)
			return
		}
		// ModifyTime stays: a release only drops the lock (211).
		v := *cur
		v.Lock, v.ModifyIndex = nil, idx
		s.vars[k] = &v
		s.varChanged(idx, &v, false)
		if lt := s.locks[reqID]; lt != nil {
			s.stopTimer(lt.t)
			delete(s.locks, reqID)
		}
		out := v
		out.Items = items
		setWriteIndex(w, idx)
		writeJSON(w, http.StatusOK, &out)
		return
	}

	// Acquire: free or missing, or held by the caller, whose ID the
	// request carries (217). It overwrites the Items, with {} for none
	// (215, 216).
	if cur != nil && cur.Lock != nil && cur.Lock.ID != reqID {
		lockConflict(w, ns, p)
		return
	}
	id := reqID
	if id == "" {
		id = newUUID()
	}
	now := s.now().UnixNano()
	v := &variable{Namespace: ns, Path: p, Lock: newVarLock(id, ttl, delay),
		CreateIndex: idx, CreateTime: now, ModifyIndex: idx, ModifyTime: now, Items: items}
	if cur != nil {
		v.CreateIndex, v.CreateTime = cur.CreateIndex, cur.CreateTime
	}
	s.vars[k] = v
	s.varChanged(idx, v, false)
	s.armLock(v)
	setWriteIndex(w, idx)
	writeJSON(w, http.StatusOK, v)
}

// armLock starts the TTL timer of a lock just acquired. A holder's second
// acquire finds its timer running and leaves it alone, so it does not
// extend the lock (more/ 217: "attempting to recreate existing lock").
func (s *Server) armLock(v *variable) {
	id := v.Lock.ID
	if s.locks[id] != nil {
		return
	}
	lt := &lockTimer{key: nsKey{v.Namespace, v.Path}, delay: v.Lock.delay}
	s.locks[id] = lt
	s.startLockTimer(id, lt, 2*v.Lock.ttl)
}

func (s *Server) startLockTimer(id string, lt *lockTimer, d time.Duration) {
	lt.t = s.afterFunc(d, func() {
		if s.locks[id] != lt {
			return
		}
		// TTL expired: the lock stays, visibly held but no longer
		// renewable, for LockDelay (more/ 231).
		delete(s.locks, id)
		s.afterFunc(lt.delay, func() { s.expireLock(lt.key) })
	})
}

// expireLock is the write at the end of a lock delay. It clears the lock
// the variable holds now, whoever holds it (258), keeps the Items and
// ModifyTime, and bumps ModifyIndex (233), which wakes blocking queries and
// publishes a Variable event. Like every raft write it takes an index even
// when there is nothing to clear.
func (s *Server) expireLock(k nsKey) {
	idx := s.nextIndex()
	cur := s.vars[k]
	if cur == nil || cur.Lock == nil {
		return
	}
	v := *cur
	v.Lock, v.ModifyIndex = nil, idx
	s.vars[k] = &v
	s.varChanged(idx, &v, false)
}

// renewLock resets the holder's TTL timer to 2 x the stored TTL. It is no
// raft write: 200 with the metadata, no Items, no index header and no
// index change (more/ 204).
func (s *Server) renewLock(w http.ResponseWriter, r *http.Request, p string) {
	in, err := decodeVarRequest(r)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	// A renew names its namespace in the query only.
	ns := requestNamespace(r)
	if !aclOf(r).allowVar(ns, p, varCapWrite) {
		s.deny(w, r)
		return
	}
	if in.Lock == nil || in.Lock.ID == "" {
		writeText(w, http.StatusBadRequest, "RPC Error:: 400,missing lock information")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.vars[nsKey{ns, p}]
	switch {
	case cur == nil:
		writeText(w, http.StatusNotFound, "variable doesn't exist")
		return
	case cur.Lock == nil:
		writeText(w, http.StatusConflict, "variable doesn't hold a lock")
		return
	}
	lt := s.locks[in.Lock.ID]
	// A wrong ID, or the right one once the TTL timer has fired and the
	// delay runs: the lock is still shown but can no longer be renewed
	// (more/ 205, 231).
	if cur.Lock.ID != in.Lock.ID || lt == nil {
		writeText(w, http.StatusConflict, "attempting to modify locked variable")
		return
	}
	s.stopTimer(lt.t)
	s.startLockTimer(in.Lock.ID, lt, 2*cur.Lock.ttl)
	writeJSON(w, http.StatusOK, cur.meta())
}
