package nomadtest

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestLogs reads a task's stdout, which an exec appended to as a raw_exec
// task's output goes there, plain and framed, from the start, from an
// offset and as a tail.
func TestLogs(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	mustExec(t, f, alloc, `printf 'one\ntwo\nthree\n' >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`)
	base := "/v1/client/fs/logs/" + alloc.ID + "?task=sandbox&"
	cases := []struct {
		name  string
		query string
		ctype string
		body  string
	}{
		{"plain", "type=stdout&plain=true", "text/plain", "one\ntwo\nthree\n"},
		{"framed", "type=stdout", "application/json", `{"Data":"` + b64("one\ntwo\nthree\n") + `","File":"alloc/logs/sandbox.stdout.0","Offset":14}`},
		{"from an offset", "type=stdout&plain=true&offset=4", "text/plain", "two\nthree\n"},
		{"tail", "type=stdout&plain=true&origin=end&offset=6", "text/plain", "three\n"},
		{"tail longer than the file", "type=stdout&plain=true&origin=end&offset=100", "text/plain", "one\ntwo\nthree\n"},
		{"empty stderr", "type=stderr", "application/json", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, http.MethodGet, base+tc.query, nil, nil)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype || string(body) != tc.body {
				t.Errorf("%d %q %q, want %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.ctype, tc.body)
			}
		})
	}
	t.Run("api", func(t *testing.T) {
		frames, errs := f.api.AllocFS().Logs(alloc, false, "sandbox", "stdout", api.OriginEnd, 10, nil, nil)
		var got []byte
		for fr := range frames {
			got = append(got, fr.Data...)
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		if string(got) != "two\nthree\n" {
			t.Errorf("%q", got)
		}
	})
}

// TestLogsFollow: a followed log sends what is appended after the request
// started, here by an exec, as on a real raw_exec agent.
func TestLogsFollow(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	mustExec(t, f, alloc, `echo first >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`)
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errs := f.api.AllocFS().Logs(alloc, true, "sandbox", "stdout", api.OriginStart, 0, cancel, nil)
	next := func() *api.StreamFrame {
		t.Helper()
		select {
		case fr := <-frames:
			return fr
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("no frame")
		}
		return nil
	}
	if fr := next(); string(fr.Data) != "first\n" || fr.Offset != 6 || fr.File != "alloc/logs/sandbox.stdout.0" {
		t.Fatalf("first frame %+v", fr)
	}
	mustExec(t, f, alloc, `echo more >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`)
	if fr := next(); string(fr.Data) != "more\n" || fr.Offset != 11 {
		t.Fatalf("second frame %+v", fr)
	}
}

