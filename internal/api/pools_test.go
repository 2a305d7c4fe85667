package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// poolObject is a pool of raw_exec sandboxes (the test server runs their
// exec as local processes).
func poolObject(name string, settings spec.PoolSettings) api.ApplyObject {
	return api.ApplyObject{Sandbox: rawExecSandbox(name), Pool: &settings}
}

// waitPool waits until the pool has ready Ready sandboxes.
func (e *testEnv) waitPool(t testing.TB, name string, ready int) api.PoolItem {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, b := e.do(t, http.MethodGet, "/v1/pools/default/"+name, nil)
		var it api.PoolItem
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, &it); err != nil {
				t.Fatal(err)
			}
			if it.Status.Ready == ready && it.Status.ObservedGeneration == it.Generation {
				return it
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: not %d ready after 30s: %s", name, ready, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// claimAll runs n claims at once and sorts their answers.
func (e *testEnv) claimAll(t *testing.T, n int, req api.ClaimRequest) (served []string, refused int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, b := e.do(t, http.MethodPost, "/v1/pools/default/py/claim", req)
			mu.Lock()
			defer mu.Unlock()
			switch resp.StatusCode {
			case http.StatusOK:
				var it api.Item
				if err := json.Unmarshal(b, &it); err != nil {
					t.Error(err)
					return
				}
				if it.Pool == nil || !it.Pool.Claimed || it.Pool.Name != "py" || it.Status.Phase != "Running" || it.Status.AllocID == "" {
					t.Errorf("claimed item %s: pool %+v, phase %s, alloc %q", it.Name, it.Pool, it.Status.Phase, it.Status.AllocID)
				}
				served = append(served, it.Name)
			case http.StatusServiceUnavailable:
				if resp.Header.Get("Retry-After") == "" || (!strings.Contains(string(b), `"`+api.CodeNoneReady+`"`) && !strings.Contains(string(b), `"`+api.CodeExhausted+`"`)) {
					t.Errorf("503 without Retry-After or code: %v %s", resp.Header, b)
				}
				refused++
			default:
				t.Errorf("claim: status %d: %s", resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	slices.Sort(served)
	return served, refused
}

// 100 claims at once on a pool of 20 Ready sandboxes (max 20: no refill
// can add more): 20 distinct sandboxes, 80 told to retry.
func TestClaimsAtOnceHandOutDistinctSandboxes(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, api.ApplyRequest{Objects: []api.ApplyObject{poolObject("py", spec.PoolSettings{Size: 20, Max: 20})}})
	env.waitPool(t, "py", 20)

	served, refused := env.claimAll(t, 100, api.ClaimRequest{})
	if len(served) != 20 || len(slices.Compact(slices.Clone(served))) != 20 || refused != 80 {
		t.Fatalf("%d served (%d distinct), %d refused; want 20 distinct, 80 refused", len(served), len(slices.Compact(slices.Clone(served))), refused)
	}
	if got := (env.claimsTotal(t, "immediate")); got != 20 {
		t.Errorf("claims immediate = %v, want 20", got)
	}
	if got := (env.claimsTotal(t, "refused")); got != 80 {
		t.Errorf("claims refused = %v, want 80", got)
	}
	it := env.waitPool(t, "py", 0)
	if it.Status.Claimed != 20 {
		t.Errorf("pool status %+v, want 20 claimed", it.Status)
	}
	if c := condition(it.Status.Conditions, "Exhausted"); c.Status != "True" {
		t.Errorf("Exhausted %+v, want True at max", c)
	}
	// At max with nothing on its way, a claim says so.
	resp, b := env.do(t, http.MethodPost, "/v1/pools/default/py/claim", nil)
	if resp.StatusCode != 503 || !strings.Contains(string(b), `"`+api.CodeExhausted+`"`) || !strings.Contains(string(b), "max (20)") {
		t.Errorf("a claim on the exhausted pool: %d %s", resp.StatusCode, b)
	}
}

// Claims that may wait are all served as the pool refills.
func TestClaimsWaitForTheRefill(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, api.ApplyRequest{Objects: []api.ApplyObject{poolObject("py", spec.PoolSettings{Size: 5})}})
	env.waitPool(t, "py", 5)
	served, refused := env.claimAll(t, 25, api.ClaimRequest{Wait: "30s"})
	if len(served) != 25 || len(slices.Compact(slices.Clone(served))) != 25 || refused != 0 {
		t.Fatalf("%d served (%d distinct), %d refused; want 25 distinct", len(served), len(slices.Compact(slices.Clone(served))), refused)
	}
	// Each was served at once or after waiting for the refill (which is
	// quick in the test server's instant mode: a claim may find one Ready
	// on arrival).
	if im, wa := env.claimsTotal(t, "immediate"), env.claimsTotal(t, "waited"); im+wa != 25 || im < 5 {
		t.Errorf("claims immediate %v + waited %v, want 25 with at least 5 at once", im, wa)
	}
	env.waitPool(t, "py", 5)
}

func TestClaimAnswers(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	env.mustApply(t, api.ApplyRequest{Objects: []api.ApplyObject{
		poolObject("py", spec.PoolSettings{Size: 1, ClaimTTL: "1h"}),
		poolObject("empty", spec.PoolSettings{Size: 0}),
	}})
	env.waitPool(t, "py", 1)

	// Files are written before the answer; labels and the TTL are the
	// claim's.
	resp, b := env.do(t, http.MethodPost, "/v1/pools/default/py/claim", api.ClaimRequest{
		TTL: "30m", Labels: map[string]string{"task": "t-1"},
		Files: map[string]string{"/tmp/ak claim/it's here.txt": "hello from the claim\n"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("claim: %d %s", resp.StatusCode, b)
	}
	var it api.Item
	if err := json.Unmarshal(b, &it); err != nil {
		t.Fatal(err)
	}
	if it.Labels["task"] != "t-1" || it.Labels[store.LabelClaimed] != "true" || it.Pool.ExpiresAt.Sub(*it.Pool.ClaimedAt) != 30*time.Minute {
		t.Errorf("claimed item: labels %v, pool %+v", it.Labels, it.Pool)
	}
	out := env.mustExec(t, it.Name, api.ExecRequest{Command: []string{"cat", "/tmp/ak claim/it's here.txt"}})
	if string(out.Stdout) != "hello from the claim\n" {
		t.Errorf("file written by the claim reads %q", out.Stdout)
	}
	env.mustExec(t, it.Name, api.ExecRequest{Command: []string{"rm", "-r", "/tmp/ak claim"}})
	// The claimed sandbox is a sandbox: listed and read as one.
	resp, b = env.do(t, http.MethodGet, "/v1/sandboxes?selector=agentkernel.dev/claimed%3Dtrue", nil)
	var l api.ItemList
	if err := json.Unmarshal(b, &l); err != nil || resp.StatusCode != 200 || len(l.Items) != 1 || l.Items[0].Name != it.Name {
		t.Errorf("claimed sandboxes listed: %d %s", resp.StatusCode, b)
	}

	tests := []struct {
		name, path string
		body       any
		status     int
		code       string
	}{
		{"no such pool", "/v1/pools/default/nope/claim", nil, 404, api.CodeNotFound},
		{"a sandbox is no pool", "/v1/pools/default/" + it.Name + "/claim", nil, 404, api.CodeNotFound},
		{"none ready", "/v1/pools/default/empty/claim", nil, 503, api.CodeNoneReady},
		{"none ready in the wait", "/v1/pools/default/empty/claim", api.ClaimRequest{Wait: "50ms"}, 503, api.CodeNoneReady},
		{"bad ttl", "/v1/pools/default/py/claim", api.ClaimRequest{TTL: "soon"}, 400, api.CodeInvalid},
		{"wait too long", "/v1/pools/default/py/claim", api.ClaimRequest{Wait: "1h"}, 400, api.CodeInvalid},
		{"controller's label", "/v1/pools/default/py/claim", api.ClaimRequest{Labels: map[string]string{store.LabelPool: "x"}}, 400, api.CodeInvalid},
		{"bad label", "/v1/pools/default/py/claim", api.ClaimRequest{Labels: map[string]string{"a b": "c"}}, 400, api.CodeInvalid},
		{"relative file", "/v1/pools/default/py/claim", api.ClaimRequest{Files: map[string]string{"x/../y": "z"}}, 400, api.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := env.do(t, http.MethodPost, tt.path, tt.body)
			if resp.StatusCode != tt.status || !strings.Contains(string(b), `"`+tt.code+`"`) {
				t.Errorf("status %d %s, want %d %s", resp.StatusCode, b, tt.status, tt.code)
			}
			if tt.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}

	// An empty body sent chunked (no length) is no body: the claim's
	// body is optional.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, env.http.URL+"/v1/pools/default/empty/claim", io.MultiReader())
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.token)
	if resp, err := env.http.Client().Do(req); err != nil || resp.StatusCode != 503 {
		t.Errorf("a chunked empty body: %v %v, want 503 none_ready", err, resp)
	} else {
		resp.Body.Close()
	}

	// Pools are listed as pools, not as sandboxes.
	resp, b = env.do(t, http.MethodGet, "/v1/pools", nil)
	var pl api.PoolList
	if err := json.Unmarshal(b, &pl); err != nil || len(pl.Items) != 2 {
		t.Fatalf("pools: %d %s", resp.StatusCode, b)
	}
	resp, b = env.do(t, http.MethodGet, "/v1/sandboxes", nil)
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	for _, item := range l.Items {
		if item.Name == "py" || item.Name == "empty" {
			t.Errorf("pool %s listed as a sandbox", item.Name)
		}
	}
	if resp, _ := env.do(t, http.MethodGet, "/v1/sandboxes/default/py", nil); resp.StatusCode != 404 {
		t.Errorf("GET a pool as a sandbox: %d, want 404", resp.StatusCode)
	}
	if resp, _ := env.do(t, http.MethodDelete, "/v1/sandboxes/default/py", nil); resp.StatusCode != 404 {
		t.Errorf("DELETE a pool as a sandbox: %d, want 404", resp.StatusCode)
	}
	if resp, _ := env.do(t, http.MethodDelete, "/v1/pools/default/empty", nil); resp.StatusCode != 202 {
		t.Errorf("DELETE a pool: %d, want 202", resp.StatusCode)
	}
}

// An invalid pool is refused with every problem, as sandboxes are.
func TestApplyInvalidPool(t *testing.T) {
	env := newInsideEnv(t, insideOptions{})
	bad := rawExecSandbox("py")
	bad.Spec.TTL = "1h0m0s"
	bad.Spec.OnExpiry = "delete"
	resp, b := env.do(t, http.MethodPost, "/v1/apply", api.ApplyRequest{Objects: []api.ApplyObject{
		{Sandbox: bad, Pool: &spec.PoolSettings{Size: 5, Max: 2, ClaimTTL: "1s"}},
	}})
	if resp.StatusCode != 400 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	for _, want := range []string{"max (2) is below size (5)", "claim_ttl is 1s", "Set claim_ttl on the pool instead"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("answer lacks %q: %s", want, b)
		}
	}
}

// claimsTotal reads agentkernel_claims_total{result}.
func (e *testEnv) claimsTotal(t *testing.T, result string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "agentkernel_claims_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no agentkernel_claims_total{result=%q}", result)
	return 0
}

func condition(cs []api.Condition, typ string) api.Condition {
	for _, c := range cs {
		if c.Type == typ {
			return c
		}
	}
	return api.Condition{}
}
