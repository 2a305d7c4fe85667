package nomadtest

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

// blockingResult is what a blocking request returned and how long it took
// in the bubble's fake time.
type blockingResult struct {
	status  int
	index   uint64
	elapsed time.Duration
}

// blockingGet starts a raw GET and returns a channel with its result.
func blockingGet(t *testing.T, f *fixture, target string) <-chan blockingResult {
	t.Helper()
	out := make(chan blockingResult, 1)
	start := time.Now()
	go func() {
		resp, _ := f.do(t, http.MethodGet, target, nil, nil)
		idx, _ := strconv.ParseUint(resp.Header.Get("X-Nomad-Index"), 10, 64)
		out <- blockingResult{status: resp.StatusCode, index: idx, elapsed: time.Since(start)}
	}()
	return out
}

// TestBlockingQueries checks the blocking-query facts (50-58, more/ 170-176)
// in fake time: timeouts return 200 with the unchanged index after the wait
// plus at most wait/16 of jitter, stale indexes return at once, and only
// changes to the queried object wake a query.
func TestBlockingQueries(t *testing.T) {
	type env struct {
		f        *fixture
		jobIndex uint64 // ModifyIndex of agentkernel-sleep-raw
		allocs   uint64 // allocs table index
		list     uint64 // jobs list index
		vars     uint64 // variables table index
	}
	other := func(t *testing.T, e env) {
		job := loadJob(t, "other-unmanaged")
		e.f.register(t, job)
	}
	cases := []struct {
		name   string
		fact   string
		target func(e env) string
		// during runs 2s into the block.
		during      func(t *testing.T, e env)
		wantElapsed [2]time.Duration // inclusive bounds
		wantIndex   func(e env, now uint64) uint64
	}{
		{
			name: "job get times out with its own index", fact: "50",
			target:      func(e env) string { return fmt.Sprintf("/v1/job/agentkernel-sleep-raw?index=%d&wait=5s", e.jobIndex) },
			wantElapsed: [2]time.Duration{5 * time.Second, 5*time.Second + 5*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.jobIndex },
		},
		{
			name: "stale index returns at once", fact: "51",
			target:      func(e env) string { return "/v1/job/agentkernel-sleep-raw?index=5&wait=5s" },
			wantElapsed: [2]time.Duration{0, 0},
			wantIndex:   func(e env, _ uint64) uint64 { return e.jobIndex },
		},
		{
			name: "jobs list times out", fact: "52",
			target:      func(e env) string { return fmt.Sprintf("/v1/jobs?index=%d&wait=5s", e.list) },
			wantElapsed: [2]time.Duration{5 * time.Second, 5*time.Second + 5*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.list },
		},
		{
			name: "job allocations time out", fact: "53",
			target: func(e env) string {
				return fmt.Sprintf("/v1/job/agentkernel-sleep-raw/allocations?index=%d&wait=3s", e.allocs)
			},
			wantElapsed: [2]time.Duration{3 * time.Second, 3*time.Second + 3*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.allocs },
		},
		{
			name: "job allocations not woken by another job, stale index on timeout", fact: "54",
			target: func(e env) string {
				return fmt.Sprintf("/v1/job/agentkernel-sleep-raw/allocations?index=%d&wait=20s", e.allocs)
			},
			during:      other,
			wantElapsed: [2]time.Duration{20 * time.Second, 20*time.Second + 20*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.allocs },
		},
		{
			name: "job get not woken by another job", fact: "55",
			target:      func(e env) string { return fmt.Sprintf("/v1/job/agentkernel-sleep-raw?index=%d&wait=10s", e.jobIndex) },
			during:      other,
			wantElapsed: [2]time.Duration{10 * time.Second, 10*time.Second + 10*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.jobIndex },
		},
		{
			name: "jobs list woken by a register", fact: "56",
			target:      func(e env) string { return fmt.Sprintf("/v1/jobs?index=%d&wait=20s", e.list) },
			during:      other,
			wantElapsed: [2]time.Duration{2 * time.Second, 2 * time.Second},
			// The register's own index (56, 57): the scheduler plans
			// after the register answered.
			wantIndex: func(e env, _ uint64) uint64 {
				return *e.f.srv.jobs[nsKey{"default", "other-unmanaged"}].job.JobModifyIndex
			},
		},
		{
			name: "index above the current one waits the full time and goes backwards", fact: "58",
			target:      func(e env) string { return "/v1/job/agentkernel-sleep-raw/allocations?index=1000&wait=2s" },
			wantElapsed: [2]time.Duration{2 * time.Second, 2*time.Second + 2*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.allocs },
		},
		{
			name: "no wait means 300s", fact: "4.9",
			target:      func(e env) string { return fmt.Sprintf("/v1/job/agentkernel-sleep-raw?index=%d", e.jobIndex) },
			wantElapsed: [2]time.Duration{300 * time.Second, 300*time.Second + 300*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.jobIndex },
		},
		{
			name: "variable not woken by another variable", fact: "more/171",
			target: func(e env) string {
				return fmt.Sprintf("/v1/var/sandboxes/a?index=%d&wait=3s", e.f.srv.vars[nsKey{"default", "sandboxes/a"}].ModifyIndex)
			},
			during:      func(t *testing.T, e env) { putVar(t, e.f, "sandboxes/b") },
			wantElapsed: [2]time.Duration{3 * time.Second, 3*time.Second + 3*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.f.srv.vars[nsKey{"default", "sandboxes/a"}].ModifyIndex },
		},
		{
			name: "variable woken by its write", fact: "more/172",
			target: func(e env) string {
				return fmt.Sprintf("/v1/var/sandboxes/a?index=%d&wait=10s", e.f.srv.vars[nsKey{"default", "sandboxes/a"}].ModifyIndex)
			},
			during:      func(t *testing.T, e env) { putVar(t, e.f, "sandboxes/a") },
			wantElapsed: [2]time.Duration{2 * time.Second, 2 * time.Second},
			wantIndex:   func(e env, now uint64) uint64 { return now },
		},
		{
			name: "missing variable woken by its creation", fact: "more/173",
			target: func(e env) string {
				return fmt.Sprintf("/v1/var/sandboxes/new?index=%d&wait=10s", e.f.srv.tables["variables"])
			},
			during:      func(t *testing.T, e env) { putVar(t, e.f, "sandboxes/new") },
			wantElapsed: [2]time.Duration{2 * time.Second, 2 * time.Second},
			wantIndex:   func(e env, now uint64) uint64 { return now },
		},
		{
			name: "variable list not woken outside its prefix", fact: "more/175",
			target:      func(e env) string { return fmt.Sprintf("/v1/vars?prefix=sandboxes/&index=%d&wait=10s", e.vars) },
			during:      func(t *testing.T, e env) { putVar(t, e.f, "other/x") },
			wantElapsed: [2]time.Duration{10 * time.Second, 10*time.Second + 10*time.Second/16},
			wantIndex:   func(e env, _ uint64) uint64 { return e.vars },
		},
		{
			name: "variable list woken inside its prefix", fact: "more/176",
			target: func(e env) string {
				return fmt.Sprintf("/v1/vars?prefix=sandboxes/&index=%d&wait=10s", e.f.srv.tables["variables"])
			},
			during:      func(t *testing.T, e env) { putVar(t, e.f, "sandboxes/c") },
			wantElapsed: [2]time.Duration{2 * time.Second, 2 * time.Second},
			wantIndex:   func(e env, now uint64) uint64 { return now },
		},
	}
	for _, tc := range cases {
		t.Run(tc.fact+" "+tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newPipeFixture(t, Options{})
				f.register(t, loadJob(t, "agentkernel-sleep-raw"))
				putVar(t, f, "sandboxes/a")
				time.Sleep(time.Second)
				e := env{f: f}
				f.srv.mu.Lock()
				e.jobIndex = *f.srv.jobs[nsKey{"default", "agentkernel-sleep-raw"}].job.ModifyIndex
				e.allocs = f.srv.tables["allocs"]
				e.list = f.srv.jobListIndex()
				e.vars = f.srv.tables["variables"]
				target := tc.target(e)
				f.srv.mu.Unlock()

				res := blockingGet(t, f, target)
				if tc.during != nil {
					time.Sleep(2 * time.Second)
					tc.during(t, e)
				}
				r := <-res
				if r.status != http.StatusOK {
					t.Fatalf("status %d", r.status)
				}
				if r.elapsed < tc.wantElapsed[0] || r.elapsed > tc.wantElapsed[1] {
					t.Errorf("returned after %v, want %v..%v", r.elapsed, tc.wantElapsed[0], tc.wantElapsed[1])
				}
				f.srv.mu.Lock()
				want := tc.wantIndex(e, f.srv.index)
				f.srv.mu.Unlock()
				if r.index != want {
					t.Errorf("X-Nomad-Index = %d, want %d", r.index, want)
				}
			})
		})
	}
}

