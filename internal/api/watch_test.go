package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// watchStream reads the lines of one watch response.
type watchStream struct {
	t       *testing.T
	scanner *bufio.Scanner
	header  http.Header
}

func (e *testEnv) openWatch(t *testing.T, query string) *watchStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", e.http.URL+"/v1/watch"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch%s: status %d", query, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q, want application/x-ndjson", ct)
	}
	return &watchStream{t: t, scanner: bufio.NewScanner(resp.Body), header: resp.Header}
}

// watchRefusal opens a watch that must be refused and returns the
// response and its error body. A stream that starts instead fails the
// test at once rather than being read to its (never coming) end.
func (e *testEnv) watchRefusal(t *testing.T, query string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", e.http.URL+"/v1/watch"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		t.Fatalf("watch%s: %v", query, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("watch%s: status 200, a stream; want it refused", query)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("watch%s: read the refusal: %v", query, err)
	}
	return resp, body
}

// next returns the next line, skipping heartbeats.
func (w *watchStream) next() api.WatchLine {
	w.t.Helper()
	for w.scanner.Scan() {
		var line api.WatchLine
		if err := json.Unmarshal(w.scanner.Bytes(), &line); err != nil {
			w.t.Fatalf("watch line %s: %v", w.scanner.Bytes(), err)
		}
		if line.Type != "heartbeat" {
			return line
		}
	}
	w.t.Fatalf("watch stream ended: %v", w.scanner.Err())
	return api.WatchLine{}
}

// brief is what a test compares of a line.
type brief struct {
	Revision uint64
	Type     string
	Key      string
	HasItem  bool
}

func (w *watchStream) nextBriefs(n int) []brief {
	w.t.Helper()
	var out []brief
	for range n {
		l := w.next()
		out = append(out, brief{l.Revision, l.Type, l.Key, l.Item != nil})
	}
	return out
}

func TestWatchResumesFromARevision(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("a"), sandbox("b")))                            // 1
	env.mustApply(t, applyReq(sandbox("a", memory(1024))))                            // 2
	env.mustDo(t, "DELETE", "/v1/sandboxes/default/b", nil, http.StatusAccepted, nil) // 3
	if err := env.store.UpdateStatus(t.Context(), "default/a", store.Status{Phase: store.PhaseRunning, ObservedGeneration: 2}); err != nil {
		t.Fatal(err) // 4
	}
	if err := env.store.AppendEvent(t.Context(), "default/a", store.Event{Type: store.EventNormal, Reason: "Created"}); err != nil {
		t.Fatal(err) // 5
	}
	if err := env.store.Finalize(t.Context(), "default/b", 3); err != nil {
		t.Fatal(err) // 6
	}

	w := env.openWatch(t, "?since=1")
	want := []brief{
		{2, "spec", "default/a", true},
		{3, "deleted", "default/b", false}, // finalized since: no item left to show
		{4, "status", "default/a", true},
		{5, "events", "default/a", true},
		{6, "finalized", "default/b", false},
	}
	if d := cmp.Diff(want, w.nextBriefs(len(want))); d != "" {
		t.Fatalf("history (-want +got):\n%s", d)
	}

	// Then live changes, item included.
	env.mustApply(t, applyReq(sandbox("c")))
	line := w.next()
	if line.Revision != 7 || line.Type != "spec" || line.Key != "default/c" || line.Item == nil || line.Item.Name != "c" {
		t.Errorf("live line %+v, want revision 7 spec of default/c with its item", line)
	}
	if line.Item != nil && line.Item.Status.Phase != "Pending" {
		t.Errorf("live item phase %q, want Pending", line.Item.Status.Phase)
	}
}

func TestWatchWithoutSinceStartsNow(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("old")))
	w := env.openWatch(t, "")
	env.mustApply(t, applyReq(sandbox("new")))
	if l := w.next(); l.Key != "default/new" || l.Revision != 2 {
		t.Errorf("first line %+v, want revision 2 of default/new", l)
	}
}

