package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

func TestApplyActions(t *testing.T) {
	env := newEnv(t)
	out := env.mustApply(t, applyReq(sandbox("a"), sandbox("b")))
	want := api.ApplyResponse{Revision: 1, Changed: true, Results: []api.ObjectResult{
		{Namespace: "default", Name: "a", Action: "created", Generation: 1, ResourceVersion: 1},
		{Namespace: "default", Name: "b", Action: "created", Generation: 1, ResourceVersion: 1},
	}}
	if d := cmp.Diff(want, out); d != "" {
		t.Fatalf("first apply (-want +got):\n%s", d)
	}

	out = env.mustApply(t, applyReq(sandbox("a", memory(1024)), sandbox("b")))
	want = api.ApplyResponse{Revision: 2, Changed: true, Results: []api.ObjectResult{
		{Namespace: "default", Name: "a", Action: "configured", Generation: 2, ResourceVersion: 2},
		{Namespace: "default", Name: "b", Action: "unchanged", Generation: 1, ResourceVersion: 1},
	}}
	if d := cmp.Diff(want, out); d != "" {
		t.Fatalf("second apply (-want +got):\n%s", d)
	}

	// Ports out of order are canonicalised before hashing: same spec.
	withPorts := func(sb *spec.Sandbox) {
		sb.Spec.Network = spec.NetworkBridge
		sb.Spec.Ports = []spec.Port{{Label: "web", To: 8080}, {Label: "api", To: 9090}}
	}
	env.mustApply(t, applyReq(sandbox("c", withPorts)))
	reordered := sandbox("c", withPorts)
	reordered.Spec.Ports[0], reordered.Spec.Ports[1] = reordered.Spec.Ports[1], reordered.Spec.Ports[0]
	out = env.mustApply(t, applyReq(reordered))
	if out.Changed || out.Results[0].Action != "unchanged" {
		t.Errorf("reordered ports: %+v, want unchanged", out)
	}
}

