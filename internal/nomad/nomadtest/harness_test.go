package nomadtest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// pipeListener is an in-memory network for testing/synctest bubbles, where
// goroutines blocked on real sockets would keep fake time from advancing.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	srv, cli := net.Pipe()
	select {
	case l.conns <- srv:
		return cli, nil
	case <-l.done:
		return nil, errors.New("pipe listener closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "nomadtest.pipe:4646" }

// fixture is a server reached through the real api client and a raw HTTP
// client.
type fixture struct {
	srv  *Server
	api  *api.Client
	http *http.Client
	base string
}

// noRedirect shows redirects to the test instead of following them.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newLoopbackFixture serves on 127.0.0.1 and stops everything at cleanup.
func newLoopbackFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	s := New(opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	// Raw requests go out like curl's, without Accept-Encoding; the api
	// client asks for gzip itself.
	tr := &http.Transport{DisableCompression: true}
	hc := &http.Client{Transport: tr, CheckRedirect: noRedirect}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		_ = s.Close()
	})
	c, err := api.NewClient(&api.Config{Address: s.URL(), HttpClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: s, api: c, http: hc, base: s.URL()}
}

// newPipeFixture serves over an in-memory network; use it inside
// synctest.Test.
func newPipeFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	s := New(opts)
	ln := newPipeListener()
	hs := &http.Server{Handler: s}
	go func() { _ = hs.Serve(ln) }()
	tr := &http.Transport{DialContext: ln.dial, DisableCompression: true}
	hc := &http.Client{Transport: tr, CheckRedirect: noRedirect}
	t.Cleanup(func() {
		_ = s.Close()
		_ = hs.Close()
		tr.CloseIdleConnections()
	})
	base := "http://" + pipeAddr{}.String()
	c, err := api.NewClient(&api.Config{Address: base, HttpClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: s, api: c, http: hc, base: base}
}

// do sends a raw request and returns the response with its body read.
func (f *fixture) do(t testing.TB, method, target string, body []byte, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.base+target, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return resp, b
}

// loadJob reads a recorded request body from testdata/facts/jobs.
func loadJob(t testing.TB, name string) *api.Job {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(factsDir, "jobs", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var req api.JobRegisterRequest
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return req.Job
}

func (f *fixture) register(t testing.TB, job *api.Job) *api.JobRegisterResponse {
	t.Helper()
	resp, _, err := f.api.Jobs().Register(job, nil)
	if err != nil {
		t.Fatalf("register %s: %v", *job.ID, err)
	}
	return resp
}
