package api_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

func TestDiffShowsFieldPathsAndPlan(t *testing.T) {
	env := newEnv(t)
	base := func(sb *spec.Sandbox) {
		sb.Labels = map[string]string{"team": "ml", "app.kubernetes.io/name": "agent"}
		sb.Spec.Network = spec.NetworkBridge
		sb.Spec.Ports = []spec.Port{{Label: "http", To: 8080}}
		sb.Spec.Env = map[string]string{"LOG_LEVEL": "info", "MODE": "batch"}
	}
	env.mustApply(t, applyReq(sandbox("web", base), sandbox("same"), sandbox("gone")))
	env.planner.known["default/web"] = true
	env.planner.known["default/same"] = true

	changed := sandbox("web", base, func(sb *spec.Sandbox) {
		sb.Labels = map[string]string{"team": "infra", "app.kubernetes.io/name": "agent"}
		sb.Spec.MemoryMB = 1024
		sb.Spec.Ports[0].To = 9090
		sb.Spec.Env = map[string]string{"LOG_LEVEL": "debug", "EXTRA": "1"}
	})
	req := applyReq(changed, sandbox("same"), sandbox("fresh"))
	req.Prune = true
	req.PruneSelector = "!team"
	var out api.DiffResponse
	env.mustDo(t, "POST", "/v1/diff", req, http.StatusOK, &out)

	if !out.Changed || out.Revision != 1 || !out.Planned || out.PlanNote != "" {
		t.Errorf("diff header: changed %v revision %d planned %v note %q; want true, 1, true, none",
			out.Changed, out.Revision, out.Planned, out.PlanNote)
	}
	if len(out.Objects) != 4 {
		t.Fatalf("objects %+v, want web, same, fresh and the pruned gone", out.Objects)
	}
	web := out.Objects[0]
	wantChanges := []api.FieldChange{
		{Path: "labels.team", Op: "replace", Old: "ml", New: "infra"},
		{Path: "spec.env.EXTRA", Op: "add", New: "1"},
		{Path: "spec.env.LOG_LEVEL", Op: "replace", Old: "info", New: "debug"},
		{Path: "spec.env.MODE", Op: "remove", Old: "batch"},
		{Path: "spec.memoryMB", Op: "replace", Old: json.Number("512"), New: json.Number("1024")},
		{Path: "spec.ports[0].to", Op: "replace", Old: json.Number("8080"), New: json.Number("9090")},
	}
	if web.Action != "update" {
		t.Errorf("web action %q, want update", web.Action)
	}
	if d := cmp.Diff(wantChanges, normalizeChanges(t, web.Changes)); d != "" {
		t.Errorf("web changes (-want +got):\n%s", d)
	}
	wantPlan := &api.PlanSummary{DiffType: "Edited", FailedTGAllocs: []string{},
		DesiredTGUpdates: map[string]api.DesiredUpdates{"sandbox": {DestructiveUpdate: 1}}}
	if d := cmp.Diff(wantPlan, web.Plan); d != "" {
		t.Errorf("web plan (-want +got):\n%s", d)
	}

	same := out.Objects[1]
	if same.Action != "unchanged" || len(same.Changes) != 0 || same.Plan != nil {
		t.Errorf("same: %+v, want unchanged with no changes and no plan asked of Nomad", same)
	}
	fresh := out.Objects[2]
	if fresh.Action != "create" || fresh.Plan == nil || fresh.Plan.DiffType != "Added" {
		t.Errorf("fresh: %+v, want create planned as Added", fresh)
	}
	if !hasChange(fresh.Changes, "spec.image", "add") {
		t.Errorf("fresh changes %+v lack spec.image added", fresh.Changes)
	}
	gone := out.Objects[3]
	if gone.Name != "gone" || gone.Action != "prune" || gone.Plan != nil {
		t.Errorf("gone: %+v, want prune without a plan", gone)
	}
	if rev := env.revision(t); rev != 1 {
		t.Errorf("diff wrote: revision %d, want 1", rev)
	}
}

// normalizeChanges sends changes through JSON again, as a client reads
// them, with numbers kept exact.
func normalizeChanges(t *testing.T, cs []api.FieldChange) []api.FieldChange {
	t.Helper()
	for i := range cs {
		for _, v := range []*any{&cs[i].Old, &cs[i].New} {
			if f, ok := (*v).(float64); ok {
				b, _ := json.Marshal(f)
				*v = json.Number(b)
			}
		}
	}
	return cs
}

func hasChange(cs []api.FieldChange, path, op string) bool {
	for _, c := range cs {
		if c.Path == path && c.Op == op {
			return true
		}
	}
	return false
}

func TestDiffLabelKeysThatAreNotIdentifiers(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web", labeled("app.kubernetes.io/name", "a"))))
	var out api.DiffResponse
	env.mustDo(t, "POST", "/v1/diff", applyReq(sandbox("web", labeled("app.kubernetes.io/name", "b"))), 200, &out)
	want := []api.FieldChange{{Path: `labels["app.kubernetes.io/name"]`, Op: "replace", Old: "a", New: "b"}}
	if d := cmp.Diff(want, out.Objects[0].Changes); d != "" {
		t.Errorf("changes (-want +got):\n%s", d)
	}
}

