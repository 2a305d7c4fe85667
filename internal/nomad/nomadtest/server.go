package nomadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
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

	// Instant applies every scheduler and client step at once, inside the
	// request that causes it: a register answers with its allocations
	// already running, their deployment successful and the job version
	// stable. The writes and their events are those of the default mode,
	// in the same order, except that the client reports a placed
	// allocation received and running in one write; only the time between
	// them is gone. Restart and reschedule delays keep their policies'
	// values. It overrides EvalDelay, ClientDelay and SchedulingDelay. For
	// tests that are not about placement timing: a real agent is never
	// instant.
	Instant bool

	// EvalDelay is how long an evaluation waits before the scheduler
	// applies its plan: the register answers first, and a read right after
	// it still sees the previous allocations. Zero means 5ms: the recorded
	// agent's plans became visible 1-10ms after the register answered
	// (lifecycle README section 1; its "~30ms" is the 25ms poll interval).
	// Negative plans within the request that created the evaluation.
	EvalDelay time.Duration

	// ClientDelay is how long after a plan the simulated client first
	// reports: the allocations the plan stopped as complete, the ones it
	// placed as received, still pending with their tasks being set up. It
	// is also how long the client takes to report a task's end that
	// KillTask, FailTask or ExitTask caused. Zero means 150ms (recorded:
	// 60-320ms); negative reports at once.
	ClientDelay time.Duration

	// SchedulingDelay is how long after a plan a placed allocation reports
	// running. Zero means 450ms (recorded for raw_exec: 360-930ms); a
	// negative value reports it at once. Not longer than ClientDelay, the
	// allocation goes running in the client's first report, as it once did
	// on the recorded agent. Health follows the group's min_healthy_time
	// later, and with it the deployment (see Deployments in the package
	// documentation).
	SchedulingDelay time.Duration

	// EventBufferSize is how many event batches the event stream keeps for
	// resuming clients. Zero means 100, the agent's event_buffer_size default
	// (facts 4.10).
	EventBufferSize int

	// HeartbeatInterval is the period of the `{}` lines on the event stream.
	// Zero means 30s, as recorded (facts 4.10, file 40).
	HeartbeatInterval time.Duration

	// ACLs turns on ACL enforcement (more/ section 3): requests carry a
	// token's secret in X-Nomad-Token or "Authorization: Bearer", a request
	// without one is anonymous, and what a token may do follows its
	// policies. With ACLToken empty the server starts un-bootstrapped:
	// POST /v1/acl/bootstrap answers the management token, once (303, 304).
	ACLs bool

	// ACLToken is the secret of the bootstrap management token, and implies
	// ACLs. The bootstrap is then the server's first write, index 11, as on
	// the recorded agent (303). Add policies and client tokens with
	// SetACLPolicy and CreateACLToken, or over the ACL endpoints.
	ACLToken string

	// Drivers lists the task drivers the simulated node reports healthy. Nil
	// means raw_exec, exec, java and mock_driver, as on the recorded node
	// (facts section 3). A task with another driver leaves its job pending with
	// a blocked evaluation (fact 68).
	Drivers []string

	// Logger receives one debug line per request and per event the state
	// changes publish. Nil discards.
	Logger *slog.Logger

	// AllocDir is the directory under which each allocation gets its
	// directory tree, as a client's data dir holds them: made on the
	// first exec, file-system or log request for the allocation, removed
	// when its job is purged and by Close. The directory itself is made if
	// missing and left in place. Empty means a temporary directory, made
	// on first use and removed by Close.
	AllocDir string
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
	// signingKeyID is the agent's workload identity key, on every alloc.
	signingKeyID string
	started      time.Time
	gzipPool     sync.Pool

	mu         sync.Mutex
	closed     bool
	index      uint64
	tables     map[string]uint64
	namespaces map[string]*namespace
	nodePools  map[string]*nodePool // nodepools.go; made on first use
	jobs       map[nsKey]*jobEntry
	allocs     map[string]*alloc
	evals      map[string]*evalEntry
	// deployments by ID; each job lists its own.
	deployments     map[string]*deployment
	port            int    // the last dynamic port handed out
	lastAllocUpdate uint64 // the node's LastAllocUpdateIndex
	vars            map[nsKey]*variable
	locks           map[string]*lockTimer
	acl             aclState
	watch           watcher
	events          eventBuffer
	streams         map[*stream]struct{}
	timers          map[*time.Timer]struct{}
	faults          faultState
	counts          map[string]int
	// dirs are the allocation directories (allocdir.go); execs the
	// running exec sessions (exec.go).
	dirs  allocDirs
	execs map[*execSession]struct{}
	// execWedged holds the exec-driver tasks ("alloc/task") whose exec no
	// longer answers, after one of a missing program.
	execWedged map[string]bool
	// shutdown is closed by Close: it ends file and log streams served
	// over a listener the server does not own.
	shutdown chan struct{}

	lnMu sync.Mutex
	addr string
	// httpAddr is addr for the node's HTTPAddr, which is read under s.mu
	// where lnMu may not be taken.
	httpAddr atomic.Pointer[string]
	ln       *connTracker
	httpSrv  *http.Server
	serveWG  sync.WaitGroup
}