// TestConformanceFSFollow replays the recorded follows under synctest:
// plain logs send the data and nothing while idle (rawexec-12), a framed
// stream sends `{}` a second after the data (rawexec-16); and a followed
// file sends what is appended, then its truncation, then its deletion,
// which ends the stream.
func TestConformanceFSFollow(t *testing.T) {
	rec12 := parseFSRecording(t, "rawexec-12-logs-follow-2s.http")
	rec16 := parseFSRecording(t, "rawexec-16-fs-stream.http")
	synctest.Test(t, func(t *testing.T) {
		f, mn := newMemSandbox(t)
		alloc := runSandbox(t, f, sandboxJob(t))
		dir := allocDirOf(t, f, alloc.ID)
		writeFile(t, logFile(dir, "sandbox", "stdout"), "hello-stdout\n")
		if err := os.MkdirAll(filepath.Join(dir, "sandbox", "local", "work"), 0o755); err != nil {
			t.Fatal(err)
		}
		work := filepath.Join(dir, "sandbox", "local", "work", "a.txt")
		writeFile(t, work, "abc\n")
		for _, rec := range []recording{rec12, rec16} {
			target := strings.ReplaceAll(rec.target, recordedFSAlloc, alloc.ID)
			resp, c := openBody(t, mn, target)
			// What arrived before curl's 2s timeout (-m 2): the agent's
			// second heartbeat, due at 2s, had not.
			got := c.take(2*time.Second - time.Millisecond)
			resp.Body.Close()
			if resp.StatusCode != rec.status || resp.Header.Get("Content-Type") != rec.headers.Get("Content-Type") || got != string(rec.body) {
				t.Errorf("%s: %d %q %q, recorded %d %q %q", target, resp.StatusCode, resp.Header.Get("Content-Type"), got,
					rec.status, rec.headers.Get("Content-Type"), rec.body)
			}
		}

		resp, c := openBody(t, mn, "/v1/client/fs/stream/"+alloc.ID+"?path=/sandbox/local/work/a.txt&origin=end&offset=0")
		defer resp.Body.Close()
		steps := []struct {
			name  string
			do    func()
			after time.Duration
			want  string
		}{
			// The headers, and so the response, came with the first
			// heartbeat: two more in 2.5s.
			{"idle", func() {}, 2500 * time.Millisecond, "{}{}"},
			{"append", func() { appendFile(t, work, "de\n") }, streamPoll,
				`{"Data":"` + b64("de\n") + `","File":"/sandbox/local/work/a.txt","Offset":7}`},
			{"truncate", func() { writeFile(t, work, "x\n") }, streamPoll,
				`{"Data":"` + b64("x\n") + `","File":"/sandbox/local/work/a.txt","FileEvent":"file truncated","Offset":2}`},
			{"delete", func() { _ = os.Remove(work) }, streamPoll,
				`{"File":"/sandbox/local/work/a.txt","FileEvent":"file deleted","Offset":2}`},
		}
		if got := c.take(0); got != "{}" {
			t.Errorf("the first heartbeat: %q", got)
		}
		for i, st := range steps {
			st.do()
			got := c.take(st.after)
			if i > 0 {
				// The heartbeat keeps its one-second beat whatever
				// else is sent.
				got = strings.ReplaceAll(got, "{}", "")
			}
			if got != st.want {
				t.Errorf("%s: %q, want %q", st.name, got, st.want)
			}
		}
		if err := c.end(); err != io.EOF {
			t.Errorf("after the deletion the stream ended with %v, want EOF", err)
		}
	})
}

// newMemSandbox is an instant server served over a MemNet, for synctest.
func newMemSandbox(t *testing.T) (*fixture, *MemNet) {
	t.Helper()
	srv := New(Options{Instant: true})
	mn := NewMemNet()
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(mn.Listener()) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = hs.Close()
		mn.Close()
	})
	c, err := api.NewClient(&api.Config{Address: mn.URL(), HttpClient: mn.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, api: c, http: mn.HTTPClient(), base: mn.URL()}, mn
}

// openBody starts a streaming GET, like curl without --compressed, and
// collects its body as it arrives.
func openBody(t *testing.T, mn *MemNet, target string) (*http.Response, *collector) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, mn.URL()+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := mn.HTTPClient()
	c.Transport.(*http.Transport).DisableCompression = true
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{done: make(chan struct{})}
	go col.run(resp.Body)
	return resp, col
}

// collector reads a response body in the background.
type collector struct {
	mu   sync.Mutex
	buf  []byte
	err  error
	done chan struct{}
}

func (c *collector) run(r io.Reader) {
	defer close(c.done)
	b := make([]byte, 4096)
	for {
		n, err := r.Read(b)
		c.mu.Lock()
		c.buf = append(c.buf, b[:n]...)
		c.err = err
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// take lets d of fake time pass and returns what arrived meanwhile: once
// every goroutine of the bubble waits, whatever the server sent has been
// read.
func (c *collector) take(d time.Duration) string {
	time.Sleep(d)
	synctest.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := string(c.buf)
	c.buf = nil
	return s
}

// end is how the body ended, once it has.
func (c *collector) end() error {
	<-c.done
	return c.err
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
