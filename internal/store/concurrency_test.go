package store_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Many goroutines write at once: read-modify-write increments through
// ExpectedResourceVersion (retrying on ErrConflict), plain applies of
// distinct sandboxes, and readers. No update may be lost, and a watcher
// must see every revision once, in order. Run with -race.
func TestConcurrentWritersLoseNoUpdate(t *testing.T) {
	const (
		workers    = 16
		increments = 25
		applies    = 25
	)
	s := openStore(t, store.Options{})
	ctx := t.Context()
	counter := sandbox("team", "counter", "img:1", nil)
	counter.Spec.Env = map[string]string{"count": "0"}
	mustApply(t, s, store.ApplyOptions{}, counter)

	w, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	const wantRevisions = 1 + workers*increments + workers*applies
	seen := make(chan error, 1)
	go func() {
		var last uint64
		for c := range w.Changes() {
			if c.Revision != last && c.Revision != last+1 {
				seen <- fmt.Errorf("revision %d after %d", c.Revision, last)
				return
			}
			last = c.Revision
			if last == wantRevisions {
				seen <- nil
				return
			}
		}
		seen <- fmt.Errorf("watch ended at revision %d: %v", last, w.Err())
	}()

	var wg sync.WaitGroup
	errs := make(chan error, 3*workers)
	var conflicts sync.Map
	for g := range workers {
		wg.Go(func() {
			retries := 0
			for range increments {
				for {
					rec, err := s.Get(ctx, "team/counter")
					if err != nil {
						errs <- err
						return
					}
					n, _ := strconv.Atoi(rec.Sandbox.Spec.Env["count"])
					next := rec.Sandbox
					next.Spec.Env = map[string]string{"count": strconv.Itoa(n + 1)}
					_, err = s.Apply(ctx, []store.Object{{Sandbox: next, ExpectedResourceVersion: rec.ResourceVersion}}, store.ApplyOptions{})
					if errors.Is(err, store.ErrConflict) {
						retries++
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
			conflicts.Store(g, retries)
		})
		wg.Go(func() {
			for i := range applies {
				sb := sandbox("load", fmt.Sprintf("w%d-%d", g, i), "img:1", labels("worker", strconv.Itoa(g)))
				if _, err := s.Apply(ctx, objects(sb), store.ApplyOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			for range applies {
				if _, _, err := s.List(ctx, store.ListOptions{Selector: store.MustParseSelector("worker=" + strconv.Itoa(g))}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	rec := mustGet(t, s, "team/counter")
	if got := rec.Sandbox.Spec.Env["count"]; got != strconv.Itoa(workers*increments) {
		t.Errorf("counter = %s, want %d: updates were lost", got, workers*increments)
	}
	if rec.Generation != 1+workers*increments {
		t.Errorf("counter generation %d, want %d", rec.Generation, 1+workers*increments)
	}
	recs, rev, err := s.List(ctx, store.ListOptions{Namespace: "load"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != workers*applies {
		t.Errorf("%d sandboxes in load, want %d", len(recs), workers*applies)
	}
	if rev != wantRevisions {
		t.Errorf("revision %d, want %d: one per successful write", rev, wantRevisions)
	}
	select {
	case err := <-seen:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(watchTimeout):
		t.Error("watcher did not reach the last revision within the safety timeout")
	}
	total := 0
	conflicts.Range(func(_, v any) bool { total += v.(int); return true })
	t.Logf("%d conflicts retried", total)
}
