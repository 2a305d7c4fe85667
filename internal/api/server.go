package api

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// DefaultMaxBodyBytes bounds a request body when Options.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 32 << 20

// HeartbeatInterval is how often a quiet watch stream gets a heartbeat line,
// so that clients and proxies can tell a quiet stream from a dead one.
const HeartbeatInterval = 15 * time.Second

// Store is what the API calls on the controller's store.
type Store interface {
	Apply(ctx context.Context, objs []store.Object, opts store.ApplyOptions) (store.ApplyResult, error)
	Get(ctx context.Context, key string) (store.Record, error)
	List(ctx context.Context, opts store.ListOptions) ([]store.Record, uint64, error)
	Delete(ctx context.Context, key string) (store.Record, error)
	Events(ctx context.Context, key string) ([]store.Event, error)
	Watch(ctx context.Context, since uint64) (*store.Watcher, error)
	Revision(ctx context.Context) (uint64, error)
	StoreID() string
	Claim(ctx context.Context, key string, opts store.ClaimOptions) (store.Record, error)
}

// Policy is the controller's own rules on top of the spec's (allowed
// drivers, resource ceilings). Any error is a refusal.
type Policy interface {
	CheckPolicy(sb *spec.Sandbox) error
}

// Planner asks Nomad what it would do with a sandbox, writing nothing.
type Planner interface {
	Plan(ctx context.Context, sb *spec.Sandbox) (*nomadapi.JobPlanResponse, error)
	// Preflight says what the controller would meet in Nomad that a plan
	// does not show: a job by the sandbox's ID that it does not own, or
	// a namespace Nomad does not have. The zero Obstacle is none.
	Preflight(ctx context.Context, sb *spec.Sandbox) (nomad.Obstacle, error)
}

// Options configure a Server. Store is required.
type Options struct {
	Store Store
	// Policy, when set, refuses sandboxes the controller will not run.
	Policy Policy
	// Planner, when set, adds Nomad's plan to diffs and what the
	// controller would meet there.
	Planner Planner
	// Fresh says whether the running reconcile loop has observed a
	// sandbox's generation (key, generation): claims hand out only those,
	// never one whose Ready status an earlier run or leader wrote. Nil
	// takes every status as fresh.
	Fresh func(key string, generation uint64) bool
	// Ready reports readiness for /readyz. Nil means always ready.
	Ready func() (ok bool, reason string)
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every route but /healthz, /readyz and /metrics.
	Token string
	// MaxBodyBytes bounds request bodies. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives one debug line per request and the causes of
	// internal errors. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the API's metrics and Gatherer feeds /metrics.
	// When Registerer is nil a private registry is used; when Gatherer is
	// nil the Registerer is gathered if it can be.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Version is reported by /v1/version.
	Version string
	// DefaultNamespace is given to sandboxes that arrive without one
	// ("default" when empty).
	DefaultNamespace string
	// Cluster, when set, makes this server one of several instances of
	// which one leads: writes are forwarded to the leader, and reads too
	// unless they say ?stale=true. Nil is a controller that runs alone.
	Cluster Cluster
	// Controller, when set, is the reconcile loop behind the garbage
	// collection and reconcile-now routes.
	Controller Controller
	// Inside, when set, serves exec, files and logs inside running
	// sandboxes; without it those routes answer 501.
	Inside Inside
	// ForwardClient carries forwarded requests to the leader; nil means
	// DefaultForwardClient(). The server uses a copy that never follows
	// redirects. A Timeout on it bounds whole exchanges, watch streams
	// included, so leave it zero.
	ForwardClient *http.Client
}

func (s *Server) defaultNamespace() string {
	if s.opts.DefaultNamespace == "" {
		return "default"
	}
	return s.opts.DefaultNamespace
}

// Server serves the API. It is an http.Handler.
type Server struct {
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics

	// forwardClient carries requests to the leader, through
	// forwardTransport.
	forwardClient    *http.Client
	forwardTransport http.RoundTripper

	stopOnce sync.Once
	// stopping is closed by Close, ending every open watch stream.
	stopping chan struct{}
}

// The routes that read and write sandboxes; clusterRoutes says where
// each is served when the controller runs as several instances.
const (
	routeApply  = "POST /v1/apply"
	routeDiff   = "POST /v1/diff"
	routeList   = "GET /v1/sandboxes"
	routeGet    = "GET /v1/sandboxes/{namespace}/{name}"
	routeDelete = "DELETE /v1/sandboxes/{namespace}/{name}"
	routeEvents = "GET /v1/sandboxes/{namespace}/{name}/events"
	routeWatch  = "GET /v1/watch"
)

// Open routes need no token: orchestrators and scrapers probe them.
const (
	routeHealthz = "GET /healthz"
	routeReadyz  = "GET /readyz"
	routeMetrics = "GET /metrics"
	// routeUnmatched labels the metrics of requests no route took.
	routeUnmatched = "unmatched"
)

