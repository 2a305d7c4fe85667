package api_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/ctltest"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// The work inside sandboxes, through the API, against the Nomad test
// server, whose exec runs real processes in each allocation's directory
// as raw_exec does. Paths used are under the task's directory
// ($NOMAD_TASK_DIR), which a real agent's raw_exec and exec sandboxes
// both have (test/nomad runs the same against one).

type insideOptions struct {
	sandbox sandboxio.Options
}

// newInsideEnv runs a whole controller in-process: store, Nomad test
// server, reconcile loop, and the API with exec, files and logs.
func newInsideEnv(t testing.TB, o insideOptions) *testEnv {
	t.Helper()
	env := &testEnv{logs: &syncBuffer{}, reg: prometheus.NewRegistry(), token: "secret-token-for-tests"}
	// The loop reads the wall clock (a claim's TTL, say): so does the store.
	env.store = openStore(t, store.Options{Now: time.Now})
	loop := ctltest.Start(t, env.store, ctltest.Options{AllowRawExec: true})
	nc, rcfg := loop.Nomad, loop.Policy
	log := slog.New(slog.NewJSONHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	so := o.sandbox
	so.Nomad, so.Logger = nc, log
	env.server = api.NewServer(api.Options{
		Store: env.store, Policy: rcfg, Token: env.token, Logger: log,
		Registerer: env.reg, Gatherer: env.reg, Version: "test",
		Inside: sandboxio.New(so),
	})
	env.http = httptest.NewServer(env.server)
	env.nomad = nc
	t.Cleanup(func() {
		env.server.Close()
		env.http.Close()
	})
	return env
}

func rawExecSandbox(name string, mods ...func(*spec.Sandbox)) spec.Sandbox {
	return sandbox(name, append([]func(*spec.Sandbox){func(sb *spec.Sandbox) {
		sb.Spec.Driver, sb.Spec.Image, sb.Spec.Network = spec.DriverRawExec, "", spec.NetworkHost
		sb.Spec.Env = map[string]string{"FROM_SPEC": "spec value"}
	}}, mods...)...)
}

// waitRunning waits until the sandbox is Running.
func (e *testEnv) waitRunning(t testing.TB, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, err := e.store.Get(t.Context(), "default/"+name)
		if err == nil && rec.Status.Phase == store.PhaseRunning && rec.Status.AllocID != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s is not Running after 30s: %+v", name, rec.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *testEnv) execJSON(t testing.TB, name string, req api.ExecRequest) (api.ExecResponse, *http.Response, []byte) {
	t.Helper()
	resp, b := e.do(t, http.MethodPost, "/v1/sandboxes/default/"+name+"/exec", req)
	var out api.ExecResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
	}
	return out, resp, b
}

func (e *testEnv) mustExec(t testing.TB, name string, req api.ExecRequest) api.ExecResponse {
	t.Helper()
	out, resp, b := e.execJSON(t, name, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exec %q: status %d: %s", req.Command, resp.StatusCode, b)
	}
	return out
}

// taskDir is the sandbox's $NOMAD_TASK_DIR.
func (e *testEnv) taskDir(t testing.TB, name string) string {
	t.Helper()
	out := e.mustExec(t, name, api.ExecRequest{Command: []string{"sh", "-c", `printf %s "$NOMAD_TASK_DIR"`}})
	if out.ExitCode != 0 || !path.IsAbs(string(out.Stdout)) {
		t.Fatalf("NOMAD_TASK_DIR: exit %d, %q %q", out.ExitCode, out.Stdout, out.Stderr)
	}
	return string(out.Stdout)
}