// New returns a Server with an empty state: the default namespace and one
// ready node, at raft index 10 like a freshly started dev agent, so the first
// write gets index 11 (fact 01).
func New(opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.EvalDelay = timing(opts.Instant, opts.EvalDelay, defaultEvalDelay)
	opts.ClientDelay = timing(opts.Instant, opts.ClientDelay, defaultClientDelay)
	opts.SchedulingDelay = timing(opts.Instant, opts.SchedulingDelay, defaultSchedulingDelay)
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
		opts:         opts,
		log:          log,
		now:          opts.Now,
		drivers:      make(map[string]bool),
		nodeID:       newUUID(),
		signingKeyID: newUUID(),
		started:      opts.Now(),
		deployments:  make(map[string]*deployment),
		index:        10,
		tables:       map[string]uint64{"namespaces": 1, "nodes": 10},
		namespaces:   make(map[string]*namespace),
		jobs:         make(map[nsKey]*jobEntry),
		allocs:       make(map[string]*alloc),
		evals:        make(map[string]*evalEntry),
		vars:         make(map[nsKey]*variable),
		locks:        make(map[string]*lockTimer),
		acl:          newACLState(opts.ACLs || opts.ACLToken != ""),
		watch:        newWatcher(),
		events:       eventBuffer{size: opts.EventBufferSize},
		streams:      make(map[*stream]struct{}),
		timers:       make(map[*time.Timer]struct{}),
		counts:       make(map[string]int),
		dirs:         allocDirs{dir: opts.AllocDir},
		execs:        make(map[*execSession]struct{}),
		shutdown:     make(chan struct{}),
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
	if opts.ACLToken != "" {
		s.bootstrapLocked(opts.ACLToken)
	}
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
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	ln := &connTracker{Listener: inner, conns: make(map[*trackedConn]struct{})}
	s.ln = ln
	s.addr = ln.Addr().String()
	advertised := s.addr
	s.httpAddr.Store(&advertised)
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
	// http.Server.Close leaves hijacked connections open, and a stream
	// reopened the moment it was cut may have been hijacked but not yet
	// registered for CutEventStreams: only closing what the listener
	// accepted ends it, as a crash would.
	s.ln.closeAll()
	s.httpSrv = nil
	s.ln = nil
}

