package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestApplyReportsCreatedConfiguredUnchanged(t *testing.T) {
	s := openStore(t, store.Options{})
	a := sandbox("team", "a", "img:1", labels("app", "x"))
	b := sandbox("team", "b", "img:1", nil)

	steps := []struct {
		name    string
		batch   []spec.Sandbox
		opts    store.ApplyOptions
		want    []store.ObjectResult
		wantRev uint64
	}{
		{
			name:  "new objects are created at generation 1",
			batch: []spec.Sandbox{a, b},
			want: []store.ObjectResult{
				{Key: "team/a", Action: store.ActionCreated, Generation: 1, ResourceVersion: 1},
				{Key: "team/b", Action: store.ActionCreated, Generation: 1, ResourceVersion: 1},
			},
			wantRev: 1,
		},
		{
			name:  "the same batch again is unchanged and takes no revision",
			batch: []spec.Sandbox{a, b},
			want: []store.ObjectResult{
				{Key: "team/a", Action: store.ActionUnchanged, Generation: 1, ResourceVersion: 1},
				{Key: "team/b", Action: store.ActionUnchanged, Generation: 1, ResourceVersion: 1},
			},
			wantRev: 1,
		},
		{
			name:  "a spec change configures and bumps the generation",
			batch: []spec.Sandbox{sandbox("team", "a", "img:2", labels("app", "x")), b},
			want: []store.ObjectResult{
				{Key: "team/a", Action: store.ActionConfigured, Generation: 2, ResourceVersion: 2},
				{Key: "team/b", Action: store.ActionUnchanged, Generation: 1, ResourceVersion: 1},
			},
			wantRev: 2,
		},
		{
			name:  "a label change configures without bumping the generation",
			batch: []spec.Sandbox{sandbox("team", "a", "img:2", labels("app", "y"))},
			want: []store.ObjectResult{
				{Key: "team/a", Action: store.ActionConfigured, Generation: 2, ResourceVersion: 3},
			},
			wantRev: 3,
		},
		{
			name:  "an apply set change configures without bumping the generation",
			batch: []spec.Sandbox{b},
			opts:  store.ApplyOptions{ApplySet: "prod"},
			want: []store.ObjectResult{
				{Key: "team/b", Action: store.ActionConfigured, Generation: 1, ResourceVersion: 4},
			},
			wantRev: 4,
		},
	}
	var created time.Time
	for _, step := range steps {
		res, err := s.Apply(t.Context(), objects(step.batch...), step.opts)
		if created.IsZero() {
			created = mustGet(t, s, "team/a").CreatedAt
		}
		if err != nil {
			t.Fatalf("%s: Apply: %v", step.name, err)
		}
		if diff := cmp.Diff(step.want, res.Objects); diff != "" {
			t.Errorf("%s: results (-want +got):\n%s", step.name, diff)
		}
		if res.Revision != step.wantRev {
			t.Errorf("%s: revision = %d, want %d", step.name, res.Revision, step.wantRev)
		}
		if got := mustRevision(t, s); got != step.wantRev {
			t.Errorf("%s: store revision = %d, want %d", step.name, got, step.wantRev)
		}
	}

	rec := mustGet(t, s, "team/a")
	want := sandbox("team", "a", "img:2", labels("app", "y"))
	if diff := cmp.Diff(want, rec.Sandbox); diff != "" {
		t.Errorf("stored sandbox (-want +got):\n%s", diff)
	}
	if rec.Hash != want.Spec.Hash() {
		t.Errorf("hash = %q, want %q", rec.Hash, want.Spec.Hash())
	}
	if !rec.CreatedAt.Equal(created) {
		t.Errorf("created at %v, want the first apply's %v", rec.CreatedAt, created)
	}
	if !rec.UpdatedAt.After(rec.CreatedAt) {
		t.Errorf("updated at %v is not after created at %v", rec.UpdatedAt, rec.CreatedAt)
	}
}

