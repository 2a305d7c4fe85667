package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// Cluster tells the API about the other instances when the controller runs as several.
type Cluster interface {
	// Self is this instance's ID.
	Self() string
	// Leader is the current leader as this instance knows it.
	Leader() Leader
	// Freshness says how current this instance's store is.
	Freshness() Freshness
}

// Leader is the instance that leads, as one instance knows it.
type Leader struct {
	ID      string // instance ID; empty when no leader is known
	Address string // advertised base URL, e.g. "http://10.0.0.5:7474"
	Self    bool   // this instance leads
}

// Freshness says how far a follower's store has caught up.
type Freshness struct {
	// SyncedAt is when this instance's store last matched the replicated copy; zero if never.
	SyncedAt time.Time
	// Index is the replicated copy's index (Nomad variables ModifyIndex high-water mark) the store reflects.
	Index uint64
}

// ErrNotLeader is what the leader's Store.Apply and Store.Delete wrap when
// the leadership was lost during the request. The API answers 503 with
// Retry-After, so that the client's retry reaches the new leader.
var ErrNotLeader = errors.New("this instance is not the leader")

// ErrUnavailable marks a store error that passes, such as a write the
// leader committed but could not yet replicate: the answer is 503 with
// the error's text and Retry-After.
var ErrUnavailable = errors.New("temporarily unavailable")

// Headers of the cluster-aware routes. Every answer to a read route
// carries ServedBy, Leader and Stale; an answer from a follower's own
// store adds LastSync (RFC 3339, or "never") and SyncIndex.
const (
	// HeaderForwardedBy names the instance that forwarded a request to
	// the leader. A request that carries it is never forwarded again.
	HeaderForwardedBy = "X-Agentkernel-Forwarded-By"
	HeaderServedBy    = "X-Agentkernel-Served-By"
	HeaderLeader      = "X-Agentkernel-Leader"
	HeaderStale       = "X-Agentkernel-Stale"
	HeaderLastSync    = "X-Agentkernel-Last-Sync"
	HeaderSyncIndex   = "X-Agentkernel-Sync-Index"
)

// Roles an instance reports on /v1/version and /readyz.
const (
	RoleLeader   = "leader"
	RoleFollower = "follower"
	// RoleSingle is a controller that runs alone (Options.Cluster is nil).
	RoleSingle = "single"
)

// LeaderInfo names the leader on /v1/version and /readyz. ID is empty
// while no leader is known.
type LeaderInfo struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// DefaultForwardClient is the client a follower forwards requests to the
// leader with when Options.ForwardClient is nil. It never follows
// redirects and has no overall timeout, which would cut watch streams:
// connecting and waiting for the leader's answer are bounded instead,
// and the client's own request bounds the rest. It ignores HTTP_PROXY:
// instances talk to each other inside the cluster, and a proxy set for
// the controller's egress must not carry that traffic.
func DefaultForwardClient() *http.Client {
	tr := cleanhttp.DefaultPooledTransport()
	tr.Proxy = nil
	// Reads fall back to the local store when the leader cannot be
	// reached; a long connect timeout would stall every one of them.
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: tr, CheckRedirect: noRedirects}
}

// noRedirects hands redirects back to the caller: following one to
// another host would drop the Authorization header.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// clientTransport lets httputil.ReverseProxy send through an
// *http.Client, so that whatever the client adds (TLS, timeouts, a
// round tripper that reports) applies to forwarded requests.
type clientTransport struct{ client *http.Client }

func (t clientTransport) RoundTrip(r *http.Request) (*http.Response, error) { return t.client.Do(r) }

// routeKind says where a route is served when the controller runs as
// several instances. Routes missing from clusterRoutes are served by
// whichever instance is asked.
type routeKind int

const (
	// routeRead is forwarded to the leader, whose store has live status,
	// unless the request says ?stale=true; it is served from the local
	// store when no leader is known or the leader cannot be reached.
	routeRead routeKind = iota + 1
	// routeWrite is forwarded to the leader and refused when that is not
	// possible.
	routeWrite
)

var clusterRoutes = map[string]routeKind{
	routeApply:  routeWrite,
	routeDelete: routeWrite,
	routeDiff:   routeRead, // writes nothing, but answers from the store
	routeList:   routeRead,
	routeGet:    routeRead,
	routeEvents: routeRead,
	routeWatch:  routeRead,
	// The reconcile loop runs on the leader alone.
	routeGC:        routeWrite,
	routeGCConfirm: routeWrite,
	routeReconcile: routeWrite,
	// A claim writes the leader's store, which alone knows what is Ready.
	routeClaim:      routeWrite,
	routePoolDelete: routeWrite,
	routePoolList:   routeRead,
	routePoolGet:    routeRead,
}

