package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

const testToken = "s3cr3t-token-value"

// clock is a deterministic store clock: every reading is one second after
// the previous one.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func openStore(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	opts.NoSync = true
	if opts.Now == nil {
		opts.Now = (&clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}).Now
	}
	st, err := store.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// fakePolicy refuses raw_exec and more than 4096 MB, as a controller
// configured with a driver list and a memory ceiling would.
type fakePolicy struct{}

var errPolicy = errors.New("refused by policy")

func (fakePolicy) CheckPolicy(sb *spec.Sandbox) error {
	switch {
	case sb.Spec.Driver == spec.DriverRawExec:
		return fmt.Errorf("%w: driver %q is not allowed by this controller (allowed: docker)", errPolicy, sb.Spec.Driver)
	case sb.Spec.MemoryMB > 4096:
		return fmt.Errorf("%w: memory_mb %d is above this controller's ceiling of 4096", errPolicy, sb.Spec.MemoryMB)
	}
	return nil
}

// fakePlanner answers Added for sandboxes Nomad has never seen, Edited for
// the others, and fails for sandboxes named "unplannable". Preflight
// finds the obstacles set for a key.
type fakePlanner struct {
	mu        sync.Mutex
	known     map[string]bool
	obstacles map[string]nomad.Obstacle
	calls     int
}

func (p *fakePlanner) Preflight(_ context.Context, sb *spec.Sandbox) (nomad.Obstacle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.obstacles[sb.Key()], nil
}

func (p *fakePlanner) Plan(_ context.Context, sb *spec.Sandbox) (*nomadapi.JobPlanResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if sb.Name == "unplannable" {
		return nil, errors.New("plan job \"agentkernel-unplannable\": nomad unreachable")
	}
	resp := &nomadapi.JobPlanResponse{
		Diff:        &nomadapi.JobDiff{Type: "Added"},
		Annotations: &nomadapi.PlanAnnotations{DesiredTGUpdates: map[string]*nomadapi.DesiredUpdates{"sandbox": {Place: 1}}},
		Warnings:    "",
	}
	if p.known[sb.Key()] {
		resp.Diff.Type = "Edited"
		resp.Annotations.DesiredTGUpdates["sandbox"] = &nomadapi.DesiredUpdates{DestructiveUpdate: 1}
	}
	return resp, nil
}

func (p *fakePlanner) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

type testEnv struct {
	store   *store.Store
	server  *api.Server
	http    *httptest.Server
	token   string
	planner *fakePlanner
	logs    *syncBuffer
	reg     *prometheus.Registry
	// nomad is a client of the env's Nomad test server, when it has one.
	nomad *nomad.Client
}

type envConfig struct {
	api   api.Options
	store store.Options
	wrap  func(*store.Store) api.Store
	// handler, when set, wraps the server's handler in the test server.
	handler func(http.Handler) http.Handler
}

type envOption func(*envConfig)

func withToken(tok string) envOption { return func(c *envConfig) { c.api.Token = tok } }

func withMaxBody(n int64) envOption { return func(c *envConfig) { c.api.MaxBodyBytes = n } }

func withRetain(n uint64) envOption { return func(c *envConfig) { c.store.RetainRevisions = n } }

func withoutPlanner() envOption { return func(c *envConfig) { c.api.Planner = nil } }

func withReady(f func() (bool, string)) envOption { return func(c *envConfig) { c.api.Ready = f } }

func withCluster(cl api.Cluster) envOption { return func(c *envConfig) { c.api.Cluster = cl } }

// withHandler puts wrap's handler, built around the server, behind the
// test server.
func withHandler(wrap func(http.Handler) http.Handler) envOption {
	return func(c *envConfig) { c.handler = wrap }
}

// withStore puts wrap's store, built around the real one, behind the API.
func withStore(wrap func(*store.Store) api.Store) envOption {
	return func(c *envConfig) { c.wrap = wrap }
}