func TestDiffUnchanged(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web")))
	var out api.DiffResponse
	body := env.mustDo(t, "POST", "/v1/diff", applyReq(sandbox("web")), 200, &out)
	if out.Changed || out.Revision != 1 || out.Objects[0].Action != "unchanged" {
		t.Errorf("diff %s: want unchanged at revision 1", body)
	}
}

func TestDiffOfADeletedSandboxShowsTheMarkCleared(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web")))
	env.mustDo(t, "DELETE", "/v1/sandboxes/default/web", nil, http.StatusAccepted, nil)
	var out api.DiffResponse
	env.mustDo(t, "POST", "/v1/diff", applyReq(sandbox("web")), 200, &out)
	if o := out.Objects[0]; o.Action != "update" || !hasChange(o.Changes, "deletionRequestedAt", "remove") {
		t.Errorf("diff %+v: want update clearing deletionRequestedAt", o)
	}
}

func TestDiffWithoutPlannerSaysSo(t *testing.T) {
	env := newEnv(t, withoutPlanner())
	var out api.DiffResponse
	env.mustDo(t, "POST", "/v1/diff", applyReq(sandbox("web")), 200, &out)
	if out.Planned || out.PlanNote == "" || out.Objects[0].Plan != nil || out.Objects[0].PlanError != "" {
		t.Errorf("diff without planner: %+v, want planned false with a note and no plans", out)
	}
}

func TestDiffReportsPlanErrorsPerObject(t *testing.T) {
	env := newEnv(t)
	var out api.DiffResponse
	env.mustDo(t, "POST", "/v1/diff", applyReq(sandbox("unplannable"), sandbox("fine")), 200, &out)
	if o := out.Objects[0]; o.Plan != nil || o.PlanError == "" {
		t.Errorf("unplannable: %+v, want planError", o)
	}
	if o := out.Objects[1]; o.Plan == nil || o.PlanError != "" {
		t.Errorf("fine: %+v, want a plan", o)
	}
}

func TestDiffRefusesLikeApply(t *testing.T) {
	env := newEnv(t)
	tests := []struct {
		name string
		req  api.ApplyRequest
		want int
	}{
		{"invalid", applyReq(sandbox("x", memory(1))), http.StatusBadRequest},
		{"policy", applyReq(sandbox("x", memory(8192))), http.StatusUnprocessableEntity},
		{"stale revision", api.ApplyRequest{Objects: []api.ApplyObject{object(sandbox("x"))}, ExpectedRevision: 9}, http.StatusConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env.mustDo(t, "POST", "/v1/diff", tt.req, tt.want, nil)
		})
	}
	if n := env.planner.callCount(); n != 0 {
		t.Errorf("planner called %d times for refused diffs", n)
	}
}

// TestDiffSaysWhatApplyWillMeet: a sandbox whose Nomad job ID is taken by
// a job this controller does not own, or whose namespace Nomad lacks,
// would be stored by apply but never run. The diff says so instead of
// create or update, and plans nothing for it.
func TestDiffSaysWhatApplyWillMeet(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("theirs")))
	env.planner.obstacles = map[string]nomad.Obstacle{
		"default/taken":  {Reason: nomad.ObstacleForeignJob, Message: "Nomad job agentkernel-taken exists but was not created by this controller."},
		"default/theirs": {Reason: nomad.ObstacleOtherOwner, Message: "Nomad job agentkernel-theirs belongs to another controller."},
		"team-x/web":     {Reason: nomad.ObstacleNamespaceMissing, Message: "Nomad has no namespace \"team-x\"."},
	}
	req := applyReq(sandbox("taken"), sandbox("theirs", memory(1024)), sandbox("web", inNamespace("team-x")), sandbox("fine"))
	var out api.DiffResponse
	env.mustDo(t, "POST", "/v1/diff", req, http.StatusOK, &out)

	type brief struct {
		Key, Action, Message string
		Changes, Planned     bool
	}
	var got []brief
	for _, o := range out.Objects {
		got = append(got, brief{o.Namespace + "/" + o.Name, o.Action, o.Message, len(o.Changes) > 0, o.Plan != nil || o.PlanError != ""})
	}
	want := []brief{
		{"default/taken", "conflict", "Nomad job agentkernel-taken exists but was not created by this controller.", true, false},
		{"default/theirs", "conflict", "Nomad job agentkernel-theirs belongs to another controller.", true, false},
		{"team-x/web", "missing_namespace", "Nomad has no namespace \"team-x\".", true, false},
		{"default/fine", "create", "", true, true},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("objects (-want +got):\n%s", d)
	}
	if !out.Changed {
		t.Error("changed is false; apply would still store these sandboxes")
	}
	if n := env.planner.callCount(); n != 1 {
		t.Errorf("%d plans, want 1: a sandbox that cannot run is not planned", n)
	}
}
