package nomadtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestAllocationsListFiltersAndPages lists allocations as the agent's
// paginator does: in create order across namespaces (more/ 447), a
// go-bexpr filter over the allocation, pages with a "<CreateIndex>.<ID>"
// next token, and no task states when asked.
func TestAllocationsListFiltersAndPages(t *testing.T) {
	synctest.Test(t, testAllocationsListFiltersAndPages)
}

func testAllocationsListFiltersAndPages(t *testing.T) {
	f := newPipeFixture(t, Options{})
	if _, err := f.api.Namespaces().Register(&api.Namespace{Name: "sandboxes"}, nil); err != nil {
		t.Fatal(err)
	}
	var want []string // the IDs of the allocations of agentkernel-* jobs, in create order
	for i, id := range []string{"agentkernel-b", "other-a", "agentkernel-a", "agentkernel-c", "other-b"} {
		job := loadJob(t, "agentkernel-svc-raw")
		job.ID, job.Name = &id, &id
		if i%2 == 1 {
			job.Namespace = ptr("sandboxes")
		}
		f.register(t, job)
		time.Sleep(time.Second) // placed and running
		ns := "default"
		if i%2 == 1 {
			ns = "sandboxes"
		}
		al, _, err := f.api.Jobs().Allocations(id, false, &api.QueryOptions{Namespace: ns})
		if err != nil || len(al) != 1 {
			t.Fatalf("allocations of %s: %v %v", id, al, err)
		}
		if strings.HasPrefix(id, "agentkernel-") {
			want = append(want, al[0].ID)
		}
	}

	// Raw requests: the api client re-sorts every page newest first.
	list := func(query string) ([]api.AllocationListStub, string) {
		t.Helper()
		resp, body := f.do(t, http.MethodGet, "/v1/allocations?"+query, nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/allocations?%s: %d %s", query, resp.StatusCode, body)
		}
		var out []api.AllocationListStub
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		return out, resp.Header.Get("X-Nomad-Nexttoken")
	}
	all, _ := list("namespace=*")
	if len(all) != 5 || !slices.IsSortedFunc(all, func(a, b api.AllocationListStub) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) }) {
		t.Errorf("namespace=* listed %d allocations, not in create order", len(all))
	}

	var got []string
	for next, pages := "", 1; ; pages++ {
		q := url.Values{"namespace": {"*"}, "filter": {`JobID matches "^agentkernel-"`}, "per_page": {"2"}, "task_states": {"false"}}
		if next != "" {
			q.Set("next_token", next)
		}
		page, tok := list(q.Encode())
		for _, a := range page {
			got = append(got, a.ID)
			if a.TaskStates != nil {
				t.Errorf("allocation %s has task states with task_states=false", a.ID)
			}
		}
		if tok == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 2", pages)
			}
			break
		}
		if len(page) != 2 || len(got) >= len(want) {
			t.Fatalf("a page of %d before the last, after %v", len(page), got)
		}
		first := all[slices.IndexFunc(all, func(a api.AllocationListStub) bool { return a.ID == want[len(got)] })]
		if wantTok := fmt.Sprintf("%d.%s", first.CreateIndex, first.ID); tok != wantTok {
			t.Errorf("next token %q, want %q", tok, wantTok)
		}
		next = tok
	}
	if !slices.Equal(got, want) {
		t.Errorf("filtered pages listed %v, want %v", got, want)
	}

	resp, body := f.do(t, http.MethodGet, "/v1/allocations?filter="+url.QueryEscape("JobID ==="), nil, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(string(body), "failed to create result paginator: failed to read filter expression") {
		t.Errorf("bad filter: %d %.200s", resp.StatusCode, body)
	}
}