func filesPath(name, p string, extra ...string) string {
	q := url.Values{"path": {p}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return "/v1/sandboxes/default/" + name + "/files?" + q.Encode()
}

func TestExecThroughTheAPI(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")

	hostile := "it's \"quoted\" $HOME `id` $(id) ; rm -rf /\nsecond line  "
	tests := []struct {
		name                   string
		req                    api.ExecRequest
		code                   int
		stdout, stderrContains string
	}{
		{"exit 0", api.ExecRequest{Command: []string{"true"}}, 0, "", ""},
		{"exit 7", api.ExecRequest{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}}, 7, "out\n", "err"},
		{"not found", api.ExecRequest{Command: []string{"/nonexistent/program"}}, sandboxio.ExitNotFound, "", "failed to start command"},
		{"not found through the wrapper", api.ExecRequest{Command: []string{"/nonexistent/program"}, Env: map[string]string{"A": "b"}}, sandboxio.ExitNotFound, "", "nonexistent"},
		{"stdin", api.ExecRequest{Command: []string{"cat"}, Stdin: []byte("line one\nline two\x00\n")}, 0, "line one\nline two\x00\n", ""},
		{"env without a shell", api.ExecRequest{Command: []string{"printenv", "HOSTILE"}, Env: map[string]string{"HOSTILE": hostile}}, 0, hostile + "\n", ""},
		{"the task's env", api.ExecRequest{Command: []string{"printenv", "FROM_SPEC"}}, 0, "spec value\n", ""},
		{"argv is not a shell line", api.ExecRequest{Command: []string{"printf", "%s", "$(id) `id` ; echo no"}}, 0, "$(id) `id` ; echo no", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := env.mustExec(t, "box", tt.req)
			if out.ExitCode != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", out.ExitCode, tt.code, out.Stderr)
			}
			if string(out.Stdout) != tt.stdout {
				t.Errorf("stdout %q, want %q", out.Stdout, tt.stdout)
			}
			if !strings.Contains(string(out.Stderr), tt.stderrContains) {
				t.Errorf("stderr %q does not contain %q", out.Stderr, tt.stderrContains)
			}
		})
	}

	t.Run("workdir", func(t *testing.T) {
		dir := env.taskDir(t, "box")
		out := env.mustExec(t, "box", api.ExecRequest{Command: []string{"pwd"}, Workdir: dir})
		if string(out.Stdout) != dir+"\n" {
			t.Errorf("pwd %q, want %q", out.Stdout, dir)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		out := env.mustExec(t, "box", api.ExecRequest{Command: []string{"sleep", "30"}, Timeout: "300ms"})
		if !out.TimedOut || out.ExitCode != -1 {
			t.Errorf("timedOut %v, exit %d; want the command ended at its timeout", out.TimedOut, out.ExitCode)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, req := range []api.ExecRequest{
			{},
			{Command: []string{"true"}, Env: map[string]string{"A B": "x"}},
			{Command: []string{"true"}, Timeout: "soon"},
			{Command: []string{"true"}, Workdir: "../x"},
		} {
			_, resp, b := env.execJSON(t, "box", req)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("exec %+v: status %d, want 400: %s", req, resp.StatusCode, b)
			}
		}
	})
}

func TestExecOutputIsBounded(t *testing.T) {
	env := newInsideEnv(t, insideOptions{sandbox: sandboxio.Options{MaxOutputBytes: 1000}})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	out := env.mustExec(t, "box", api.ExecRequest{Command: []string{"sh", "-c", "head -c 5000 /dev/zero; echo done >&2"}})
	if len(out.Stdout) != 1000 || !out.Truncated || out.ExitCode != 0 || string(out.Stderr) != "done\n" {
		t.Errorf("stdout %d bytes, truncated %v, exit %d, stderr %q; want 1000 bytes, truncated, the command run to its end",
			len(out.Stdout), out.Truncated, out.ExitCode, out.Stderr)
	}
}

func TestExecInASandboxNotRunningIsConflict(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("off", func(sb *spec.Sandbox) { sb.Spec.State = spec.StateStopped })))
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, _ := env.store.Get(t.Context(), "default/off")
		if rec.Status.Phase == store.PhaseStopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox never Stopped: %+v", rec.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/v1/sandboxes/default/off/exec"},
		{http.MethodGet, filesPath("off", "/tmp")},
		{http.MethodGet, "/v1/sandboxes/default/off/logs"},
	} {
		var body any
		if c.method == http.MethodPost {
			body = api.ExecRequest{Command: []string{"true"}}
		}
		resp, b := env.do(t, c.method, c.path, body)
		if resp.StatusCode != http.StatusConflict {
			t.Fatalf("%s %s: status %d, want 409: %s", c.method, c.path, resp.StatusCode, b)
		}
		e := decodeError(t, b)
		if e.Code != api.CodeNotRunning || !strings.Contains(e.Message, "Stopped") {
			t.Errorf("error %+v; want not_running naming the phase", e)
		}
	}
	resp, b := env.do(t, http.MethodPost, "/v1/sandboxes/default/nope/exec", api.ExecRequest{Command: []string{"true"}})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("exec in a sandbox that does not exist: status %d: %s", resp.StatusCode, b)
	}
}