func TestWatchFilters(t *testing.T) {
	env := newEnv(t)
	byNamespace := env.openWatch(t, "?since=0&namespace=prod")
	bySelector := env.openWatch(t, "?since=0&selector=team%3Dml")
	env.mustApply(t, applyReq(sandbox("a", labeled("team", "ml")), sandbox("b", inNamespace("prod"), labeled("team", "web")))) // 1
	env.mustApply(t, applyReq(sandbox("c", inNamespace("prod"), labeled("team", "ml"))))                                       // 2

	if d := cmp.Diff([]brief{{1, "spec", "prod/b", true}, {2, "spec", "prod/c", true}}, byNamespace.nextBriefs(2)); d != "" {
		t.Errorf("namespace filter (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]brief{{1, "spec", "default/a", true}, {2, "spec", "prod/c", true}}, bySelector.nextBriefs(2)); d != "" {
		t.Errorf("selector filter (-want +got):\n%s", d)
	}
}

func TestWatchRefusals(t *testing.T) {
	env := newEnv(t, withRetain(1))
	for i := range 4 {
		env.mustApply(t, applyReq(sandbox("a", memory(512+i*32))))
	}
	tests := []struct {
		query    string
		want     int
		wantCode string
	}{
		{"?since=0", http.StatusGone, api.CodeCompacted},
		{"?since=abc", http.StatusBadRequest, api.CodeInvalid},
		{"?since=-1", http.StatusBadRequest, api.CodeInvalid},
		{"?selector=a+in+(", http.StatusBadRequest, api.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, body := env.do(t, "GET", "/v1/watch"+tt.query, nil)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			if e := decodeError(t, body); e.Code != tt.wantCode {
				t.Errorf("code %q, want %q", e.Code, tt.wantCode)
			}
		})
	}
	// The revision a list returns is always watchable.
	var list api.ItemList
	env.mustDo(t, "GET", "/v1/sandboxes", nil, http.StatusOK, &list)
	w := env.openWatch(t, "?since="+itoa(list.Revision))
	env.mustApply(t, applyReq(sandbox("b")))
	if l := w.next(); l.Key != "default/b" {
		t.Errorf("after relist: %+v, want default/b", l)
	}
}

// A since the store has not reached, or one read from another store, was
// never a revision of the store that would serve the watch: streaming
// from it would skip that store's changes up to it. The answer is 410
// unknown_revision, before the stream starts, and the client lists again.
func TestWatchRefusesARevisionOfAnotherStore(t *testing.T) {
	env := newEnv(t)
	for i := range 3 {
		env.mustApply(t, applyReq(sandbox("a", memory(512+i*32))))
	}
	var list api.ItemList
	env.mustDo(t, "GET", "/v1/sandboxes", nil, http.StatusOK, &list)
	if list.StoreID != env.store.StoreID() {
		t.Fatalf("list storeID %q, want the store's %q", list.StoreID, env.store.StoreID())
	}
	tests := []struct {
		name  string
		query string
	}{
		{"a revision the store has not reached", "?since=4"},
		{"far ahead", "?since=1000000"},
		{"another store's revision", "?since=2&store=other-store"},
		{"another store, from now", "?store=other-store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := env.watchRefusal(t, tt.query)
			if resp.StatusCode != http.StatusGone {
				t.Fatalf("status %d, want 410; body %s", resp.StatusCode, body)
			}
			if e := decodeError(t, body); e.Code != api.CodeUnknownRevision || !strings.Contains(e.Message, "list") {
				t.Errorf("error %+v, want %s telling to list again", e, api.CodeUnknownRevision)
			}
		})
	}
	// The list's own revision and store are watchable.
	w := env.openWatch(t, "?since="+itoa(list.Revision)+"&store="+list.StoreID)
	env.mustApply(t, applyReq(sandbox("b")))
	if l := w.next(); l.Key != "default/b" || l.Revision != 4 {
		t.Errorf("line %+v, want revision 4 of default/b", l)
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// streamRecorder is a ResponseWriter whose lines a test reads while the
// handler still writes.
type streamRecorder struct {
	mu      sync.Mutex
	header  http.Header
	code    int
	buf     bytes.Buffer
	flushes int
	// gate, when set, holds every Write until it is closed: a client
	// that stopped reading.
	gate chan struct{}
}

func (r *streamRecorder) Header() http.Header { return r.header }
func (r *streamRecorder) WriteHeader(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.code == 0 {
		r.code = code
	}
}
func (r *streamRecorder) Write(b []byte) (int, error) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(b)
}
func (r *streamRecorder) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushes++
}

