package nomadtest

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

// recordedFSAlloc is the allocation the raw_exec file-system facts were
// recorded on; recordedDataDir is how the recorder rewrote the agent's
// data dir (lifecycle README section 4).
const (
	recordedFSAlloc = "8d1471a7-d0b5-4b2d-24b8-6acaa426f36e"
	recordedDataDir = "/var/lib/nomad/alloc"
)

// parseFSRecording reads one lifecycle/fs file: the request line, a blank
// line, then `curl -i` output, the body as curl printed it, chunks joined.
func parseFSRecording(t *testing.T, name string) recording {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fsFacts, name))
	if err != nil {
		t.Fatal(err)
	}
	text, _, _ := strings.Cut(string(raw), "\n### time_total")
	reqLine, resp, _ := strings.Cut(text, "\n\n")
	f := strings.Fields(reqLine)
	rec := recording{method: f[0], target: f[1], headers: http.Header{}}
	head, body, _ := strings.Cut(resp, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	rec.status, _ = strconv.Atoi(strings.Fields(lines[0])[1])
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ": ")
		rec.headers.Add(k, v)
	}
	rec.body = []byte(body)
	return rec
}

// fileFields are the fields of an ls or stat entry that do not depend on
// the host: not ModTime, and not the size of a directory.
func fileFields(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	list, ok := v.([]any)
	if !ok {
		list = []any{v}
	}
	var out []map[string]any
	for _, e := range list {
		m := e.(map[string]any)
		delete(m, "ModTime")
		if m["IsDir"] == true {
			delete(m, "Size")
		}
		out = append(out, m)
	}
	return out
}

// TestConformanceFS replays the raw_exec file-system facts (lifecycle/fs
// rawexec-01 to 16) on the sandbox, its files made as the recorded task
// made them, by exec: status, Content-Type, the Vary and anti-XSS headers,
// and the body, exactly or field by field.
func TestConformanceFS(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	mustExec(t, f, alloc, `echo hello-stdout >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"
echo hello-stderr >> "$NOMAD_ALLOC_DIR/logs/sandbox.stderr.0"
mkdir -p local/work; printf 'abc\n' > local/work/a.txt`)
	dir := allocDirOf(t, f, alloc.ID)
	const (
		exact  = "exact"
		fields = "fields"
		none   = "none"
	)
	cases := []struct {
		file string
		body string
		// skipNames are recorded entries a raw_exec task's executor or
		// the agent's secrets mount made, which this server does not.
		skipNames []string
	}{
		{file: "rawexec-01-fs-ls-root.http", body: fields},
		{file: "rawexec-02-fs-ls-task.http", body: fields, skipNames: []string{"executor.out"}},
		{file: "rawexec-03-fs-ls-local-work.http", body: fields},
		{file: "rawexec-04-fs-stat-file.http", body: fields},
		{file: "rawexec-05-fs-cat-file.http", body: exact},
		{file: "rawexec-06-fs-cat-missing.http", body: exact},
		{file: "rawexec-07-fs-cat-dir.http", body: exact},
		{file: "rawexec-08-fs-cat-traversal.http", body: exact},
		{file: "rawexec-09-fs-readat.http", body: exact},
		{file: "rawexec-10-logs-stdout-plain.http", body: exact},
		{file: "rawexec-11-logs-stderr-framed.http", body: exact},
		{file: "rawexec-13-logs-bad-task.http", body: exact},
		{file: "rawexec-14-fs-ls-bad-alloc.http", body: exact},
		{file: "rawexec-15-fs-cat-secrets-dir.http", body: none},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			rec := parseFSRecording(t, tc.file)
			target := strings.ReplaceAll(rec.target, recordedFSAlloc, alloc.ID)
			resp, body := f.do(t, rec.method, target, nil, nil)
			if resp.StatusCode != rec.status {
				t.Fatalf("status %d %q, recorded %d", resp.StatusCode, body, rec.status)
			}
			for _, h := range []string{"Content-Type", "Vary", "Content-Security-Policy", "X-Content-Type-Options", "X-Xss-Protection"} {
				if got, want := resp.Header.Values(h), rec.headers.Values(h); !slices.Equal(got, want) {
					t.Errorf("%s %q, recorded %q", h, got, want)
				}
			}
			want := strings.ReplaceAll(string(rec.body), recordedDataDir+"/"+recordedFSAlloc, dir)
			switch tc.body {
			case exact:
				if string(body) != want {
					t.Errorf("body %q, recorded %q", body, want)
				}
			case fields:
				w := fileFields(t, []byte(want))
				w = slices.DeleteFunc(w, func(m map[string]any) bool { name, _ := m["Name"].(string); return slices.Contains(tc.skipNames, name) })
				if diff := cmp.Diff(w, fileFields(t, body)); diff != "" {
					t.Errorf("entries differ (-recorded +got):\n%s", diff)
				}
			}
		})
	}
}