// connTracker is a listener that remembers the connections it accepted
// until they close, hijacked ones included.
type connTracker struct {
	net.Listener
	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

func (l *connTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

// closeAll closes the listener and every connection it accepted.
func (l *connTracker) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	_ = l.Listener.Close()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	l *connTracker
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
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

// Close stops the listener, ends every event stream, file and log stream
// and exec session, kills the processes of the sessions, cancels every
// timer and removes the allocation directories. It is safe to call more
// than once.
func (s *Server) Close() error {
	s.mu.Lock()
	wasClosed := s.closed
	s.closed = true
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
	sessions := s.endExecsLocked(func(*execSession) bool { return true })
	if !wasClosed {
		close(s.shutdown)
	}
	s.mu.Unlock()
	s.lnMu.Lock()
	s.stopListeningLocked()
	s.lnMu.Unlock()
	s.CutEventStreams()
	waitExecs(sessions)
	return s.dirs.removeAll()
}

// afterFunc runs f with s.mu held after d, unless the server is closed or
// the timer stopped with stopTimer first. It returns nil once the server is
// closed. Callers hold s.mu.
func (s *Server) afterFunc(d time.Duration, f func()) *time.Timer {
	if s.closed {
		return nil
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, live := s.timers[t]; !live || s.closed {
			return
		}
		delete(s.timers, t)
		f()
	})
	s.timers[t] = struct{}{}
	return t
}

// stopTimer cancels a timer of afterFunc, even one that has fired and waits
// for s.mu. Callers hold s.mu.
func (s *Server) stopTimer(t *time.Timer) {
	if t == nil {
		return
	}
	t.Stop()
	delete(s.timers, t)
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
	// The event stream and exec's WebSocket take over the connection and
	// are never compressed.
	if acceptsGzip(r) && r.URL.Path != "/v1/event/stream" && !websocket.IsWebSocketUpgrade(r) {
		gw := &gzipWriter{ResponseWriter: w, pool: &s.gzipPool}
		defer gw.close()
		w = gw
	}
	id, known := s.identify(r)
	if !known && !openPath(r.URL.Path) {
		if isVarPath(r.URL.Path) {
			varHeaders(w)
		}
		s.deny(w, r)
		return
	}
	if id != nil {
		r = r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
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

// route is one API route: a ServeMux pattern and its handler.
type route struct {
	pattern string
	handler http.HandlerFunc
}

// apiRoutes lists every API route; each handler does its own ACL check.
func (s *Server) apiRoutes() []route {
	return []route{
		{"/v1/jobs", s.handleJobs},
		{"/v1/job/{id}", s.handleJob},
		{"/v1/job/{id}/allocations", s.handleJobAllocations},
		{"/v1/job/{id}/evaluations", s.handleJobEvaluations},
		{"/v1/job/{id}/summary", s.handleJobSummary},
		{"/v1/job/{id}/versions", s.handleJobVersions},
		{"/v1/job/{id}/plan", s.handleJobPlan},
		{"/v1/job/{id}/deployment", s.handleJobDeployment},
		{"/v1/job/{id}/deployments", s.handleJobDeployments},
		{"/v1/deployment/{id}", s.handleDeployment},
		{"/v1/deployment/allocations/{id}", s.handleDeploymentAllocations},
		{"/v1/deployments", s.handleDeployments},
		{"/v1/validate/job", s.handleValidateJob},
		{"/v1/allocation/{id}", s.handleAllocation},
		{"/v1/allocations", s.handleAllocations},
		{"/v1/evaluation/{id}", s.handleEvaluation},
		{"/v1/evaluations", s.handleEvaluations},
		{"/v1/event/stream", s.handleEventStream},
		{"/v1/status/leader", s.handleLeader},
		{"/v1/agent/health", s.handleHealth},
		{"/v1/nodes", s.handleNodes},
		{"/v1/node/{id}", s.handleNode},
		{"/v1/node/pools", s.handleNodePools},
		{"/v1/node/pool/{name}", s.handleNodePool},
		{"/v1/namespaces", s.handleNamespaces},
		{"/v1/namespace", s.handleNamespaceCreate},
		{"/v1/namespace/{name}", s.handleNamespace},
		{"/v1/vars", s.handleVars},
		{"/v1/var/{path...}", s.handleVar},
		{"/v1/acl/bootstrap", s.handleACLBootstrap},
		{"/v1/acl/policies", s.handleACLPolicies},
		{"/v1/acl/policy/{name}", s.handleACLPolicy},
		{"/v1/acl/tokens", s.handleACLTokens},
		{"/v1/acl/token", s.handleACLTokenCreate},
		{"/v1/acl/token/self", s.handleACLTokenSelf},
		{"/v1/acl/token/{id}", s.handleACLToken},
		{"/v1/client/allocation/{id}/exec", s.handleAllocExec},
		{"/v1/client/fs/ls/{id}", fsRoute(s.handleFSList)},
		{"/v1/client/fs/stat/{id}", fsRoute(s.handleFSStat)},
		{"/v1/client/fs/cat/{id}", fsRoute(s.handleFSCat)},
		{"/v1/client/fs/readat/{id}", fsRoute(s.handleFSReadAt)},
		{"/v1/client/fs/stream/{id}", fsRoute(s.handleFSStream)},
		{"/v1/client/fs/logs/{id}", fsRoute(s.handleFSLogs)},
	}
}

func (s *Server) routes() {
	m := http.NewServeMux()
	for _, rt := range s.apiRoutes() {
		m.HandleFunc(rt.pattern, rt.handler)
	}
	s.mux = m
	s.faultMux = s.faultRoutes()
}
