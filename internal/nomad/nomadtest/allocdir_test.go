package nomadtest

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
)

// TestAllocDirLayout: an allocation's directory is made under
// Options.AllocDir on the first request that needs it, laid out as a
// client's, and removed by the purge of its job; Close removes what is
// left and keeps the root it was given.
func TestAllocDirLayout(t *testing.T) {
	root := t.TempDir()
	f := newLoopbackFixture(t, Options{Instant: true, AllocDir: root})
	job := sandboxJob(t)
	alloc := runSandbox(t, f, job)
	other := sandboxJob(t)
	other.ID, other.Name = ptr("other"), ptr("other")
	otherAlloc := runSandbox(t, f, other)
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("the root holds %d entries before any request", len(entries))
	}

	for _, a := range []string{alloc.ID, otherAlloc.ID} {
		if resp, body := f.do(t, http.MethodGet, "/v1/client/fs/ls/"+a+"?path=/", nil, nil); resp.StatusCode != 200 {
			t.Fatalf("ls: %d %s", resp.StatusCode, body)
		}
	}
	dir := filepath.Join(root, alloc.ID)
	want := map[string]string{
		".":                           "drwxrwxrwx",
		"alloc":                       "drwxrwxrwx",
		"alloc/data":                  "drwxrwxrwx",
		"alloc/logs":                  "drwxrwxrwx",
		"alloc/tmp":                   "drwxrwxrwx",
		"alloc/logs/sandbox.stdout.0": "-rw-r--r--",
		"alloc/logs/sandbox.stderr.0": "-rw-r--r--",
		"sandbox":                     "drwxrwxrwx",
		"sandbox/local":               "drwxrwxrwx",
		"sandbox/private":             "drwxrwxrwx",
		"sandbox/secrets":             "drwxrwxrwx",
		"sandbox/tmp":                 "dtrwxrwxrwx",
	}
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got[rel] = fi.Mode().String()
		if !fi.IsDir() && fi.Size() != 0 {
			t.Errorf("%s holds %d bytes, want an empty log", rel, fi.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("tree %v, want %v", got, want)
	}
	for p, mode := range want {
		if got[p] != mode {
			t.Errorf("%s: mode %q, want %q", p, got[p], mode)
		}
	}

	f.srv.StopJob("default", *job.ID, true)
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after the purge the directory is still there: %v", err)
	}
	if resp, _ := f.do(t, http.MethodGet, "/v1/client/fs/ls/"+alloc.ID+"?path=/", nil, nil); resp.StatusCode != 404 {
		t.Errorf("ls after the purge: %d, want 404", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(root, otherAlloc.ID)); err != nil {
		t.Errorf("the other job's directory went too: %v", err)
	}
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(root); err != nil || len(entries) != 0 {
		t.Errorf("after Close the root holds %v (%v), want it empty and kept", entries, err)
	}
}

// TestAllocDirTemporary: without Options.AllocDir the directories live in
// a temporary root, made on first use and removed by Close.
func TestAllocDirTemporary(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	f.srv.dirs.mu.Lock()
	made := f.srv.dirs.root
	f.srv.dirs.mu.Unlock()
	if made != "" {
		t.Fatalf("a root %s before any request", made)
	}
	dir := allocDirOf(t, f, alloc.ID)
	root := filepath.Dir(dir)
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close the root %s is still there: %v", root, err)
	}
}

// TestClientEndpointsFollowTheAllocation: the client answers for an
// allocation once it has received it; the task's logs and exec once the
// task has started (default timing, under synctest).
func TestClientEndpointsFollowTheAllocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := New(Options{})
		mn := NewMemNet()
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(mn.Listener()) }()
		defer func() {
			_ = srv.Close()
			_ = hs.Close()
			mn.Close()
		}()
		f := &fixture{srv: srv, http: mn.HTTPClient(), base: mn.URL()}
		job := sandboxJob(t)
		resp, body := f.do(t, http.MethodPut, "/v1/jobs", mustJSON(map[string]any{"Job": job}), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("register: %d %s", resp.StatusCode, body)
		}
		time.Sleep(defaultEvalDelay)
		synctest.Wait()
		srv.mu.Lock()
		id := srv.jobs[nsKey{"default", *job.ID}].allocs[0].a.ID
		srv.mu.Unlock()
		dialer := websocket.Dialer{NetDialContext: mn.Dial}
		steps := []struct {
			name        string
			at          time.Duration // since the plan
			logs        int
			logsBody    string
			closeReason string
		}{
			{"placed, not received", 0, 404, `Unknown allocation "` + id + `"`, `Unknown allocation "` + id + `"`},
			{"received, not started", defaultClientDelay, 404, `task "sandbox" not started yet. No logs available`, `task "sandbox" not started yet.`},
			{"running", defaultSchedulingDelay, 200, "", ""},
		}
		var now time.Duration
		for _, st := range steps {
			time.Sleep(st.at - now)
			now = st.at
			synctest.Wait()
			resp, body := f.do(t, http.MethodGet, "/v1/client/fs/logs/"+id+"?task=sandbox&type=stdout&plain=true", nil, nil)
			if resp.StatusCode != st.logs || string(body) != st.logsBody {
				t.Errorf("%s: logs %d %q, want %d %q", st.name, resp.StatusCode, body, st.logs, st.logsBody)
			}
			u := "ws://" + memAddr + "/v1/client/allocation/" + id + "/exec?task=sandbox&command=%5B%22true%22%5D"
			conn, _, err := dialer.Dial(u, nil)
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := readAll(t, conn)
			conn.Close()
			var ce *websocket.CloseError
			switch {
			case st.closeReason == "":
				if len(msgs) == 0 || msgs[len(msgs)-1] != `{"exited":true,"result":{}}` {
					t.Errorf("%s: exec %q %v", st.name, msgs, err)
				}
			case !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != st.closeReason:
				t.Errorf("%s: exec %v, want 1008 %q", st.name, err, st.closeReason)
			}
		}
	})
}
