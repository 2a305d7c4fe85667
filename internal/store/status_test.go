package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestUpdateStatusLeavesGenerationAndResourceVersion(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	st := store.Status{
		Phase:              store.PhaseRunning,
		ObservedGeneration: 1,
		JobID:              "agentkernel-a",
		JobModifyIndex:     42,
		AllocID:            "alloc-1",
		Node:               "node-1",
		Ports:              []store.AllocatedPort{{Label: "http", HostIP: "10.0.0.1", Value: 24000, To: 8080}},
	}
	if err := s.UpdateStatus(t.Context(), "team/a", st); err != nil {
		t.Fatalf("UpdateStatus: %v", err)
	}
	rec := mustGet(t, s, "team/a")
	if rec.Generation != 1 || rec.ResourceVersion != 1 {
		t.Errorf("generation %d, resource version %d after a status write; want 1, 1", rec.Generation, rec.ResourceVersion)
	}
	if got := mustRevision(t, s); got != 2 {
		t.Errorf("store revision = %d, want 2: a status write is a change", got)
	}
	if diff := cmp.Diff(st, rec.Status, cmpIgnoreUpdatedAt); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if rec.Status.UpdatedAt.IsZero() {
		t.Error("status UpdatedAt not set")
	}
}

var cmpIgnoreUpdatedAt = cmp.FilterPath(func(p cmp.Path) bool {
	return p.Last().String() == ".UpdatedAt"
}, cmp.Ignore())

func TestUpdateStatusRefusesStatusOfAnOlderGeneration(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:2", nil))
	if err := s.UpdateStatus(t.Context(), "team/a", store.Status{Phase: store.PhaseRunning, ObservedGeneration: 2}); err != nil {
		t.Fatal(err)
	}
	err := s.UpdateStatus(t.Context(), "team/a", store.Status{Phase: store.PhaseFailed, ObservedGeneration: 1})
	if !errors.Is(err, store.ErrStaleStatus) {
		t.Fatalf("UpdateStatus for generation 1 = %v, want ErrStaleStatus", err)
	}
	if got := mustGet(t, s, "team/a").Status.Phase; got != store.PhaseRunning {
		t.Errorf("phase = %s, want the newer Running", got)
	}
	err = s.UpdateStatus(t.Context(), "team/a", store.Status{ObservedGeneration: 3})
	if err == nil {
		t.Error("UpdateStatus for a generation the record never had succeeded")
	}
	if err := s.UpdateStatus(t.Context(), "team/ghost", store.Status{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateStatus of an unknown key = %v, want ErrNotFound", err)
	}
}

func TestUpdateStatusKeepsTransitionTimeWhileConditionHolds(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	set := func(ready store.ConditionStatus, msg string) store.Condition {
		t.Helper()
		err := s.UpdateStatus(t.Context(), "team/a", store.Status{
			ObservedGeneration: 1,
			Conditions:         []store.Condition{{Type: "Ready", Status: ready, Message: msg}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c, ok := mustGet(t, s, "team/a").Status.Condition("Ready")
		if !ok {
			t.Fatal("condition Ready missing")
		}
		return c
	}
	first := set(store.ConditionFalse, "starting")
	if first.LastTransitionTime.IsZero() {
		t.Fatal("transition time not set")
	}
	same := set(store.ConditionFalse, "still starting")
	if !same.LastTransitionTime.Equal(first.LastTransitionTime) || same.Message != "still starting" {
		t.Errorf("unchanged status: transition %v (want %v), message %q", same.LastTransitionTime, first.LastTransitionTime, same.Message)
	}
	flipped := set(store.ConditionTrue, "")
	if !flipped.LastTransitionTime.After(first.LastTransitionTime) {
		t.Errorf("changed status kept transition time %v", flipped.LastTransitionTime)
	}
}

func TestUpdateStatusWithNothingNewWritesNothing(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	st := store.Status{Phase: store.PhaseRunning, ObservedGeneration: 1,
		Conditions: []store.Condition{{Type: "Ready", Status: store.ConditionTrue}}}
	for range 3 {
		if err := s.UpdateStatus(t.Context(), "team/a", st); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustRevision(t, s); got != 2 {
		t.Errorf("revision = %d after three equal status writes, want 2", got)
	}
}

func TestEventsKeepTheLatestMaxEvents(t *testing.T) {
	s := openStore(t, store.Options{MaxEvents: 5})
	mustApply(t, s, store.ApplyOptions{}, sandbox("team", "a", "img:1", nil))
	for i := range 8 {
		ev := store.Event{Type: store.EventNormal, Reason: store.ReasonRepaired, Message: fmt.Sprint(i)}
		if err := s.AppendEvent(t.Context(), "team/a", ev); err != nil {
			t.Fatal(err)
		}
	}
	// Events may also ride on a status write.
	err := s.UpdateStatus(t.Context(), "team/a", store.Status{ObservedGeneration: 1},
		store.Event{Type: store.EventWarning, Reason: store.ReasonConflict, Message: "8", Time: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(t.Context(), "team/a")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range evs {
		msgs = append(msgs, e.Message)
		if e.Time.IsZero() {
			t.Errorf("event %s has no time", e.Message)
		}
	}
	if diff := cmp.Diff([]string{"4", "5", "6", "7", "8"}, msgs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if got := evs[4].Time; !got.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("a given event time was replaced: %v", got)
	}
	if err := s.AppendEvent(t.Context(), "team/ghost", store.Event{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AppendEvent to an unknown key = %v, want ErrNotFound", err)
	}
}

// Workers write statuses at the same time, and those writes share
// commits; each still takes a revision of its own, with its change in
// the feed, and none is lost.
func TestConcurrentStatusWritesEachTakeARevision(t *testing.T) {
	const n = 40
	s := openStore(t, store.Options{})
	var sbs []spec.Sandbox
	for i := range n {
		sbs = append(sbs, sandbox("team", fmt.Sprintf("s%02d", i), "img:1", nil))
	}
	mustApply(t, s, store.ApplyOptions{}, sbs...)
	before := mustRevision(t, s)

	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			st := store.Status{Phase: store.PhaseRunning, ObservedGeneration: 1, AllocID: fmt.Sprintf("alloc-%02d", i)}
			errs <- s.UpdateStatus(t.Context(), fmt.Sprintf("team/s%02d", i), st)
		})
		// Refused writes among them cost the others nothing.
		wg.Go(func() {
			st := store.Status{Phase: store.PhaseRunning, ObservedGeneration: 1}
			if err := s.UpdateStatus(t.Context(), fmt.Sprintf("team/gone%02d", i), st); !errors.Is(err, store.ErrNotFound) {
				errs <- fmt.Errorf("status of a sandbox that does not exist: %v, want ErrNotFound", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := mustRevision(t, s); got != before+n {
		t.Fatalf("revision %d after %d status writes from %d, want %d", got, n, before, before+n)
	}
	w, err := s.Watch(t.Context(), before)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]string{}
	for len(seen) < n {
		ch := <-w.Changes()
		if ch.Kind != store.ChangeStatus {
			t.Fatalf("change %+v, want a status change", ch)
		}
		if k, dup := seen[ch.Revision]; dup {
			t.Fatalf("revision %d taken by %s and %s", ch.Revision, k, ch.Key)
		}
		seen[ch.Revision] = ch.Key
	}
	for i := range n {
		key := fmt.Sprintf("team/s%02d", i)
		if got := mustGet(t, s, key).Status.AllocID; got != fmt.Sprintf("alloc-%02d", i) {
			t.Errorf("%s: allocation %q recorded", key, got)
		}
	}
}
