package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestOpenCreatesPrivateDirAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "controller")
	openStoreIn(t, dir, store.Options{})
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, store.FileName): 0o600} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", filepath.Base(path), got, want)
		}
	}
}

func TestOpenKeepsIdentityAndRevisionAcrossReopens(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	id, created := s.StoreID(), s.CreatedAt()
	if len(id) != 32 {
		t.Errorf("store ID %q is not 128 bits of hex", id)
	}
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	r := openStoreIn(t, dir, store.Options{})
	if r.StoreID() != id || !r.CreatedAt().Equal(created) {
		t.Errorf("reopened: ID %s created %v, want %s %v", r.StoreID(), r.CreatedAt(), id, created)
	}
	if got := mustRevision(t, r); got != 1 {
		t.Errorf("reopened at revision %d, want 1", got)
	}
	other := openStore(t, store.Options{})
	if other.StoreID() == id {
		t.Error("two stores share an ID")
	}
}

func TestOpenOfADataDirInUseFailsClearly(t *testing.T) {
	dir := t.TempDir()
	openStoreIn(t, dir, store.Options{})
	// bbolt's flock is per open file, so a second open in this process
	// contends just as another controller would.
	_, err := store.Open(dir, store.Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, store.ErrInUse) {
		t.Fatalf("second Open = %v, want ErrInUse", err)
	}
	want := fmt.Sprintf("open store: data dir %q is in use by another controller (lock not acquired within 50ms): store in use", dir)
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
}

func TestClosedStoreSaysSo(t *testing.T) {
	s, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "default/x"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.List(t.Context(), store.ListOptions{}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("List after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Delete(t.Context(), "default/x"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Delete after Close: %v, want ErrClosed", err)
	}
}
