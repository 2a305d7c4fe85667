package nomad

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
)

// recordingSink collects what a watcher reports and lets a test wait for
// a condition on it.
type recordingSink struct {
	mu       sync.Mutex
	changed  map[string]int
	relists  [][]*api.JobListStub
	listings []Listing
	notifyCh chan struct{}
}

func newSink() *recordingSink {
	return &recordingSink{changed: map[string]int{}, notifyCh: make(chan struct{}, 1)}
}

func (s *recordingSink) Changed(key string) {
	s.mu.Lock()
	s.changed[key]++
	s.mu.Unlock()
	s.notify()
}

func (s *recordingSink) Relisted(l Listing) {
	s.mu.Lock()
	s.relists = append(s.relists, l.Jobs)
	s.listings = append(s.listings, l)
	s.mu.Unlock()
	s.notify()
}

func (s *recordingSink) notify() {
	select {
	case s.notifyCh <- struct{}{}:
	default:
	}
}

// waitFor blocks until cond holds; the deadline only keeps a broken
// watcher from hanging the test.
func (s *recordingSink) waitFor(t *testing.T, what string, cond func(s *recordingSink) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		s.mu.Lock()
		ok := cond(s)
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.notifyCh:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (s *recordingSink) listing(i int) Listing {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listings[i]
}

func (s *recordingSink) changes(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed[key]
}

type watchEnv struct {
	srv    *nomadtest.Server
	mem    *nomadtest.MemNet
	client *Client
	w      *Watcher
	sink   *recordingSink
}

// serveMem serves h on an in-memory network, so that a watcher, its
// server and every timer between them run inside the test's
// testing/synctest bubble: a test waits on events, never on the clock.
func serveMem(t *testing.T, h http.Handler) *nomadtest.MemNet {
	t.Helper()
	mem := nomadtest.NewMemNet()
	hs := &http.Server{Handler: h}
	go func() { _ = hs.Serve(mem.Listener()) }()
	t.Cleanup(func() {
		mem.Close()
		_ = hs.Close()
	})
	return mem
}

// runWatcher runs w until the test ends.
func runWatcher(t *testing.T, w *Watcher, sink WatchSink) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx, sink)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// startWatch runs a watcher against the test server, after prepare has
// set the scene. Call it inside synctest.Test.
func startWatch(t *testing.T, srvOpts nomadtest.Options, opts WatchOptions, prepare ...func(e *watchEnv)) *watchEnv {
	t.Helper()
	srvOpts.Drivers = []string{"docker", "exec", "raw_exec"}
	srv := nomadtest.New(srvOpts)
	t.Cleanup(func() { _ = srv.Close() })
	mem := serveMem(t, srv)
	c, err := NewClient(Config{Address: mem.URL(), HTTPClient: mem.HTTPClient(), Token: srvOpts.ACLToken})
	if err != nil {
		t.Fatal(err)
	}
	opts.Owner = testRenderOptions.Owner
	opts.Backoff = Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond}
	if opts.FirstLineTimeout == 0 {
		opts.FirstLineTimeout = 2 * time.Second
	}
	env := &watchEnv{srv: srv, mem: mem, client: c, w: NewWatcher(c, opts), sink: newSink()}
	for _, p := range prepare {
		p(env)
	}
	runWatcher(t, env.w, env.sink)
	return env
}

