package nomadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/nomad/api"
)

// Helpers for the client endpoint tests: the controller's raw_exec sandbox
// job, as the file-system facts were recorded with it (lifecycle/fs),
// running on an instant server.

const fsFacts = factsDir + "/lifecycle/fs"

// sandboxJob is the recorded job: group "sandbox", task "sandbox".
func sandboxJob(t testing.TB) *api.Job {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fsFacts, "job-raw_exec.json"))
	if err != nil {
		t.Fatal(err)
	}
	var req api.JobRegisterRequest
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	return req.Job
}

// runSandbox registers job and returns its running allocation as the
// api client reads it.
func runSandbox(t testing.TB, f *fixture, job *api.Job) *api.Allocation {
	t.Helper()
	f.register(t, job)
	stubs, _, err := f.api.Jobs().Allocations(*job.ID, false, nil)
	if err != nil || len(stubs) == 0 {
		t.Fatalf("allocations of %s: %v %v", *job.ID, stubs, err)
	}
	alloc, _, err := f.api.Allocations().Info(stubs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if alloc.ClientStatus != "running" {
		t.Fatalf("allocation %s is %s", alloc.ID, alloc.ClientStatus)
	}
	return alloc
}

// newSandbox is an instant loopback server running the sandbox job.
func newSandbox(t *testing.T, opts Options) (*fixture, *api.Allocation) {
	t.Helper()
	opts.Instant = true
	f := newLoopbackFixture(t, opts)
	return f, runSandbox(t, f, sandboxJob(t))
}

// execOut is what an exec through nomad/api gave back.
type execOut struct {
	code           int
	stdout, stderr string
	err            error
}

// apiExec runs command in the task through nomad/api, bounded in time so
// that a broken session fails the test instead of hanging it.
func apiExec(t testing.TB, c *api.Client, alloc *api.Allocation, task string, tty bool, stdin io.Reader, command ...string) execOut {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := c.Allocations().Exec(ctx, alloc, task, tty, command, stdin, &out, &errb, nil, nil)
	return execOut{code: code, stdout: out.String(), stderr: errb.String(), err: err}
}

// mustExec runs a shell command in the sandbox task and fails the test
// unless it exits 0.
func mustExec(t testing.TB, f *fixture, alloc *api.Allocation, script string) string {
	t.Helper()
	r := apiExec(t, f.api, alloc, "sandbox", false, strings.NewReader(""), "/bin/sh", "-c", script)
	if r.err != nil || r.code != 0 {
		t.Fatalf("exec %q: code %d, err %v, stderr %q", script, r.code, r.err, r.stderr)
	}
	return r.stdout
}

// dialExec opens exec's WebSocket directly, as the recorder did (111).
func dialExec(t testing.TB, base, allocID, task string, tty bool, command []string, hdr http.Header) *websocket.Conn {
	t.Helper()
	cmd, _ := json.Marshal(command)
	q := url.Values{"task": {task}, "tty": {map[bool]string{true: "true", false: "false"}[tty]}, "command": {string(cmd)}}
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/client/allocation/" + allocID + "/exec?" + q.Encode()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial(u, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readAll reads messages until the connection ends and returns them with
// the error that ended it.
func readAll(t testing.TB, conn *websocket.Conn) ([]string, error) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var msgs []string
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, string(b))
	}
}

// allocDirOf is the host directory of an allocation, made if need be.
func allocDirOf(t testing.TB, f *fixture, allocID string) string {
	t.Helper()
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	ca, ok := f.srv.clientAllocLocked(allocID)
	if !ok {
		t.Fatalf("allocation %s unknown to the client", allocID)
	}
	dir, err := f.srv.dirs.ensure(ca)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// holder is a process an exec left running in the background, found by
// the FIFO it holds open: reading the FIFO ends when every writer, that
// process, is gone, which is how a test waits for a kill without polling.
type holder struct {
	fifo string
	r    *os.File
}

// newHolder makes the FIFO in the allocation's directory and returns the
// shell command that starts the holder in the background, in the exec's
// process group, and then waits.
func newHolder(t *testing.T, f *fixture, allocID string) (*holder, string) {
	t.Helper()
	fifo := filepath.Join(allocDirOf(t, f, allocID), "alloc", "tmp", "holder.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	return &holder{fifo: fifo}, `sleep 1000 > "$NOMAD_ALLOC_DIR/tmp/holder.fifo" & echo started; wait`
}

// open blocks until the background process has the FIFO open.
func (h *holder) open(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		r, err := os.Open(h.fifo)
		h.r = r
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the background process never opened the FIFO")
	}
}

// waitGone blocks until the background process has died.
func (h *holder) waitGone(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(h.r)
		h.r.Close()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the background process was not killed")
	}
}
