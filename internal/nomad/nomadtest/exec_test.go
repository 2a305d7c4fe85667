package nomadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/nomad/api"
)

// TestExecThroughAPI runs commands in the sandbox task through nomad/api's
// Exec, as a program would, and checks what comes back.
func TestExecThroughAPI(t *testing.T) {
	job := sandboxJob(t)
	job.TaskGroups[0].Tasks[0].Env = map[string]string{"GREETING": "hello from ${NOMAD_TASK_NAME}", "PATH": os.Getenv("PATH")}
	f := newLoopbackFixture(t, Options{Instant: true})
	alloc := runSandbox(t, f, job)
	dir := allocDirOf(t, f, alloc.ID)
	cases := []struct {
		name       string
		command    []string
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr string
		check      func(t *testing.T, stdout string)
	}{
		{name: "exit 0", command: []string{"true"}, wantCode: 0},
		{
			// The recorded session (111): stdout and stderr apart, stdin
			// through, exit 7.
			name:       "recorded command",
			command:    []string{"/bin/sh", "-c", "echo out; echo err >&2; cat; exit 7"},
			stdin:      "line1 from stdin\n",
			wantCode:   7,
			wantStdout: "out\nline1 from stdin\n",
			wantStderr: "err\n",
		},
		{name: "working directory is the task directory", command: []string{"pwd"}, wantStdout: filepath.Join(dir, "sandbox") + "\n"},
		{name: "killed by a signal", command: []string{"/bin/sh", "-c", "kill -TERM $$"}, wantCode: 128 + 15},
		{
			name:    "task environment",
			command: []string{"env"},
			check: func(t *testing.T, stdout string) {
				env := map[string]string{}
				for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
					k, v, _ := strings.Cut(l, "=")
					env[k] = v
				}
				want := map[string]string{
					"GREETING":          "hello from sandbox",
					"NOMAD_ALLOC_ID":    alloc.ID,
					"NOMAD_ALLOC_NAME":  alloc.Name,
					"NOMAD_ALLOC_DIR":   filepath.Join(dir, "alloc"),
					"NOMAD_TASK_DIR":    filepath.Join(dir, "sandbox", "local"),
					"NOMAD_SECRETS_DIR": filepath.Join(dir, "sandbox", "secrets"),
					"NOMAD_TASK_NAME":   "sandbox",
					"NOMAD_GROUP_NAME":  "sandbox",
					"NOMAD_JOB_ID":      *job.ID,
					"NOMAD_JOB_NAME":    *job.Name,
					"NOMAD_NAMESPACE":   "default",
					"NOMAD_DC":          "dc1",
					"NOMAD_REGION":      "global",
					"NOMAD_ALLOC_INDEX": "0",
					"NOMAD_CPU_LIMIT":   "100",
					// Job meta, as written and upper-cased, "-" made "_".
					"NOMAD_META_agentkernel_sandbox": "fs-rawexec",
					"NOMAD_META_AGENTKERNEL_SANDBOX": "fs-rawexec",
					"PATH":                           os.Getenv("PATH"),
				}
				for k, v := range want {
					if env[k] != v {
						t.Errorf("%s = %q, want %q", k, env[k], v)
					}
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := apiExec(t, f.api, alloc, "sandbox", false, strings.NewReader(tc.stdin), tc.command...)
			if r.err != nil {
				t.Fatalf("exec: %v", r.err)
			}
			if r.code != tc.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, tc.wantCode, r.stderr)
			}
			if tc.check != nil {
				tc.check(t, r.stdout)
				return
			}
			if r.stdout != tc.wantStdout || r.stderr != tc.wantStderr {
				t.Errorf("stdout %q stderr %q, want %q and %q", r.stdout, r.stderr, tc.wantStdout, tc.wantStderr)
			}
		})
	}
}

// recordedClose is one CLOSE line of 112: the close code and reason the
// agent sent.
type recordedClose struct {
	code   int
	reason string
}

