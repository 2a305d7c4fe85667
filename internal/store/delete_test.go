package store_test

import (
	"errors"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestDeleteMarksUntilFinalize(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	if err := s.UpdateStatus(t.Context(), "team/a", store.Status{Phase: store.PhaseRunning, ObservedGeneration: 1},
		store.Event{Type: store.EventNormal, Reason: store.ReasonCreated}); err != nil {
		t.Fatal(err)
	}

	rec, err := s.Delete(t.Context(), "team/a")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if !rec.Deleting() || rec.ResourceVersion != 3 || rec.Generation != 1 {
		t.Fatalf("deleted record: deleting %t, resource version %d, generation %d; want true, 3, 1",
			rec.Deleting(), rec.ResourceVersion, rec.Generation)
	}
	if got := mustGet(t, s, "team/a"); !got.Deleting() {
		t.Fatal("the record is gone or unmarked before Finalize")
	}

	if err := s.Finalize(t.Context(), "team/a", rec.ResourceVersion); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if _, err := s.Get(t.Context(), "team/a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Finalize = %v, want ErrNotFound", err)
	}
	if _, err := s.Events(t.Context(), "team/a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Events after Finalize = %v, want ErrNotFound", err)
	}

	// A new sandbox under the same key starts afresh, without the old
	// status or events.
	res := mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	if res.Objects[0].Action != store.ActionCreated || res.Objects[0].Generation != 1 {
		t.Errorf("re-created: %+v, want created at generation 1", res.Objects[0])
	}
	if st := mustGet(t, s, "team/a").Status; st.Phase != "" {
		t.Errorf("re-created sandbox inherited status %+v", st)
	}
}

func TestDeleteTwiceIsANoOp(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	first, err := s.Delete(t.Context(), "team/a")
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Delete(t.Context(), "team/a")
	if err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if second.ResourceVersion != first.ResourceVersion || mustRevision(t, s) != 2 {
		t.Errorf("second Delete wrote: resource version %d -> %d, store revision %d",
			first.ResourceVersion, second.ResourceVersion, mustRevision(t, s))
	}
}

func TestDeleteUnknownKeyIsNotFound(t *testing.T) {
	s := openStore(t, store.Options{})
	if _, err := s.Delete(t.Context(), "team/ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete = %v, want ErrNotFound", err)
	}
}

func TestApplyAfterDeleteClearsTheMarkAndBumpsGeneration(t *testing.T) {
	s := openStore(t, store.Options{})
	a := sandbox("team", "a", "img:1", nil)
	mustApply(t, s, store.ApplyOptions{}, a)
	if _, err := s.Delete(t.Context(), "team/a"); err != nil {
		t.Fatal(err)
	}
	res := mustApply(t, s, store.ApplyOptions{}, a)
	want := store.ObjectResult{Key: "team/a", Action: store.ActionConfigured, Generation: 2, ResourceVersion: 3}
	if res.Objects[0] != want {
		t.Errorf("re-apply of a deleted sandbox = %+v, want %+v", res.Objects[0], want)
	}
	if mustGet(t, s, "team/a").Deleting() {
		t.Error("deletion mark survived the re-apply")
	}
}

func TestFinalizeRefusesWhatChangedSinceTheRead(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, s *store.Store) uint64 // returns the resource version to finalize with
		want   error
		remain bool
	}{
		{
			name: "not marked for deletion",
			setup: func(t *testing.T, s *store.Store) uint64 {
				return mustGet(t, s, "team/a").ResourceVersion
			},
			want:   store.ErrConflict,
			remain: true,
		},
		{
			name: "re-applied and deleted again after the reconciler read it",
			setup: func(t *testing.T, s *store.Store) uint64 {
				read, err := s.Delete(t.Context(), "team/a")
				if err != nil {
					t.Fatal(err)
				}
				mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
				if _, err := s.Delete(t.Context(), "team/a"); err != nil {
					t.Fatal(err)
				}
				return read.ResourceVersion
			},
			want:   store.ErrConflict,
			remain: true,
		},
		{
			name: "status written after the read does not matter",
			setup: func(t *testing.T, s *store.Store) uint64 {
				read, err := s.Delete(t.Context(), "team/a")
				if err != nil {
					t.Fatal(err)
				}
				if err := s.UpdateStatus(t.Context(), "team/a", store.Status{Phase: store.PhaseDeleting, ObservedGeneration: 1}); err != nil {
					t.Fatal(err)
				}
				return read.ResourceVersion
			},
		},
		{
			name: "already finalized",
			setup: func(t *testing.T, s *store.Store) uint64 {
				read, err := s.Delete(t.Context(), "team/a")
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Finalize(t.Context(), "team/a", read.ResourceVersion); err != nil {
					t.Fatal(err)
				}
				return read.ResourceVersion
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, store.Options{})
			mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
			rv := tt.setup(t, s)
			err := s.Finalize(t.Context(), "team/a", rv)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Finalize = %v, want %v", err, tt.want)
			}
			_, gerr := s.Get(t.Context(), "team/a")
			if remain := gerr == nil; remain != tt.remain {
				t.Errorf("record remains = %t, want %t", remain, tt.remain)
			}
		})
	}
}

func TestDeleteAtRefusesARecordAppliedAgainSinceItWasRead(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	read := mustGet(t, s, "team/a")
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:2", nil))

	if _, err := s.DeleteAt(t.Context(), "team/a", read.ResourceVersion); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("DeleteAt with the version read before the re-apply = %v, want ErrConflict", err)
	}
	if got := mustGet(t, s, "team/a"); got.Deleting() {
		t.Fatal("the re-applied sandbox was marked for deletion")
	}
	cur := mustGet(t, s, "team/a")
	rec, err := s.DeleteAt(t.Context(), "team/a", cur.ResourceVersion)
	if err != nil || !rec.Deleting() {
		t.Fatalf("DeleteAt with the current version = %+v, %v; want it marked", rec, err)
	}
	if _, err := s.DeleteAt(t.Context(), "team/a", 0); err == nil {
		t.Error("DeleteAt without a version succeeded; it must say the precondition is missing")
	}
}
