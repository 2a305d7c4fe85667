package store_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// declarations lists every record of s as declarations.
func declarations(t *testing.T, s *store.Store) []store.Declaration {
	t.Helper()
	recs, _, err := s.List(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	out := make([]store.Declaration, len(recs))
	for i, r := range recs {
		out[i] = r.Declaration()
	}
	return out
}

func TestImportRebuildsAnotherStore(t *testing.T) {
	src := openStore(t, store.Options{})
	mustApply(t, src, store.ApplyOptions{ApplySet: "team"},
		sandbox("default", "a", "img:1", labels("tier", "x")),
		sandbox("default", "b", "img:1", nil))
	mustApply(t, src, store.ApplyOptions{ApplySet: "team"}, sandbox("default", "a", "img:2", labels("tier", "x")))
	if _, err := src.Delete(t.Context(), "default/b"); err != nil {
		t.Fatal(err)
	}
	want := declarations(t, src)

	dst := openStore(t, store.Options{})
	mustApply(t, dst, store.ApplyOptions{}, sandbox("other", "stale", "img:9", nil))
	if err := dst.UpdateStatus(t.Context(), "other/stale", store.Status{Phase: store.PhaseRunning}); err != nil {
		t.Fatal(err)
	}
	rev := mustRevision(t, dst)
	w, err := dst.Watch(t.Context(), rev)
	if err != nil {
		t.Fatal(err)
	}

	res, err := dst.Import(t.Context(), want, store.ImportOptions{RemoveMissing: true})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if res.Created != 2 || res.Removed != 1 || res.Updated != 0 || res.Unchanged != 0 || res.Revision != rev+1 {
		t.Errorf("import result = %+v, want 2 created, 1 removed at revision %d", res, rev+1)
	}
	if diff := cmp.Diff(want, declarations(t, dst)); diff != "" {
		t.Errorf("imported declarations differ (-want +got):\n%s", diff)
	}
	if got := mustGet(t, dst, "default/a"); got.Generation != 2 || got.ResourceVersion != rev+1 {
		t.Errorf("default/a: generation %d resource version %d, want 2 and %d", got.Generation, got.ResourceVersion, rev+1)
	}
	var got []store.Change
	for len(got) < 3 {
		got = append(got, <-w.Changes())
	}
	wantChanges := []store.Change{
		{Revision: rev + 1, Kind: store.ChangeSpec, Key: "default/a", Generation: 2},
		{Revision: rev + 1, Kind: store.ChangeDeleted, Key: "default/b", Generation: 1},
		{Revision: rev + 1, Kind: store.ChangeFinalized, Key: "other/stale", Generation: 1},
	}
	if diff := cmp.Diff(wantChanges, got); diff != "" {
		t.Errorf("change feed (-want +got):\n%s", diff)
	}
	if _, err := dst.Events(t.Context(), "other/stale"); err == nil {
		t.Errorf("events of the removed record are still there")
	}

	// The same batch again writes nothing.
	res, err = dst.Import(t.Context(), want, store.ImportOptions{RemoveMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed() || res.Unchanged != 2 || mustRevision(t, dst) != rev+1 {
		t.Errorf("re-import = %+v at revision %d, want nothing written", res, mustRevision(t, dst))
	}
}

func TestImportKeepsStatusOfUnchangedAndMissingWithoutRemove(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("default", "a", "img:1", nil), sandbox("default", "b", "img:1", nil))
	if err := s.UpdateStatus(t.Context(), "default/a", store.Status{Phase: store.PhaseRunning}); err != nil {
		t.Fatal(err)
	}
	a := mustGet(t, s, "default/a").Declaration()
	res, err := s.Import(t.Context(), []store.Declaration{a}, store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed() {
		t.Errorf("import of an unchanged declaration wrote: %+v", res)
	}
	if got := mustGet(t, s, "default/a").Status.Phase; got != store.PhaseRunning {
		t.Errorf("status phase = %q, want it kept", got)
	}
	mustGet(t, s, "default/b") // kept: RemoveMissing is off
}

func TestImportRefusesBadBatches(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("default", "a", "img:1", nil))
	good := mustGet(t, s, "default/a").Declaration()
	zeroGen := good
	zeroGen.Generation = 0
	noName := good
	noName.Sandbox.Name = ""
	tests := []struct {
		name  string
		batch []store.Declaration
	}{
		{"generation zero", []store.Declaration{zeroGen}},
		{"duplicate key", []store.Declaration{good, good}},
		{"empty name", []store.Declaration{noName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := mustRevision(t, s)
			if _, err := s.Import(t.Context(), tt.batch, store.ImportOptions{RemoveMissing: true}); err == nil {
				t.Fatal("Import succeeded, want an error")
			}
			if got := mustRevision(t, s); got != rev {
				t.Errorf("revision moved from %d to %d on a refused import", rev, got)
			}
		})
	}
}

func TestImportRemovesTheKeysItIsGiven(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("default", "a", "img:1", nil), sandbox("default", "b", "img:1", nil), sandbox("default", "c", "img:1", nil))
	a := mustGet(t, s, "default/a").Declaration()
	res, err := s.Import(t.Context(), []store.Declaration{a}, store.ImportOptions{Remove: []string{"default/a", "default/b", "default/nope"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 1 || res.Unchanged != 1 {
		t.Errorf("import result %+v, want b removed and a (in the batch too) kept", res)
	}
	mustGet(t, s, "default/a")
	mustGet(t, s, "default/c")
	if _, err := s.Get(t.Context(), "default/b"); err == nil {
		t.Error("default/b is still there")
	}
}
