package client_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/client"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
)

func taskDir(t *testing.T, sb *client.SandboxHandle) string {
	t.Helper()
	res, err := sb.Exec(t.Context(), client.ExecRequest{Command: []string{"sh", "-c", `printf %s "$NOMAD_TASK_DIR"`}})
	if err != nil || res.ExitCode != 0 || len(res.Stdout) == 0 {
		t.Fatalf("task dir: %v %+v", err, res)
	}
	return string(res.Stdout)
}

func TestExecExitCodesStdinAndEnv(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	sb := c.client.Sandbox("default", "box")
	value := "it's \"quoted\" $HOME `id` and\nspaces  here"
	tests := []struct {
		name       string
		req        client.ExecRequest
		wantCode   int
		wantStdout string
		wantStderr string // a part of it
	}{
		{"exit 0", client.ExecRequest{Command: []string{"true"}}, 0, "", ""},
		{"exit 7", client.ExecRequest{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}}, 7, "out\n", "err"},
		{"not found", client.ExecRequest{Command: []string{"/no/such/program"}}, 127, "", "/no/such/program"},
		{"stdin", client.ExecRequest{Command: []string{"cat"}, Stdin: []byte("line one\nline two\x00\xff")}, 0, "line one\nline two\x00\xff", ""},
		{"env as written", client.ExecRequest{Command: []string{"printenv", "V"}, Env: map[string]string{"V": value}}, 0, value + "\n", ""},
		{"workdir", client.ExecRequest{Command: []string{"pwd"}, Workdir: "/tmp"}, 0, "/tmp\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := sb.Exec(t.Context(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tc.wantCode || string(res.Stdout) != tc.wantStdout || !strings.Contains(string(res.Stderr), tc.wantStderr) {
				t.Errorf("exit %d stdout %q stderr %q; want %d %q and stderr holding %q",
					res.ExitCode, res.Stdout, res.Stderr, tc.wantCode, tc.wantStdout, tc.wantStderr)
			}
			var ee *client.ExitError
			if err := res.Check(); (tc.wantCode == 0) != (err == nil) || (err != nil && (!errors.As(err, &ee) || ee.Code != tc.wantCode)) {
				t.Errorf("Check: %v", err)
			}
		})
	}
	res, err := sb.Exec(t.Context(), client.ExecRequest{Command: []string{"sleep", "5"}, Timeout: 200 * time.Millisecond})
	if err != nil || !res.TimedOut || res.ExitCode != -1 {
		t.Errorf("timeout: %v %+v", err, res)
	}
}

