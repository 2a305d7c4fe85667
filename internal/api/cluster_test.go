package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// fakeCluster is what the election would tell an instance.
type fakeCluster struct {
	mu     sync.Mutex
	self   string
	leader api.Leader
	fresh  api.Freshness
}

func (c *fakeCluster) Self() string { return c.self }

func (c *fakeCluster) Leader() api.Leader {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *fakeCluster) Freshness() api.Freshness {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fresh
}

// followerSync is how fresh every follower of these tests is.
var followerSync = api.Freshness{SyncedAt: time.Date(2026, 1, 2, 3, 4, 0, 123456789, time.UTC), Index: 42}

func leaderCluster(id string) *fakeCluster {
	return &fakeCluster{self: id, leader: api.Leader{ID: id, Address: "http://leader.invalid:7474", Self: true}}
}

func followerCluster(id string, leader api.Leader) *fakeCluster {
	return &fakeCluster{self: id, leader: leader, fresh: followerSync}
}

// seen records the requests that reach a server.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Clone(context.Background()))
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (s *seen) all() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

// pair is two instances that share nothing: leader "a" and follower "b",
// which knows where a is.
type pair struct {
	leader, follower *testEnv
	// atLeader are the requests that reached the leader.
	atLeader *seen
}

func newPair(t *testing.T, leaderOpts, followerOpts []envOption) *pair {
	t.Helper()
	p := &pair{atLeader: &seen{}}
	p.leader = newEnv(t, append([]envOption{withCluster(leaderCluster("a")), withHandler(p.atLeader.wrap)}, leaderOpts...)...)
	fc := followerCluster("b", api.Leader{ID: "a", Address: p.leader.http.URL})
	p.follower = newEnv(t, append([]envOption{withCluster(fc)}, followerOpts...)...)
	return p
}

// putLocal writes sandboxes straight into an instance's store, as
// replication would, without going through any API.
func putLocal(t *testing.T, env *testEnv, sbs ...spec.Sandbox) {
	t.Helper()
	objs := make([]store.Object, len(sbs))
	for i, sb := range sbs {
		objs[i] = store.Object{Sandbox: sb}
	}
	if _, err := env.store.Apply(t.Context(), objs, store.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func hasRecord(t *testing.T, env *testEnv, key string) bool {
	t.Helper()
	_, err := env.store.Get(t.Context(), key)
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound):
		return false
	}
	t.Fatal(err)
	return false
}

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	return addr
}

// absent, in wantHeaders, is a header that must not be there.
const absent = "<absent>"

// wantHeaders checks the cluster headers of a response.
func wantHeaders(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := h[http.CanonicalHeaderKey(k)]
		switch {
		case v == absent && ok:
			t.Errorf("header %s: %q, want none", k, got)
		case v != absent && (len(got) != 1 || got[0] != v):
			t.Errorf("header %s: %q, want %q", k, got, v)
		}
	}
}