func (e *watchEnv) register(t *testing.T, name string) {
	t.Helper()
	sb := loadSandbox(t, "testdata/render/docker-minimal.hcl")
	sb.Name = name
	job, err := Render(&sb, testRenderOptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Register(t.Context(), job, 0); err != nil {
		t.Fatal(err)
	}
}

func TestWatchReportsChangesAndRelists(t *testing.T) {
	synctest.Test(t, testWatchReportsChangesAndRelists)
}

func testWatchReportsChangesAndRelists(t *testing.T) {
	e := startWatch(t, nomadtest.Options{}, WatchOptions{})
	e.register(t, "before")
	e.sink.waitFor(t, "the first relist", func(s *recordingSink) bool { return len(s.relists) >= 1 })
	e.register(t, "after")
	e.sink.waitFor(t, "a change for the new job", func(s *recordingSink) bool { return s.changed["default/after"] > 0 })
	before := e.sink.changes("default/after")
	if _, err := e.client.Stop(t.Context(), "default", "agentkernel-after"); err != nil {
		t.Fatal(err)
	}
	e.sink.waitFor(t, "a change for the stopped job", func(s *recordingSink) bool { return s.changed["default/after"] > before })
	if st := e.w.Stats(); st.Heartbeats < 1 || st.Connects != 1 || st.Reconnects != 0 {
		t.Errorf("stats %+v: want the initial heartbeat on one connection", st)
	}
}

func TestWatchReconnectsAndRelistsAfterCut(t *testing.T) {
	synctest.Test(t, testWatchReconnectsAndRelistsAfterCut)
}

func testWatchReconnectsAndRelistsAfterCut(t *testing.T) {
	e := startWatch(t, nomadtest.Options{}, WatchOptions{})
	e.sink.waitFor(t, "the first relist", func(s *recordingSink) bool { return len(s.relists) >= 1 })
	synctest.Wait() // the stream, asked from the list's index, is open
	e.srv.CutEventStreams()
	e.sink.waitFor(t, "a relist after the cut", func(s *recordingSink) bool { return len(s.relists) >= 2 })
	e.register(t, "later")
	e.sink.waitFor(t, "a change after reconnecting", func(s *recordingSink) bool { return s.changed["default/later"] > 0 })
	if st := e.w.Stats(); st.Reconnects < 1 || st.Blocking {
		t.Errorf("stats %+v: want a reconnection on the stream", st)
	}
}

// TestWatchGapRelistCatchesWhatTheStreamSkipped takes Nomad away, makes a
// change, and pushes the index past the event buffer, so that the resumed
// stream starts after the change: only the relist can report it.
//
// It runs on an in-memory network inside a synctest bubble: taking Nomad
// down there cuts every connection and refuses new ones in one step, so no
// stream reopened in the middle can outlive the outage and report the
// change live, which once made the gap go uncounted on a loaded machine.
func TestWatchGapRelistCatchesWhatTheStreamSkipped(t *testing.T) {
	synctest.Test(t, testWatchGapRelistCatchesWhatTheStreamSkipped)
}

func testWatchGapRelistCatchesWhatTheStreamSkipped(t *testing.T) {
	e := startWatch(t, nomadtest.Options{EventBufferSize: 4}, WatchOptions{})
	e.sink.waitFor(t, "the first relist", func(s *recordingSink) bool { return len(s.relists) >= 1 })
	e.register(t, "before")
	e.sink.waitFor(t, "the stream's first event", func(s *recordingSink) bool { return s.changed["default/before"] > 0 })
	e.mem.SetDown(true)
	if _, _, err := e.srv.RunJob(mustRender(t, "skipped")); err != nil {
		t.Fatal(err)
	}
	e.srv.JumpIndex(100)
	for i := range 6 { // fill the small buffer with unrelated lines
		if _, _, err := e.srv.RunJob(mustRender(t, fmt.Sprintf("filler-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.mem.SetDown(false)
	e.sink.waitFor(t, "the skipped job in a relist, and the stream resumed", func(s *recordingSink) bool {
		if s.changed["default/filler-5"] == 0 {
			return false
		}
		for _, r := range s.relists {
			for _, j := range r {
				if j.ID == "agentkernel-skipped" {
					return true
				}
			}
		}
		return false
	})
	if n := e.sink.changes("default/skipped"); n != 0 {
		t.Errorf("the skipped job was reported %d times by the stream, which must not have seen it", n)
	}
	if st := e.w.Stats(); st.Gaps < 1 {
		t.Errorf("stats %+v: want the gap counted", st)
	}
}

func mustRender(t *testing.T, name string) *api.Job {
	t.Helper()
	sb := loadSandbox(t, "testdata/render/docker-minimal.hcl")
	sb.Name = name
	job, err := Render(&sb, testRenderOptions)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// TestWatchHeartbeatsAndErrors uses a hand-written stream: heartbeats
// count as such, a line that is not JSON is an error that ends the
// connection, never a heartbeat.
func TestWatchHeartbeatsAndErrors(t *testing.T) {
	synctest.Test(t, testWatchHeartbeatsAndErrors)
}

func testWatchHeartbeatsAndErrors(t *testing.T) {
	var mu sync.Mutex
	streams := 0
	mem := serveMem(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/event/stream":
			mu.Lock()
			streams++
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, "{}\n{}\n{\"Index\":7,\"Events\":[{\"Topic\":\"Job\",\"Type\":\"JobRegistered\",\"Key\":\"agentkernel-x\",\"Namespace\":\"default\",\"Index\":7,\"Payload\":{}}]}\nnot json\n")
		case "/v1/jobs", "/v1/allocations":
			w.Header().Set("X-Nomad-Index", "7")
			fmt.Fprint(w, "[]")
		default:
			http.NotFound(w, r)
		}
	}))
	c, err := NewClient(Config{Address: mem.URL(), HTTPClient: mem.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(c, WatchOptions{Owner: "me", Backoff: Backoff{Base: time.Millisecond, Max: time.Millisecond}, FallbackAfter: 1000})
	sink := newSink()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx, sink) }()
	sink.waitFor(t, "two connections", func(s *recordingSink) bool { return len(s.relists) >= 2 })
	cancel()
	<-done
	st := w.Stats()
	perConn := st.Heartbeats / st.Connects
	if perConn != 2 || st.Events < 1 || st.Reconnects < 1 {
		t.Errorf("stats %+v: want exactly 2 heartbeats per connection, the event, and reconnections after the bad line", st)
	}
	if sink.changes("default/x") < 1 {
		t.Errorf("the event's job was not reported")
	}
}

// TestWatchFallsBackWhenTheStreamIsSilent reproduces what real Nomad does
// with ACLs: the stream answers 200 and then nothing. The watcher must
// move to blocking queries and still see changes.
func TestWatchFallsBackWhenTheStreamIsSilent(t *testing.T) {
	synctest.Test(t, testWatchFallsBackWhenTheStreamIsSilent)
}

func testWatchFallsBackWhenTheStreamIsSilent(t *testing.T) {
	inner := nomadtest.New(nomadtest.Options{Drivers: []string{"docker"}})
	silent := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/event/stream" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		inner.ServeHTTP(w, r)
	})
	defer inner.Close()
	mem := serveMem(t, silent)
	c, err := NewClient(Config{Address: mem.URL(), HTTPClient: mem.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(c, WatchOptions{
		Owner: testRenderOptions.Owner, FirstLineTimeout: 50 * time.Millisecond,
		Backoff: Backoff{Base: time.Millisecond, Max: time.Millisecond}, BlockingWait: time.Second,
	})
	sink := newSink()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx, sink) }()
	defer func() { cancel(); <-done }()
	sink.waitFor(t, "the first blocking relist", func(s *recordingSink) bool { return len(s.relists) >= 1 })
	if _, err := c.Register(t.Context(), mustRender(t, "seen-by-blocking"), 0); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, "the change through blocking queries", func(s *recordingSink) bool { return s.changed["default/seen-by-blocking"] > 0 })
	if st := w.Stats(); st.Fallbacks < 1 || !st.Blocking {
		t.Errorf("stats %+v: want the watcher in blocking mode", st)
	}
}