// TestBlockingListWokenByRegisterIndex reproduces 56 and 57: the list
// wakes with the register's own index, and the job is pending until its
// evaluation is planned, EvalDelay later.
func TestBlockingListWokenByRegisterIndex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		time.Sleep(time.Second)
		list := f.srv.Index()
		res := blockingGet(t, f, fmt.Sprintf("/v1/jobs?index=%d&wait=20s", list))
		time.Sleep(2 * time.Second)
		resp := f.register(t, loadJob(t, "other-unmanaged"))
		if r := <-res; r.index != resp.EvalCreateIndex || r.elapsed != 2*time.Second {
			t.Errorf("woken after %v with index %d, want 2s and the register's %d", r.elapsed, r.index, resp.EvalCreateIndex)
		}
		if j := jobStatus(t, f, "other-unmanaged"); *j.Status != "pending" {
			t.Errorf("right after register: %s, want pending until the eval is planned", *j.Status)
		}
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		if j := jobStatus(t, f, "other-unmanaged"); *j.Status != "running" {
			t.Errorf("after the eval delay: %s, want running", *j.Status)
		}
	})
}

// TestBlockingVariableDelete checks more/ 174: deleting the variable wakes
// the query with 404 and the new index.
func TestBlockingVariableDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		putVar(t, f, "sandboxes/a")
		res := blockingGet(t, f, fmt.Sprintf("/v1/var/sandboxes/a?index=%d&wait=10s", f.srv.Index()))
		time.Sleep(time.Second)
		if resp, _ := f.do(t, http.MethodDelete, "/v1/var/sandboxes/a", nil, nil); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("delete: %d", resp.StatusCode)
		}
		r := <-res
		if r.status != http.StatusNotFound || r.index != f.srv.Index() || r.elapsed != time.Second {
			t.Errorf("got %+v, want 404 with index %d after 1s", r, f.srv.Index())
		}
	})
}

// TestBlockingThroughAPI drives a blocking query through the api client's
// QueryOptions, as the controller does.
func TestBlockingThroughAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		time.Sleep(time.Second)
		_, meta, err := f.api.Jobs().List(nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan *api.QueryMeta, 1)
		go func() {
			_, qm, err := f.api.Jobs().List(&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
			if err != nil {
				t.Error(err)
			}
			done <- qm
		}()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("blocking list returned before any change")
		default:
		}
		f.register(t, loadJob(t, "other-unmanaged"))
		qm := <-done
		if qm.LastIndex <= meta.LastIndex || !qm.KnownLeader {
			t.Errorf("woken with %+v, want an index above %d and KnownLeader", qm, meta.LastIndex)
		}
	})
}

func putVar(t *testing.T, f *fixture, path string) {
	t.Helper()
	resp, body := f.do(t, http.MethodPut, "/v1/var/"+path, []byte(`{"Items":{"k":"v"}}`), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("put %s: %d %s", path, resp.StatusCode, body)
	}
}