// NewServer builds the API's handler. It panics if the metrics cannot be
// registered for a reason other than being registered already, as
// prometheus.MustRegister does.
func NewServer(opts Options) *Server {
	if opts.Store == nil {
		panic("api: Options.Store is nil")
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg, gath := opts.Registerer, opts.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg = r
		if gath == nil {
			gath = r
		}
	}
	if gath == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			gath = g
		} else {
			gath = prometheus.Gatherers{}
		}
	}
	fc := opts.ForwardClient
	if fc == nil {
		fc = DefaultForwardClient()
	}
	forwardClient := *fc
	forwardClient.CheckRedirect = noRedirects
	s := &Server{
		opts:             opts,
		log:              log,
		mux:              http.NewServeMux(),
		metrics:          newMetrics(reg),
		stopping:         make(chan struct{}),
		forwardClient:    &forwardClient,
		forwardTransport: clientTransport{client: &forwardClient},
	}
	s.mux.HandleFunc(routeApply, s.handle(s.apply))
	s.mux.HandleFunc(routeDiff, s.handle(s.diff))
	s.mux.HandleFunc(routeList, s.handle(s.list))
	s.mux.HandleFunc(routeGet, s.handle(s.get))
	s.mux.HandleFunc(routeDelete, s.handle(s.delete))
	s.mux.HandleFunc(routeEvents, s.handle(s.events))
	s.mux.HandleFunc(routeWatch, s.handle(s.watch))
	s.mux.HandleFunc(routeGC, s.handle(s.gcStatus))
	s.mux.HandleFunc(routeGCConfirm, s.handle(s.gcConfirm))
	s.mux.HandleFunc(routeReconcile, s.handle(s.reconcileNow))
	s.routeInside()
	s.routePools()
	s.mux.HandleFunc("GET /v1/version", s.handle(s.version))
	s.mux.HandleFunc(routeHealthz, s.healthz)
	s.mux.HandleFunc(routeReadyz, s.readyz)
	s.mux.Handle(routeMetrics, promhttp.HandlerFor(gath, promhttp.HandlerOpts{}))
	return s
}

// Handler returns s; it exists for symmetry with servers that wrap theirs.
func (s *Server) Handler() http.Handler { return s }

// Close ends every open watch stream and refuses new ones. http.Server's
// Shutdown waits for handlers without cancelling them, so register it with
// RegisterOnShutdown. It is safe to call more than once.
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		close(s.stopping)
		s.forwardClient.CloseIdleConnections()
	})
}

// ServeHTTP authenticates, routes, and records the request's metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	_, pattern := s.mux.Handler(r)
	route := pattern
	if route == "" {
		route = routeUnmatched
	}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		code := sw.status
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.observe(route, code, time.Since(start))
		s.log.Debug("request", "method", r.Method, "route", route, "path", r.URL.Path,
			"code", code, "duration", time.Since(start))
	}()
	open := pattern == routeHealthz || pattern == routeReadyz || pattern == routeMetrics
	if !open && !s.authorized(r) {
		sw.Header().Set("WWW-Authenticate", `Bearer realm="agentkernel"`)
		s.writeError(sw, r, errorf(http.StatusUnauthorized, CodeUnauthorized,
			"The request needs the header \"Authorization: Bearer <token>\" with the controller's API token."))
		return
	}
	if pattern == "" {
		s.unmatched(sw, r)
		return
	}
	if kind, ok := clusterRoutes[pattern]; ok && s.opts.Cluster != nil {
		s.serveClustered(sw, r, pattern, kind)
		return
	}
	s.mux.ServeHTTP(sw, r)
}

func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Token)) == 1
}

// unmatched answers requests no route took in JSON, keeping the mux's
// status and its Allow header (405) or redirect (path cleaning).
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	cw := &captureWriter{header: http.Header{}}
	h.ServeHTTP(cw, r)
	switch cw.status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", cw.header.Get("Allow"))
		s.writeError(w, r, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			"The route %s does not take %s; it takes %s.", r.URL.Path, r.Method, cw.header.Get("Allow")))
	case http.StatusNotFound, 0:
		s.writeError(w, r, errorf(http.StatusNotFound, CodeNotFound, "No route serves %s %s.", r.Method, r.URL.Path))
	default:
		for k, v := range cw.header {
			if k != "Content-Type" && k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(cw.status)
	}
}

