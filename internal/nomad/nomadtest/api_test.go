package nomadtest

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// These tests go through github.com/hashicorp/nomad/api, as the controller
// does, and compare with the recorded answers.

// TestAPICheckAndSet covers 90-98: the conflict texts of
// Jobs().EnforceRegister, which arrive as api.UnexpectedResponseError with
// status 500.
func TestAPICheckAndSet(t *testing.T) {
	cases := []struct {
		fact  string
		job   string
		index func(cur uint64) uint64
		want  func(cur uint64) string // "" means success
	}{
		{"90", "agentkernel-sleep-raw", func(cur uint64) uint64 { return cur - 1 },
			func(cur uint64) string {
				return fmt.Sprintf("Enforcing job modify index %d: job exists with conflicting job modify index: %d", cur-1, cur)
			}},
		{"91", "agentkernel-sleep-raw", func(cur uint64) uint64 { return cur }, func(uint64) string { return "" }},
		{"92", "agentkernel-sleep-raw", func(uint64) uint64 { return 0 },
			func(uint64) string { return "Enforcing job modify index 0: job already exists" }},
		{"93", "agentkernel-cas-new", func(uint64) uint64 { return 0 }, func(uint64) string { return "" }},
		{"94", "agentkernel-cas-new2", func(uint64) uint64 { return 5 },
			func(uint64) string { return "Enforcing job modify index 5: job does not exist" }},
	}
	f := newLoopbackFixture(t, Options{})
	f.register(t, loadJob(t, "agentkernel-sleep-raw"))
	f.register(t, loadJob(t, "agentkernel-sleep-raw-meta-changed"))
	for _, tc := range cases {
		t.Run(tc.fact, func(t *testing.T) {
			rec := loadRecording(t, tc.fact)
			var cur uint64
			if j, _, err := f.api.Jobs().Info(tc.job, nil); err == nil {
				cur = *j.JobModifyIndex
			}
			job := loadJob(t, "agentkernel-sleep-raw-meta-changed")
			job.ID, job.Name = ptr(tc.job), ptr(tc.job)
			_, _, err := f.api.Jobs().EnforceRegister(job, tc.index(cur), nil)
			want := tc.want(cur)
			if want == "" {
				if err != nil {
					t.Fatalf("EnforceRegister: %v", err)
				}
				return
			}
			var ure api.UnexpectedResponseError
			if !errors.As(err, &ure) || ure.StatusCode() != http.StatusInternalServerError || ure.Body() != want {
				t.Fatalf("EnforceRegister error %v, want 500 %q", err, want)
			}
			// Same wording as recorded, numbers aside.
			if maskDigits(ure.Body()) != maskDigits(string(rec.body)) {
				t.Errorf("body %q, recorded %q", ure.Body(), rec.body)
			}
		})
	}
	t.Run("98 correct index, identical spec", func(t *testing.T) {
		j, _, err := f.api.Jobs().Info("agentkernel-sleep-raw", nil)
		if err != nil {
			t.Fatal(err)
		}
		plan, _, err := f.api.Jobs().Plan(loadJob(t, "agentkernel-sleep-raw-meta-changed"), true, nil)
		if err != nil || plan.JobModifyIndex != *j.JobModifyIndex {
			t.Fatalf("plan JobModifyIndex %v (%v), want the job's %d (facts 4.6)", plan, err, *j.JobModifyIndex)
		}
		resp, _, err := f.api.Jobs().EnforceRegister(loadJob(t, "agentkernel-sleep-raw-meta-changed"), plan.JobModifyIndex, nil)
		if err != nil || resp.EvalID == "" {
			t.Fatalf("EnforceRegister with the plan's index: %v %v", resp, err)
		}
		if after, _, _ := f.api.Jobs().Info("agentkernel-sleep-raw", nil); *after.Version != *j.Version {
			t.Errorf("identical spec changed the version %d -> %d", *j.Version, *after.Version)
		}
	})
}

