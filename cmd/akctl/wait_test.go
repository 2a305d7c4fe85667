package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestWait(t *testing.T) {
	two := map[string]string{"decl/box.hcl": boxHCL, "decl/worker.hcl": workerHCL}
	cases := []cliCase{
		{name: "ready", args: ak("wait", "--for=ready", "box"), files: two, ctl: live, before: [][]string{ak("apply", "-f", "decl/box.hcl")}},
		{name: "ready_all", args: ak("wait", "--for", "ready", "--all"), files: two, ctl: live, before: [][]string{ak("apply", "-f", "decl", "--wait")}},
		{name: "ready_all_none", args: ak("wait", "--for=ready", "--all", "-A"), ctl: live},
		{
			name: "deleted", args: ak("wait", "--for=deleted", "box"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl", "--wait"), ak("delete", "box")},
		},
		{
			// Nomad has no namespace team-a: the sandbox fails.
			name: "failed_in_other_namespace_fails_fast", args: ak("wait", "--for=ready", "-n", "team-a", "box"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl/box.hcl", "-namespace", "team-a")},
		},
		{
			name: "ready_fails_when_being_deleted", args: ak("wait", "--for=ready", "box"), files: map[string]string{"box.hcl": boxHCL},
			ctl: &ctlOptions{drivers: []string{"exec"}}, before: [][]string{ak("apply", "-f", "box.hcl"), ak("delete", "box")},
		},
		{name: "deleted_when_absent", args: ak("wait", "--for=deleted", "missing"), ctl: live},
		{name: "ready_not_found", args: ak("wait", "--for=ready", "missing"), ctl: live},
		{
			name: "timeout_names_what_is_not_ready", args: ak("wait", "--for=ready", "box", "worker", "--timeout", "1s"), files: two,
			ctl: &ctlOptions{drivers: []string{"exec"}}, before: [][]string{ak("apply", "-f", "decl")},
		},
		{
			name: "conflict_fails_fast", args: ak("wait", "--for=ready", "box"), files: two,
			ctl: &ctlOptions{foreignJob: "agentkernel-box"}, before: [][]string{ak("apply", "-f", "decl")},
		},
		{name: "usage_no_for", args: ak("wait", "box")},
		{name: "usage_bad_for", args: ak("wait", "--for=running", "box")},
		{name: "usage_names_and_all", args: ak("wait", "--for=ready", "box", "--all")},
		{name: "usage_nothing_named", args: ak("wait", "--for=ready")},
		{name: "help", args: []string{"wait", "-h"}},
	}
	runCases(t, "wait", cases)
}

// TestWaitPollsWhenWatchFails: behind a proxy that does not stream, wait
// reads the sandboxes every second instead. The sandbox never becomes
// ready (its driver is missing), so the run ends in a timeout after
// polling more than once.
func TestWaitPollsWhenWatchFails(t *testing.T) {
	tc := startController(t, ctlOptions{noWatch: true, drivers: []string{"exec"}})
	dir := t.TempDir()
	layOut(t, dir, map[string]string{"box.hcl": boxHCL}, nil)
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
	if code := run(t.Context(), []string{"--addr", tc.addr, "apply", "-f", "box.hcl"}, e); code != exitOK {
		t.Fatalf("apply: exit %d\n%s", code, &stderr)
	}
	stderr.Reset()
	code := run(t.Context(), []string{"--addr", tc.addr, "-v", "wait", "--for=ready", "box", "--timeout", "2500ms"}, e)
	got := stderr.String()
	if code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	for _, want := range []string{"GET /v1/watch", "polling every second", "timed out after 2.5s; 1 of 1 not ready:\n  sandbox/default/box: Pending"} {
		if !strings.Contains(got, want) {
			t.Errorf("stderr lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "GET /v1/sandboxes/default/box -> 200"); n < 2 {
		t.Errorf("polled %d times, want at least 2:\n%s", n, got)
	}
}