func TestApplySourceOnlyChangeIsUnchanged(t *testing.T) {
	s := openStore(t, store.Options{})
	a := sandbox("team", "a", "img:1", nil)
	mustApply(t, s, store.ApplyOptions{}, a)

	moved := a
	moved.Source = spec.Source{File: "elsewhere/sandboxes.hcl", StartLine: 40, StartCol: 1, EndLine: 48, EndCol: 2}
	res := mustApply(t, s, store.ApplyOptions{}, moved)
	if got := res.Objects[0].Action; got != store.ActionUnchanged {
		t.Errorf("action = %s, want unchanged", got)
	}
	if got := mustGet(t, s, "team/a").Sandbox.Source; got != a.Source {
		t.Errorf("source = %v, want the first apply's %v (a source-only change is not written)", got, a.Source)
	}
}

func TestApplyConflictWritesNothing(t *testing.T) {
	tests := []struct {
		name string
		objs func(rv uint64) []store.Object
		opts store.ApplyOptions
		want string
	}{
		{
			name: "stale expected resource version",
			objs: func(rv uint64) []store.Object {
				return []store.Object{
					{Sandbox: sandbox("team", "new", "img:1", nil)},
					{Sandbox: sandbox("team", "a", "img:9", nil), ExpectedResourceVersion: rv - 1},
				}
			},
			want: `sandbox "team/a": expected resource version 1, found 2: conflict`,
		},
		{
			name: "expected resource version on a missing record",
			objs: func(uint64) []store.Object {
				return []store.Object{{Sandbox: sandbox("team", "ghost", "img:1", nil), ExpectedResourceVersion: 7}}
			},
			want: `sandbox "team/ghost": expected resource version 7, found no record: conflict`,
		},
		{
			name: "stale expected revision",
			objs: func(uint64) []store.Object { return objects(sandbox("team", "new", "img:1", nil)) },
			opts: store.ApplyOptions{ExpectedRevision: 1},
			want: "expected store revision 1, found 2: conflict",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, store.Options{})
			mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
			res := mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:2", nil))
			rv := res.Objects[0].ResourceVersion

			_, err := s.Apply(t.Context(), tt.objs(rv), tt.opts)
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Apply error = %v, want ErrConflict", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if got := mustRevision(t, s); got != 2 {
				t.Errorf("revision = %d after a conflict, want 2", got)
			}
			if _, err := s.Get(t.Context(), "team/new"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Get team/new = %v, want ErrNotFound: nothing of a conflicting batch is written", err)
			}
		})
	}
}

func TestApplyMatchingExpectationsSucceed(t *testing.T) {
	s := openStore(t, store.Options{})
	res := mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	_, err := s.Apply(t.Context(), []store.Object{
		{Sandbox: sandbox("team", "a", "img:2", nil), ExpectedResourceVersion: res.Objects[0].ResourceVersion},
	}, store.ApplyOptions{ExpectedRevision: res.Revision})
	if err != nil {
		t.Fatalf("Apply with matching expectations: %v", err)
	}
}

func TestApplyRejectsBadBatches(t *testing.T) {
	tests := []struct {
		name  string
		batch []spec.Sandbox
		opts  store.ApplyOptions
		want  string
	}{
		{
			name:  "duplicate key",
			batch: []spec.Sandbox{sandbox("team", "a", "img:1", nil), sandbox("team", "b", "img:1", nil), sandbox("team", "a", "img:2", nil)},
			want:  `apply: sandbox "team/a" appears more than once in the batch`,
		},
		{
			name:  "empty namespace",
			batch: []spec.Sandbox{sandbox("", "a", "img:1", nil)},
			want:  `apply: sandbox "a": namespace is empty`,
		},
		{
			name:  "slash in name",
			batch: []spec.Sandbox{sandbox("team", "a/b", "img:1", nil)},
			want:  `apply: sandbox "team/a/b": namespace and name must not contain "/"`,
		},
		{
			name:  "prune without apply set or selector",
			batch: []spec.Sandbox{sandbox("team", "a", "img:1", nil)},
			opts:  store.ApplyOptions{Prune: true},
			want:  "apply: prune needs an apply set or a selector; without either it would delete every sandbox",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, store.Options{})
			_, err := s.Apply(t.Context(), objects(tt.batch...), tt.opts)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Apply error = %v, want %q", err, tt.want)
			}
			if got := mustRevision(t, s); got != 0 {
				t.Errorf("revision = %d, want 0: nothing written", got)
			}
		})
	}
}

