package nomadtest

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Blocking-query limits: without ?wait= a query waits 300s, which is also the
// most it will wait, plus random jitter of up to wait/16 (facts 4.9: 5.21-5.25s
// observed for wait=5s).
const (
	defaultQueryWait = 300 * time.Second
	maxQueryWait     = 300 * time.Second
)

// queryResult is one run of a read. A timed-out blocking query answers with
// the result of its last run, index included, which is why a query on one
// job's allocations can return an index older than the allocs table (54).
type queryResult struct {
	index     uint64
	status    int // 0 means 200
	body      any
	text      string // body when status is not 200
	nextToken string
	bare      bool // an error without the read headers
	raw       []byte
}

// blockingQuery answers a read, holding it while ?index= is at least the
// result's index. run is called with s.mu held and returns the result and a
// channel closed on the next change that may alter it.
func (s *Server) blockingQuery(w http.ResponseWriter, r *http.Request, run func() (queryResult, <-chan struct{})) {
	q := r.URL.Query()
	var minIndex uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeText(w, http.StatusBadRequest, "Invalid index")
			return
		}
		minIndex = n
	}
	wait := defaultQueryWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			writeText(w, http.StatusBadRequest, "Invalid wait time")
			return
		}
		wait = min(d, maxQueryWait)
	}

	// The body is encoded under the lock: it points into live state.
	runLocked := func() (queryResult, <-chan struct{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		res, ch := run()
		// The agent never answers index 0, which would make clients spin:
		// an untouched table reads as 1 (more/ 332).
		res.index = max(res.index, 1)
		if res.body != nil {
			b, err := marshal(res.body)
			if err != nil {
				res = queryResult{index: res.index, bare: true, status: http.StatusInternalServerError, text: err.Error()}
			}
			res.raw, res.body = b, nil
		}
		return res, ch
	}
	res, changed := runLocked()
	if minIndex == 0 || res.index > minIndex || res.bare {
		writeQueryResult(w, res)
		return
	}
	if wait > 0 {
		wait += rand.N(wait/16 + 1)
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		select {
		case <-changed:
		case <-timeout.C:
			writeQueryResult(w, res)
			return
		case <-r.Context().Done():
			return
		}
		res, changed = runLocked()
		if res.index > minIndex {
			writeQueryResult(w, res)
			return
		}
	}
}

func writeQueryResult(w http.ResponseWriter, res queryResult) {
	if res.bare {
		writeText(w, res.status, res.text)
		return
	}
	setReadHeaders(w, res.index)
	if res.nextToken != "" {
		w.Header().Set("X-Nomad-Nexttoken", res.nextToken)
	}
	if res.status != 0 && res.status != http.StatusOK {
		writeText(w, res.status, res.text)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.raw)
}
