package main

import (
	"bytes"
	"context"
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

// cancelOn is standard error that cancels the run's context once a line
// containing mark is written: Ctrl-C at that moment.
type cancelOn struct {
	bytes.Buffer
	mark   string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if strings.Contains(w.String(), w.mark) {
		w.cancel()
	}
	return n, err
}

// TestInterruptedWaitSaysWhatGoesOnAndExits130: Ctrl-C while waiting
// stops akctl, not the controller. The apply is committed and converges
// without akctl; the message says so, says how to keep waiting, and the
// exit code is a shell's for Ctrl-C.
func TestInterruptedWaitSaysWhatGoesOnAndExits130(t *testing.T) {
	tests := []struct {
		name   string
		before [][]string // runs made first, not interrupted
		args   []string
		want   []string
	}{
		{
			name: "apply --wait",
			args: []string{"apply", "-f", "box.hcl", "--wait"},
			want: []string{
				"akctl apply: interrupted; the apply was committed (store revision 1) and is still converging: the controller carries on without akctl.\n",
				"To keep waiting: akctl --addr $ADDR wait --for=ready -n default box\n",
			},
		},
		{
			name:   "wait",
			before: [][]string{{"apply", "-f", "box.hcl"}},
			args:   []string{"wait", "--for=ready", "box"},
			want: []string{
				"akctl wait: interrupted; the sandboxes are still converging: the controller carries on without akctl.\n",
				"To keep waiting: akctl --addr $ADDR wait --for=ready -n default box\n",
			},
		},
		{
			name:   "delete --wait",
			before: [][]string{{"apply", "-f", "box.hcl"}},
			args:   []string{"delete", "box", "--wait"},
			want: []string{
				"akctl delete: interrupted; the deletion was committed and is still in progress: the controller carries on without akctl.\n",
				"To keep waiting: akctl --addr $ADDR wait --for=deleted -n default box\n",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Without the docker driver box stays Pending.
			tc := startController(t, ctlOptions{drivers: []string{"exec"}})
			dir := t.TempDir()
			layOut(t, dir, map[string]string{"box.hcl": boxHCL}, nil)
			t.Chdir(dir)
			for _, args := range tt.before {
				var out bytes.Buffer
				if code := run(t.Context(), append([]string{"--addr", tc.addr}, args...), &env{stdout: &out, stderr: &out}); code != exitOK {
					t.Fatalf("%v: exit %d\n%s", args, code, &out)
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			stderr := &cancelOn{mark: "waiting for", cancel: cancel}
			var stdout bytes.Buffer
			code := run(ctx, append([]string{"--addr", tc.addr}, tt.args...), &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: stderr})
			if code != exitInterrupted {
				t.Errorf("exit %d, want %d", code, exitInterrupted)
			}
			got := stderr.String()
			for _, want := range tt.want {
				if want = strings.ReplaceAll(want, "$ADDR", tc.addr); !strings.Contains(got, want) {
					t.Errorf("stderr lacks %q:\n%s", want, got)
				}
			}
			if strings.Contains(got, "context canceled") {
				t.Errorf("stderr speaks of a cancelled context:\n%s", got)
			}
		})
	}
}