// Outcomes of the forwarded-requests metric.
const (
	outcomeForwarded   = "forwarded"   // the leader answered, whatever its status
	outcomeUnreachable = "unreachable" // the leader could not be reached
	outcomeNoLeader    = "no_leader"   // no leader is known
	outcomeLoop        = "loop"        // the request was forwarded once already
	outcomeCanceled    = "canceled"    // the client left before the leader answered
)

// streamWriteTimeout bounds each write of a forwarded watch stream, as
// the local watch bounds each line, so that only a stuck client is dropped.
const streamWriteTimeout = time.Minute

// clusterView is what this instance knows of the cluster when a request
// arrives; one request sees one view.
type clusterView struct {
	self   string
	leader Leader
	leads  bool
}

func (s *Server) view() clusterView {
	v := clusterView{self: s.opts.Cluster.Self(), leader: s.opts.Cluster.Leader()}
	// Only Self says this instance leads: a leader ID equal to ours may
	// be stale (a restarted instance keeps its ID) or an instance still
	// catching up after taking the lock.
	v.leads = v.leader.Self
	return v
}

func (v clusterView) role() string {
	if v.leads {
		return RoleLeader
	}
	return RoleFollower
}

// leaderName is the leader for messages: "a at http://10.0.0.5:7474".
func (v clusterView) leaderName() string {
	if v.leader.Address == "" {
		return v.leader.ID
	}
	return v.leader.ID + " at " + v.leader.Address
}

// clusterInfo is the role and leader /v1/version and /readyz report.
func (s *Server) clusterInfo() (id, role string, leader *LeaderInfo) {
	if s.opts.Cluster == nil {
		return "", RoleSingle, nil
	}
	v := s.view()
	return v.self, v.role(), &LeaderInfo{ID: v.leader.ID, Address: v.leader.Address}
}

// serveClustered serves a read or write route of an instance among
// several: locally when it leads, otherwise through the leader, falling
// back as the route's kind allows.
func (s *Server) serveClustered(w http.ResponseWriter, r *http.Request, route string, kind routeKind) {
	r.Pattern = route // for the logs of refusals, which the mux never sees
	v := s.view()
	if kind == routeRead {
		stale, err := staleParam(r)
		if err != nil {
			s.setClusterHeaders(w.Header(), v, kind)
			s.writeError(w, r, err)
			return
		}
		if stale && !v.leads {
			s.serveLocal(w, r, v, kind)
			return
		}
	}
	if v.leads {
		s.serveLocal(w, r, v, kind)
		return
	}
	// notForwarded serves a read locally or refuses a write with e.
	notForwarded := func(outcome string, e *apiError) {
		s.metrics.forward(route, outcome)
		if kind == routeRead {
			s.serveLocal(w, r, v, kind)
			return
		}
		s.setClusterHeaders(w.Header(), v, kind)
		s.writeError(w, r, e)
	}
	if by := r.Header.Get(HeaderForwardedBy); by != "" {
		// Two instances that each think the other leads would pass a
		// request back and forth; one hop is all a request gets.
		notForwarded(outcomeLoop, errorf(http.StatusServiceUnavailable, CodeNotReady,
			"Instance %s is not the leader (leader: %s); retry. Instance %s forwarded the request here, and a request is forwarded only once.",
			v.self, v.leaderName(), by).retry())
		return
	}
	if v.leader.ID == v.self {
		notForwarded(outcomeNoLeader, errorf(http.StatusServiceUnavailable, CodeNotReady,
			"Instance %s is taking over as leader and is not ready yet (catching up from the replicated copy, or its lock is not confirmed); retry in a few seconds.", v.self).retry())
		return
	}
	if v.leader.ID == "" {
		notForwarded(outcomeNoLeader, errorf(http.StatusServiceUnavailable, CodeNotReady,
			"No leader is elected yet; retry in a few seconds.").retry())
		return
	}

	// The body is read here, so that the limit holds on this instance and
	// a read can still be served locally if the leader cannot be reached.
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
		if err != nil {
			e := decodeError(err)
			var tooLarge *http.MaxBytesError
			if !errors.As(err, &tooLarge) {
				e = errorf(http.StatusBadRequest, CodeInvalid, "The request body could not be read.").with(err.Error())
			}
			s.setClusterHeaders(w.Header(), v, kind)
			s.writeError(w, r, e)
			return
		}
	}
	setBody := func() {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.TransferEncoding = nil
	}
	setBody()

	err := s.forward(w, r, route, v)
	switch {
	case err == nil:
		s.metrics.forward(route, outcomeForwarded)
		return
	case r.Context().Err() != nil:
		s.metrics.forward(route, outcomeCanceled)
		return
	}
	if kind == routeRead {
		s.log.Warn("leader unreachable; serving from the local store", "route", route, "leader", v.leader.ID,
			"leader_address", v.leader.Address, "err", err)
	}
	setBody()
	notForwarded(outcomeUnreachable, errorf(http.StatusBadGateway, CodeBadGateway,
		"The leader %s did not answer: %v; retry.", v.leaderName(), forwardCause(err)).retry())
}