func TestFilesRoundTripByteExact(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	dir := env.taskDir(t, "box")
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"plain.bin", "with space.bin", `it's "quoted" $x.bin`, "ünïcødé 日本.bin"} {
		t.Run(name, func(t *testing.T) {
			for _, where := range []string{dir, dir + "/../not-local"} {
				p := path.Clean(where + "/new dir/" + name)
				env.mustDo(t, http.MethodPut, filesPath("box", p, "mode", "0640", "mkdir", "true"), data, http.StatusOK, nil)
				resp, got := env.do(t, http.MethodGet, filesPath("box", p), nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %d %s", p, resp.StatusCode, got)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("read back %d bytes differing from the %d written", len(got), len(data))
				}
				h := resp.Header
				if h.Get("Content-Type") != "application/octet-stream" || h.Get(api.HeaderFileMode) != "0640" ||
					h.Get(api.HeaderFileSize) != "1048576" || h.Get(api.HeaderFileType) != "file" {
					t.Errorf("headers %v", h)
				}
			}
		})
	}
	t.Run("chunked upload", func(t *testing.T) {
		p := dir + "/chunked.bin"
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, env.http.URL+filesPath("box", p), io.MultiReader(bytes.NewReader(data[:1000]), bytes.NewReader(data[1000:5000])))
		req.Header.Set("Authorization", "Bearer "+env.token)
		resp, err := env.http.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || req.ContentLength != 0 {
			t.Fatalf("PUT without a length: %d (length %d)", resp.StatusCode, req.ContentLength)
		}
		_, got := env.do(t, http.MethodGet, filesPath("box", p), nil)
		if !bytes.Equal(got, data[:5000]) {
			t.Errorf("read back %d bytes, want the 5000 written", len(got))
		}
	})
	t.Run("directory listing", func(t *testing.T) {
		var list api.DirectoryListing
		env.mustDo(t, http.MethodGet, filesPath("box", path.Clean(dir+"/new dir")), nil, http.StatusOK, &list)
		var names []string
		for _, e := range list.Entries {
			names = append(names, e.Name+" "+e.Type+" "+e.Mode)
		}
		want := []string{`it's "quoted" $x.bin file 0640`, "plain.bin file 0640", "with space.bin file 0640", "ünïcødé 日本.bin file 0640"}
		sort.Strings(want)
		if diff := cmp.Diff(want, names); diff != "" {
			t.Errorf("entries (-want +got):\n%s", diff)
		}
	})
	t.Run("missing", func(t *testing.T) {
		resp, b := env.do(t, http.MethodGet, filesPath("box", dir+"/missing"), nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET missing in the task dir: %d %s", resp.StatusCode, b)
		}
		resp, b = env.do(t, http.MethodGet, filesPath("box", "/nonexistent-dir-of-the-host/x"), nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET missing outside: %d %s", resp.StatusCode, b)
		}
	})
	t.Run("remove", func(t *testing.T) {
		d := path.Clean(dir + "/new dir")
		resp, b := env.do(t, http.MethodDelete, filesPath("box", d), nil)
		if resp.StatusCode != http.StatusConflict {
			t.Errorf("DELETE a full directory: %d %s, want 409", resp.StatusCode, b)
		}
		env.mustDo(t, http.MethodDelete, filesPath("box", d+"/plain.bin"), nil, http.StatusOK, nil)
		env.mustDo(t, http.MethodDelete, filesPath("box", d, "recursive", "true"), nil, http.StatusOK, nil)
		resp, _ = env.do(t, http.MethodGet, filesPath("box", d), nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET after DELETE: %d", resp.StatusCode)
		}
		resp, _ = env.do(t, http.MethodDelete, filesPath("box", d), nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("DELETE again: %d", resp.StatusCode)
		}
	})
}