// loadRecordedCloses reads the close frames of 112 in recorded order:
// command that does not exist, wrong task, unknown allocation.
func loadRecordedCloses(t *testing.T) []recordedClose {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(factsDir, "112-alloc-exec-websocket-errors.txt"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^CLOSE  code=(\d+) reason='(.*)'$`)
	var out []recordedClose
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		code, _ := strconv.Atoi(m[1])
		out = append(out, recordedClose{code, m[2]})
	}
	if len(out) != 3 {
		t.Fatalf("112 has %d close frames, want 3", len(out))
	}
	return out
}

// TestConformanceExecErrors replays 112: each session sends stdin close
// and gets the recorded close frame, code and reason; through nomad/api
// the reason is the error.
func TestConformanceExecErrors(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	closes := loadRecordedCloses(t)
	cases := []struct {
		name, alloc, task string
		command           []string
		want              recordedClose
	}{
		{"command that does not exist", alloc.ID, "sandbox", []string{"/nonexistent"}, closes[0]},
		{"wrong task name", alloc.ID, "nope", []string{"/bin/true"}, closes[1]},
		{"unknown allocation", "00000000-0000-0000-0000-000000000000", "sandbox", []string{"/bin/true"}, closes[2]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialExec(t, f.base, tc.alloc, tc.task, false, tc.command, nil)
			if err := conn.WriteJSON(map[string]any{"stdin": map[string]any{"close": true}}); err != nil {
				t.Fatal(err)
			}
			msgs, err := readAll(t, conn)
			var ce *websocket.CloseError
			if len(msgs) != 0 || !errors.As(err, &ce) || ce.Code != tc.want.code || ce.Text != tc.want.reason {
				t.Fatalf("got messages %q and %v, want close %d %q", msgs, err, tc.want.code, tc.want.reason)
			}
			a := *alloc
			a.ID = tc.alloc
			r := apiExec(t, f.api, &a, tc.task, false, strings.NewReader(""), tc.command...)
			if r.err == nil || r.err.Error() != tc.want.reason || r.code != -2 {
				t.Errorf("through the api: code %d, err %v, want -2 and %q", r.code, r.err, tc.want.reason)
			}
		})
	}
}

// TestConformanceExecFrames replays 111 and compares the frames: the
// output of each stream in order, then stdout close, stderr close and the
// exit code exactly as recorded, then the end of the connection without a
// close frame.
func TestConformanceExecFrames(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	b, err := os.ReadFile(filepath.Join(factsDir, "111-alloc-exec-websocket.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var sent, recv []string
	var command []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, ">>> GET "):
			target := strings.Fields(strings.TrimPrefix(l, ">>> GET "))[0]
			_, q, _ := strings.Cut(target, "?")
			vals, err := url.ParseQuery(q)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(vals.Get("command")), &command); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(l, "SENT   "):
			sent = append(sent, strings.TrimPrefix(l, "SENT   "))
		case strings.HasPrefix(l, "RECV   "):
			msg, _, _ := strings.Cut(strings.TrimPrefix(l, "RECV   "), "   (")
			recv = append(recv, msg)
		}
	}
	if len(command) == 0 || len(sent) != 2 || len(recv) != 6 {
		t.Fatalf("111 parsed to command %q, %d sent, %d received", command, len(sent), len(recv))
	}
	conn := dialExec(t, f.base, alloc.ID, "sandbox", false, command, nil)
	for _, m := range sent {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readAll(t, conn)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseAbnormalClosure {
		t.Errorf("the connection ended with %v, want no close frame (1006)", err)
	}
	if len(got) < 3 {
		t.Fatalf("frames %q", got)
	}
	if tail, want := got[len(got)-3:], recv[len(recv)-3:]; !slices.Equal(tail, want) {
		t.Errorf("last frames %q, recorded %q", tail, want)
	}
	// stdout and stderr come from two pipes: their frames may interleave
	// either way, and a stream's data may split into more frames.
	if g, w := streamData(t, got), streamData(t, recv); g != w {
		t.Errorf("output %s, recorded %s", g, w)
	}
}

// streamData joins the data of each stream's frames.
func streamData(t *testing.T, frames []string) string {
	t.Helper()
	var out, errs []byte
	for _, fr := range frames {
		var o api.ExecStreamingOutput
		if err := json.Unmarshal([]byte(fr), &o); err != nil {
			t.Fatalf("frame %q: %v", fr, err)
		}
		if o.Stdout != nil {
			out = append(out, o.Stdout.Data...)
		}
		if o.Stderr != nil {
			errs = append(errs, o.Stderr.Data...)
		}
	}
	return strconv.Quote(string(out)) + " " + strconv.Quote(string(errs))
}

// TestExecRefusals: what the agent's client answers before it starts
// anything, in its order of checks.
func TestExecRefusals(t *testing.T) {
	f := newLoopbackFixture(t, Options{Instant: true})
	running := runSandbox(t, f, sandboxJob(t))
	stopped := sandboxJob(t)
	stopped.ID, stopped.Name = ptr("stopped"), ptr("stopped")
	stoppedAlloc := runSandbox(t, f, stopped)
	if _, _, err := f.api.Jobs().Deregister("stopped", false, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		alloc   string
		task    string
		command []string
		code    int
		reason  string
	}{
		{"no task", running.ID, "", []string{"true"}, websocket.ClosePolicyViolation, "must provide task name"},
		{"no command", running.ID, "sandbox", []string{}, websocket.ClosePolicyViolation, "command is not present"},
		{"command not on PATH", running.ID, "sandbox", []string{"no-such-command-here"}, websocket.CloseInternalServerErr,
			`rpc error: code = Unknown desc = failed to start command: exec: "no-such-command-here": executable file not found in $PATH`},
		{"stopped task", stoppedAlloc.ID, "sandbox", []string{"true"}, websocket.ClosePolicyViolation, `task "sandbox" is not running.`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialExec(t, f.base, tc.alloc, tc.task, false, tc.command, nil)
			msgs, err := readAll(t, conn)
			var ce *websocket.CloseError
			if len(msgs) != 0 || !errors.As(err, &ce) || ce.Code != tc.code || ce.Text != tc.reason {
				t.Errorf("got %q and %v, want close %d %q", msgs, err, tc.code, tc.reason)
			}
		})
	}
	t.Run("malformed command", func(t *testing.T) {
		u := "ws" + strings.TrimPrefix(f.base, "http") + "/v1/client/allocation/" + running.ID + "/exec?task=sandbox&command=ls"
		conn, _, err := websocket.DefaultDialer.Dial(u, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = readAll(t, conn)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseInternalServerErr || !strings.HasPrefix(ce.Text, "failed to marshal command into json: ") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("from a browser page", func(t *testing.T) {
		u := "ws" + strings.TrimPrefix(f.base, "http") + "/v1/client/allocation/" + running.ID + "/exec?task=sandbox&command=%5B%22true%22%5D"
		conn, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {f.base}})
		if err == nil {
			conn.Close()
			t.Fatal("a request with an Origin header was upgraded")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("got %v, want 403", err)
		}
	})
	t.Run("without an upgrade", func(t *testing.T) {
		resp, body := f.do(t, http.MethodGet, "/v1/client/allocation/"+running.ID+"/exec?task=sandbox&command=%5B%22true%22%5D", nil, nil)
		if resp.StatusCode != 500 || string(body) != "websocket connection not found in context" {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
}

// TestExecTTY: with tty=true the command runs on a terminal of the size
// the client sends, its output all on stdout.
func TestExecTTY(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	t.Run("raw", func(t *testing.T) {
		conn := dialExec(t, f.base, alloc.ID, "sandbox", true, []string{"/bin/sh", "-c", "read x; stty size; test -t 0 && test -t 1 && echo on-a-tty"}, nil)
		for _, m := range []string{`{"tty_size":{"height":40,"width":100}}`, `{"stdin":{"data":"` + b64("go\n") + `"}}`} {
			if err := conn.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := readAll(t, conn)
		if len(got) < 2 || got[len(got)-2] != `{"stdout":{"close":true}}` || got[len(got)-1] != `{"exited":true,"result":{}}` {
			t.Fatalf("frames %q", got)
		}
		out := streamData(t, got)
		if !strings.Contains(out, `40 100\r\n`) || !strings.Contains(out, `on-a-tty\r\n`) || !strings.HasSuffix(out, ` ""`) {
			t.Errorf("output %s: want the size, the tty and nothing on stderr", out)
		}
	})
	t.Run("api", func(t *testing.T) {
		// A terminal's input stays open while the command runs; closing
		// it types Ctrl-D, which ends cat.
		r := apiExec(t, f.api, alloc, "sandbox", true, strings.NewReader(""), "/bin/sh", "-c", "cat; echo done")
		if r.err != nil || r.code != 0 || !strings.HasSuffix(r.stdout, "done\r\n") || r.stderr != "" {
			t.Errorf("code %d err %v stdout %q stderr %q", r.code, r.err, r.stdout, r.stderr)
		}
	})
}

// TestExecKillsItsProcessGroup: a session's processes, those it left in
// the background included, die when the client leaves, when the task
// stops, when the job is purged and when the server closes.
func TestExecKillsItsProcessGroup(t *testing.T) {
	cases := []struct {
		name string
		end  func(t *testing.T, f *fixture, conn *websocket.Conn)
	}{
		{"client closes", func(t *testing.T, f *fixture, conn *websocket.Conn) { conn.Close() }},
		{"job stopped", func(t *testing.T, f *fixture, conn *websocket.Conn) {
			f.srv.StopJob("default", "agentkernel-fs-rawexec", false)
		}},
		{"job purged", func(t *testing.T, f *fixture, conn *websocket.Conn) {
			f.srv.StopJob("default", "agentkernel-fs-rawexec", true)
		}},
		{"server closed", func(t *testing.T, f *fixture, conn *websocket.Conn) { _ = f.srv.Close() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, alloc := newSandbox(t, Options{})
			h, script := newHolder(t, f, alloc.ID)
			conn := dialExec(t, f.base, alloc.ID, "sandbox", false, []string{"/bin/sh", "-c", script}, nil)
			h.open(t)
			tc.end(t, f, conn)
			h.waitGone(t)
		})
	}
}

// TestExecUnderSynctest: exec runs real processes, which a synctest
// bubble allows: the server, the api client and the MemNet all in it.
// The node advertises no address of its own there, so nomad/api goes
// through the server at once.
func TestExecUnderSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := New(Options{Instant: true})
		mn := NewMemNet()
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(mn.Listener()) }()
		defer func() {
			_ = srv.Close()
			_ = hs.Close()
			mn.Close()
		}()
		c, err := api.NewClient(&api.Config{Address: mn.URL(), HttpClient: mn.HTTPClient()})
		if err != nil {
			t.Fatal(err)
		}
		f := &fixture{srv: srv, api: c}
		alloc := runSandbox(t, f, sandboxJob(t))
		r := apiExec(t, c, alloc, "sandbox", false, strings.NewReader("in\n"), "/bin/sh", "-c", "cat; echo err >&2; exit 3")
		if r.err != nil || r.code != 3 || r.stdout != "in\n" || r.stderr != "err\n" {
			t.Errorf("code %d err %v stdout %q stderr %q", r.code, r.err, r.stdout, r.stderr)
		}
	})
}

// TestExecACL: exec needs alloc-exec in the allocation's namespace and,
// for a raw_exec task, which sees the whole node, alloc-node-exec too; a
// denial is a 1011 close, as the agent's client answers it without a code.
func TestExecACL(t *testing.T) {
	f := newLoopbackFixture(t, Options{Instant: true, ACLToken: recordedMgmtSecret})
	f.api.SetSecretID(recordedMgmtSecret)
	alloc := runSandbox(t, f, sandboxJob(t))
	policies := map[string]string{
		"read":      `namespace "default" { policy = "read" }`,
		"write":     `namespace "default" { policy = "write" }`,
		"node-exec": "namespace \"default\" {\n  policy       = \"write\"\n  capabilities = [\"alloc-node-exec\"]\n}\n",
	}
	for name, rules := range policies {
		if err := f.srv.SetACLPolicy(name, rules); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		policy string
		denied bool
	}{{"read", true}, {"write", true}, {"node-exec", false}} {
		t.Run(tc.policy, func(t *testing.T) {
			secret, err := f.srv.CreateACLToken(tc.policy, tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			c, err := api.NewClient(&api.Config{Address: f.base, SecretID: secret})
			if err != nil {
				t.Fatal(err)
			}
			r := apiExec(t, c, alloc, "sandbox", false, strings.NewReader(""), "echo", "ok")
			if tc.denied {
				if r.err == nil || r.err.Error() != "Permission denied" {
					t.Errorf("got code %d err %v, want Permission denied", r.code, r.err)
				}
				conn := dialExec(t, f.base, alloc.ID, "sandbox", false, []string{"true"}, http.Header{"X-Nomad-Token": {secret}})
				_, err := readAll(t, conn)
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseInternalServerErr || ce.Text != "Permission denied" {
					t.Errorf("close %v, want 1011 Permission denied", err)
				}
				return
			}
			if r.err != nil || r.code != 0 || r.stdout != "ok\n" {
				t.Errorf("code %d err %v stdout %q", r.code, r.err, r.stdout)
			}
		})
	}
	t.Run("ws_handshake", func(t *testing.T) {
		secret, err := f.srv.CreateACLToken("browser", "node-exec")
		if err != nil {
			t.Fatal(err)
		}
		u := "ws" + strings.TrimPrefix(f.base, "http") + "/v1/client/allocation/" + alloc.ID + "/exec?task=sandbox&ws_handshake=true&command=" + `%5B%22echo%22%2C%22hi%22%5D`
		conn, _, err := websocket.DefaultDialer.Dial(u, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.WriteJSON(map[string]any{"version": 1, "auth_token": secret}); err != nil {
			t.Fatal(err)
		}
		got, _ := readAll(t, conn)
		if streamData(t, got) != `"hi\n" ""` {
			t.Errorf("frames %q", got)
		}
	})
}

func b64(s string) string {
	b, _ := json.Marshal([]byte(s))
	return strings.Trim(string(b), `"`)
}

// The exec driver, as a real agent runs it: an exec of a program that
// does not exist never answers, and neither does any later exec of that
// task; raw_exec answers "failed to start command" and carries on. The
// exec task's root shows the host's programs through stat, as the
// agent's chroot copies them.
func TestExecDriverWedgesOnAMissingProgram(t *testing.T) {
	f := newLoopbackFixture(t, Options{Instant: true})
	job := sandboxJob(t)
	job.ID, job.Name = ptr("exec-wedge"), ptr("exec-wedge")
	job.TaskGroups[0].Tasks[0].Driver = "exec"
	alloc := runSandbox(t, f, job)
	quick := func(command ...string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := f.api.Allocations().Exec(ctx, alloc, "sandbox", false, command, strings.NewReader(""), io.Discard, io.Discard, nil, nil)
		return err
	}
	if err := quick("/bin/true"); err != nil {
		t.Fatalf("exec before: %v", err)
	}
	if fi, _, err := f.api.AllocFS().Stat(alloc, "/sandbox/bin/sh", nil); err != nil || fi.IsDir {
		t.Errorf("stat of the task root's /bin/sh: %+v %v", fi, err)
	}
	if err := quick("/no/such/program"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("exec of a missing program: %v, want no answer", err)
	}
	if err := quick("/bin/true"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("exec after it: %v, want no answer", err)
	}

	rf, raw := newSandbox(t, Options{})
	r := apiExec(t, rf.api, raw, "sandbox", false, strings.NewReader(""), "/no/such/program")
	if r.err == nil || !strings.Contains(r.err.Error(), "failed to start command") {
		t.Errorf("raw_exec: %v", r.err)
	}
}