// serveLocal answers from this instance's store, saying in the headers
// who answered and how fresh that answer is.
func (s *Server) serveLocal(w http.ResponseWriter, r *http.Request, v clusterView, kind routeKind) {
	s.setClusterHeaders(w.Header(), v, kind)
	s.mux.ServeHTTP(w, r)
}

func (s *Server) setClusterHeaders(h http.Header, v clusterView, kind routeKind) {
	h.Set(HeaderServedBy, v.self)
	h.Set(HeaderLeader, v.leader.ID)
	if kind != routeRead {
		return
	}
	if v.leads {
		h.Set(HeaderStale, "false")
		return
	}
	f := s.opts.Cluster.Freshness()
	h.Set(HeaderStale, "true")
	h.Set(HeaderLastSync, formatSync(f.SyncedAt))
	h.Set(HeaderSyncIndex, strconv.FormatUint(f.Index, 10))
}

func formatSync(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// staleParam reads ?stale: "stale" alone or a true boolean lets a
// follower answer from its own store.
func staleParam(r *http.Request) (bool, *apiError) {
	q := r.URL.Query()
	if !q.Has("stale") {
		return false, nil
	}
	text := q.Get("stale")
	if text == "" {
		return true, nil
	}
	stale, err := strconv.ParseBool(text)
	if err != nil {
		return false, errorf(http.StatusBadRequest, CodeInvalid, "stale %q is not a boolean: send stale=true, or stale alone.", text)
	}
	return stale, nil
}

// forward proxies r to the leader. It returns an error, having written
// nothing, when the leader did not answer; an answer of any status is
// passed through.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, route string, v clusterView) error {
	target, err := leaderURL(v.leader.Address)
	if err != nil {
		return err
	}
	// A watch stream proxied from the leader ends when this server closes,
	// as a local one does.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()

	var failed error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.RequestURI = ""      // http.Client refuses requests that have one
			pr.Out.Header.Del("Expect") // the body is here already
			pr.Out.Header.Set(HeaderForwardedBy, v.self)
		},
		Transport:     s.forwardTransport,
		FlushInterval: -1, // watch lines must not wait in a buffer
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ModifyResponse: func(res *http.Response) error {
			if res.Header.Get(HeaderServedBy) == "" {
				// A leader that predates clusters says nothing of itself.
				res.Header.Set(HeaderServedBy, v.leader.ID)
				res.Header.Set(HeaderLeader, v.leader.ID)
				if clusterRoutes[route] == routeRead {
					res.Header.Set(HeaderStale, "false")
				}
			}
			res.Body = &endOnCancel{ReadCloser: res.Body, ctx: ctx}
			return nil
		},
		ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { failed = err },
	}
	if route == routeWatch {
		rc := http.NewResponseController(w)
		// The server's WriteTimeout would cut the stream; each write gets
		// its own deadline instead, cleared on the way out as the local
		// watch does.
		_ = rc.SetWriteDeadline(time.Time{})
		defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
		w = &streamWriter{ResponseWriter: w, rc: rc}
	}
	rp.ServeHTTP(w, r.WithContext(ctx))
	return failed
}

func leaderURL(address string) (*url.URL, error) {
	if address == "" {
		return nil, errors.New("it advertises no address")
	}
	u, err := url.Parse(address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("its address %q is not an http(s) URL", address)
	}
	return u, nil
}

// forwardCause drops the method and URL http.Client puts before a
// transport error: the message names the leader already.
func forwardCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// endOnCancel ends a proxied body cleanly when the forwarded request is
// cancelled (the client left, or this server is closing), instead of
// making the proxy abort the connection mid-stream. Any other error, such
// as the leader going away, still aborts it: the client must not take a
// cut answer for a whole one.
type endOnCancel struct {
	io.ReadCloser
	ctx context.Context
}

func (b *endOnCancel) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() != nil {
		return n, io.EOF
	}
	return n, err
}

// streamWriter gives every write of a proxied stream its own deadline.
type streamWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
}

func (w *streamWriter) Write(b []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	return w.ResponseWriter.Write(b)
}

func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