// handle adapts a handler that returns an error to the mux.
func (s *Server) handle(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				ae = storeError(err)
			}
			s.writeError(w, r, ae)
		}
	}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.status >= 500 {
		switch {
		case r.Context().Err() != nil:
			// The client left; nobody reads the answer.
			s.log.Debug("request abandoned", "route", r.Pattern, "err", e)
		case e.retryAfter > 0:
			// Passing, as while a leader is elected: the client retries.
			s.log.Warn("request refused for now", "route", r.Pattern, "code", e.status, "err", e)
		default:
			s.log.Error("request failed", "route", r.Pattern, "code", e.status, "err", e)
		}
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	writeJSON(w, e.status, ErrorBody{Error: ErrorDetail{Code: e.code, Message: e.message, Details: e.details}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a write error means the client left
}

// decodeBody reads one JSON value from the body into v, refusing unknown
// fields, trailing data and bodies over the limit.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errorf(http.StatusBadRequest, CodeInvalid, "The request body is empty; it must be a JSON object.")
		}
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return decodeError(err)
		}
		return errorf(http.StatusBadRequest, CodeInvalid, "The request body holds more than one JSON value.")
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
	// Role is leader, follower or single. A follower is ready when
	// Options.Ready says so, whoever leads.
	Role string `json:"role"`
	// Leader is the leader as this instance knows it; null for a
	// controller that runs alone.
	Leader *LeaderInfo `json:"leader"`
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	rd := Readiness{Ready: true}
	_, rd.Role, rd.Leader = s.clusterInfo()
	if s.opts.Ready != nil {
		rd.Ready, rd.Reason = s.opts.Ready()
	}
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}

// VersionInfo is the body of /v1/version.
type VersionInfo struct {
	Version  string `json:"version"`
	StoreID  string `json:"storeID"`
	Revision uint64 `json:"revision"`
	// DefaultNamespace is the namespace the controller gives sandboxes
	// that declare none; akctl loads declarations with it.
	DefaultNamespace string `json:"defaultNamespace"`
	// InstanceID is the ID of the instance that answered; empty for a
	// controller that runs alone.
	InstanceID string `json:"instanceID"`
	// Role is leader, follower or single (a controller that runs alone).
	Role string `json:"role"`
	// Leader is the leader as this instance knows it (id empty while none
	// is known); null for a controller that runs alone.
	Leader *LeaderInfo `json:"leader"`
	// LastSync is when this instance's store last matched the replicated
	// copy, and SyncIndex the copy's index it reflects; null and 0 when it
	// never did or the controller runs alone. Revision is this instance's
	// own store revision.
	LastSync  *time.Time `json:"lastSync"`
	SyncIndex uint64     `json:"syncIndex"`
}

// version always answers from this instance: it is how a client learns
// which instance it reached.
func (s *Server) version(w http.ResponseWriter, r *http.Request) error {
	rev, err := s.opts.Store.Revision(r.Context())
	if err != nil {
		return err
	}
	vi := VersionInfo{Version: s.opts.Version, StoreID: s.opts.Store.StoreID(), Revision: rev, DefaultNamespace: s.defaultNamespace()}
	vi.InstanceID, vi.Role, vi.Leader = s.clusterInfo()
	if s.opts.Cluster != nil {
		f := s.opts.Cluster.Freshness()
		if !f.SyncedAt.IsZero() {
			t := f.SyncedAt.UTC()
			vi.LastSync = &t
		}
		vi.SyncIndex = f.Index
	}
	writeJSON(w, http.StatusOK, vi)
	return nil
}

// statusWriter records the status for metrics and passes flushes through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	// A proxied 1xx is not the answer's status.
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (Flush,
// write deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection to a WebSocket upgrade (the exec stream),
// which asks for http.Hijacker itself rather than through Unwrap. The
// exchange counts as 101 Switching Protocols.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return conn, rw, err
}

// captureWriter keeps the status and headers of the mux's own 404, 405
// and redirect answers so they can be re-sent in JSON.
type captureWriter struct {
	header http.Header
	status int
}

func (w *captureWriter) Header() http.Header { return w.header }
func (w *captureWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *captureWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}

type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	forwarded *prometheus.CounterVec
	claims    claimMetrics
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkernel_api_requests_total",
			Help: "API requests answered, by route pattern and HTTP status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentkernel_api_request_duration_seconds",
			Help:    "Time to answer API requests, by route pattern; watch streams count until they end.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkernel_api_forwarded_requests_total",
			Help: "Requests a follower meant to forward to the leader, by route pattern and outcome: forwarded (the leader answered), " +
				"unreachable, no_leader, loop (forwarded once already) or canceled (the client left). Reads not forwarded are served " +
				"from the follower's store; writes are refused.",
		}, []string{"route", "outcome"}),
	}
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	m.forwarded = register(reg, m.forwarded)
	m.claims = newClaimMetrics(reg)
	return m
}

// register registers c, or returns the collector registered already under
// its name so that several servers can share one registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("api: register metrics: " + err.Error())
	}
	return c
}

func (m *metrics) forward(route, outcome string) {
	m.forwarded.WithLabelValues(route, outcome).Inc()
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}