// TestWatchFallsBackWhenTheStreamIsRefused has Nomad answer every endpoint
// but the event stream. An ACL refusal, which Nomad sends as 500
// "Permission denied" when it comes back through an RPC, is given up on at
// once; any other failure after FallbackAfter attempts in a row. Either way
// changes keep arriving through blocking queries.
func TestWatchFallsBackWhenTheStreamIsRefused(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		attempts int
	}{
		{"500 permission denied forwarded over RPC", 500, "Permission denied", 1},
		{"403 permission denied", 403, "Permission denied", 1},
		{"500 from a stream RPC that keeps failing", 500, "rpc error: stream reset", 3},
		{"502 from a proxy that cannot stream", 502, "Bad Gateway", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := startWatch(t, nomadtest.Options{}, WatchOptions{}, func(e *watchEnv) {
					e.srv.FailRequests(nomadtest.ErrorFault{Status: tt.status, Body: tt.body, PathPrefix: "/v1/event/stream"})
				})
				// The list taken before the stream, then the blocking list.
				e.sink.waitFor(t, "the first relist by a blocking list", func(s *recordingSink) bool { return len(s.relists) >= 2 })
				if n := e.srv.RequestCount("GET /v1/event/stream"); n != tt.attempts {
					t.Errorf("fell back after %d stream attempts, want %d", n, tt.attempts)
				}
				e.register(t, "seen-by-blocking")
				e.sink.waitFor(t, "the change through blocking queries", func(s *recordingSink) bool { return s.changed["default/seen-by-blocking"] > 0 })
				if st := e.w.Stats(); st.Fallbacks != 1 || !st.Blocking || st.Connects != 0 {
					t.Errorf("stats %+v: want one fallback to blocking queries and no stream", st)
				}
			})
		})
	}
}