func TestHostilePathsAreRefused(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	for _, p := range []string{"", "relative/x", "/tmp/../etc/passwd", "/tmp/a\x00b", "/tmp/a\nb", "/tmp/x/", "/tmp//x", "/tmp/./x"} {
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			resp, b := env.do(t, method, filesPath("box", p), "x")
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s %q: status %d, want 400: %s", method, p, resp.StatusCode, b)
			}
		}
	}
	resp, _ := env.do(t, http.MethodDelete, filesPath("box", "/", "recursive", "true"), nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("DELETE / : %d, want 400", resp.StatusCode)
	}
}

func TestDirectoryCopyAsTar(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	dir := env.taskDir(t, "box") + "/tree"
	files := map[string]string{"a.txt": "a\n", "sub/b c.txt": "b\x00c", "sub/deeper/ü.txt": strings.Repeat("u", 70000)}
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, name := range []string{"a.txt", "sub/b c.txt", "sub/deeper/ü.txt"} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, files[name])
	}
	tw.Close()
	var wr api.WriteResponse
	env.mustDo(t, http.MethodPut, filesPath("box", dir, "archive", "tar", "mkdir", "true"), in.Bytes(), http.StatusOK, &wr)
	if wr.Files != 3 {
		t.Errorf("wrote %+v, want 3 files", wr)
	}
	resp, b := env.do(t, http.MethodGet, filesPath("box", dir, "archive", "tar"), nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-tar" {
		t.Fatalf("GET tar: %d %v", resp.StatusCode, resp.Header)
	}
	got := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			c, _ := io.ReadAll(tr)
			got[strings.TrimPrefix(h.Name, "./")] = string(c)
		}
	}
	if diff := cmp.Diff(files, got); diff != "" {
		t.Errorf("tree read back (-want +got):\n%s", diff)
	}
	var bad bytes.Buffer
	tw = tar.NewWriter(&bad)
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o600, Typeflag: tar.TypeReg})
	tw.Close()
	resp, b = env.do(t, http.MethodPut, filesPath("box", dir, "archive", "tar"), bad.Bytes())
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT an escaping archive: %d %s, want 400", resp.StatusCode, b)
	}
	resp, _ = env.do(t, http.MethodGet, filesPath("box", dir+"/nope", "archive", "tar"), nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET tar of a missing directory: %d, want 404", resp.StatusCode)
	}
}

func TestLogsFollow(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	appendLog := func(text string) {
		out := env.mustExec(t, "box", api.ExecRequest{
			Command: []string{"sh", "-c", `printf '%s' "$1" >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`, "sh", text},
		})
		if out.ExitCode != 0 {
			t.Fatalf("append: %d %q", out.ExitCode, out.Stderr)
		}
	}
	appendLog("one\ntwo\nthree\n")
	_, b := env.do(t, http.MethodGet, "/v1/sandboxes/default/box/logs", nil)
	if string(b) != "one\ntwo\nthree\n" {
		t.Errorf("logs %q", b)
	}
	_, b = env.do(t, http.MethodGet, "/v1/sandboxes/default/box/logs?tail=2", nil)
	if string(b) != "two\nthree\n" {
		t.Errorf("logs tail=2 %q", b)
	}
	_, b = env.do(t, http.MethodGet, "/v1/sandboxes/default/box/logs?stream=stderr", nil)
	if string(b) != "" {
		t.Errorf("stderr %q, want empty", b)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.http.URL+"/v1/sandboxes/default/box/logs?follow=true&tail=1", nil)
	req.Header.Set("Authorization", "Bearer "+env.token)
	resp, err := env.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	want := "three\nfour\n"
	got := make([]byte, 0, len(want))
	buf := make([]byte, 64)
	appended := false
	for len(got) < len(want) {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("follow read %q: %v", got, err)
		}
		if !appended && strings.HasPrefix(string(got), "three\n") {
			appendLog("four\n")
			appended = true
		}
	}
	if string(got) != want {
		t.Errorf("followed %q, want %q", got, want)
	}
	resp2, b := env.do(t, http.MethodGet, "/v1/sandboxes/default/box/logs?stream=both", nil)
	if resp2.StatusCode != http.StatusBadRequest {
		t.Errorf("bad stream: %d %s", resp2.StatusCode, b)
	}
}

