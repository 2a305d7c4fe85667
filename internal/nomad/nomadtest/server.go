package nomadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Addr is the address Start listens on. Empty means a free port on 127.0.0.1.
	Addr string

	// Now is the clock used for every timestamp the server hands out
	// (SubmitTime, CreateTime, task events). Nil means time.Now. Timers use the
	// time package, so tests that need them deterministic run inside
	// testing/synctest.
	Now func() time.Time

	// SchedulingDelay is how long a placed allocation stays pending before the
	// simulated client reports it running, and how long a stopped allocation
	// keeps running before it reports complete. Zero means 50ms; a negative
	// value means the transition happens at once, in the same request.
	SchedulingDelay time.Duration

	// EvalDelay is how long an evaluation waits before the scheduler plans
	// it. Zero plans it within the request that created it, so a read right
	// after a register sees the allocations; real agents plan a few
	// milliseconds later, which a positive delay reproduces (fact 56).
	EvalDelay time.Duration

	// EventBufferSize is how many event batches the event stream keeps for
	// resuming clients. Zero means 100, the agent's event_buffer_size default
	// (facts 4.10).
	EventBufferSize int

	// HeartbeatInterval is the period of the `{}` lines on the event stream.
	// Zero means 30s, as recorded (facts 4.10, file 40).
	HeartbeatInterval time.Duration

	// ACLToken, when set, turns on ACL mode: every endpoint except
	// /v1/agent/health and /v1/status/leader wants this secret in X-Nomad-Token
	// or "Authorization: Bearer", and answers 403 "Permission denied" otherwise
	// (more/ facts 300-342).
	ACLToken string

	// Drivers lists the task drivers the simulated node reports healthy. Nil
	// means raw_exec, exec, java and mock_driver, as on the recorded node
	// (facts section 3). A task with another driver leaves its job pending with
	// a blocked evaluation (fact 68).
	Drivers []string

	// Logger receives one debug line per request and per event the state
	// changes publish. Nil discards.
	Logger *slog.Logger
}

// Server is an in-memory Nomad agent speaking the Nomad HTTP API. It is an
// http.Handler; Start also serves it on a loopback listener.
type Server struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	mux      *http.ServeMux
	faultMux *http.ServeMux
	drivers  map[string]bool
	nodeID   string
	gzipPool sync.Pool

	mu         sync.Mutex
	closed     bool
	index      uint64
	tables     map[string]uint64
	namespaces map[string]*namespace
	jobs       map[nsKey]*jobEntry
	allocs     map[string]*alloc
	evals      map[string]*evalEntry
	vars       map[nsKey]*variable
	watch      watcher
	events     eventBuffer
	streams    map[*stream]struct{}
	timers     map[*time.Timer]struct{}
	faults     faultState
	counts     map[string]int

	lnMu    sync.Mutex
	addr    string
	ln      net.Listener
	httpSrv *http.Server
	serveWG sync.WaitGroup
}

// New returns a Server with an empty state: the default namespace and one
// ready node, at raft index 10 like a freshly started dev agent, so the first
// write gets index 11 (fact 01).
func New(opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SchedulingDelay == 0 {
		opts.SchedulingDelay = 50 * time.Millisecond
	}
	if opts.EventBufferSize <= 0 {
		opts.EventBufferSize = 100
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 30 * time.Second
	}
	if opts.Drivers == nil {
		opts.Drivers = []string{"raw_exec", "exec", "java", "mock_driver"}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:       opts,
		log:        log,
		now:        opts.Now,
		drivers:    make(map[string]bool),
		nodeID:     newUUID(),
		index:      10,
		tables:     map[string]uint64{"namespaces": 1, "nodes": 10},
		namespaces: make(map[string]*namespace),
		jobs:       make(map[nsKey]*jobEntry),
		allocs:     make(map[string]*alloc),
		evals:      make(map[string]*evalEntry),
		vars:       make(map[nsKey]*variable),
		watch:      newWatcher(),
		events:     eventBuffer{size: opts.EventBufferSize},
		streams:    make(map[*stream]struct{}),
		timers:     make(map[*time.Timer]struct{}),
		counts:     make(map[string]int),
	}
	for _, d := range opts.Drivers {
		s.drivers[d] = true
	}
	s.namespaces["default"] = &namespace{
		Name:        "default",
		Description: "Default shared namespace",
		CreateIndex: 1,
		ModifyIndex: 1,
	}
	s.namespaces["default"].setHash()
	s.routes()
	return s
}