func TestExecStreamAndTerminal(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	sb := c.client.Sandbox("default", "box")
	var out, errb bytes.Buffer
	code, err := sb.ExecStream(t.Context(), client.StreamRequest{
		Command: []string{"sh", "-c", `cat; printf '%s' "$GREETING"; echo e >&2; exit 5`},
		Env:     map[string]string{"GREETING": "hello 'there'"},
		Stdin:   strings.NewReader("in\n"),
		Stdout:  &out, Stderr: &errb,
	})
	if err != nil || code != 5 || out.String() != "in\nhello 'there'" || errb.String() != "e\n" {
		t.Errorf("stream: %v exit %d stdout %q stderr %q", err, code, out.String(), errb.String())
	}

	// A terminal: the command sees one, of the size given.
	resize := make(chan client.TerminalSize, 1)
	resize <- client.TerminalSize{Width: 101, Height: 37}
	out.Reset()
	pr, pw := io.Pipe()
	go func() {
		// The size may reach the terminal after the command starts: it
		// looks until it sees it.
		pw.Write([]byte(`for i in $(seq 200); do [ "$(stty size)" = "37 101" ] && echo sized && break; sleep 0.05; done; test -t 0 && echo tty; exit 3` + "\n"))
	}()
	code, err = sb.ExecStream(t.Context(), client.StreamRequest{Command: []string{"sh"}, TTY: true, Stdin: pr, Stdout: &out, Resize: resize})
	pw.Close()
	if err != nil || code != 3 || !strings.Contains(out.String(), "sized") || !strings.Contains(out.String(), "tty") {
		t.Errorf("tty: %v exit %d output %q", err, code, out.String())
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := sb.ExecStream(ctx, client.StreamRequest{Command: []string{"true"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	_, err = c.client.Sandbox("default", "nope").ExecStream(t.Context(), client.StreamRequest{Command: []string{"true"}})
	if !errors.Is(err, client.ErrNotFound) {
		t.Errorf("stream in a missing sandbox: %v, want ErrNotFound", err)
	}
}

func TestFilesRoundTrip(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	sb := c.client.Sandbox("default", "box")
	dir := taskDir(t, sb)
	data := make([]byte, 1<<20)
	rand.Read(data)
	ctx := t.Context()
	for _, name := range []string{"plain.bin", "with space.bin", `it's "q".bin`, "ünïcødé-файл.bin", "-dash.bin"} {
		p := dir + "/sub dir/" + name
		if err := sb.WriteFile(ctx, p, bytes.NewReader(data), client.WriteOptions{Mode: 0o600, Mkdir: true}); err != nil {
			t.Fatalf("write %q: %v", name, err)
		}
		rc, info, err := sb.ReadFile(ctx, p)
		if err != nil {
			t.Fatalf("read %q: %v", name, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) || info.Size != int64(len(data)) || info.Mode != 0o600 {
			t.Errorf("read %q: %v, %d bytes equal=%v, info %+v", name, err, len(got), bytes.Equal(got, data), info)
		}
	}
	entries, err := sb.ReadDir(ctx, dir+"/sub dir")
	if err != nil || len(entries) != 5 {
		t.Fatalf("list: %v %+v", err, entries)
	}
	if _, _, err := sb.ReadFile(ctx, dir+"/sub dir"); !errors.Is(err, client.ErrConflict) {
		t.Errorf("ReadFile of a directory: %v, want ErrConflict", err)
	}

	// Directory copy: out as tar, back in elsewhere, the same bytes.
	rc, err := sb.ReadTar(ctx, dir+"/sub dir")
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.WriteTar(ctx, dir+"/copy", bytes.NewReader(archive), true); err != nil {
		t.Fatal(err)
	}
	rc, _, err = sb.ReadFile(ctx, dir+"/copy/ünïcødé-файл.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("copied file differs (%d bytes)", len(got))
	}

	if err := sb.Remove(ctx, dir+"/copy", false); !errors.Is(err, client.ErrConflict) {
		t.Errorf("remove a full directory without recursive: %v, want ErrConflict", err)
	}
	if err := sb.Remove(ctx, dir+"/copy", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sb.ReadFile(ctx, dir+"/copy"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("read after remove: %v, want ErrNotFound", err)
	}
	for _, p := range []string{"relative/path", dir + "/../etc", dir + "/a\x00b", ""} {
		if err := sb.WriteFile(ctx, p, strings.NewReader("x"), client.WriteOptions{}); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("write %q: %v, want ErrInvalid", p, err)
		}
	}
}

// A tar entry that climbs out of the target directory is refused.
func TestWriteTarRefusesEscapes(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	sb := c.client.Sandbox("default", "box")
	dir := taskDir(t, sb)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "../escaped", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	if err := sb.WriteTar(t.Context(), dir+"/in", &buf, true); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("escaping archive: %v, want ErrInvalid", err)
	}
	if _, _, err := sb.ReadFile(t.Context(), dir+"/escaped"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the escaping entry was written: %v", err)
	}
}

func TestLogsTailAndFollow(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	sb := c.client.Sandbox("default", "box")
	appendLog := func(text string) {
		res, err := sb.Exec(t.Context(), client.ExecRequest{
			Command: []string{"sh", "-c", `printf '%s' "$1" >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`, "sh", text},
		})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("append: %v %+v", err, res)
		}
	}
	appendLog("one\ntwo\nthree\n")
	rc, err := sb.Logs(t.Context(), client.LogOptions{Tail: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "two\nthree\n" {
		t.Errorf("tail 2: %q", b)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rc, err = sb.Logs(ctx, client.LogOptions{Follow: true, Tail: client.TailNone})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	appendLog("four\n")
	buf := make([]byte, 16)
	n, err := io.ReadAtLeast(rc, buf, len("four\n"))
	if err != nil || string(buf[:n]) != "four\n" {
		t.Errorf("followed %q: %v", buf[:n], err)
	}
}

func TestTypedErrors(t *testing.T) {
	c := startController(t, sandboxio.Options{SessionsPerSandbox: 1, MaxFileBytes: 100})
	c.apply(t, rawExec("box")+`
sandbox "off" {
  driver  = "raw_exec"
  network = "host"
  command = ["/bin/sleep", "3600"]
  state   = "stopped"
}
`, "box", "off")
	ctx := t.Context()
	sb := c.client.Sandbox("default", "box")
	dir := taskDir(t, sb)

	_, err := c.client.Sandbox("default", "off").Exec(ctx, client.ExecRequest{Command: []string{"true"}})
	var ce *client.Error
	if !errors.Is(err, client.ErrNotRunning) || !errors.As(err, &ce) || ce.Phase != "Stopped" {
		t.Errorf("exec in a stopped sandbox: %v, want ErrNotRunning with phase Stopped", err)
	}
	if _, err := c.client.Get(ctx, "default", "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("get a missing sandbox: %v", err)
	}
	if err := sb.WriteFile(ctx, dir+"/big", bytes.NewReader(make([]byte, 101)), client.WriteOptions{}); !errors.Is(err, client.ErrTooLarge) {
		t.Errorf("write past the limit: %v, want ErrTooLarge", err)
	}
	// One followed log holds the sandbox's only session.
	lctx, cancel := context.WithCancel(ctx)
	rc, err := sb.Logs(lctx, client.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = sb.Exec(ctx, client.ExecRequest{Command: []string{"true"}})
	if !errors.Is(err, client.ErrTooManyRequests) || !errors.As(err, &ce) || ce.RetryAfter <= 0 {
		t.Errorf("second session: %v, want ErrTooManyRequests with a Retry-After", err)
	}
	cancel()
	rc.Close()

	bad, err := client.New(client.Config{Address: c.url, Token: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.List(ctx, client.ListOptions{}); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("wrong token: %v, want ErrUnauthorized", err)
	}
	_, err = c.client.ApplyHCL(ctx, []client.HCLFile{{Name: "bad.hcl", Src: []byte("sandbox \"x\" {\n  vcpus = \"many\"\n}\n")}}, client.ApplyOptions{})
	if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "bad.hcl:2") {
		t.Errorf("invalid HCL: %v, want ErrInvalid at bad.hcl:2", err)
	}
}

func TestGetListWatchDelete(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("a")+rawExec("b"), "a", "b")
	ctx := t.Context()
	l, err := c.client.List(ctx, client.ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range l.Items {
		names = append(names, it.Name)
		if !it.Ready() || it.Status.AllocID == "" {
			t.Errorf("%s: not ready after WaitReady: %+v", it.Name, it.Status)
		}
	}
	if diff := cmp.Diff([]string{"a", "b"}, names); diff != "" {
		t.Errorf("listed (-want +got):\n%s", diff)
	}
	if err := c.client.Delete(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	var types []string
	err = c.client.Watch(ctx, client.WatchOptions{Since: l.Revision, StoreID: l.StoreID}, func(ev client.WatchEvent) bool {
		if ev.Key == "default/a" {
			types = append(types, ev.Type)
		}
		return ev.Type != "finalized"
	})
	if err != nil || len(types) == 0 || types[0] != "deleted" || types[len(types)-1] != "finalized" {
		t.Errorf("watch: %v %v, want deleted ... finalized", err, types)
	}
	if _, err := c.client.WaitReady(ctx, "default", "a"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("wait for a deleted sandbox: %v, want ErrNotFound", err)
	}
}

// The package's types hold every field the controller sends: a field
// added to the API without the client would fail here.
func TestWireTypesMatchTheAPI(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	get := func(path string, out any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, c.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(out); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
	var sb client.Sandbox
	get("/v1/sandboxes/default/box", &sb)
	var l client.SandboxList
	get("/v1/sandboxes", &l)
	var res client.ExecResult
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, c.url+"/v1/sandboxes/default/box/exec", strings.NewReader(`{"command":["true"]}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Errorf("exec answer: %v", err)
	}
	resp.Body.Close()
}

// The package documentation's example, run against the test server.
func TestTheExampleRuns(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	got, err := scratch(t.Context(), c.client)
	if err != nil || got != "hello from the sandbox\n" {
		t.Errorf("example: %q, %v", got, err)
	}
}

// Behind a TLS proxy that offers HTTP/2 the exec stream still opens: its
// handshake is HTTP/1.1 whatever the client's TLS configuration offers.
func TestExecStreamOverTLSWithHTTP2(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	ts := httptest.NewUnstartedServer(c.handler)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	tc, err := client.New(client.Config{Address: ts.URL, Token: testToken, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, err := tc.Get(t.Context(), "default", "box"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code, err := tc.Sandbox("default", "box").ExecStream(t.Context(), client.StreamRequest{Command: []string{"echo", "over tls"}, Stdout: &out})
	if err != nil || code != 0 || out.String() != "over tls\n" {
		t.Errorf("exec over TLS: %v exit %d %q", err, code, out.String())
	}
}

// A unix socket address with the caller's own HTTP client still dials
// the socket, for plain requests as for exec.
func TestUnixSocketWithOwnHTTPClient(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box"), "box")
	dir, err := os.MkdirTemp("", "akc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: c.handler}
	go srv.Serve(ln)
	defer srv.Close()
	uc, err := client.New(client.Config{Address: "unix://" + ln.Addr().String(), Token: testToken,
		HTTPClient: &http.Client{Transport: &http.Transport{}, Timeout: time.Nanosecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Get(t.Context(), "default", "box"); err != nil {
		t.Errorf("get over the socket (the client's Timeout must not apply): %v", err)
	}
	var out bytes.Buffer
	if code, err := uc.Sandbox("default", "box").ExecStream(t.Context(), client.StreamRequest{Command: []string{"echo", "unix"}, Stdout: &out}); err != nil || code != 0 || out.String() != "unix\n" {
		t.Errorf("exec over the socket: %v %d %q", err, code, out.String())
	}
}

// A command that cannot start ends the session before the client has
// sent anything; the exit code still comes through.
func TestExecStreamOfAMissingProgram(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	c.apply(t, rawExec("box")+`
sandbox "ex" {
  driver  = "exec"
  network = "host"
  command = ["/bin/sleep", "3600"]
}
`, "box", "ex")
	for _, name := range []string{"box", "ex"} {
		for i := 0; i < 20; i++ {
			var errb bytes.Buffer
			code, err := c.client.Sandbox("default", name).ExecStream(t.Context(), client.StreamRequest{Command: []string{"/no/such/program"}, Stderr: &errb})
			if err != nil || code != 127 || !strings.Contains(errb.String(), "/no/such/program") {
				t.Fatalf("%s: exit %d %v stderr %q, want 127 naming the program", name, code, err, errb.String())
			}
		}
	}
}