func TestSessionLimitsAndWriteSize(t *testing.T) {
	env := newInsideEnv(t, insideOptions{sandbox: sandboxio.Options{SessionsPerSandbox: 1, Sessions: 2, MaxFileBytes: 1000}})
	env.mustApply(t, applyReq(rawExecSandbox("a"), rawExecSandbox("b"), rawExecSandbox("c")))
	for _, n := range []string{"a", "b", "c"} {
		env.waitRunning(t, n)
	}
	dir := env.taskDir(t, "a")
	// One followed log holds a's only slot.
	ctx, cancel := context.WithCancel(t.Context())
	hold := func(name string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.http.URL+"/v1/sandboxes/default/"+name+"/logs?follow=true", nil)
		req.Header.Set("Authorization", "Bearer "+env.token)
		resp, err := env.http.Client().Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("follow %s: %v %v", name, err, resp)
		}
		return resp
	}
	ra := hold("a")
	_, resp, b := env.execJSON(t, "a", api.ExecRequest{Command: []string{"true"}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second session in a: %d %v %s, want 429 with Retry-After", resp.StatusCode, resp.Header, b)
	}
	rb := hold("b")
	_, resp, b = env.execJSON(t, "c", api.ExecRequest{Command: []string{"true"}})
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("third session in all: %d %s, want 429", resp.StatusCode, b)
	}
	cancel()
	ra.Body.Close()
	rb.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, resp, _ = env.execJSON(t, "a", api.ExecRequest{Command: []string{"true"}})
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slots never came back: %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}

	resp, b = env.do(t, http.MethodPut, filesPath("a", dir+"/big"), bytes.Repeat([]byte("x"), 1001))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT 1001 bytes: %d %s, want 413", resp.StatusCode, b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, env.http.URL+filesPath("a", dir+"/big"),
		io.MultiReader(bytes.NewReader(make([]byte, 600)), bytes.NewReader(make([]byte, 600))))
	req.Header.Set("Authorization", "Bearer "+env.token)
	resp, err := env.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT 1200 bytes without a length: %d, want 413", resp.StatusCode)
	}
	out := env.mustExec(t, "a", api.ExecRequest{Command: []string{"ls", "-A", dir}})
	if strings.Contains(string(out.Stdout), "big") {
		t.Errorf("a refused write left files behind: %q", out.Stdout)
	}
}

func TestAuditLinesCarryNoData(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	dir := env.taskDir(t, "box")
	const secret = "s3cr3t-value-never-logged"
	env.mustExec(t, "box", api.ExecRequest{Command: []string{"sh", "-c", "cat; printenv TOKEN; exit 3"},
		Env: map[string]string{"TOKEN": secret}, Stdin: []byte(secret + "-stdin")})
	env.mustDo(t, http.MethodPut, filesPath("box", dir+"/f"), secret+"-file", http.StatusOK, nil)
	env.mustDo(t, http.MethodGet, filesPath("box", dir+"/f"), nil, http.StatusOK, nil)
	logs := env.logs.String()
	if strings.Contains(logs, secret) || strings.Contains(logs, env.token) {
		t.Fatalf("the logs hold data or the token:\n%s", logs)
	}
	var execLine, writeLine map[string]any
	for _, l := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		switch {
		case m["msg"] == "exec" && m["exitCode"] == float64(3):
			execLine = m
		case m["msg"] == "file" && m["op"] == "write":
			writeLine = m
		}
	}
	if execLine == nil || writeLine == nil {
		t.Fatalf("no exec or file line in:\n%s", logs)
	}
	for k, want := range map[string]any{"sandbox": "default/box", "argv": []any{"sh", "-c", "cat; printenv TOKEN; exit 3"}, "envNames": []any{"TOKEN"}} {
		if diff := cmp.Diff(want, execLine[k]); diff != "" {
			t.Errorf("exec line %s (-want +got):\n%s", k, diff)
		}
	}
	for _, k := range []string{"durationMs", "remote", "user"} {
		if _, ok := execLine[k]; !ok {
			t.Errorf("exec line lacks %s: %v", k, execLine)
		}
	}
	if u, _ := execLine["user"].(string); !strings.HasPrefix(u, "token:") {
		t.Errorf("user %q, want a token digest", u)
	}
	if writeLine["path"] != dir+"/f" || writeLine["size"] != float64(len(secret+"-file")) {
		t.Errorf("write line %v", writeLine)
	}
}

