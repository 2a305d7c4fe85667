package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// watchTimeout is only a safety net so that a broken watcher fails the
// test instead of hanging it; no test waits on it when all is well.
const watchTimeout = 10 * time.Second

func next(t *testing.T, w *store.Watcher) store.Change {
	t.Helper()
	select {
	case c, ok := <-w.Changes():
		if !ok {
			t.Fatalf("watcher closed early: %v", w.Err())
		}
		return c
	case <-time.After(watchTimeout):
		t.Fatal("no change within the safety timeout")
	}
	return store.Change{}
}

func closed(t *testing.T, w *store.Watcher) error {
	t.Helper()
	for {
		select {
		case _, ok := <-w.Changes():
			if !ok {
				return w.Err()
			}
		case <-time.After(watchTimeout):
			t.Fatal("watcher not closed within the safety timeout")
		}
	}
}

func TestWatchReplaysHistoryThenStreamsNewChanges(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil), sandbox("team", "b", "img:1", nil))
	if err := s.UpdateStatus(t.Context(), "team/a", store.Status{Phase: store.PhaseRunning, ObservedGeneration: 1}); err != nil {
		t.Fatal(err)
	}

	w, err := s.Watch(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got := []store.Change{next(t, w), next(t, w), next(t, w)}

	// Live: these commit after the watcher has caught up.
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:2", nil))
	if err := s.AppendEvent(t.Context(), "team/b", store.Event{Reason: store.ReasonRepaired}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Delete(t.Context(), "team/b")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finalize(t.Context(), "team/b", rec.ResourceVersion); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		got = append(got, next(t, w))
	}
	want := []store.Change{
		{Revision: 1, Kind: store.ChangeSpec, Key: "team/a", Generation: 1},
		{Revision: 1, Kind: store.ChangeSpec, Key: "team/b", Generation: 1},
		{Revision: 2, Kind: store.ChangeStatus, Key: "team/a", Generation: 1},
		{Revision: 3, Kind: store.ChangeSpec, Key: "team/a", Generation: 2},
		{Revision: 4, Kind: store.ChangeEvents, Key: "team/b", Generation: 1},
		{Revision: 5, Kind: store.ChangeDeleted, Key: "team/b", Generation: 1},
		{Revision: 6, Kind: store.ChangeFinalized, Key: "team/b", Generation: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

func TestWatchResumesAfterARevision(t *testing.T) {
	s := openStore(t, store.Options{})
	for i := range 5 {
		mustApply(t, s, store.ApplyOptions{}, sandbox("team", fmt.Sprint("s", i), "img:1", nil))
	}
	w, err := s.Watch(t.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{4, 5} {
		if c := next(t, w); c.Revision != want {
			t.Errorf("revision %d, want %d", c.Revision, want)
		}
	}
}

func TestWatchOfCompactedHistoryFailsWithErrCompacted(t *testing.T) {
	s := openStore(t, store.Options{RetainRevisions: 3})
	for i := range 10 {
		mustApply(t, s, store.ApplyOptions{}, sandbox("team", fmt.Sprint("s", i), "img:1", nil))
	}
	// Revisions 8, 9 and 10 are retained; history after 7 is whole.
	if _, err := s.Watch(t.Context(), 6); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("Watch(6) = %v, want ErrCompacted", err)
	}
	if _, err := s.Watch(t.Context(), 0); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("Watch(0) = %v, want ErrCompacted", err)
	}
	w7, err := s.Watch(t.Context(), 7)
	if err != nil {
		t.Fatalf("Watch(7) = %v, want the retained history", err)
	}
	if c := next(t, w7); c.Revision != 8 {
		t.Errorf("first change after 7 at revision %d, want 8", c.Revision)
	}

	// The caller's recovery: list, then watch from the list's revision.
	_, rev, err := s.List(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Watch(t.Context(), rev)
	if err != nil {
		t.Fatalf("Watch from the list's revision: %v", err)
	}
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "late", "img:1", nil))
	if c := next(t, w); c.Revision != rev+1 || c.Key != "team/late" {
		t.Errorf("change %+v, want team/late at revision %d", c, rev+1)
	}
}

// A revision beyond the store's own was read from another store (another
// instance's, or this one's before a restore): watching from it would skip
// this store's changes up to it, so Watch refuses and the caller lists again.
func TestWatchFromAFutureRevisionFailsWithErrFutureRevision(t *testing.T) {
	s := openStore(t, store.Options{})
	for i := range 3 {
		mustApply(t, s, store.ApplyOptions{}, sandbox("team", fmt.Sprint("s", i), "img:1", nil))
	}
	for _, since := range []uint64{4, 100} {
		if _, err := s.Watch(t.Context(), since); !errors.Is(err, store.ErrFutureRevision) {
			t.Errorf("Watch(%d) at revision 3 = %v, want ErrFutureRevision", since, err)
		}
	}
	// The current revision is not in the future: the watch waits for the next.
	w, err := s.Watch(t.Context(), 3)
	if err != nil {
		t.Fatalf("Watch(3) at revision 3 = %v, want a watcher", err)
	}
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "late", "img:1", nil))
	if c := next(t, w); c.Revision != 4 || c.Key != "team/late" {
		t.Errorf("change %+v, want team/late at revision 4", c)
	}
}

func TestWatcherThatFallsBehindStopsWithErrCompacted(t *testing.T) {
	s := openStore(t, store.Options{RetainRevisions: 3})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "s", "img:1", nil))
	w, err := s.Watch(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c := next(t, w); c.Revision != 1 {
		t.Fatalf("first change at revision %d, want 1", c.Revision)
	}
	// Nobody reads the watcher while writers go on, past the window.
	// Writers are not held up; whatever page the watcher had read it
	// delivers, then it finds itself behind the compacted revision.
	for i := range 20 {
		mustApply(t, s, store.ApplyOptions{}, sandbox("team", fmt.Sprint("s", i), "img:1", nil))
	}
	if err := closed(t, w); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("Err = %v, want ErrCompacted", err)
	}
}

func TestWatchEndsWithItsContextOrTheStore(t *testing.T) {
	s := openStore(t, store.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	w, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := closed(t, w); !errors.Is(err, context.Canceled) {
		t.Errorf("Err after cancel = %v, want context.Canceled", err)
	}

	w, err = s.Watch(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := closed(t, w); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Err after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Watch(t.Context(), 0); err == nil {
		t.Error("Watch on a closed store succeeded")
	}
}
