package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

// akctlRun runs one akctl command line against tc.
func akctlRun(t *testing.T, ctx context.Context, tc *testController, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"--addr", tc.addr}, args...), &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr})
	return code, stdout.String(), stderr.String()
}

// until reports whether cond came true within 30 s, checking it again
// on every store change: the controller runs on the real clock.
func (tc *testController) until(t *testing.T, cond func() bool) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		rev, err := tc.store.Revision(ctx)
		if cond() {
			return true
		}
		if err != nil {
			return false
		}
		wctx, stop := context.WithCancel(ctx)
		w, err := tc.store.Watch(wctx, rev)
		if err != nil {
			stop()
			return cond()
		}
		// A store change, or a tick for what the store does not see (the
		// initial list of owned jobs).
		tick := time.NewTimer(20 * time.Millisecond)
		select {
		case <-w.Changes():
		case <-tick.C:
		case <-ctx.Done():
		}
		tick.Stop()
		stop()
		if ctx.Err() != nil {
			return cond()
		}
	}
}

// A sandbox Nomad refused says when the controller tries again, and
// akctl reconcile tries now: fixing the cause need not wait five
// minutes.
func TestReconcileRetriesARejectedSandboxNow(t *testing.T) {
	tc := startController(t, ctlOptions{})
	dir := t.TempDir()
	layOut(t, dir, map[string]string{"box.hcl": "sandbox \"box\" {\n  namespace = \"team-a\"\n  image     = \"alpine:3\"\n}\n"}, nil)
	if code, out, errOut := akctlRun(t, t.Context(), tc, "apply", "-f", dir+"/box.hcl"); code != 0 {
		t.Fatalf("apply: %d\n%s%s", code, out, errOut)
	}
	// The first attempt is refused: the namespace does not exist.
	rejected := func() (api.Item, bool) {
		c, err := newClient(&env{environ: []string{"AKCTL_ADDR=" + tc.addr}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		it, err := c.get(t.Context(), "team-a", "box")
		return it, err == nil && it.Status.NextAttemptAt != nil
	}
	var it api.Item
	if !tc.until(t, func() (ok bool) { it, ok = rejected(); return ok }) {
		t.Fatalf("the refused sandbox does not say when it is tried again: %+v", it.Status)
	}
	if d := time.Until(*it.Status.NextAttemptAt); d < 4*time.Minute {
		t.Errorf("next attempt in %s, want about 5m", d)
	}
	code, out, _ := akctlRun(t, t.Context(), tc, "describe", "-n", "team-a", "box")
	if code != 0 || !strings.Contains(out, "Next attempt:") || !strings.Contains(out, "akctl reconcile -n team-a box") {
		t.Errorf("describe does not show the next attempt:\n%s", out)
	}

	if _, err := tc.nomad.API().Namespaces().Register(&nomadapi.Namespace{Name: "team-a"}, nil); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := akctlRun(t, t.Context(), tc, "reconcile", "-n", "team-a", "box", "nope")
	if code != 1 || out != "sandbox/team-a/box queued\n" || !strings.Contains(errOut, "sandbox/team-a/nope not found") {
		t.Errorf("reconcile box nope: exit %d\nstdout %q\nstderr %q\nwant box queued, nope not found, exit 1", code, out, errOut)
	}
	// Well before the five-minute retry.
	running := func() bool {
		rec, err := tc.store.Get(t.Context(), "team-a/box")
		return err == nil && rec.Status.Phase == "Running"
	}
	if !tc.until(t, running) {
		rec, _ := tc.store.Get(t.Context(), "team-a/box")
		t.Fatalf("the sandbox did not run after akctl reconcile: %+v", rec.Status)
	}
	if rec, _ := tc.store.Get(t.Context(), "team-a/box"); rec.Status.NextAttemptAt != nil {
		t.Errorf("a running sandbox still announces a next attempt: %v", rec.Status.NextAttemptAt)
	}
}

func TestGCShowsAndConfirms(t *testing.T) {
	tc := startController(t, ctlOptions{})
	var code int
	var out, errOut string
	tc.until(t, func() bool {
		code, out, errOut = akctlRun(t, t.Context(), tc, "gc")
		return code != 0 || !strings.Contains(out, "not done yet")
	})
	if code != 0 || out != "Garbage collection: on\n" {
		t.Errorf("gc on a fresh controller: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = akctlRun(t, t.Context(), tc, "gc", "confirm")
	if code != 0 || !strings.Contains(out, "Garbage collection: on.") {
		t.Errorf("gc confirm while on: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := akctlRun(t, t.Context(), tc, "gc", "now"); code != 2 || !strings.Contains(errOut, `"confirm"`) {
		t.Errorf("gc now: exit %d, %s; want a usage error naming confirm", code, errOut)
	}
}