// TestFSThroughAPI reads files an exec wrote through nomad/api's AllocFS,
// as a program would; a missing file comes back from Cat as the error's
// text, since the agent answers it 200.
func TestFSThroughAPI(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	mustExec(t, f, alloc, `mkdir -p local/work && printf 'abc\n' > local/work/a.txt && printf '{"k":1}' > local/work/b.json && : > local/work/empty`)
	fs := f.api.AllocFS()
	t.Run("List", func(t *testing.T) {
		files, _, err := fs.List(alloc, "/sandbox/local/work", nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, fi := range files {
			names = append(names, fi.Name+" "+fi.FileMode+" "+strconv.FormatInt(fi.Size, 10))
		}
		if want := []string{"a.txt -rw-r--r-- 4", "b.json -rw-r--r-- 7", "empty -rw-r--r-- 0"}; !slices.Equal(names, want) {
			t.Errorf("entries %q, want %q", names, want)
		}
	})
	t.Run("Stat", func(t *testing.T) {
		for path, want := range map[string]string{
			"/sandbox/local/work/a.txt":  "text/plain; charset=utf-8",
			"/sandbox/local/work/b.json": "application/json",
			"/sandbox/local/work/empty":  "application/octet-stream",
			"/sandbox/local/work":        "application/octet-stream",
		} {
			fi, _, err := fs.Stat(alloc, path, nil)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if fi.ContentType != want || fi.IsDir != strings.HasSuffix(path, "work") {
				t.Errorf("%s: %+v, want ContentType %q", path, fi, want)
			}
		}
	})
	read := func(t *testing.T, rc io.ReadCloser, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name string
		got  func() (io.ReadCloser, error)
		want string
	}{
		{"Cat", func() (io.ReadCloser, error) { return fs.Cat(alloc, "/sandbox/local/work/a.txt", nil) }, "abc\n"},
		{"ReadAt", func() (io.ReadCloser, error) { return fs.ReadAt(alloc, "/sandbox/local/work/a.txt", 1, 2, nil) }, "bc"},
		{"ReadAt without limit", func() (io.ReadCloser, error) { return fs.ReadAt(alloc, "/sandbox/local/work/a.txt", 2, 0, nil) }, "c\n"},
		{"Cat of a missing file", func() (io.ReadCloser, error) { return fs.Cat(alloc, "/sandbox/nope", nil) },
			"stat " + filepath.Join(allocDirOf(t, f, alloc.ID), "sandbox", "nope") + ": no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := tc.got()
			if got := read(t, rc, err); got != tc.want {
				t.Errorf("%q, want %q", got, tc.want)
			}
		})
	}
	t.Run("List of a missing directory", func(t *testing.T) {
		_, _, err := fs.List(alloc, "/sandbox/nope", nil)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("err %v, want a 404", err)
		}
	})
}