func TestApplyRefusals(t *testing.T) {
	tests := []struct {
		name     string
		req      func(t *testing.T, env *testEnv) api.ApplyRequest
		want     int
		wantCode string
		// wantDetail appears in the details, as JSON.
		wantDetail []string
	}{
		{
			name: "invalid objects list every problem with their source",
			req: func(*testing.T, *testEnv) api.ApplyRequest {
				return applyReq(sandbox("ok"), sandbox("Bad_Name", memory(1)), sandbox("low", memory(2)))
			},
			want: 400, wantCode: api.CodeInvalid,
			wantDetail: []string{`"name":"Bad_Name"`, `"source":"sandboxes/Bad_Name.hcl:3"`, `"index":1`,
				`"name":"low"`, `"index":2`, `memory_mb`},
		},
		{
			name: "duplicate objects",
			req: func(*testing.T, *testEnv) api.ApplyRequest {
				return applyReq(sandbox("twice"), sandbox("twice"))
			},
			want: 400, wantCode: api.CodeInvalid, wantDetail: []string{"objects[0]"},
		},
		{
			name: "policy refusal names the rule",
			req: func(*testing.T, *testEnv) api.ApplyRequest {
				return applyReq(sandbox("ok"), sandbox("huge", memory(8192)))
			},
			want: 422, wantCode: api.CodeRefused, wantDetail: []string{`"name":"huge"`, "ceiling of 4096"},
		},
		{
			name: "empty objects without prune",
			req:  func(*testing.T, *testEnv) api.ApplyRequest { return api.ApplyRequest{} },
			want: 400, wantCode: api.CodeInvalid,
		},
		{
			name: "apply set name too long",
			req: func(*testing.T, *testEnv) api.ApplyRequest {
				r := applyReq(sandbox("ok"))
				r.ApplySet = strings.Repeat("a", api.MaxApplySetLength+1)
				return r
			},
			want: 400, wantCode: api.CodeInvalid,
		},
		{
			name: "prune without apply set or selector",
			req:  func(*testing.T, *testEnv) api.ApplyRequest { return api.ApplyRequest{Prune: true} },
			want: 400, wantCode: api.CodeInvalid,
		},
		{
			name: "bad prune selector",
			req: func(*testing.T, *testEnv) api.ApplyRequest {
				return api.ApplyRequest{Prune: true, PruneSelector: "team in (ml"}
			},
			want: 400, wantCode: api.CodeInvalid, wantDetail: []string{"column"},
		},
		{
			name: "prune selector without prune",
			req: func(*testing.T, *testEnv) api.ApplyRequest {
				req := applyReq(sandbox("a"))
				req.PruneSelector = "team=ml"
				return req
			},
			want: 400, wantCode: api.CodeInvalid,
		},
		{
			name: "stale expected revision",
			req: func(t *testing.T, env *testEnv) api.ApplyRequest {
				env.mustApply(t, applyReq(sandbox("seed")))
				req := applyReq(sandbox("a"))
				req.ExpectedRevision = 7
				return req
			},
			want: 409, wantCode: api.CodeConflict, wantDetail: []string{"expected store revision 7, found 1"},
		},
		{
			name: "stale expected resource version",
			req: func(t *testing.T, env *testEnv) api.ApplyRequest {
				env.mustApply(t, applyReq(sandbox("a")))
				env.mustApply(t, applyReq(sandbox("a", memory(1024))))
				req := applyReq(sandbox("a", memory(2048)))
				req.Objects[0].ExpectedResourceVersion = 1
				return req
			},
			want: 409, wantCode: api.CodeConflict, wantDetail: []string{"expected resource version 1, found 2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t)
			req := tt.req(t, env)
			before := env.revision(t)
			resp, body := env.do(t, "POST", "/v1/apply", req)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			e := decodeError(t, body)
			if e.Code != tt.wantCode {
				t.Errorf("code %q, want %q", e.Code, tt.wantCode)
			}
			details, _ := json.Marshal(e.Details)
			for _, want := range tt.wantDetail {
				if !strings.Contains(string(details), want) {
					t.Errorf("details %s lack %s", details, want)
				}
			}
			if after := env.revision(t); after != before {
				t.Errorf("store revision moved from %d to %d on a refused apply", before, after)
			}
		})
	}
}