// jsonBody encodes a request body as testEnv.do does.
func jsonBody(t *testing.T, body any) io.Reader {
	t.Helper()
	if body == nil {
		return nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

func metricsOf(t *testing.T, env *testEnv) string {
	t.Helper()
	return string(env.mustDo(t, "GET", "/metrics", nil, 200, nil))
}

func TestClusterWritesAreForwardedToTheLeader(t *testing.T) {
	tests := []struct {
		name     string
		given    func(t *testing.T, p *pair)
		method   string
		path     string
		body     any
		want     int
		check    func(t *testing.T, p *pair)
		wantSeen string // the request the leader saw
		route    string // its route in the metrics
	}{
		{
			name:   "apply lands in the leader's store",
			method: "POST", path: "/v1/apply", body: applyReq(sandbox("web")), want: 200,
			check: func(t *testing.T, p *pair) {
				if !hasRecord(t, p.leader, "default/web") {
					t.Error("the leader's store lacks default/web")
				}
				if hasRecord(t, p.follower, "default/web") {
					t.Error("the follower wrote default/web to its own store")
				}
			},
			wantSeen: "POST /v1/apply",
			route:    "POST /v1/apply",
		},
		{
			name:   "delete marks the leader's record",
			given:  func(t *testing.T, p *pair) { p.leader.mustApply(t, applyReq(sandbox("web"))) },
			method: "DELETE", path: "/v1/sandboxes/default/web", want: 202,
			check: func(t *testing.T, p *pair) {
				rec, err := p.leader.store.Get(t.Context(), "default/web")
				if err != nil || rec.DeletionRequestedAt == nil {
					t.Errorf("leader's record %+v, %v: want deletion requested", rec, err)
				}
			},
			wantSeen: "DELETE /v1/sandboxes/default/web",
			route:    "DELETE /v1/sandboxes/{namespace}/{name}",
		},
		{
			name:   "the leader's refusal comes back as it is",
			method: "POST", path: "/v1/apply", body: applyReq(sandbox("bad", memory(1))), want: 400,
			check: func(t *testing.T, p *pair) {
				if p.leader.revision(t) != 0 {
					t.Error("the leader wrote an invalid sandbox")
				}
			},
			wantSeen: "POST /v1/apply",
			route:    "POST /v1/apply",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, nil, nil)
			if tt.given != nil {
				tt.given(t, p)
			}
			before := len(p.atLeader.all())
			resp, body := p.follower.do(t, tt.method, tt.path+"?trace=1", tt.body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			wantHeaders(t, resp.Header, map[string]string{api.HeaderServedBy: "a", api.HeaderLeader: "a", api.HeaderStale: absent})
			tt.check(t, p)

			reqs := p.atLeader.all()[before:]
			if len(reqs) != 1 {
				t.Fatalf("the leader saw %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			if m := got.Method + " " + got.URL.Path; m != tt.wantSeen {
				t.Errorf("the leader saw %s, want %s", m, tt.wantSeen)
			}
			if got.URL.RawQuery != "trace=1" {
				t.Errorf("the leader saw query %q, want trace=1", got.URL.RawQuery)
			}
			if by := got.Header.Get(api.HeaderForwardedBy); by != "b" {
				t.Errorf("%s %q, want b", api.HeaderForwardedBy, by)
			}
			m := metricsOf(t, p.follower)
			want := fmt.Sprintf(`agentkernel_api_forwarded_requests_total{outcome="forwarded",route=%q} 1`, tt.route)
			if !strings.Contains(m, want) {
				t.Errorf("follower metrics lack %s", want)
			}
		})
	}
}

func TestClusterForwardingPassesTheTokenThrough(t *testing.T) {
	tests := []struct {
		name          string
		followerToken string
		leaderToken   string
		token         string
		want          int
		wantAtLeader  int
	}{
		{"right token", testToken, testToken, testToken, 200, 1},
		{"wrong token stops at the follower", testToken, testToken, "wrong", 401, 0},
		{"open follower: the leader still checks a wrong token", "", testToken, "wrong", 401, 1},
		{"open follower: the leader still checks a missing token", "", testToken, "", 401, 1},
		{"open follower: the leader takes the right token", "", testToken, testToken, 200, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, []envOption{withToken(tt.leaderToken)}, []envOption{withToken(tt.followerToken)})
			resp, body := p.follower.doAuth(t, "POST", "/v1/apply", applyReq(sandbox("web")), tt.token)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			if applied := hasRecord(t, p.leader, "default/web"); applied != (tt.want == 200) {
				t.Errorf("applied on the leader: %v, want %v", applied, tt.want == 200)
			}
			reqs := p.atLeader.all()
			if len(reqs) != tt.wantAtLeader {
				t.Fatalf("the leader saw %d requests, want %d", len(reqs), tt.wantAtLeader)
			}
			if len(reqs) == 1 && tt.token != "" {
				if got := reqs[0].Header.Get("Authorization"); got != "Bearer "+tt.token {
					t.Errorf("the leader saw Authorization %q, want the client's", got)
				}
			}
		})
	}
}

