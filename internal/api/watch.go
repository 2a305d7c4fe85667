package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// WatchLine is one line of the NDJSON stream of GET /v1/watch.
//
// Type is spec, status, deleted, finalized or events for a change;
// heartbeat for a keep-alive sent when the stream has been quiet for
// HeartbeatInterval; error for the last line of a stream the server ends
// (Error.Code "compacted" when the watcher fell behind: list and watch
// again).
type WatchLine struct {
	Revision uint64 `json:"revision,omitempty"`
	Type     string `json:"type"`
	Key      string `json:"key,omitempty"`
	// Item is the sandbox as it is when the line is written, which may be
	// newer than Revision; null for finalized (the record is gone).
	// Omitted on heartbeat and error lines.
	Item  *Item        `json:"item"`
	Error *ErrorDetail `json:"error,omitempty"`
}

// watchLineNoItem omits the item field from heartbeat and error lines.
type watchLineNoItem struct {
	Type  string       `json:"type"`
	Error *ErrorDetail `json:"error,omitempty"`
}

// watch streams the changes after ?since=N as NDJSON, one line per change
// and flushed per line. Without since it starts at the current revision.
// ?namespace= and ?selector= filter by the sandbox as it is when the line
// is written; finalized changes pass the selector (the labels are gone),
// so clients ignore keys they do not hold. ?store= names the store since
// was read from (a list's storeID): any other store refuses the watch,
// because its revisions count other writes.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	sel, err := parseSelector("selector", q.Get("selector"))
	if err != nil {
		return err
	}
	namespace := q.Get("namespace")
	if want, self := q.Get("store"), s.opts.Store.StoreID(); want != "" && want != self {
		return errorf(http.StatusGone, CodeUnknownRevision,
			"The watch's revision was read from store %s, but store %s serves it (another instance answers now: the leader changed or could not be reached); list the sandboxes again and watch from the list's revision.",
			want, self)
	}
	var since uint64
	if text := q.Get("since"); text != "" {
		since, err = strconv.ParseUint(text, 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, CodeInvalid, "since %q is not a revision (a whole number).", text)
		}
	} else if since, err = s.opts.Store.Revision(r.Context()); err != nil {
		return err
	}
	select {
	case <-s.stopping:
		return errorf(http.StatusServiceUnavailable, CodeNotReady, "The controller is shutting down.")
	default:
	}

	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	ctx := r.Context()
	watcher, err := s.opts.Store.Watch(ctx, since)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// A server-wide WriteTimeout would cut every stream; each line gets
	// its own deadline instead, so only a stuck client is dropped. The
	// deadline is cleared on the way out because net/http does not reset
	// it for the connection's next request unless it has a WriteTimeout.
	_ = rc.SetWriteDeadline(time.Time{})
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	if rc.Flush() != nil {
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	send := func(v any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		return enc.Encode(v) == nil && rc.Flush() == nil
	}

	heartbeat := time.NewTicker(HeartbeatInterval)
	defer heartbeat.Stop()
	changes := watcher.Changes()
	for {
		select {
		case <-s.stopping:
			return nil
		case <-heartbeat.C:
			if !send(watchLineNoItem{Type: "heartbeat"}) {
				return nil
			}
		case c, ok := <-changes:
			if !ok {
				s.endWatch(watcher.Err(), send)
				return nil
			}
			line, keep, err := s.watchLine(r, c, namespace, sel)
			if err != nil {
				s.endWatch(err, send)
				return nil
			}
			if keep && !send(line) {
				return nil
			}
		}
	}
}

// watchLine builds the line for one change and says whether the filters
// keep it.
func (s *Server) watchLine(r *http.Request, c store.Change, namespace string, sel store.Selector) (WatchLine, bool, error) {
	line := WatchLine{Revision: c.Revision, Type: string(c.Kind), Key: c.Key}
	if ns, _ := splitKey(c.Key); namespace != "" && ns != namespace {
		return line, false, nil
	}
	if c.Kind == store.ChangeFinalized {
		return line, true, nil
	}
	rec, err := s.opts.Store.Get(r.Context(), c.Key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Finalized since; its own line follows.
		return line, sel.Empty(), nil
	case err != nil:
		return line, false, err
	}
	if !sel.Matches(rec.Sandbox.Labels) || rec.Pool != nil {
		return line, false, nil
	}
	it := itemOf(rec)
	line.Item = &it
	return line, true, nil
}

// endWatch writes the error line that tells the client why the server
// ended the stream. A client that left or a server shutting down gets none.
func (s *Server) endWatch(err error, send func(any) bool) {
	if err == nil || errors.Is(err, store.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	ae := storeError(err)
	if ae.status >= 500 {
		s.log.Error("watch failed", "err", err)
	}
	send(watchLineNoItem{Type: "error", Error: &ErrorDetail{Code: ae.code, Message: ae.message, Details: ae.details}})
}
