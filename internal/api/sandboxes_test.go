package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestListFilters(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(
		sandbox("a", labeled("team", "ml")),
		sandbox("b", labeled("team", "web")),
		sandbox("c", inNamespace("prod"), labeled("team", "ml")),
	))
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"default/a", "default/b", "prod/c"}},
		{"?namespace=default", []string{"default/a", "default/b"}},
		{"?selector=team%3Dml", []string{"default/a", "prod/c"}},
		{"?namespace=prod&selector=team%3Dml", []string{"prod/c"}},
		{"?selector=team+notin+(ml,web)", []string{}},
		{"?namespace=nowhere", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var list api.ItemList
			body := env.mustDo(t, "GET", "/v1/sandboxes"+tt.query, nil, http.StatusOK, &list)
			got := []string{}
			for _, it := range list.Items {
				got = append(got, it.Namespace+"/"+it.Name)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("items (-want +got):\n%s", d)
			}
			if list.Revision != 1 {
				t.Errorf("revision %d, want 1", list.Revision)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(body, &raw); err != nil || string(raw["items"]) == "null" {
				t.Errorf("items must be an array, even empty: %s", body)
			}
		})
	}
}

func TestListBadSelector(t *testing.T) {
	env := newEnv(t)
	resp, body := env.do(t, "GET", "/v1/sandboxes?selector=team+in+(ml", nil)
	if resp.StatusCode != http.StatusBadRequest || decodeError(t, body).Code != api.CodeInvalid {
		t.Errorf("status %d body %s, want 400 invalid", resp.StatusCode, body)
	}
}

func TestItemShape(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web", labeled("team", "ml"))))

	// Never reconciled: Pending, every field present.
	var fresh map[string]any
	env.mustDo(t, "GET", "/v1/sandboxes/default/web", nil, 200, &fresh)
	wantKeys := []string{"applySet", "createdAt", "generation", "hash", "labels", "name", "namespace",
		"resourceVersion", "source", "spec", "status", "updatedAt"}
	if d := cmp.Diff(wantKeys, sortedKeys(fresh)); d != "" {
		t.Errorf("item keys (-want +got):\n%s", d)
	}
	status := fresh["status"].(map[string]any)
	wantStatus := map[string]any{
		"phase": "Pending", "observedGeneration": 0.0, "jobID": "", "jobModifyIndex": 0.0, "jobVersion": 0.0, "allocJobVersion": 0.0, "allocID": "",
		"node": "", "ports": []any{}, "lastError": "", "conditions": []any{}, "updatedAt": nil,
	}
	if d := cmp.Diff(wantStatus, status); d != "" {
		t.Errorf("fresh status (-want +got):\n%s", d)
	}
	if src := fresh["source"].(map[string]any); src["file"] != "sandboxes/web.hcl" || src["startLine"] != 3.0 {
		t.Errorf("source %v, want sandboxes/web.hcl line 3", src)
	}

	observed := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	err := env.store.UpdateStatus(t.Context(), "default/web", store.Status{
		Phase: store.PhaseRunning, ObservedGeneration: 1, JobID: "agentkernel-web", JobModifyIndex: 42,
		AllocID: "alloc-1", Node: "node-1",
		Ports:      []store.AllocatedPort{{Label: "http", HostIP: "10.0.0.1", Value: 23456, To: 8080}},
		Conditions: []store.Condition{{Type: "Ready", Status: store.ConditionTrue, Reason: "Running", LastTransitionTime: observed}},
		UpdatedAt:  observed,
	})
	if err != nil {
		t.Fatal(err)
	}
	var it api.Item
	env.mustDo(t, "GET", "/v1/sandboxes/default/web", nil, 200, &it)
	wantItemStatus := api.ItemStatus{
		Phase: "Running", ObservedGeneration: 1, JobID: "agentkernel-web", JobModifyIndex: 42, AllocID: "alloc-1",
		Node: "node-1", Ports: []api.Port{{Label: "http", HostIP: "10.0.0.1", Value: 23456, To: 8080}},
		Conditions: []api.Condition{{Type: "Ready", Status: "True", Reason: "Running", LastTransitionTime: observed}},
	}
	if it.Status.UpdatedAt == nil {
		t.Fatal("status.updatedAt is null after a status update")
	}
	it.Status.UpdatedAt = nil
	if d := cmp.Diff(wantItemStatus, it.Status); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	want := sandbox("web", labeled("team", "ml"))
	if d := cmp.Diff(want.Spec, it.Spec); d != "" {
		t.Errorf("spec (-want +got):\n%s", d)
	}
	if it.Hash != want.Spec.Hash() || it.Generation != 1 || it.ResourceVersion != 1 || it.Labels["team"] != "ml" {
		t.Errorf("item %+v: want hash %s, generation 1, resource version 1, team=ml", it, want.Spec.Hash())
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestDeleteMarksForDeletion(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web")))

	var deleted api.Item
	env.mustDo(t, "DELETE", "/v1/sandboxes/default/web", nil, http.StatusAccepted, &deleted)
	if deleted.DeletionRequestedAt == nil {
		t.Fatal("DELETE answered an item without deletionRequestedAt")
	}
	var got api.Item
	env.mustDo(t, "GET", "/v1/sandboxes/default/web", nil, http.StatusOK, &got)
	if got.DeletionRequestedAt == nil || !got.DeletionRequestedAt.Equal(*deleted.DeletionRequestedAt) {
		t.Errorf("GET after DELETE: deletionRequestedAt %v, want %v", got.DeletionRequestedAt, deleted.DeletionRequestedAt)
	}

	// Deleting again changes nothing and is fine.
	var again api.Item
	env.mustDo(t, "DELETE", "/v1/sandboxes/default/web", nil, http.StatusAccepted, &again)
	if !again.DeletionRequestedAt.Equal(*deleted.DeletionRequestedAt) || again.ResourceVersion != deleted.ResourceVersion {
		t.Errorf("second DELETE changed the record: %+v, then %+v", deleted, again)
	}
}

func TestNotFound(t *testing.T) {
	env := newEnv(t)
	for _, tt := range []struct{ method, path string }{
		{"GET", "/v1/sandboxes/default/ghost"},
		{"DELETE", "/v1/sandboxes/default/ghost"},
		{"GET", "/v1/sandboxes/default/ghost/events"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := env.do(t, tt.method, tt.path, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status %d, want 404", resp.StatusCode)
			}
			if e := decodeError(t, body); e.Code != api.CodeNotFound {
				t.Errorf("code %q, want not_found", e.Code)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web")))
	var list api.EventList
	body := env.mustDo(t, "GET", "/v1/sandboxes/default/web/events", nil, 200, &list)
	if len(list.Items) != 0 || string(body) != "{\"items\":[]}\n" {
		t.Errorf("events of a new sandbox: %s, want an empty array", body)
	}
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, ev := range []store.Event{
		{Time: at, Type: store.EventNormal, Reason: store.ReasonCreated, Message: "registered job agentkernel-web"},
		{Time: at.Add(time.Second), Type: store.EventWarning, Reason: store.ReasonFailed, Message: "allocation failed"},
	} {
		if err := env.store.AppendEvent(t.Context(), "default/web", ev); err != nil {
			t.Fatal(err)
		}
	}
	env.mustDo(t, "GET", "/v1/sandboxes/default/web/events", nil, 200, &list)
	want := []api.Event{
		{Time: at, Type: "Normal", Reason: "Created", Message: "registered job agentkernel-web"},
		{Time: at.Add(time.Second), Type: "Warning", Reason: "Failed", Message: "allocation failed"},
	}
	if d := cmp.Diff(want, list.Items); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}