// TestAPIList covers 10-22 through Jobs().List: filter, meta=true,
// prefix and pagination tokens.
func TestAPIList(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	for _, name := range []string{"agentkernel-sleep-raw", "agentkernel-sleep-exec", "other-unmanaged"} {
		f.register(t, loadJob(t, name))
	}
	cases := []struct {
		name    string
		q       *api.QueryOptions
		want    []string
		meta    bool
		wantErr string
	}{
		{"filter on Meta without meta=true (13)", &api.QueryOptions{Filter: `Meta["agentkernel-managed"] == "true"`},
			[]string{"agentkernel-sleep-exec", "agentkernel-sleep-raw"}, false, ""},
		{"filter with meta=true (11)", &api.QueryOptions{Filter: `Meta["agentkernel-managed"] == "true"`, Params: map[string]string{"meta": "true"}},
			[]string{"agentkernel-sleep-exec", "agentkernel-sleep-raw"}, true, ""},
		{"not in (17)", &api.QueryOptions{Filter: `"agentkernel-managed" not in Meta`}, []string{"other-unmanaged"}, false, ""},
		{"prefix (15)", &api.QueryOptions{Prefix: "agentkernel-"}, []string{"agentkernel-sleep-exec", "agentkernel-sleep-raw"}, false, ""},
		{"bad filter (12)", &api.QueryOptions{Filter: `Meta.agentkernel-managed == "true"`}, nil, false,
			"failed to create result paginator: failed to read filter expression: 1:17 (16): no match found"},
		{"unknown field (18)", &api.QueryOptions{Filter: `Nope == "x"`}, nil, false,
			`failed to read result page: error finding value in datum: /Nope at part 0: couldn't find key: struct field with name "Nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, _, err := f.api.Jobs().List(tc.q)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, j := range l {
				ids = append(ids, j.ID)
				if (j.Meta != nil) != tc.meta {
					t.Errorf("%s: Meta %v, want present=%v", j.ID, j.Meta, tc.meta)
				}
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("IDs %q, want %q", ids, tc.want)
			}
		})
	}
	t.Run("pagination (20-22)", func(t *testing.T) {
		var ids, tokens []string
		q := &api.QueryOptions{PerPage: 1}
		for {
			l, meta, err := f.api.Jobs().List(q)
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range l {
				ids = append(ids, j.ID)
			}
			if meta.NextToken == "" {
				break
			}
			tokens = append(tokens, meta.NextToken)
			q = &api.QueryOptions{PerPage: 1, NextToken: meta.NextToken}
		}
		if want := []string{"default.agentkernel-sleep-raw", "default.other-unmanaged"}; !slices.Equal(tokens, want) {
			t.Errorf("tokens %q, want %q", tokens, want)
		}
		if len(ids) != 3 {
			t.Errorf("IDs %q, want all three", ids)
		}
	})
}

// TestAPIValidateAndPlan covers 73, 74 and 84 through the api client.
func TestAPIValidateAndPlan(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	resp, _, err := f.api.Jobs().Validate(loadJob(t, "invalid-missing-driver"), nil)
	if err != nil || !resp.DriverConfigValidated || len(resp.ValidationErrors) != 1 || !strings.Contains(resp.Error, "Missing task driver") {
		t.Errorf("validate invalid job: %+v %v", resp, err)
	}
	plan, _, err := f.api.Jobs().Plan(loadJob(t, "plan-new-job"), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Diff.Type != "Added" || plan.Annotations.DesiredTGUpdates["main"].Place != 1 || plan.JobModifyIndex != 0 {
		t.Errorf("plan of a new job: diff %s, updates %+v, JobModifyIndex %d", plan.Diff.Type, plan.Annotations.DesiredTGUpdates["main"], plan.JobModifyIndex)
	}
	if _, _, err := f.api.Jobs().Info(*loadJob(t, "plan-new-job").ID, nil); err == nil {
		t.Error("plan created the job (84)")
	}
}

// TestAPIVariablesAndNamespaces runs the variable and namespace calls of
// the api client against the server (more/ 100-126, 400-404).
func TestAPIVariablesAndNamespaces(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	vars := f.api.Variables()
	v, _, err := vars.Create(&api.Variable{Path: "sandboxes/alpha", Items: api.VariableItems{"owner": "test"}}, nil)
	if err != nil || v.ModifyIndex == 0 || v.Namespace != "default" {
		t.Fatalf("create: %+v %v", v, err)
	}
	if _, _, err := vars.CheckedUpdate(&api.Variable{Path: "sandboxes/alpha", Items: api.VariableItems{"owner": "x"}, ModifyIndex: v.ModifyIndex}, nil); err != nil {
		t.Errorf("checked update with the current index: %v", err)
	}
	_, _, err = vars.CheckedUpdate(&api.Variable{Path: "sandboxes/alpha", Items: api.VariableItems{"owner": "y"}, ModifyIndex: v.ModifyIndex}, nil)
	var conflict api.ErrCASConflict
	if !errors.As(err, &conflict) || conflict.Conflict.Items["owner"] != "x" {
		t.Errorf("stale checked update: %v, want a conflict carrying the current variable", err)
	}
	if _, _, err := vars.Read("sandboxes/missing", nil); !errors.Is(err, api.ErrVariablePathNotFound) {
		t.Errorf("read missing: %v, want ErrVariablePathNotFound", err)
	}
	list, _, err := vars.PrefixList("sandboxes/", nil)
	if err != nil || len(list) != 1 || list[0].Path != "sandboxes/alpha" {
		t.Errorf("prefix list: %+v %v", list, err)
	}
	if _, err := vars.Delete("sandboxes/alpha", nil); err != nil {
		t.Errorf("delete: %v", err)
	}

	ns := f.api.Namespaces()
	if _, err := ns.Register(&api.Namespace{Name: "sandboxes", Description: "agentkernel sandboxes"}, nil); err != nil {
		t.Fatalf("register namespace: %v", err)
	}
	got, _, err := ns.Info("sandboxes", nil)
	if err != nil || got.Description != "agentkernel sandboxes" {
		t.Errorf("namespace info: %+v %v", got, err)
	}
	job := loadJob(t, "agentkernel-sleep-raw")
	if _, _, err := f.api.Jobs().Register(job, &api.WriteOptions{Namespace: "sandboxes"}); err != nil {
		t.Fatalf("register in sandboxes: %v", err)
	}
	if l, _, err := f.api.Jobs().List(&api.QueryOptions{Namespace: "*"}); err != nil || len(l) != 1 || l[0].Namespace != "sandboxes" {
		t.Errorf("list all namespaces: %+v %v", l, err)
	}
	if _, _, err := f.api.Jobs().Info("agentkernel-sleep-raw", nil); err == nil {
		t.Error("a job in sandboxes is visible in default (more/ 440)")
	}
}
