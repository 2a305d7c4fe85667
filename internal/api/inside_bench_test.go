package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
)

// The working surface's cost over Nomad's own: each benchmark runs the
// same operation through the controller's API and straight through
// nomad/api against the same test server, in the same run, so that the
// ratio of the two holds on a noisy machine (docs/benchmarks.md):
//
//	go test -run '^$' -bench 'Inside' -benchtime 200x ./internal/api

// benchEnv is an inside env with one running sandbox, its allocation and
// a plain nomad/api client of the same server, as a program that uses
// Nomad alone would make it.
func benchEnv(b *testing.B) (*testEnv, *nomadapi.Allocation, *nomadapi.Client, string) {
	b.Helper()
	env := newInsideEnv(b, insideOptions{})
	env.mustApply(b, applyReq(rawExecSandbox("box")))
	env.waitRunning(b, "box")
	rec, err := env.store.Get(context.Background(), "default/box")
	if err != nil {
		b.Fatal(err)
	}
	nc := env.nomad
	alloc, err := nc.Allocation(context.Background(), "default", rec.Status.AllocID)
	if err != nil {
		b.Fatal(err)
	}
	plain, err := nomadapi.NewClient(&nomadapi.Config{Address: nc.Address()})
	if err != nil {
		b.Fatal(err)
	}
	return env, alloc, plain, env.taskDir(b, "box")
}

// latencies reports p50 and p99 of the run's durations.
func latencies(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	if len(d) == 0 {
		return
	}
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, "p99-ms")
}

func BenchmarkInsideExecTrue(b *testing.B) {
	env, alloc, nc, _ := benchEnv(b)
	b.Run("controller", func(b *testing.B) {
		d := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			out := env.mustExec(b, "box", api.ExecRequest{Command: []string{"true"}})
			d = append(d, time.Since(start))
			if out.ExitCode != 0 {
				b.Fatalf("exit %d", out.ExitCode)
			}
		}
		latencies(b, d)
	})
	b.Run("nomad-api", func(b *testing.B) {
		d := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			code, err := nc.Allocations().Exec(context.Background(), alloc, nomad.TaskName, false, []string{"true"},
				bytes.NewReader(nil), io.Discard, io.Discard, nil, nil)
			d = append(d, time.Since(start))
			if err != nil || code != 0 {
				b.Fatalf("exec: %d %v", code, err)
			}
		}
		latencies(b, d)
	})
}

func BenchmarkInsideFile1MiB(b *testing.B) {
	env, alloc, nc, dir := benchEnv(b)
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	p := dir + "/bench.bin"
	b.Run("controller-write", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			env.mustDo(b, http.MethodPut, filesPath("box", p), data, http.StatusOK, nil)
		}
	})
	b.Run("nomad-api-write", func(b *testing.B) {
		// What a client of Nomad alone does: the content on an exec
		// session's stdin.
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			code, err := nc.Allocations().Exec(context.Background(), alloc, nomad.TaskName, false,
				[]string{"sh", "-c", `cat > "$1"`, "sh", p}, bytes.NewReader(data), io.Discard, io.Discard, nil, nil)
			if err != nil || code != 0 {
				b.Fatalf("exec: %d %v", code, err)
			}
		}
	})
	b.Run("controller-read", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			got := env.mustDo(b, http.MethodGet, filesPath("box", p), nil, http.StatusOK, nil)
			if len(got) != len(data) {
				b.Fatalf("read %d bytes", len(got))
			}
		}
	})
	b.Run("nomad-api-read", func(b *testing.B) {
		// Nomad's file system API, as the controller reads a task file.
		rel := "/sandbox/local/bench.bin"
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			rc, err := nc.AllocFS().Cat(alloc, rel, nil)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			if n != int64(len(data)) {
				b.Fatalf("read %d bytes", n)
			}
		}
	})
}