// syncBuffer is a log sink that request goroutines may write concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	env := &testEnv{planner: &fakePlanner{known: map[string]bool{}}, logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	cfg := envConfig{api: api.Options{
		Policy:     fakePolicy{},
		Planner:    env.planner,
		Logger:     slog.New(slog.NewJSONHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: env.reg,
		Gatherer:   env.reg,
		Version:    "v1.2.3-test",
	}}
	for _, o := range opts {
		o(&cfg)
	}
	env.store = openStore(t, cfg.store)
	cfg.api.Store = env.store
	if cfg.wrap != nil {
		cfg.api.Store = cfg.wrap(env.store)
	}
	ao := cfg.api
	env.token = ao.Token
	env.server = api.NewServer(ao)
	var h http.Handler = env.server
	if cfg.handler != nil {
		h = cfg.handler(env.server)
	}
	env.http = httptest.NewServer(h)
	t.Cleanup(env.http.Close)
	t.Cleanup(env.server.Close)
	return env
}

// do sends a request with the env's token and returns the response with
// its body read.
func (e *testEnv) do(t testing.TB, method, path string, body any) (*http.Response, []byte) {
	t.Helper()
	return e.doAuth(t, method, path, body, e.token)
}

func (e *testEnv) doAuth(t testing.TB, method, path string, body any, token string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.http.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp, out
}

// mustDo is do that fails the test unless the status is want, and decodes
// the body into out when out is not nil.
func (e *testEnv) mustDo(t testing.TB, method, path string, body any, want int, out any) []byte {
	t.Helper()
	resp, b := e.do(t, method, path, body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return b
}

func decodeError(t *testing.T, b []byte) api.ErrorDetail {
	t.Helper()
	var eb api.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil {
		t.Fatalf("error body %s: %v", b, err)
	}
	if eb.Error.Code == "" || eb.Error.Message == "" {
		t.Fatalf("error body %s lacks a code or a message", b)
	}
	return eb.Error
}

// sandbox is a valid canonical sandbox; mods change it.
func sandbox(name string, mods ...func(*spec.Sandbox)) spec.Sandbox {
	sb := spec.Sandbox{
		Namespace: "default",
		Name:      name,
		Spec: spec.Spec{
			Driver:    spec.DriverDocker,
			Image:     "python:3.12",
			Command:   []string{"sh", "-c", "sleep infinity"},
			Profile:   spec.ProfileModerate,
			VCPUs:     1,
			MemoryMB:  512,
			Network:   spec.NetworkNone,
			State:     spec.StateRunning,
			Placement: spec.Placement{},
		},
	}
	for _, m := range mods {
		m(&sb)
	}
	return sb
}

func labeled(kv ...string) func(*spec.Sandbox) {
	return func(sb *spec.Sandbox) {
		sb.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			sb.Labels[kv[i]] = kv[i+1]
		}
	}
}

func inNamespace(ns string) func(*spec.Sandbox) {
	return func(sb *spec.Sandbox) { sb.Namespace = ns }
}

func memory(mb int) func(*spec.Sandbox) {
	return func(sb *spec.Sandbox) { sb.Spec.MemoryMB = mb }
}

func object(sb spec.Sandbox) api.ApplyObject {
	return api.ApplyObject{Sandbox: sb, Source: spec.Source{File: "sandboxes/" + sb.Name + ".hcl", StartLine: 3, StartCol: 1, EndLine: 9, EndCol: 2}}
}

func applyReq(sbs ...spec.Sandbox) api.ApplyRequest {
	req := api.ApplyRequest{Objects: []api.ApplyObject{}}
	for _, sb := range sbs {
		req.Objects = append(req.Objects, object(sb))
	}
	return req
}

func (e *testEnv) mustApply(t testing.TB, req api.ApplyRequest) api.ApplyResponse {
	t.Helper()
	var out api.ApplyResponse
	e.mustDo(t, http.MethodPost, "/v1/apply", req, http.StatusOK, &out)
	return out
}

func (e *testEnv) revision(t *testing.T) uint64 {
	t.Helper()
	rev, err := e.store.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}
