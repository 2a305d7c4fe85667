package api_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// fakeLoop is a reconcile loop whose garbage collection a test sets.
type fakeLoop struct {
	mu        sync.Mutex
	state     api.GCStatus
	confirms  int
	requeued  []string
	confirmed api.GCStatus
}

func (f *fakeLoop) GC() api.GCStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *fakeLoop) ConfirmGC(context.Context) (api.GCStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.confirms++
	f.state = f.confirmed
	return f.state, nil
}

func (f *fakeLoop) Requeue(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requeued = append(f.requeued, key)
}

func withLoop(l *fakeLoop) envOption {
	return func(c *envConfig) { c.api.Controller = l }
}

func TestGCRoutes(t *testing.T) {
	hold := &store.GCHold{Reason: "behind", NomadIndex: 11, Jobs: []string{"default/agentkernel-b"}, JobCount: 1}
	tests := []struct {
		name        string
		state       api.GCStatus
		wantCode    int
		wantConfirm int
	}{
		{"held: confirm releases it", api.GCStatus{Reason: "behind", Hold: hold}, http.StatusOK, 1},
		{"on: confirm changes nothing", api.GCStatus{Enabled: true}, http.StatusOK, 0},
		{"off without a hold: confirm is refused", api.GCStatus{Reason: "the copy is incomplete"}, http.StatusConflict, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &fakeLoop{state: tt.state, confirmed: api.GCStatus{Enabled: true}}
			env := newEnv(t, withLoop(l))
			var got api.GCStatus
			env.mustDo(t, "GET", "/v1/gc", nil, http.StatusOK, &got)
			if got.Enabled != tt.state.Enabled || (got.Hold == nil) != (tt.state.Hold == nil) {
				t.Errorf("GET /v1/gc = %+v, want %+v", got, tt.state)
			}
			resp, body := env.do(t, "POST", "/v1/gc/confirm", nil)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("POST /v1/gc/confirm: %d %s, want %d", resp.StatusCode, body, tt.wantCode)
			}
			if tt.wantCode == http.StatusConflict && decodeError(t, body).Code != api.CodeConflict {
				t.Errorf("refusal body %s, want code conflict", body)
			}
			if l.confirms != tt.wantConfirm {
				t.Errorf("%d confirmations reached the loop, want %d", l.confirms, tt.wantConfirm)
			}
		})
	}
}

func TestReconcileRouteQueuesADeclaredSandbox(t *testing.T) {
	l := &fakeLoop{}
	env := newEnv(t, withLoop(l))
	env.mustApply(t, applyReq(sandbox("web")))
	var got api.ReconcileResponse
	env.mustDo(t, "POST", "/v1/sandboxes/default/web/reconcile", nil, http.StatusAccepted, &got)
	if !got.Queued || got.Name != "web" {
		t.Errorf("answer %+v", got)
	}
	resp, body := env.do(t, "POST", "/v1/sandboxes/default/nope/reconcile", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown sandbox: %d %s, want 404", resp.StatusCode, body)
	}
	if !slices.Equal(l.requeued, []string{"default/web"}) {
		t.Errorf("requeued %v, want [default/web]", l.requeued)
	}
}

func TestControlRoutesWithoutALoopAnswer503(t *testing.T) {
	env := newEnv(t)
	for _, r := range [][2]string{{"GET", "/v1/gc"}, {"POST", "/v1/gc/confirm"}} {
		resp, body := env.do(t, r[0], r[1], nil)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s without a loop: %d %s, want 503 with Retry-After", r[0], r[1], resp.StatusCode, body)
		}
	}
}