// TestWatchKeepsRetryingTheStreamWhileNomadIsDown: when the list fails as
// well as the stream, Nomad is down rather than its stream; the watcher
// keeps retrying the stream and takes it as soon as Nomad is back.
func TestWatchKeepsRetryingTheStreamWhileNomadIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startWatch(t, nomadtest.Options{}, WatchOptions{}, func(e *watchEnv) { e.mem.SetDown(true) })
		time.Sleep(time.Second) // on the bubble's clock: a hundred attempts or so, each refused
		if st := e.w.Stats(); st.Reconnects < 10 || st.Fallbacks != 0 || st.Relists != 0 {
			t.Fatalf("stats %+v while Nomad is down: want attempts on the stream and no fallback", st)
		}
		e.mem.SetDown(false)
		e.sink.waitFor(t, "the relist once Nomad is back", func(s *recordingSink) bool { return len(s.relists) >= 1 })
		synctest.Wait() // and the stream opened from its index
		if st := e.w.Stats(); st.Connects != 1 || st.Fallbacks != 0 || st.Blocking {
			t.Errorf("stats %+v: want the stream back, never blocking queries", st)
		}
	})
}

// TestWatchRelistHandsOverAllocations: a relist carries the allocations
// of the owned jobs, and only theirs, so that an allocation that died
// while the stream was away shows in the relist that follows it.
func TestWatchRelistHandsOverAllocations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startWatch(t, nomadtest.Options{EventBufferSize: 4}, WatchOptions{}, func(e *watchEnv) {
			foreign := mustRender(t, "foreign")
			foreign.Meta[MetaOwner] = "another-controller"
			unmanaged := mustRender(t, "x")
			unmanaged.ID, unmanaged.Name = ptr("unmanaged"), ptr("unmanaged")
			for _, j := range []*api.Job{mustRender(t, "mine"), foreign, unmanaged} {
				if _, _, err := e.srv.RunJob(j); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Second) // placed and running
		})
		allocOf := func(l Listing) (ids []string, status string) {
			for _, a := range l.Allocs {
				ids = append(ids, a.JobID)
				status = a.ClientStatus
			}
			return ids, status
		}
		e.sink.waitFor(t, "the first relist", func(s *recordingSink) bool { return len(s.listings) >= 1 })
		if jobs, status := allocOf(e.sink.listing(0)); !slices.Equal(jobs, []string{"agentkernel-mine"}) || status != api.AllocClientStatusRunning {
			t.Fatalf("first relist has allocations of %v (%s), want the running one of agentkernel-mine only", jobs, status)
		}

		e.mem.SetDown(true)
		if err := e.srv.FailTask("default", "agentkernel-mine"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the client reports the failure
		e.srv.JumpIndex(100)    // the resumed stream cannot replay the failure
		e.mem.SetDown(false)
		e.sink.waitFor(t, "the relist after the outage", func(s *recordingSink) bool { return len(s.listings) >= 2 })
		if jobs, status := allocOf(e.sink.listing(1)); !slices.Equal(jobs, []string{"agentkernel-mine"}) || status != api.AllocClientStatusFailed {
			t.Errorf("relist after the outage has allocations of %v (%s), want the failed one of agentkernel-mine", jobs, status)
		}
	})
}

// A denied stream may also end at once: 200, then the connection closed
// before the heartbeat an allowed stream sends first (more/ 3). That is
// a refusal: the watcher falls back after that one attempt.
func TestWatchFallsBackWhenTheStreamClosesBeforeItsHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startWatch(t, nomadtest.Options{}, WatchOptions{}, func(e *watchEnv) {
			e.srv.FailRequests(nomadtest.ErrorFault{Status: 200, Body: "", PathPrefix: "/v1/event/stream"})
		})
		// The list taken before the stream, then the blocking list.
		e.sink.waitFor(t, "the first relist by a blocking list", func(s *recordingSink) bool { return len(s.relists) >= 2 })
		if n := e.srv.RequestCount("GET /v1/event/stream"); n != 1 {
			t.Errorf("fell back after %d stream attempts, want 1", n)
		}
		if st := e.w.Stats(); st.Fallbacks != 1 || !st.Blocking {
			t.Errorf("stats %+v: want one fallback to blocking queries", st)
		}
	})
}