func TestClusterReadsGoToTheLeaderUnlessStale(t *testing.T) {
	p := newPair(t, nil, nil)
	p.leader.mustApply(t, applyReq(sandbox("web")))
	putLocal(t, p.follower, sandbox("old"))

	leaderHeaders := map[string]string{api.HeaderServedBy: "a", api.HeaderLeader: "a", api.HeaderStale: "false",
		api.HeaderLastSync: absent, api.HeaderSyncIndex: absent}
	localHeaders := map[string]string{api.HeaderServedBy: "b", api.HeaderLeader: "a", api.HeaderStale: "true",
		api.HeaderLastSync: "2026-01-02T03:04:00.123456789Z", api.HeaderSyncIndex: "42"}
	names := func(t *testing.T, b []byte) string {
		var l api.ItemList
		mustUnmarshal(t, b, &l)
		var out []string
		for _, it := range l.Items {
			out = append(out, it.Name)
		}
		return strings.Join(out, ",")
	}
	diffAction := func(t *testing.T, b []byte) string {
		var d api.DiffResponse
		mustUnmarshal(t, b, &d)
		if len(d.Objects) != 1 {
			t.Fatalf("diff %s: want one object", b)
		}
		return d.Objects[0].Action
	}
	tests := []struct {
		name        string
		method      string
		path        string
		body        any
		want        int
		wantHeaders map[string]string
		// summary, when set, reduces the body to what is compared with wantBody.
		summary  func(*testing.T, []byte) string
		wantBody string
	}{
		{"list by default", "GET", "/v1/sandboxes", nil, 200, leaderHeaders, names, "web"},
		{"list stale=true", "GET", "/v1/sandboxes?stale=true", nil, 200, localHeaders, names, "old"},
		{"list stale alone", "GET", "/v1/sandboxes?namespace=default&stale", nil, 200, localHeaders, names, "old"},
		{"list stale=false", "GET", "/v1/sandboxes?stale=false", nil, 200, leaderHeaders, names, "web"},
		{"list stale not a boolean", "GET", "/v1/sandboxes?stale=perhaps", nil, 400, nil, nil, ""},
		{"get by default", "GET", "/v1/sandboxes/default/web", nil, 200, leaderHeaders, nil, ""},
		{"get stale: not in the follower's copy", "GET", "/v1/sandboxes/default/web?stale=true", nil, 404, localHeaders, nil, ""},
		{"events by default", "GET", "/v1/sandboxes/default/web/events", nil, 200, leaderHeaders, nil, ""},
		{"events stale", "GET", "/v1/sandboxes/default/web/events?stale", nil, 404, localHeaders, nil, ""},
		{"diff by default", "POST", "/v1/diff", applyReq(sandbox("web")), 200, leaderHeaders, diffAction, "unchanged"},
		{"diff stale", "POST", "/v1/diff?stale=true", applyReq(sandbox("web")), 200, localHeaders, diffAction, "create"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := p.follower.do(t, tt.method, tt.path, tt.body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			wantHeaders(t, resp.Header, tt.wantHeaders)
			if tt.summary != nil {
				if got := tt.summary(t, body); got != tt.wantBody {
					t.Errorf("answer %q, want %q", got, tt.wantBody)
				}
			}
		})
	}
}

func TestClusterLeaderServesLocally(t *testing.T) {
	p := newPair(t, nil, nil)
	p.leader.mustApply(t, applyReq(sandbox("web")))
	tests := []struct {
		name        string
		method      string
		path        string
		wantHeaders map[string]string
	}{
		{"read", "GET", "/v1/sandboxes", map[string]string{api.HeaderServedBy: "a", api.HeaderLeader: "a", api.HeaderStale: "false", api.HeaderLastSync: absent}},
		{"stale read", "GET", "/v1/sandboxes?stale=true", map[string]string{api.HeaderServedBy: "a", api.HeaderStale: "false"}},
		{"write", "DELETE", "/v1/sandboxes/default/web", map[string]string{api.HeaderServedBy: "a", api.HeaderLeader: "a", api.HeaderStale: absent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := p.leader.do(t, tt.method, tt.path, nil)
			if resp.StatusCode/100 != 2 {
				t.Fatalf("status %d; body %s", resp.StatusCode, body)
			}
			wantHeaders(t, resp.Header, tt.wantHeaders)
		})
	}
	if m := metricsOf(t, p.leader); strings.Contains(m, "agentkernel_api_forwarded_requests_total{") {
		t.Errorf("the leader counted forwarded requests:\n%s", m)
	}
}

