package nomadtest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// The benchmarks go through the api client over loopback HTTP, as the
// controller does, to show the test server is never the bottleneck.
//
//	go test -run '^$' -bench . -benchmem ./internal/nomad/nomadtest/

func benchJob(b *testing.B, id string) *api.Job {
	j := loadJob(b, "agentkernel-sleep-raw")
	j.ID, j.Name = &id, &id
	return j
}

// BenchmarkRegister registers a new job per iteration: one job write, an
// evaluation, a placement and a completed evaluation, plus the client's
// pending -> running update shortly after.
func BenchmarkRegister(b *testing.B) {
	f := newLoopbackFixture(b, Options{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, err := f.api.Jobs().Register(benchJob(b, fmt.Sprintf("bench-%d", i)), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRegisterParallel(b *testing.B) {
	f := newLoopbackFixture(b, Options{})
	b.ReportAllocs()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := f.api.Jobs().Register(benchJob(b, fmt.Sprintf("bench-%d", n.Add(1))), nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchListFixture holds 200 jobs, the size of the recorded measurements.
func benchListFixture(b *testing.B) *fixture {
	f := newLoopbackFixture(b, Options{})
	for i := range 200 {
		if _, _, err := f.srv.RunJob(benchJob(b, fmt.Sprintf("agentkernel-%03d", i))); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

var managedFilter = &api.QueryOptions{Filter: `Meta["agentkernel-managed"] == "true"`, Params: map[string]string{"meta": "true"}}

// BenchmarkList lists 200 jobs with the controller's filter and meta=true.
func BenchmarkList(b *testing.B) {
	f := benchListFixture(b)
	b.ReportAllocs()
	for b.Loop() {
		l, _, err := f.api.Jobs().List(managedFilter)
		if err != nil || len(l) != 200 {
			b.Fatalf("list: %d jobs, %v", len(l), err)
		}
	}
}

func BenchmarkListParallel(b *testing.B) {
	f := benchListFixture(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if l, _, err := f.api.Jobs().List(managedFilter); err != nil || len(l) != 200 {
				b.Errorf("list: %d jobs, %v", len(l), err)
				return
			}
		}
	})
}

// The baselines answer the same requests from canned bytes: HTTP over
// loopback and the client's JSON work, without the test server's state.
// The ratio to them is the test server's own cost.

func BenchmarkRegisterBaseline(b *testing.B) {
	body := []byte(`{"EvalCreateIndex":11,"EvalID":"a06c1f5e-8f4c-4c6a-9b0d-6d1c3f1e2a11","Index":11,"JobModifyIndex":11,"KnownLeader":false,"LastContact":0,"NextToken":"","Warnings":""}`)
	c := cannedClient(b, body)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, err := c.Jobs().Register(benchJob(b, fmt.Sprintf("bench-%d", i)), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListBaseline(b *testing.B) {
	f := benchListFixture(b)
	resp, err := http.Get(f.srv.URL() + "/v1/jobs?meta=true")
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c := cannedClient(b, body)
	b.ReportAllocs()
	for b.Loop() {
		l, _, err := c.Jobs().List(managedFilter)
		if err != nil || len(l) != 200 {
			b.Fatalf("list: %d jobs, %v", len(l), err)
		}
	}
}

func cannedClient(b *testing.B, body []byte) *api.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Nomad-Index", "11")
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	c, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	return c
}
