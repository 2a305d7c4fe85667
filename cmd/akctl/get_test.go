package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestGet(t *testing.T) {
	two := map[string]string{"decl/box.hcl": boxHCL, "decl/worker.hcl": workerHCL}
	// settled applies both sandboxes and waits for them, so that their
	// phase no longer changes.
	settled := [][]string{ak("apply", "-f", "decl", "--wait")}
	cases := []cliCase{
		{name: "empty", args: ak("get"), ctl: live},
		{name: "table", args: ak("get"), files: two, ctl: live, before: settled},
		{name: "wide", args: ak("get", "-o", "wide"), files: two, ctl: live, before: settled},
		{name: "json", args: ak("get", "-o", "json"), files: two, ctl: live, before: settled, check: checkItemList},
		{name: "name", args: ak("get", "box"), files: two, ctl: live, before: settled},
		{name: "name_json", args: ak("get", "box", "-o", "json"), files: two, ctl: live, before: settled},
		{name: "selector", args: ak("get", "-l", "team=infra"), files: two, ctl: live, before: settled},
		{name: "all_namespaces", args: ak("get", "-A"), files: two, ctl: live, before: settled},
		{name: "other_namespace_is_empty", args: ak("get", "-n", "team-a"), files: two, ctl: live, before: settled},
		{name: "not_found", args: ak("get", "missing"), ctl: live},
		{name: "global_flags_after_command", args: []string{"get", "-n", "default", "--addr", "$ADDR", "-v"}, files: two, ctl: live, before: settled},
		{name: "usage_bad_output", args: ak("get", "-o", "xml")},
		{name: "output_name", args: ak("get", "-o", "name"), files: two, ctl: live, before: settled},
		{name: "output_yaml_one", args: ak("get", "box", "-o", "yaml"), files: two, ctl: live, before: settled},
		{name: "namespace_long_form", args: ak("get", "--namespace", "team-a"), files: two, ctl: live, before: settled},
		{name: "usage_two_names", args: ak("get", "a", "b")},
		{name: "usage_name_with_selector", args: ak("get", "a", "-l", "team=ml")},
		{name: "help", args: []string{"get", "-h"}},
	}
	runCases(t, "get", cases)
}

// checkItemList decodes get -o json as other tools would.
func checkItemList(t *testing.T, r result) {
	t.Helper()
	var out struct {
		Items []map[string]json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("get -o json: %v", err)
	}
	for _, it := range out.Items {
		for _, k := range []string{"namespace", "name", "generation", "spec", "status", "source"} {
			if _, ok := it[k]; !ok {
				t.Errorf("item lacks %q", k)
			}
		}
	}
}

// syncBuffer is written by a command running in another goroutine; every
// write is signalled on wrote.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wrote: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestGetWatch(t *testing.T) {
	for _, output := range []string{"table", "json"} {
		t.Run(output, func(t *testing.T) {
			tc := startController(t, ctlOptions{})
			dir := t.TempDir()
			layOut(t, dir, map[string]string{"box.hcl": boxHCL}, nil)
			t.Chdir(dir)

			ctx, cancel := context.WithCancel(t.Context())
			stdout, stderr := newSyncBuffer(), newSyncBuffer()
			done := make(chan int)
			go func() {
				done <- run(ctx, []string{"--addr", tc.addr, "-v", "get", "--watch", "-o", output},
					&env{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, now: func() time.Time { return akctlNow }})
			}()
			// Change nothing before the watch is open (-v logs its request).
			waitFor := func(b *syncBuffer, want string) {
				t.Helper()
				deadline := time.After(10 * time.Second)
				for !strings.Contains(b.String(), want) {
					select {
					case <-deadline:
						cancel()
						<-done
						t.Fatalf("get --watch never wrote %q:\n%s\nstderr:\n%s", want, stdout.String(), stderr.String())
					case <-b.wrote:
					}
				}
			}
			waitFor(stderr, "GET /v1/watch")
			var out bytes.Buffer
			if code := run(t.Context(), []string{"--addr", tc.addr, "apply", "-f", "box.hcl", "--wait"},
				&env{stdin: strings.NewReader(""), stdout: &out, stderr: &out}); code != 0 {
				t.Fatalf("apply: exit %d\n%s", code, &out)
			}
			if code := run(t.Context(), []string{"--addr", tc.addr, "delete", "box", "--wait"},
				&env{stdin: strings.NewReader(""), stdout: &out, stderr: &out}); code != 0 {
				t.Fatalf("delete: exit %d\n%s", code, &out)
			}
			// The watch has seen the deletion once it prints the row for it.
			want := "Deleted"
			if output == "json" {
				want = `"phase":"Deleted"`
			}
			waitFor(stdout, want)
			cancel()
			if code := <-done; code != exitOK {
				t.Errorf("get --watch exit %d, want 0 when interrupted; stderr:\n%s", code, stderr.String())
			}
			got := stdout.String()
			// Each line shows the sandbox as it is when the line is written,
			// so a short-lived phase (Deleting) may be skipped under load.
			for _, phase := range []string{"Running"} {
				if !strings.Contains(got, phase) {
					t.Errorf("get --watch -o %s never showed phase %s:\n%s", output, phase, got)
				}
			}
			if output == "json" {
				for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
					var it map[string]any
					if err := json.Unmarshal([]byte(line), &it); err != nil || it["name"] != "box" {
						t.Errorf("line is not an item of box: %s (%v)", line, err)
					}
				}
			}
		})
	}
}