func TestClusterWhenTheLeaderCannotBeUsed(t *testing.T) {
	dead := deadAddr(t)
	// hangup reads the whole request, then drops the connection unanswered.
	hangup := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(hangup.Close)
	tests := []struct {
		name        string
		leader      api.Leader
		header      http.Header
		wantWrite   int
		wantMessage []string
		wantLeader  string // X-Agentkernel-Leader
		outcome     string
	}{
		{
			name:        "no leader known",
			leader:      api.Leader{},
			wantWrite:   503,
			wantMessage: []string{"No leader is elected yet; retry in a few seconds."},
			outcome:     "no_leader",
		},
		{
			name:        "leader unreachable",
			leader:      api.Leader{ID: "a", Address: dead},
			wantWrite:   502,
			wantMessage: []string{"The leader a at " + dead + " did not answer: ", "refused", "; retry."},
			wantLeader:  "a",
			outcome:     "unreachable",
		},
		{
			name:        "leader hangs up after reading the request",
			leader:      api.Leader{ID: "a", Address: hangup.URL},
			wantWrite:   502,
			wantMessage: []string{"The leader a at " + hangup.URL + " did not answer: ", "EOF; retry."},
			wantLeader:  "a",
			outcome:     "unreachable",
		},
		{
			name:        "leader advertises no address",
			leader:      api.Leader{ID: "a"},
			wantWrite:   502,
			wantMessage: []string{"The leader a did not answer: it advertises no address; retry."},
			wantLeader:  "a",
			outcome:     "unreachable",
		},
		{
			name:        "forwarded once already",
			leader:      api.Leader{ID: "a", Address: dead},
			header:      http.Header{api.HeaderForwardedBy: {"c"}},
			wantWrite:   503,
			wantMessage: []string{"Instance b is not the leader (leader: a at " + dead + "); retry.", "Instance c forwarded the request here"},
			wantLeader:  "a",
			outcome:     "loop",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, withCluster(followerCluster("b", tt.leader)))
			putLocal(t, env, sandbox("old"))
			send := func(method, path string, body any) (*http.Response, []byte) {
				t.Helper()
				req := httptest.NewRequestWithContext(t.Context(), method, path, jsonBody(t, body))
				for k, v := range tt.header {
					req.Header[k] = v
				}
				rec := httptest.NewRecorder()
				env.server.ServeHTTP(rec, req)
				return rec.Result(), rec.Body.Bytes()
			}

			for _, w := range []struct {
				method, path string
				body         any
			}{
				{"POST", "/v1/apply", applyReq(sandbox("web"))},
				{"DELETE", "/v1/sandboxes/default/old", nil},
			} {
				resp, body := send(w.method, w.path, w.body)
				if resp.StatusCode != tt.wantWrite {
					t.Fatalf("%s %s: status %d, want %d; body %s", w.method, w.path, resp.StatusCode, tt.wantWrite, body)
				}
				e := decodeError(t, body)
				for _, want := range tt.wantMessage {
					if !strings.Contains(e.Message, want) {
						t.Errorf("%s %s: message %q lacks %q", w.method, w.path, e.Message, want)
					}
				}
				if ra := resp.Header.Get("Retry-After"); ra != "1" {
					t.Errorf("%s %s: Retry-After %q, want 1", w.method, w.path, ra)
				}
				wantHeaders(t, resp.Header, map[string]string{api.HeaderServedBy: "b", api.HeaderLeader: tt.wantLeader, api.HeaderStale: absent})
			}
			if env.revision(t) != 1 {
				t.Errorf("store revision %d, want 1: the refused writes changed the follower's store", env.revision(t))
			}

			// Reads are served from the follower's copy, body included.
			resp, body := send("GET", "/v1/sandboxes", nil)
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"old"`) {
				t.Fatalf("list: status %d, body %s: want the follower's copy", resp.StatusCode, body)
			}
			wantHeaders(t, resp.Header, map[string]string{api.HeaderServedBy: "b", api.HeaderLeader: tt.wantLeader,
				api.HeaderStale: "true", api.HeaderSyncIndex: "42"})
			resp, body = send("POST", "/v1/diff", applyReq(sandbox("old", memory(1024))))
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"action":"update"`) {
				t.Fatalf("diff: status %d, body %s: want an update against the follower's copy", resp.StatusCode, body)
			}

			m := metricsOf(t, env)
			for _, route := range []string{"POST /v1/apply", "DELETE /v1/sandboxes/{namespace}/{name}", "GET /v1/sandboxes", "POST /v1/diff"} {
				want := fmt.Sprintf(`agentkernel_api_forwarded_requests_total{outcome=%q,route=%q} 1`, tt.outcome, route)
				if !strings.Contains(m, want) {
					t.Errorf("metrics lack %s", want)
				}
			}
		})
	}
}