func TestApplyConflictMessageSaysWhatToDo(t *testing.T) {
	env := newEnv(t)
	req := applyReq(sandbox("a"))
	req.ExpectedRevision = 3
	_, body := env.do(t, "POST", "/v1/apply", req)
	e := decodeError(t, body)
	for _, want := range []string{"read it again and retry", "drop expectedRevision"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
}

func TestApplyWithMatchingExpectationsSucceeds(t *testing.T) {
	env := newEnv(t)
	first := env.mustApply(t, applyReq(sandbox("a")))
	req := applyReq(sandbox("a", memory(1024)))
	req.ExpectedRevision = first.Revision
	req.Objects[0].ExpectedResourceVersion = first.Results[0].ResourceVersion
	if out := env.mustApply(t, req); out.Results[0].Action != "configured" {
		t.Errorf("action %q, want configured", out.Results[0].Action)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("old")))
	req := applyReq(sandbox("new"), sandbox("old", memory(1024)))
	req.DryRun = true
	out := env.mustApply(t, req)
	want := api.ApplyResponse{Revision: 2, DryRun: true, Changed: true, Results: []api.ObjectResult{
		{Namespace: "default", Name: "new", Action: "created", Generation: 1, ResourceVersion: 2},
		{Namespace: "default", Name: "old", Action: "configured", Generation: 2, ResourceVersion: 2},
	}}
	if d := cmp.Diff(want, out); d != "" {
		t.Errorf("dry run (-want +got):\n%s", d)
	}
	if rev := env.revision(t); rev != 1 {
		t.Errorf("revision %d after a dry run, want 1", rev)
	}
	env.mustDo(t, "GET", "/v1/sandboxes/default/new", nil, http.StatusNotFound, nil)
	var it api.Item
	env.mustDo(t, "GET", "/v1/sandboxes/default/old", nil, http.StatusOK, &it)
	if it.Spec.MemoryMB != 512 || it.Generation != 1 {
		t.Errorf("old after dry run: memory %d generation %d, want 512 and 1", it.Spec.MemoryMB, it.Generation)
	}
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name string
		req  api.ApplyRequest
		// wantPruned are the keys marked for deletion.
		wantPruned []string
	}{
		{
			name:       "by apply set",
			req:        api.ApplyRequest{Objects: []api.ApplyObject{object(sandbox("a1"))}, ApplySet: "team-a", Prune: true},
			wantPruned: []string{"default/a2"},
		},
		{
			name:       "by apply set, nothing left",
			req:        api.ApplyRequest{Objects: []api.ApplyObject{}, ApplySet: "team-a", Prune: true},
			wantPruned: []string{"default/a1", "default/a2"},
		},
		{
			name:       "by selector",
			req:        api.ApplyRequest{Objects: []api.ApplyObject{}, Prune: true, PruneSelector: "tier=batch"},
			wantPruned: []string{"default/a2", "default/b2"},
		},
		{
			name:       "by apply set and selector",
			req:        api.ApplyRequest{Objects: []api.ApplyObject{}, ApplySet: "team-b", Prune: true, PruneSelector: "tier=batch"},
			wantPruned: []string{"default/b2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t)
			setA := applyReq(sandbox("a1", labeled("tier", "web")), sandbox("a2", labeled("tier", "batch")))
			setA.ApplySet = "team-a"
			env.mustApply(t, setA)
			setB := applyReq(sandbox("b1", labeled("tier", "web")), sandbox("b2", labeled("tier", "batch")))
			setB.ApplySet = "team-b"
			env.mustApply(t, setB)

			// The dry run predicts the same prune without writing it.
			dry := tt.req
			dry.DryRun = true
			dryOut := env.mustApply(t, dry)
			out := env.mustApply(t, tt.req)
			if d := cmp.Diff(dryOut.Results, out.Results); d != "" {
				t.Errorf("dry run and apply differ (-dry +apply):\n%s", d)
			}
			var pruned []string
			for _, r := range out.Results {
				if r.Action == "pruned" {
					pruned = append(pruned, r.Namespace+"/"+r.Name)
				}
			}
			if d := cmp.Diff(tt.wantPruned, pruned); d != "" {
				t.Errorf("pruned (-want +got):\n%s", d)
			}
			var list api.ItemList
			env.mustDo(t, "GET", "/v1/sandboxes", nil, 200, &list)
			var marked []string
			for _, it := range list.Items {
				if it.DeletionRequestedAt != nil {
					marked = append(marked, it.Namespace+"/"+it.Name)
				}
			}
			if d := cmp.Diff(tt.wantPruned, marked); d != "" {
				t.Errorf("marked for deletion (-want +got):\n%s", d)
			}
		})
	}
}

func TestApplyGivesTheDefaultNamespace(t *testing.T) {
	tests := []struct {
		name string
		opt  envOption
		want string
	}{
		{"built-in default", func(*envConfig) {}, "default"},
		{"configured default", func(c *envConfig) { c.api.DefaultNamespace = "agents" }, "agents"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opt)
			e.mustApply(t, applyReq(sandbox("web", inNamespace(""))))
			e.mustDo(t, http.MethodGet, "/v1/sandboxes/"+tt.want+"/web", nil, http.StatusOK, nil)
			var v api.VersionInfo
			e.mustDo(t, http.MethodGet, "/v1/version", nil, http.StatusOK, &v)
			if v.DefaultNamespace != tt.want {
				t.Errorf("version says default namespace %q, want %q", v.DefaultNamespace, tt.want)
			}
		})
	}
}
