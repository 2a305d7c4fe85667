package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestBackupRestoreRoundTrip(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{ApplySet: "set"},
		sandbox("team", "a", "img:1", labels("app", "web")), sandbox("team", "b", "img:1", nil))
	if err := s.UpdateStatus(t.Context(), "team/a", store.Status{Phase: store.PhaseRunning, ObservedGeneration: 1},
		store.Event{Type: store.EventNormal, Reason: store.ReasonCreated}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(t.Context(), "team/b"); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	n, err := s.Backup(t.Context(), &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("Backup reported %d bytes, wrote %d", n, buf.Len())
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if err := store.Restore(&buf, dir); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	info, err := os.Stat(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("restored file mode %o, want 600", mode)
	}
	r := openStoreIn(t, dir, store.Options{})

	if r.StoreID() != s.StoreID() {
		t.Errorf("store ID %s, want the original's %s", r.StoreID(), s.StoreID())
	}
	want, wantRev, err := s.List(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, gotRev, err := r.List(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("restored records (-original +restored):\n%s", diff)
	}
	if gotRev != wantRev {
		t.Errorf("restored revision %d, want %d", gotRev, wantRev)
	}
	wantEv, _ := s.Events(t.Context(), "team/a")
	gotEv, err := r.Events(t.Context(), "team/a")
	if err != nil || !cmp.Equal(wantEv, gotEv) {
		t.Errorf("restored events %v (err %v), want %v", gotEv, err, wantEv)
	}
}

func TestBackupIsConsistentWhileWritesGoOn(t *testing.T) {
	const perBatch = 5
	s := openStore(t, store.Options{})
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			var batch []store.Object
			for j := range perBatch {
				batch = append(batch, store.Object{Sandbox: sandbox("load", fmt.Sprintf("b%d-%d", i, j), "img:1", labels("batch", fmt.Sprint(i)))})
			}
			if _, err := s.Apply(t.Context(), batch, store.ApplyOptions{}); err != nil {
				done <- err
				return
			}
		}
	}()
	var backups []*bytes.Buffer
	for range 5 {
		// Wait for at least one more commit, so each backup is taken
		// with writes in flight.
		rev := mustRevision(t, s)
		w, err := s.Watch(t.Context(), rev)
		if err != nil {
			t.Fatal(err)
		}
		next(t, w)
		var buf bytes.Buffer
		if _, err := s.Backup(t.Context(), &buf); err != nil {
			t.Fatalf("Backup: %v", err)
		}
		backups = append(backups, &buf)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writer: %v", err)
	}

	for i, buf := range backups {
		dir := t.TempDir()
		if err := store.Restore(buf, dir); err != nil {
			t.Fatalf("backup %d: Restore: %v", i, err)
		}
		r := openStoreIn(t, dir, store.Options{})
		recs, rev, err := r.List(t.Context(), store.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(recs), int(rev)*perBatch; got != want {
			t.Errorf("backup %d at revision %d holds %d records, want %d", i, rev, got, want)
		}
		count := map[string]int{}
		for _, rec := range recs {
			count[rec.Sandbox.Labels["batch"]]++
		}
		for b, n := range count {
			if n != perBatch {
				t.Errorf("backup %d holds %d of batch %s's %d records", i, n, b, perBatch)
			}
		}
	}
}

func TestRestoreRefusesANonEmptyDataDir(t *testing.T) {
	s := openStore(t, store.Options{})
	var buf bytes.Buffer
	if _, err := s.Backup(t.Context(), &buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := store.Restore(&buf, dir); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("Restore = %v, want ErrNotEmpty", err)
	}
}

func TestRestoreRejectsWhatIsNotAStore(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		want    string
	}{
		{name: "garbage", content: bytes.Repeat([]byte("not a database "), 1000), want: "not a store file"},
		{name: "empty", content: nil, want: "not a store file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := store.Restore(bytes.NewReader(tt.content), dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore = %v, want an error saying %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("a failed restore left %d files behind", len(entries))
			}
		})
	}
}
