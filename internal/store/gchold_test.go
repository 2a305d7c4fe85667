package store_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestNomadIndexIsTheHighestRecordedAndSurvivesDeletes(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil), sandbox("team", "b", "img:1", nil))
	for key, idx := range map[string]uint64{"team/a": 40, "team/b": 70} {
		if err := s.UpdateStatus(t.Context(), key, store.Status{ObservedGeneration: 1, JobModifyIndex: idx}); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := s.Delete(t.Context(), "team/b")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finalize(t.Context(), "team/b", rec.ResourceVersion); err != nil {
		t.Fatal(err)
	}
	if idx, err := s.NomadIndex(t.Context()); err != nil || idx != 70 {
		t.Errorf("NomadIndex = %d, %v; want 70, kept after team/b is gone", idx, err)
	}
}

func TestGCHoldPersistsUntilReleased(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, held, err := s.GCHeld(t.Context()); err != nil || held {
		t.Fatalf("a new store holds gc: %t, %v", held, err)
	}
	first, err := s.HoldGC(t.Context(), store.GCHold{Reason: "behind", NomadIndex: 10, Jobs: []string{"default/agentkernel-x"}, JobCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.HoldGC(t.Context(), store.GCHold{Reason: "other"}); err != nil || again.Reason != "behind" {
		t.Errorf("a second hold replaced the first: %+v, %v", again, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, held, err := s.GCHeld(t.Context())
	if err != nil || !held || got.Reason != first.Reason || got.NomadIndex != 10 || got.Since.IsZero() {
		t.Fatalf("after a restart: %+v, held %t, %v; want the first hold", got, held, err)
	}
	if err := s.ReleaseGC(t.Context(), 90); err != nil {
		t.Fatal(err)
	}
	if _, held, _ := s.GCHeld(t.Context()); held {
		t.Error("still held after ReleaseGC")
	}
	if idx, _ := s.NomadIndex(t.Context()); idx != 90 {
		t.Errorf("NomadIndex after a release covering 90 = %d", idx)
	}
}

// A backup carries the index of its time: restored, the store shows
// that it knows less of Nomad than it did.
func TestRestoredBackupCarriesItsOlderNomadIndex(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	if err := s.UpdateStatus(t.Context(), "team/a", store.Status{ObservedGeneration: 1, JobModifyIndex: 40}); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := s.Backup(t.Context(), &backup); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "b", "img:1", nil))
	if err := s.UpdateStatus(t.Context(), "team/b", store.Status{ObservedGeneration: 1, JobModifyIndex: 55}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if err := store.Restore(&backup, dir); err != nil {
		t.Fatal(err)
	}
	r, err := store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if idx, _ := r.NomadIndex(t.Context()); idx != 40 {
		t.Errorf("restored NomadIndex = %d, want 40", idx)
	}
}