// Start serves the Server on Options.Addr, or on a free 127.0.0.1 port.
func (s *Server) Start() error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	addr := s.opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return s.listenLocked(addr)
}

func (s *Server) listenLocked(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.httpSrv = srv
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Debug("serve stopped", "err", err)
		}
	}()
	return nil
}

// stopListeningLocked closes the listener and every open connection,
// including hijacked event streams.
func (s *Server) stopListeningLocked() {
	if s.httpSrv == nil {
		return
	}
	s.CutEventStreams()
	_ = s.httpSrv.Close()
	s.serveWG.Wait()
	s.httpSrv = nil
	s.ln = nil
}

// URL is the base URL of the listener started by Start, e.g.
// "http://127.0.0.1:4646". It stays the same across an outage.
func (s *Server) URL() string {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.addr == "" {
		return ""
	}
	return "http://" + s.addr
}

// Close stops the listener, ends every event stream and cancels every timer.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
	s.mu.Unlock()
	s.lnMu.Lock()
	s.stopListeningLocked()
	s.lnMu.Unlock()
	s.CutEventStreams()
	return nil
}

// afterFunc runs f with s.mu held after d, unless the server is closed first.
// Callers hold s.mu.
func (s *Server) afterFunc(d time.Duration, f func()) {
	if s.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.timers, t)
		if s.closed {
			return
		}
		f()
	})
	s.timers[t] = struct{}{}
}

// ServeHTTP answers one request: fault endpoints first, then request
// counting, injected faults, the ACL check and finally the Nomad API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isFaultPath(r.URL.Path) {
		s.faultMux.ServeHTTP(w, r)
		return
	}
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		pattern = r.URL.Path
	}
	key := r.Method + " " + pattern
	s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery)

	s.mu.Lock()
	s.counts[key]++
	delay, failed := s.faults.take(s.now(), r.URL.Path)
	s.mu.Unlock()

	// Every Nomad response carries this header from the gzip wrapper, errors
	// included (facts 4.2, 4.4).
	w.Header().Add("Vary", "Accept-Encoding")
	if delay > 0 {
		if err := sleepCtx(r.Context(), delay); err != nil {
			return
		}
	}
	if failed != nil {
		writeText(w, failed.Status, failed.Body)
		return
	}
	// The event stream takes over the connection and is never compressed.
	if acceptsGzip(r) && r.URL.Path != "/v1/event/stream" {
		gw := &gzipWriter{ResponseWriter: w, pool: &s.gzipPool}
		defer gw.close()
		w = gw
	}
	if !s.authorized(r) {
		s.deny(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("/v1/jobs", s.handleJobs)
	m.HandleFunc("/v1/job/{id}", s.handleJob)
	m.HandleFunc("/v1/job/{id}/allocations", s.handleJobAllocations)
	m.HandleFunc("/v1/job/{id}/evaluations", s.handleJobEvaluations)
	m.HandleFunc("/v1/job/{id}/summary", s.handleJobSummary)
	m.HandleFunc("/v1/job/{id}/versions", s.handleJobVersions)
	m.HandleFunc("/v1/job/{id}/plan", s.handleJobPlan)
	m.HandleFunc("/v1/validate/job", s.handleValidateJob)
	m.HandleFunc("/v1/allocation/{id}", s.handleAllocation)
	m.HandleFunc("/v1/allocations", s.handleAllocations)
	m.HandleFunc("/v1/evaluation/{id}", s.handleEvaluation)
	m.HandleFunc("/v1/evaluations", s.handleEvaluations)
	m.HandleFunc("/v1/event/stream", s.handleEventStream)
	m.HandleFunc("/v1/status/leader", s.handleLeader)
	m.HandleFunc("/v1/agent/health", s.handleHealth)
	m.HandleFunc("/v1/nodes", s.handleNodes)
	m.HandleFunc("/v1/node/{id}", s.handleNode)
	m.HandleFunc("/v1/namespaces", s.handleNamespaces)
	m.HandleFunc("/v1/namespace", s.handleNamespaceCreate)
	m.HandleFunc("/v1/namespace/{name}", s.handleNamespace)
	m.HandleFunc("/v1/vars", s.handleVars)
	m.HandleFunc("/v1/var/{path...}", s.handleVar)
	s.mux = m
	s.faultMux = s.faultRoutes()
}