func TestClusterRequestIsForwardedOnlyOnce(t *testing.T) {
	// a and b each believe the other leads.
	ca := followerCluster("a", api.Leader{})
	cb := followerCluster("b", api.Leader{})
	a := newEnv(t, withCluster(ca))
	b := newEnv(t, withCluster(cb))
	ca.leader = api.Leader{ID: "b", Address: b.http.URL}
	cb.leader = api.Leader{ID: "a", Address: a.http.URL}
	putLocal(t, b, sandbox("old"))

	resp, body := a.do(t, "POST", "/v1/apply", applyReq(sandbox("web")))
	if resp.StatusCode != 503 {
		t.Fatalf("apply: status %d, want 503; body %s", resp.StatusCode, body)
	}
	if e := decodeError(t, body); !strings.Contains(e.Message, "Instance b is not the leader (leader: a at "+a.http.URL+"); retry.") {
		t.Errorf("message %q does not say that b is not the leader", e.Message)
	}
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", resp.Header.Get("Retry-After"))
	}
	if a.revision(t) != 0 || b.revision(t) != 1 {
		t.Errorf("revisions a=%d b=%d, want 0 and 1: a write went through", a.revision(t), b.revision(t))
	}

	// A read a forwards is answered from b's copy, not sent back.
	resp, body = a.do(t, "GET", "/v1/sandboxes", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"old"`) {
		t.Fatalf("list: status %d, body %s: want b's copy", resp.StatusCode, body)
	}
	wantHeaders(t, resp.Header, map[string]string{api.HeaderServedBy: "b", api.HeaderLeader: "a", api.HeaderStale: "true"})
}

// notLeaderStore has lost the leadership: writes fail with ErrNotLeader.
type notLeaderStore struct{ *store.Store }

func (notLeaderStore) Apply(context.Context, []store.Object, store.ApplyOptions) (store.ApplyResult, error) {
	return store.ApplyResult{}, fmt.Errorf("apply 1 sandbox: %w", api.ErrNotLeader)
}

func (notLeaderStore) Delete(context.Context, string) (store.Record, error) {
	return store.Record{}, fmt.Errorf("delete sandbox: %w", api.ErrNotLeader)
}

func TestClusterLeadershipLostDuringAWrite(t *testing.T) {
	p := newPair(t, []envOption{withStore(func(st *store.Store) api.Store { return notLeaderStore{st} })}, nil)
	tests := []struct {
		name   string
		env    *testEnv
		method string
		path   string
		body   any
	}{
		{"apply on the leader", p.leader, "POST", "/v1/apply", applyReq(sandbox("web"))},
		{"delete on the leader", p.leader, "DELETE", "/v1/sandboxes/default/web", nil},
		{"apply through a follower", p.follower, "POST", "/v1/apply", applyReq(sandbox("web"))},
		{"delete through a follower", p.follower, "DELETE", "/v1/sandboxes/default/web", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := tt.env.do(t, tt.method, tt.path, tt.body)
			if resp.StatusCode != 503 {
				t.Fatalf("status %d, want 503; body %s", resp.StatusCode, body)
			}
			e := decodeError(t, body)
			if e.Code != api.CodeNotReady || !strings.Contains(e.Message, "stopped being the leader") {
				t.Errorf("error %+v: want not_ready saying the leadership was lost", e)
			}
			if resp.Header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After %q, want 1", resp.Header.Get("Retry-After"))
			}
		})
	}
	if logs := p.leader.logs.String(); !strings.Contains(logs, "this instance is not the leader") {
		t.Errorf("the cause was not logged; logs:\n%s", logs)
	}
}

func TestClusterWatchStreamsThroughTheFollower(t *testing.T) {
	p := newPair(t, nil, nil)
	w := p.follower.openWatch(t, "?since=0")
	wantHeaders(t, w.header, map[string]string{api.HeaderServedBy: "a", api.HeaderStale: "false"})

	p.leader.mustApply(t, applyReq(sandbox("a")))
	if l := w.next(); l.Revision != 1 || l.Key != "default/a" || l.Item == nil {
		t.Fatalf("line %+v, want revision 1 of default/a with its item", l)
	}
	p.follower.mustApply(t, applyReq(sandbox("b")))
	if l := w.next(); l.Revision != 2 || l.Key != "default/b" {
		t.Fatalf("line %+v, want revision 2 of default/b, applied through the follower", l)
	}

	// Closing the follower ends the stream cleanly, as a local one ends.
	p.follower.server.Close()
	if w.scanner.Scan() {
		t.Fatalf("line %s after Close, want the end of the stream", w.scanner.Bytes())
	}
	if err := w.scanner.Err(); err != nil {
		t.Errorf("stream ended with %v, want a clean end", err)
	}
}

// The instances' stores number their revisions apart. A watch pinned to
// the store that answered the list is served by that store or refused:
// here the leader that listed can no longer be reached, and the follower,
// whose own store is further along, must not stream its changes after
// the leader's revision.
func TestClusterWatchIsServedOnlyByTheStoreThatListed(t *testing.T) {
	p := newPair(t, nil, nil)
	p.leader.mustApply(t, applyReq(sandbox("a")))
	p.leader.mustApply(t, applyReq(sandbox("b")))
	var list api.ItemList
	resp, body := p.follower.do(t, "GET", "/v1/sandboxes", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("list: status %d; body %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	wantHeaders(t, resp.Header, map[string]string{api.HeaderServedBy: "a"})
	if list.StoreID != p.leader.store.StoreID() || list.Revision != 2 {
		t.Fatalf("list at revision %d of store %q, want revision 2 of the leader's store %q", list.Revision, list.StoreID, p.leader.store.StoreID())
	}
	pinned := "?since=" + itoa(list.Revision) + "&store=" + list.StoreID

	// Through the leader, the pinned watch streams.
	w := p.follower.openWatch(t, pinned)
	wantHeaders(t, w.header, map[string]string{api.HeaderServedBy: "a"})
	p.leader.mustApply(t, applyReq(sandbox("c")))
	if l := w.next(); l.Key != "default/c" || l.Revision != 3 {
		t.Fatalf("line %+v, want revision 3 of default/c", l)
	}

	// The follower's own store has seen other writes, up to revision 4.
	putLocal(t, p.follower, sandbox("x"))
	putLocal(t, p.follower, sandbox("y"))
	putLocal(t, p.follower, sandbox("z"))
	putLocal(t, p.follower, sandbox("b"))
	// The leader goes away; reads fall back to the follower's own store.
	p.leader.server.Close() // ends the stream above, which the test server would wait for
	p.leader.http.Close()
	for _, query := range []string{pinned, pinned + "&stale=true"} {
		resp, body := p.follower.watchRefusal(t, query)
		if resp.StatusCode != http.StatusGone {
			t.Fatalf("watch%s: status %d, want 410; body %s", query, resp.StatusCode, body)
		}
		wantHeaders(t, resp.Header, map[string]string{api.HeaderServedBy: "b"})
		if e := decodeError(t, body); e.Code != api.CodeUnknownRevision {
			t.Errorf("watch%s: code %q, want %q", query, e.Code, api.CodeUnknownRevision)
		}
	}
}

func TestClusterStaleWatchIsLocal(t *testing.T) {
	p := newPair(t, nil, nil)
	w := p.follower.openWatch(t, "?since=0&stale=true")
	wantHeaders(t, w.header, map[string]string{api.HeaderServedBy: "b", api.HeaderStale: "true", api.HeaderSyncIndex: "42"})
	putLocal(t, p.follower, sandbox("replicated"))
	if l := w.next(); l.Key != "default/replicated" {
		t.Fatalf("line %+v, want default/replicated from the follower's store", l)
	}
}

func TestClusterBodyLimitHoldsOnTheFollower(t *testing.T) {
	p := newPair(t, nil, []envOption{withMaxBody(512)})
	big := applyReq(sandbox("web", func(sb *spec.Sandbox) { sb.Spec.Env = map[string]string{"PAD": strings.Repeat("x", 1024)} }))
	for _, path := range []string{"/v1/apply", "/v1/diff"} {
		resp, body := p.follower.do(t, "POST", path, big)
		if resp.StatusCode != 413 {
			t.Fatalf("%s: status %d, want 413; body %s", path, resp.StatusCode, body)
		}
		if e := decodeError(t, body); e.Code != api.CodeTooLarge {
			t.Errorf("%s: code %q, want %q", path, e.Code, api.CodeTooLarge)
		}
	}
	if n := len(p.atLeader.all()); n != 0 {
		t.Errorf("the leader saw %d requests, want none", n)
	}
}

func TestClusterVersionAndReadyzAreLocal(t *testing.T) {
	// Anything forwarded would reach this leader, which answers nothing.
	forwarded := &seen{}
	trap := httptest.NewServer(forwarded.wrap(http.NotFoundHandler()))
	t.Cleanup(trap.Close)
	at := followerSync.SyncedAt
	notReady := func() (bool, string) { return false, "nomad unreachable" }

	tests := []struct {
		name        string
		cluster     api.Cluster
		ready       func() (bool, string)
		wantVersion api.VersionInfo
		wantReady   api.Readiness
		wantStatus  int
	}{
		{
			name:        "single",
			wantVersion: api.VersionInfo{Role: "single"},
			wantReady:   api.Readiness{Ready: true, Role: "single"},
			wantStatus:  200,
		},
		{
			name:        "leader",
			cluster:     &fakeCluster{self: "a", leader: api.Leader{ID: "a", Address: "http://10.0.0.5:7474", Self: true}},
			wantVersion: api.VersionInfo{InstanceID: "a", Role: "leader", Leader: &api.LeaderInfo{ID: "a", Address: "http://10.0.0.5:7474"}},
			wantReady:   api.Readiness{Ready: true, Role: "leader", Leader: &api.LeaderInfo{ID: "a", Address: "http://10.0.0.5:7474"}},
			wantStatus:  200,
		},
		{
			name:    "follower",
			cluster: followerCluster("b", api.Leader{ID: "a", Address: trap.URL}),
			wantVersion: api.VersionInfo{InstanceID: "b", Role: "follower", Leader: &api.LeaderInfo{ID: "a", Address: trap.URL},
				LastSync: &at, SyncIndex: 42},
			wantReady:  api.Readiness{Ready: true, Role: "follower", Leader: &api.LeaderInfo{ID: "a", Address: trap.URL}},
			wantStatus: 200,
		},
		{
			name:    "follower not ready",
			cluster: followerCluster("b", api.Leader{ID: "a", Address: trap.URL}),
			ready:   notReady,
			wantVersion: api.VersionInfo{InstanceID: "b", Role: "follower", Leader: &api.LeaderInfo{ID: "a", Address: trap.URL},
				LastSync: &at, SyncIndex: 42},
			wantReady:  api.Readiness{Ready: false, Reason: "nomad unreachable", Role: "follower", Leader: &api.LeaderInfo{ID: "a", Address: trap.URL}},
			wantStatus: 503,
		},
		{
			name:        "follower that never synced and knows no leader",
			cluster:     &fakeCluster{self: "b"},
			wantVersion: api.VersionInfo{InstanceID: "b", Role: "follower", Leader: &api.LeaderInfo{}},
			wantReady:   api.Readiness{Ready: true, Role: "follower", Leader: &api.LeaderInfo{}},
			wantStatus:  200,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []envOption{withReady(tt.ready)}
			if tt.cluster != nil {
				opts = append(opts, withCluster(tt.cluster))
			}
			env := newEnv(t, opts...)
			var v api.VersionInfo
			env.mustDo(t, "GET", "/v1/version", nil, 200, &v)
			want := tt.wantVersion
			want.Version, want.StoreID, want.DefaultNamespace = "v1.2.3-test", env.store.StoreID(), "default"
			if d := cmp.Diff(want, v); d != "" {
				t.Errorf("version (-want +got):\n%s", d)
			}
			var rd api.Readiness
			mustUnmarshal(t, env.mustDo(t, "GET", "/readyz", nil, tt.wantStatus, nil), &rd)
			if d := cmp.Diff(tt.wantReady, rd); d != "" {
				t.Errorf("readyz (-want +got):\n%s", d)
			}
		})
	}
	if n := len(forwarded.all()); n != 0 {
		t.Errorf("%d requests were forwarded, want none", n)
	}
}

func TestSingleInstanceSendsNoClusterHeaders(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web")))
	for _, path := range []string{"/v1/sandboxes", "/v1/sandboxes?stale=perhaps", "/v1/sandboxes/default/web"} {
		resp, body := env.do(t, "GET", path, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d; body %s", path, resp.StatusCode, body)
		}
		for _, h := range []string{api.HeaderServedBy, api.HeaderLeader, api.HeaderStale, api.HeaderLastSync, api.HeaderSyncIndex} {
			if _, ok := resp.Header[h]; ok {
				t.Errorf("%s: header %s set on a single instance", path, h)
			}
		}
	}
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// unreplicatedStore commits but cannot replicate: writes fail with an
// error that wraps ErrUnavailable.
type unreplicatedStore struct{ *store.Store }

func (unreplicatedStore) Apply(context.Context, []store.Object, store.ApplyOptions) (store.ApplyResult, error) {
	return store.ApplyResult{}, fmt.Errorf("committed on the leader but not yet replicated: Nomad is down (%w)", api.ErrUnavailable)
}

func TestUnavailableStoreErrorIsA503WithItsText(t *testing.T) {
	p := newPair(t, []envOption{withStore(func(st *store.Store) api.Store { return unreplicatedStore{st} })}, nil)
	resp, body := p.leader.do(t, "POST", "/v1/apply", applyReq(sandbox("web")))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q, want 503 and 1; body %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if e := decodeError(t, body); e.Code != api.CodeNotReady || !strings.Contains(e.Message, "not yet replicated: Nomad is down") {
		t.Errorf("error %+v: want not_ready with the cause's text", e)
	}
}

// An instance named as leader that does not say Self (it holds the lock
// but is catching up, or the name is stale) is not the leader: writes get
// a 503 saying so, reads its own copy marked stale, and it reports itself
// as a follower.
func TestClusterInstanceCatchingUpIsNotTheLeader(t *testing.T) {
	env := newEnv(t, withCluster(&fakeCluster{self: "a", leader: api.Leader{ID: "a", Address: "http://10.0.0.5:7474"}}))
	resp, body := env.do(t, "POST", "/v1/apply", applyReq(sandbox("web")))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("apply: status %d Retry-After %q, want 503 and 1; body %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if e := decodeError(t, body); !strings.Contains(e.Message, "taking over as leader") {
		t.Errorf("error %+v: want it to say the instance is taking over", e)
	}
	resp, _ = env.do(t, "GET", "/v1/sandboxes", nil)
	wantHeaders(t, resp.Header, map[string]string{api.HeaderServedBy: "a", api.HeaderStale: "true"})
	var v api.VersionInfo
	env.mustDo(t, "GET", "/v1/version", nil, 200, &v)
	if v.Role != "follower" {
		t.Errorf("role %q, want follower until it says Self", v.Role)
	}
}
