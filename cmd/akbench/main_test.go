package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets the test binary stand in for akbench when it re-executes
// itself as the Nomad test server.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve-nomad" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestWholeRunReportsSaneNumbers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario against a test server process for several seconds")
	}
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	args := []string{"-n", "10", "-idle", "1s", "-drift-trials", "5", "-pool-size", "3", "-json", jsonPath}
	if err := run(t.Context(), args, nil, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(strings.TrimSpace(stdout.String()), "SCENARIO") {
		t.Errorf("stdout does not start with the table header:\n%s", stdout.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("decode JSON results: %v", err)
	}
	if len(rep.Failures) > 0 {
		t.Errorf("failures: %q", rep.Failures)
	}

	get := func(scenario, metric string) row {
		t.Helper()
		for _, r := range rep.Rows {
			if r.Scenario == scenario && r.Metric == metric && r.N == 10 {
				return r
			}
		}
		t.Fatalf("no row %s %q", scenario, metric)
		return row{}
	}
	positive := []struct{ scenario, metric string }{
		{scenConverge, "time to all Running (s), baseline raw"},
		{scenConverge, "time to all Running (s), baseline imperative"},
		{scenConverge, "Nomad requests per sandbox, baseline imperative"},
		{scenConverge, "controller CPU (s)"},
		{scenReapply, "Nomad reads"},
		{scenReapply, "time from restart to drained queue (s)"},
		{scenDrift, "time to repair p50 (s)"},
		{scenDrift, "time to repair p99 (s)"},
		{scenIdle, "controller CPU seconds per minute"},
		{scenApply, "sandboxes accepted and stored per second"},
		{baseRaw, "time to all running (s)"},
		{baseImperative, "Nomad requests per sandbox"},
	}
	for _, p := range positive {
		if r := get(p.scenario, p.metric); r.Value <= 0 {
			t.Errorf("%s %q = %g; want > 0", p.scenario, p.metric, r.Value)
		}
	}
	// The claim scenario runs once, keyed by the pool's size; a claim
	// is far faster than a cold start.
	claims := 0
	for _, r := range rep.Rows {
		if r.Scenario == scenClaim && r.N == 3 && strings.HasPrefix(r.Metric, "claim latency") {
			claims++
			if r.Value <= 0 || r.Ratio == nil || *r.Ratio >= 1 {
				t.Errorf("claim %q = %g, ratio %v; want a positive latency below the cold start's", r.Metric, r.Value, r.Ratio)
			}
		}
	}
	if claims != 6 {
		t.Errorf("%d claim latency rows, want 6 (p50 and p99 at 3 rates)", claims)
	}
	exact := []struct {
		scenario, metric string
		want             float64
	}{
		{scenConverge, "Nomad writes per sandbox (ideal 1), baseline raw", 1},
		{scenReapply, "Nomad writes (must be 0)", 0},
		{scenDrift, "trials", 5},
		{scenDrift, "controller Nomad writes per repair (ideal 1)", 1},
	}
	for _, e := range exact {
		if r := get(e.scenario, e.metric); r.Value != e.want {
			t.Errorf("%s %q = %g; want %g", e.scenario, e.metric, r.Value, e.want)
		}
	}
	for _, r := range rep.Rows {
		if r.Ratio != nil && *r.Ratio <= 0 {
			t.Errorf("%s %q: ratio %g; want > 0", r.Scenario, r.Metric, *r.Ratio)
		}
		if strings.Contains(r.Metric, "peak RSS") && (r.Value < 1 || r.Value > 4096) {
			t.Errorf("%s %q = %g MB; want a plausible size", r.Scenario, r.Metric, r.Value)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"size too large", []string{"-n", "10001"}, "-n"},
		{"size not a number", []string{"-n", "ten"}, "-n"},
		{"unknown scenario", []string{"-scenarios", "converge,chaos"}, "unknown scenario \"chaos\""},
		{"unknown driver", []string{"-driver", "java"}, "-driver"},
		{"unknown baseline", []string{"-baselines", "raw,kubectl"}, "unknown baseline \"kubectl\""},
		{"resync too short", []string{"-resync", "10ms"}, "-resync"},
		{"stray argument", []string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, nil, &stdout, &stderr)
			if !errors.Is(err, errUsage) {
				t.Fatalf("run = %v; want the usage error", err)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q; want nothing", stdout.String())
			}
		})
	}
}