// TestFSRefusals: every error, and its status, endpoint by endpoint;
// cat's and readat's come back 200.
func TestFSRefusals(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	mustExec(t, f, alloc, `printf s3cret > secrets/token && printf p > private/p`)
	dir := allocDirOf(t, f, alloc.ID)
	const zero = "00000000-0000-0000-0000-000000000000"
	cases := []struct {
		target string
		status int
		body   string
	}{
		{"/v1/client/fs/ls/" + zero + "?path=/", 404, `Unknown allocation "` + zero + `"`},
		{"/v1/client/fs/ls/ID?path=/../x", 500, "Path escapes the alloc directory"},
		{"/v1/client/fs/ls/ID?path=/nope", 404, "open " + dir + "/nope: no such file or directory"},
		{"/v1/client/fs/stat/ID", 400, "must provide a file name"},
		{"/v1/client/fs/stat/ID?path=/nope", 404, "stat " + dir + "/nope: no such file or directory"},
		{"/v1/client/fs/cat/" + zero + "?path=/x", 200, `Unknown allocation "` + zero + `"`},
		{"/v1/client/fs/cat/ID", 200, "must provide a file name"},
		{"/v1/client/fs/cat/ID?path=/sandbox/secrets/token", 200, "Reading secret file prohibited: /sandbox/secrets/token"},
		{"/v1/client/fs/cat/ID?path=/sandbox/private/p", 200, "Reading private file prohibited: /sandbox/private/p"},
		{"/v1/client/fs/readat/ID?path=/sandbox/secrets/token", 200, `error parsing offset: strconv.ParseInt: parsing "": invalid syntax`},
		{"/v1/client/fs/readat/ID?path=/../etc&offset=0", 200, "Path escapes the alloc directory"},
		{"/v1/client/fs/stream/ID?path=/nope", 400, "stat " + dir + "/nope: no such file or directory"},
		{"/v1/client/fs/stream/ID?path=/sandbox", 400, `file "/sandbox" is a directory`},
		{"/v1/client/fs/stream/ID?path=/sandbox/local&origin=middle", 400, "origin must be start or end"},
		{"/v1/client/fs/logs/ID?task=sandbox", 400, "must provide log type (stdout/stderr)"},
		{"/v1/client/fs/logs/ID?type=stdout", 400, "must provide task name"},
		{"/v1/client/fs/logs/" + zero + "?task=sandbox&type=stdout", 404, `Unknown allocation "` + zero + `"`},
	}
	for _, tc := range cases {
		target := strings.ReplaceAll(tc.target, "/ID", "/"+alloc.ID)
		t.Run(tc.target, func(t *testing.T) {
			resp, body := f.do(t, http.MethodGet, target, nil, nil)
			if resp.StatusCode != tc.status || string(body) != tc.body || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("%d %q %q, want %d %q text/plain", resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status, tc.body)
			}
		})
	}
}

// TestFSACL: ls, stat, cat, readat and stream need read-fs; logs read-fs
// or read-logs. A denial is 403, except for cat and readat.
func TestFSACL(t *testing.T) {
	f := newLoopbackFixture(t, Options{Instant: true, ACLToken: recordedMgmtSecret})
	f.api.SetSecretID(recordedMgmtSecret)
	alloc := runSandbox(t, f, sandboxJob(t))
	rules := map[string]string{
		"read":      `namespace "default" { policy = "read" }`,
		"read-logs": `namespace "default" { capabilities = ["read-logs"] }`,
		"read-fs":   `namespace "default" { capabilities = ["read-fs"] }`,
	}
	secrets := map[string]string{}
	for name, r := range rules {
		if err := f.srv.SetACLPolicy(name, r); err != nil {
			t.Fatal(err)
		}
		s, err := f.srv.CreateACLToken(name, name)
		if err != nil {
			t.Fatal(err)
		}
		secrets[name] = s
	}
	targets := map[string]string{
		"ls":     "/v1/client/fs/ls/" + alloc.ID + "?path=/",
		"cat":    "/v1/client/fs/cat/" + alloc.ID + "?path=/alloc/logs/sandbox.stdout.0",
		"stream": "/v1/client/fs/stream/" + alloc.ID + "?path=/alloc/logs/sandbox.stdout.0&follow=false",
		"logs":   "/v1/client/fs/logs/" + alloc.ID + "?task=sandbox&type=stdout",
	}
	cases := []struct {
		policy, endpoint string
		status           int
		body             string
	}{
		{"read", "ls", 403, "Permission denied"},
		{"read", "cat", 200, "Permission denied"},
		{"read", "stream", 403, "Permission denied"},
		{"read", "logs", 403, "Permission denied"},
		{"read-logs", "ls", 403, "Permission denied"},
		{"read-logs", "logs", 200, ""},
		{"read-fs", "ls", 200, ""},
		{"read-fs", "cat", 200, ""},
		{"read-fs", "logs", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.policy+" "+tc.endpoint, func(t *testing.T) {
			resp, body := f.do(t, http.MethodGet, targets[tc.endpoint], nil, http.Header{"X-Nomad-Token": {secrets[tc.policy]}})
			if resp.StatusCode != tc.status || tc.body != "" && string(body) != tc.body {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
		})
	}
	// nomad/api reaches the same answers.
	c, err := api.NewClient(&api.Config{Address: f.base, SecretID: secrets["read"]})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.AllocFS().List(alloc, "/", nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("api List with read: %v, want a 403", err)
	}
}