func (r *streamRecorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Split(strings.TrimSuffix(r.buf.String(), "\n"), "\n")
}

func TestWatchHeartbeatsAndShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := openStore(t, store.Options{})
		srv := api.NewServer(api.Options{Store: st})
		rec := &streamRecorder{header: http.Header{}}
		req := httptest.NewRequestWithContext(t.Context(), "GET", "/v1/watch?since=0", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeHTTP(rec, req)
		}()
		synctest.Wait()
		if rec.code != http.StatusOK || rec.flushes == 0 {
			t.Fatalf("status %d, %d flushes: want 200 flushed at once", rec.code, rec.flushes)
		}

		time.Sleep(api.HeartbeatInterval - time.Nanosecond)
		synctest.Wait()
		if got := rec.lines(); got[0] != "" {
			t.Fatalf("lines before the first interval: %q, want none", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got, want := rec.lines(), []string{`{"type":"heartbeat"}`}; !cmp.Equal(got, want) {
			t.Fatalf("lines after one interval: %q, want %q", got, want)
		}

		if _, err := st.Apply(t.Context(), []store.Object{{Sandbox: sandbox("a")}}, store.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		time.Sleep(api.HeartbeatInterval)
		synctest.Wait()
		lines := rec.lines()
		if len(lines) != 3 || !strings.HasPrefix(lines[1], `{"revision":1,"type":"spec","key":"default/a","item":{`) ||
			lines[2] != `{"type":"heartbeat"}` {
			t.Fatalf("lines %q: want heartbeat, the change, heartbeat", lines)
		}

		srv.Close()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("the watch did not end when the server closed")
		}
	})
}

func TestWatchEndsWhenTheClientLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := openStore(t, store.Options{})
		srv := api.NewServer(api.Options{Store: st})
		ctx, cancel := context.WithCancel(t.Context())
		req := httptest.NewRequestWithContext(ctx, "GET", "/v1/watch", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeHTTP(&streamRecorder{header: http.Header{}}, req)
		}()
		synctest.Wait()
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("the watch did not end when its client left")
		}
	})
}

func TestWatchEndsWhenTheStoreCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := openStore(t, store.Options{})
		srv := api.NewServer(api.Options{Store: st})
		rec := &streamRecorder{header: http.Header{}}
		req := httptest.NewRequestWithContext(t.Context(), "GET", "/v1/watch", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeHTTP(rec, req)
		}()
		synctest.Wait()
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("the watch did not end when the store closed")
		}
		if got := rec.lines(); got[0] != "" {
			t.Errorf("lines %q: a closing store ends the stream without an error line", got)
		}
	})
}

func TestWatchTellsASlowClientItFellBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := openStore(t, store.Options{RetainRevisions: 1})
		srv := api.NewServer(api.Options{Store: st})
		rec := &streamRecorder{header: http.Header{}, gate: make(chan struct{})}
		req := httptest.NewRequestWithContext(t.Context(), "GET", "/v1/watch?since=0", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeHTTP(rec, req)
		}()
		synctest.Wait()
		// The first change is stuck in a write the client does not read
		// while the feed moves on and is compacted past the watcher.
		for i := range 4 {
			if _, err := st.Apply(t.Context(), []store.Object{{Sandbox: sandbox("a", memory(512+i*32))}}, store.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		close(rec.gate)
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("the watch went on after falling behind")
		}
		lines := rec.lines()
		var last api.WatchLine
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
			t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
		}
		if last.Type != "error" || last.Error == nil || last.Error.Code != api.CodeCompacted {
			t.Errorf("lines %q: want a last line of type error with code compacted", lines)
		}
	})
}

func TestWatchAfterCloseIsNotReady(t *testing.T) {
	env := newEnv(t)
	env.server.Close()
	resp, body := env.do(t, "GET", "/v1/watch", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; body %s", resp.StatusCode, body)
	}
	if e := decodeError(t, body); e.Code != api.CodeNotReady {
		t.Errorf("code %q, want not_ready", e.Code)
	}
}