func TestExecStreamOverWebSocket(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	dial := func(q url.Values) (*websocket.Conn, *http.Response, error) {
		u := "ws" + strings.TrimPrefix(env.http.URL, "http") + "/v1/sandboxes/default/box/exec?" + q.Encode()
		return websocket.DefaultDialer.DialContext(t.Context(), u, http.Header{"Authorization": {"Bearer " + env.token}})
	}
	run := func(t *testing.T, cmd []string, env []string, stdin string) (stdout, stderr string, code int) {
		t.Helper()
		b, _ := json.Marshal(cmd)
		conn, resp, err := dial(url.Values{"command": {string(b)}, "env": env})
		if err != nil {
			t.Fatalf("dial: %v %v", err, resp)
		}
		defer conn.Close()
		if stdin != "" {
			conn.WriteJSON(nomadapi.ExecStreamingInput{Stdin: &nomadapi.ExecStreamingIOOperation{Data: []byte(stdin)}})
		}
		conn.WriteJSON(nomadapi.ExecStreamingInput{Stdin: &nomadapi.ExecStreamingIOOperation{Close: true}})
		var out, errb strings.Builder
		for {
			var f nomadapi.ExecStreamingOutput
			if err := conn.ReadJSON(&f); err != nil {
				t.Fatalf("read: %v (stdout %q)", err, out.String())
			}
			switch {
			case f.Stdout != nil:
				out.Write(f.Stdout.Data)
			case f.Stderr != nil:
				errb.Write(f.Stderr.Data)
			case f.Exited:
				return out.String(), errb.String(), f.Result.ExitCode
			}
		}
	}
	out, errOut, code := run(t, []string{"sh", "-c", `cat; printf '%s' "$GREETING"; echo e >&2; exit 5`}, []string{"GREETING=hello there"}, "in\n")
	if out != "in\nhello there" || errOut != "e\n" || code != 5 {
		t.Errorf("stream: stdout %q stderr %q exit %d", out, errOut, code)
	}
	// Without an environment the command is Nomad's to start, and its
	// message passes through; with one the wrapper's shell reports it.
	_, errOut, code = run(t, []string{"/nonexistent"}, nil, "")
	if code != sandboxio.ExitNotFound || !strings.Contains(errOut, "failed to start command") {
		t.Errorf("not found: exit %d stderr %q", code, errOut)
	}
	_, errOut, code = run(t, []string{"/nonexistent"}, []string{"A=b"}, "")
	if code != sandboxio.ExitNotFound || !strings.Contains(errOut, "/nonexistent") {
		t.Errorf("not found with env: exit %d stderr %q", code, errOut)
	}
	_, resp, err := dial(url.Values{"command": {"not json"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad command: %v %v, want 400 before the upgrade", err, resp)
	}
	resp2, b := env.do(t, http.MethodGet, "/v1/sandboxes/default/box/exec?command=%5B%22true%22%5D", nil)
	if resp2.StatusCode != http.StatusBadRequest {
		t.Errorf("GET without an upgrade: %d %s", resp2.StatusCode, b)
	}
}

// An exec sandbox stays reachable after a mistyped command: the exec
// driver would never answer that exec, nor any later one of the task
// (the test server does as the real agent), so the controller looks for
// the program in the task's root first.
func TestExecOfAMissingProgramKeepsAnExecSandboxReachable(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(sandbox("ex", func(sb *spec.Sandbox) {
		sb.Spec.Driver, sb.Spec.Image, sb.Spec.Network = spec.DriverExec, "", spec.NetworkHost
	})))
	env.waitRunning(t, "ex")
	for _, cmd := range [][]string{{"/no/such/program"}, {"no-such-program-anywhere"}} {
		out := env.mustExec(t, "ex", api.ExecRequest{Command: cmd, Timeout: "5s"})
		if out.ExitCode != sandboxio.ExitNotFound || out.TimedOut || !strings.Contains(string(out.Stderr), cmd[0]) {
			t.Errorf("%s: exit %d timedOut %v stderr %q, want 127 naming it", cmd[0], out.ExitCode, out.TimedOut, out.Stderr)
		}
	}
	for _, cmd := range [][]string{{"/bin/echo", "still here"}, {"echo", "still here"}} {
		out := env.mustExec(t, "ex", api.ExecRequest{Command: cmd, Timeout: "5s"})
		if out.ExitCode != 0 || string(out.Stdout) != "still here\n" {
			t.Errorf("%q after: exit %d stdout %q stderr %q", cmd, out.ExitCode, out.Stdout, out.Stderr)
		}
	}
}

// Nomad's file system refuses to cat a task's secrets, with 200 and the
// text "Reading secret file prohibited"; that text must never come back
// as the file. Secrets are read through exec, byte-exact.
func TestSecretsAreReadAsWritten(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	secrets := path.Dir(env.taskDir(t, "box")) + "/secrets"
	token := []byte("s3cr3t-token-0123456789-abcdefghijklmnopqrstuvwxyz-long-enough-to-outlast-any-error-text\n")
	env.mustDo(t, http.MethodPut, filesPath("box", secrets+"/token")+"&mode=0600", token, http.StatusOK, nil)
	got := env.mustDo(t, http.MethodGet, filesPath("box", secrets+"/token"), nil, http.StatusOK, nil)
	if !bytes.Equal(got, token) {
		t.Errorf("read back %q, want %q", got, token)
	}
}

// A client that leaves a stream after sending input past its end frees
// the sandbox's session: the server keeps reading the connection, and
// sees it close.
func TestExecStreamSlotComesBackAfterTheClientLeaves(t *testing.T) {
	env := newInsideEnv(t, insideOptions{sandbox: sandboxio.Options{SessionsPerSandbox: 1}})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	u := "ws" + strings.TrimPrefix(env.http.URL, "http") + "/v1/sandboxes/default/box/exec?" + url.Values{"command": {`["sleep","30"]`}}.Encode()
	conn, _, err := websocket.DefaultDialer.DialContext(t.Context(), u, http.Header{"Authorization": {"Bearer " + env.token}})
	if err != nil {
		t.Fatal(err)
	}
	conn.WriteJSON(nomadapi.ExecStreamingInput{Stdin: &nomadapi.ExecStreamingIOOperation{Close: true}})
	conn.WriteJSON(nomadapi.ExecStreamingInput{Stdin: &nomadapi.ExecStreamingIOOperation{Data: []byte("late")}})
	if _, resp, _ := env.execJSON(t, "box", api.ExecRequest{Command: []string{"true"}}); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("while the stream runs: %d, want 429", resp.StatusCode)
	}
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, resp, _ := env.execJSON(t, "box", api.ExecRequest{Command: []string{"true"}})
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session's slot never came back: %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A file that stat calls empty but that has content when read, as the
// kernel's are, is read to its end, without a length announced up front.
func TestKernelFilesAreReadWhole(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc here")
	}
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, applyReq(rawExecSandbox("box")))
	env.waitRunning(t, "box")
	resp, b := env.do(t, http.MethodGet, filesPath("box", "/proc/self/status"), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("Name:")) || resp.Header.Get(api.HeaderFileSize) != "" {
		t.Errorf("GET /proc/self/status: %d, %d bytes, size header %q", resp.StatusCode, len(b), resp.Header.Get(api.HeaderFileSize))
	}
}
