//go:build realnomad

package nomad

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// TestRealNomadInside works inside a sandbox the controller runs, through
// its API, as the API tests do against the test server: exec (exit codes,
// stdin, env as written), byte-exact files under awkward names, hostile
// paths, a directory as tar, logs followed, a stopped sandbox, the session
// and size limits. Paths are under the task's $NOMAD_TASK_DIR, which
// raw_exec shows as a host path and exec's chroot as /local.
func TestRealNomadInside(t *testing.T) {
	t.Parallel()
	s := newSuite(t)
	c := s.startController(t.TempDir(), "-exec-sessions-per-sandbox", "2", "-max-file-bytes", "2097152")
	name, off := s.prefix+"-in", s.prefix+"-off"
	decl := t.TempDir()
	src := fmt.Sprintf(`sandbox %q {
  driver    = %q
  network   = "host"
  command   = ["/bin/sh", "-c", "echo started; exec /bin/sleep 3600"]
  vcpus     = 0.1
  memory_mb = 64
  env       = { FROM_SPEC = "spec value" }
}
sandbox %q {
  driver    = %q
  network   = "host"
  command   = ["/bin/sleep", "3600"]
  vcpus     = 0.1
  memory_mb = 32
  state     = "stopped"
}
`, name, s.driver, off, s.driver)
	if err := os.WriteFile(filepath.Join(decl, "in.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustAkctl("apply", "-f", decl)
	c.mustAkctl("wait", "--for=ready", "-n", s.ns, "--timeout", converge.String(), name)
	eventually(t, converge, "the stopped sandbox reports Stopped", func() (bool, string) {
		sb := c.sandbox(off)
		return sb.Status.Phase == "Stopped", sb.Status.Phase
	})
	base := "http://controller/v1/sandboxes/" + url.PathEscape(s.ns) + "/"

	do := func(method, u string, body io.Reader) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	type execResult struct {
		ExitCode       int
		Stdout, Stderr []byte
	}
	execIn := func(req map[string]any) execResult {
		t.Helper()
		b, _ := json.Marshal(req)
		resp, out := do(http.MethodPost, base+name+"/exec", bytes.NewReader(b))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("exec %v: %d %s", req["command"], resp.StatusCode, out)
		}
		var r execResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	files := func(p string, kv ...string) string {
		q := url.Values{"path": {p}}
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return base + name + "/files?" + q.Encode()
	}
	taskDir := string(execIn(map[string]any{"command": []string{"/bin/sh", "-c", `printf %s "$NOMAD_TASK_DIR"`}}).Stdout)
	if !path.IsAbs(taskDir) {
		t.Fatalf("NOMAD_TASK_DIR %q", taskDir)
	}

	t.Run("exec", func(t *testing.T) {
		hostile := "it's \"quoted\" $HOME `id` $(id)\nsecond line  "
		for _, tt := range []struct {
			req    map[string]any
			code   int
			stdout string
			stderr string
		}{
			{map[string]any{"command": []string{"/bin/true"}}, 0, "", ""},
			{map[string]any{"command": []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 7"}}, 7, "out\n", "err"},
			{map[string]any{"command": []string{"/nonexistent/program"}}, 127, "", "failed to start command"},
			{map[string]any{"command": []string{"/bin/cat"}, "stdin": []byte("in\x00put\n")}, 0, "in\x00put\n", ""},
			{map[string]any{"command": []string{"/bin/sh", "-c", `printf '%s' "$HOSTILE"`}, "env": map[string]string{"HOSTILE": hostile}}, 0, hostile, ""},
			{map[string]any{"command": []string{"/bin/sh", "-c", `printf '%s' "$FROM_SPEC"`}}, 0, "spec value", ""},
			{map[string]any{"command": []string{"/bin/pwd"}, "workdir": taskDir}, 0, taskDir + "\n", ""},
		} {
			r := execIn(tt.req)
			if r.ExitCode != tt.code || string(r.Stdout) != tt.stdout || !strings.Contains(string(r.Stderr), tt.stderr) {
				t.Errorf("exec %v: exit %d stdout %q stderr %q; want %d %q containing %q",
					tt.req["command"], r.ExitCode, r.Stdout, r.Stderr, tt.code, tt.stdout, tt.stderr)
			}
		}
		// The exec driver stops answering every exec of a task after one
		// of a missing program: the sandbox must still answer after it.
		if r := execIn(map[string]any{"command": []string{"/bin/echo", "still here"}}); r.ExitCode != 0 || string(r.Stdout) != "still here\n" {
			t.Errorf("exec after a missing program: exit %d stdout %q stderr %q", r.ExitCode, r.Stdout, r.Stderr)
		}
	})

	t.Run("files", func(t *testing.T) {
		data := make([]byte, 1<<20)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"with space.bin", `it's "quoted" $x.bin`, "ünïcødé 日本.bin"} {
			p := taskDir + "/new dir/" + n
			if resp, b := do(http.MethodPut, files(p, "mkdir", "true", "mode", "0640"), bytes.NewReader(data)); resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT %s: %d %s", p, resp.StatusCode, b)
			}
			resp, got := do(http.MethodGet, files(p), nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) || resp.Header.Get("X-Agentkernel-File-Mode") != "0640" {
				t.Fatalf("GET %s: %d, %d bytes (equal %v), mode %s", p, resp.StatusCode, len(got), bytes.Equal(got, data),
					resp.Header.Get("X-Agentkernel-File-Mode"))
			}
		}
		var list struct{ Entries []struct{ Name string } }
		resp, b := do(http.MethodGet, files(taskDir+"/new dir"), nil)
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Entries) != 3 {
			t.Errorf("list: %d %s", resp.StatusCode, b)
		}
		if resp, b := do(http.MethodGet, files(taskDir+"/missing"), nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET missing: %d %s", resp.StatusCode, b)
		}
		for _, p := range []string{"relative", taskDir + "/../x", "/tmp/a\x00b"} {
			if resp, _ := do(http.MethodGet, files(p), nil); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("GET %q: %d, want 400", p, resp.StatusCode)
			}
		}
		if resp, b := do(http.MethodPut, files(taskDir+"/big"), bytes.NewReader(make([]byte, 3<<20))); resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("PUT 3 MiB: %d %s, want 413", resp.StatusCode, b)
		}
		if resp, b := do(http.MethodDelete, files(taskDir+"/new dir", "recursive", "true"), nil); resp.StatusCode != http.StatusOK {
			t.Errorf("DELETE: %d %s", resp.StatusCode, b)
		}
	})

	// Outside the task's directories a read goes through an exec session
	// (as every read of a docker sandbox's own files does), not Nomad's
	// file-system API.
	t.Run("files outside the task directory", func(t *testing.T) {
		var suffix [4]byte
		if _, err := rand.Read(suffix[:]); err != nil {
			t.Fatal(err)
		}
		dir := fmt.Sprintf("/tmp/ak-inside-%x", suffix)
		defer do(http.MethodDelete, files(dir, "recursive", "true"), nil)
		data := make([]byte, 256<<10)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		p := dir + "/it's here.bin"
		if resp, b := do(http.MethodPut, files(p, "mkdir", "true", "mode", "0600"), bytes.NewReader(data)); resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", p, resp.StatusCode, b)
		}
		resp, got := do(http.MethodGet, files(p), nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) || resp.Header.Get("X-Agentkernel-File-Mode") != "0600" {
			t.Errorf("GET %s: %d, %d bytes (equal %v), mode %s", p, resp.StatusCode, len(got), bytes.Equal(got, data), resp.Header.Get("X-Agentkernel-File-Mode"))
		}
		if resp, b := do(http.MethodGet, files(dir+"/missing"), nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET missing: %d %s", resp.StatusCode, b)
		}
		if resp, b := do(http.MethodDelete, files(dir, "recursive", "true"), nil); resp.StatusCode != http.StatusOK {
			t.Errorf("DELETE: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("directory as tar", func(t *testing.T) {
		var in bytes.Buffer
		tw := tar.NewWriter(&in)
		want := map[string]string{"a.txt": "a\n", "sub/b c.txt": "b\x00c"}
		for _, n := range []string{"a.txt", "sub/b c.txt"} {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(want[n])), Typeflag: tar.TypeReg})
			io.WriteString(tw, want[n])
		}
		tw.Close()
		dir := taskDir + "/tree"
		if resp, b := do(http.MethodPut, files(dir, "archive", "tar", "mkdir", "true"), &in); resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT tar: %d %s", resp.StatusCode, b)
		}
		resp, b := do(http.MethodGet, files(dir, "archive", "tar"), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET tar: %d", resp.StatusCode)
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
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("tree read back %v, want %v", got, want)
		}
	})

	t.Run("logs", func(t *testing.T) {
		execIn(map[string]any{"command": []string{"/bin/sh", "-c", `printf 'marker-1\n' >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`}})
		follow := &http.Client{Transport: c.hc.Transport}
		ctx, cancel := context.WithTimeout(t.Context(), converge)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+name+"/logs?follow=true", nil)
		resp, err := follow.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("follow: %v %v", err, resp)
		}
		defer resp.Body.Close()
		var got []byte
		buf := make([]byte, 4096)
		appended := false
		for !strings.Contains(string(got), "marker-2\n") {
			n, err := resp.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("follow read %q: %v", got, err)
			}
			if !appended && strings.Contains(string(got), "marker-1\n") {
				appended = true
				execIn(map[string]any{"command": []string{"/bin/sh", "-c", `printf 'marker-2\n' >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`}})
			}
		}
		// Two followed logs hold the sandbox's two slots.
		req2, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+name+"/logs?follow=true", nil)
		resp2, err := follow.Do(req2)
		if err != nil || resp2.StatusCode != http.StatusOK {
			t.Fatalf("second follow: %v %v", err, resp2)
		}
		defer resp2.Body.Close()
		r, b := do(http.MethodPost, base+name+"/exec", strings.NewReader(`{"command":["/bin/true"]}`))
		if r.StatusCode != http.StatusTooManyRequests {
			t.Errorf("a third session: %d %s, want 429", r.StatusCode, b)
		}

		// The last line, then what comes after it. The follows give
		// their sessions back once the controller sees them gone.
		resp.Body.Close()
		resp2.Body.Close()
		appendLine := func(line string) {
			eventually(t, converge, "an exec to append to the log", func() (bool, string) {
				r, b := do(http.MethodPost, base+name+"/exec", strings.NewReader(
					`{"command":["/bin/sh","-c","printf '%s\\n' \"$1\" >> \"$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0\"","sh","`+line+`"]}`))
				return r.StatusCode == http.StatusOK, string(b)
			})
		}
		// The closed follows' slots come back once the controller notices
		// (asynchronously): until then the limit answers 429.
		var respT *http.Response
		eventually(t, converge, "a follow with tail, once the closed follows' slots are back", func() (bool, string) {
			reqT, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+name+"/logs?follow=true&tail=1", nil)
			r, err := follow.Do(reqT)
			if err != nil {
				t.Fatalf("follow with tail: %v", err)
			}
			if r.StatusCode == http.StatusTooManyRequests {
				r.Body.Close()
				return false, "429"
			}
			if r.StatusCode != http.StatusOK {
				t.Fatalf("follow with tail: %v", r)
			}
			respT = r
			return true, ""
		})
		var gotT []byte
		appended = false
		for !strings.Contains(string(gotT), "marker-3\n") {
			n, err := respT.Body.Read(buf)
			gotT = append(gotT, buf[:n]...)
			if err != nil {
				t.Fatalf("follow with tail read %q: %v", gotT, err)
			}
			if !appended && strings.Contains(string(gotT), "marker-2\n") {
				appended = true
				appendLine("marker-3")
			}
		}
		respT.Body.Close()
		if string(gotT) != "marker-2\nmarker-3\n" {
			t.Errorf("tail=1 and follow: %q, want the last line and the new one", gotT)
		}
	})

	// The same through akctl, whose exec is the streaming form: a
	// WebSocket to the controller, which opens Nomad's own.
	t.Run("akctl", func(t *testing.T) {
		run := func(stdin []byte, args ...string) (string, string, int) {
			t.Helper()
			cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "akctl"), append([]string{"--addr", "unix://" + c.sock}, args...)...)
			var out, errb bytes.Buffer
			cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errb
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); ok {
				return out.String(), errb.String(), ee.ExitCode()
			} else if err != nil {
				t.Fatalf("akctl %s: %v", strings.Join(args, " "), err)
			}
			return out.String(), errb.String(), 0
		}
		hostile := "it's \"quoted\" $HOME `id`\nsecond  line"
		for _, tt := range []struct {
			stdin          string
			args           []string
			code           int
			stdout, stderr string
		}{
			{"", []string{"exec", "-n", s.ns, name, "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7"}, 7, "out\n", "err"},
			{"in\x00put", []string{"exec", "-i", "-n", s.ns, "-e", "V=" + hostile, name, "--", "/bin/sh", "-c", `cat; printf '%s' "$V"`}, 0, "in\x00put" + hostile, ""},
			{"", []string{"exec", "-n", s.ns, name, "--", "/nonexistent/program"}, 127, "", "/nonexistent/program"},
			{"", []string{"exec", "-n", s.ns, off, "--", "/bin/true"}, 1, "", "Stopped"},
		} {
			out, errOut, code := run([]byte(tt.stdin), tt.args...)
			if code != tt.code || out != tt.stdout || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("akctl %s: exit %d stdout %q stderr %q; want %d %q containing %q",
					strings.Join(tt.args, " "), code, out, errOut, tt.code, tt.stdout, tt.stderr)
			}
		}
		data := make([]byte, 256<<10)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		local := filepath.Join(t.TempDir(), "a file.bin")
		if err := os.WriteFile(local, data, 0o600); err != nil {
			t.Fatal(err)
		}
		remote := s.ns + "/" + name + ":" + taskDir + "/cp dir/a file.bin"
		if _, errOut, code := run(nil, "cp", local, remote); code != 0 {
			t.Fatalf("cp in: %d %s", code, errOut)
		}
		back := filepath.Join(t.TempDir(), "back.bin")
		if _, errOut, code := run(nil, "cp", remote, back); code != 0 {
			t.Fatalf("cp out: %d %s", code, errOut)
		}
		if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, data) {
			t.Errorf("cp round trip: %v, equal %v", err, bytes.Equal(got, data))
		}
		if _, errOut, code := run(nil, "logs", "-n", s.ns, "--tail", "5", name); code != 0 {
			t.Errorf("logs: %d %s", code, errOut)
		}
	})

	t.Run("not running", func(t *testing.T) {
		resp, b := do(http.MethodPost, base+off+"/exec", strings.NewReader(`{"command":["/bin/true"]}`))
		if resp.StatusCode != http.StatusConflict || !strings.Contains(string(b), "Stopped") {
			t.Errorf("exec in a stopped sandbox: %d %s, want 409 naming Stopped", resp.StatusCode, b)
		}
	})
}