func TestApplyPruneMarksOnlyItsOwnMissingObjects(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{ApplySet: "web"},
		sandbox("team", "a", "img:1", labels("tier", "front")),
		sandbox("team", "b", "img:1", labels("tier", "front")),
		sandbox("team", "c", "img:1", labels("tier", "back")))
	mustApply(t, s, store.ApplyOptions{ApplySet: "batch"}, sandbox("team", "other", "img:1", nil))

	// Prune within apply set "web", limited by a selector: c is missing
	// from the batch but outside the selector, so it stays.
	res := mustApply(t, s, store.ApplyOptions{
		ApplySet: "web", Prune: true, PruneSelector: store.MustParseSelector("tier=front"),
	}, sandbox("team", "a", "img:1", labels("tier", "front")))
	want := []store.ObjectResult{
		{Key: "team/a", Action: store.ActionUnchanged, Generation: 1, ResourceVersion: 1},
		{Key: "team/b", Action: store.ActionPruned, Generation: 1, ResourceVersion: 3},
	}
	if diff := cmp.Diff(want, res.Objects); diff != "" {
		t.Errorf("prune with selector (-want +got):\n%s", diff)
	}

	// Prune the whole apply set: c goes; b is already marked and is not
	// marked again; "other" belongs to another apply set.
	res = mustApply(t, s, store.ApplyOptions{ApplySet: "web", Prune: true},
		sandbox("team", "a", "img:1", labels("tier", "front")))
	want = []store.ObjectResult{
		{Key: "team/a", Action: store.ActionUnchanged, Generation: 1, ResourceVersion: 1},
		{Key: "team/c", Action: store.ActionPruned, Generation: 1, ResourceVersion: 4},
	}
	if diff := cmp.Diff(want, res.Objects); diff != "" {
		t.Errorf("prune of the apply set (-want +got):\n%s", diff)
	}
	for key, deleting := range map[string]bool{"team/a": false, "team/b": true, "team/c": true, "team/other": false} {
		if rec := mustGet(t, s, key); rec.Deleting() != deleting {
			t.Errorf("%s: deleting = %t, want %t", key, rec.Deleting(), deleting)
		}
	}
}

func TestApplyDryRunComputesTheSameResultsAndWritesNothing(t *testing.T) {
	batch := []spec.Sandbox{
		sandbox("team", "a", "img:2", nil),                // configured
		sandbox("team", "b", "img:1", nil),                // unchanged
		sandbox("team", "c", "img:1", labels("new", "y")), // created
	}
	opts := store.ApplyOptions{ApplySet: "set", Prune: true}
	seed := func(t *testing.T) *store.Store {
		s := openStore(t, store.Options{})
		mustApply(t, s, store.ApplyOptions{ApplySet: "set"},
			sandbox("team", "a", "img:1", nil), sandbox("team", "b", "img:1", nil), sandbox("team", "gone", "img:1", nil))
		return s
	}

	s := seed(t)
	before, _, err := s.List(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dry := opts
	dry.DryRun = true
	dryRes := mustApply(t, s, dry, batch...)
	after, rev, err := s.List(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("dry run changed the store (-before +after):\n%s", diff)
	}
	if rev != 1 {
		t.Errorf("revision after dry run = %d, want 1", rev)
	}

	realRes := mustApply(t, seed(t), opts, batch...)
	if diff := cmp.Diff(realRes, dryRes); diff != "" {
		t.Errorf("dry run results differ from the real apply's (-real +dry):\n%s", diff)
	}
}

func TestApplyDryRunOfUnchangedBatchKeepsRevision(t *testing.T) {
	s := openStore(t, store.Options{})
	a := sandbox("team", "a", "img:1", nil)
	mustApply(t, s, store.ApplyOptions{}, a)
	res := mustApply(t, s, store.ApplyOptions{DryRun: true}, a)
	if res.Revision != 1 || res.Changed() {
		t.Errorf("dry run of an unchanged batch: revision %d, changed %t; want 1, false", res.Revision, res.Changed())
	}
}
