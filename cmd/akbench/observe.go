package main

import (
	"context"
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// waitRecords follows the store's change feed from revision since until
// pred holds for every key in keys, and returns when the last one did.
// It reads the store, as the API's watch does, rather than polling the
// API: being told of each status write is exact and costs the process
// under measurement one Get per write.
//
// Only changes after since are looked at, so since must be taken before
// the action whose effect is awaited, and pred must not already hold then.
func waitRecords(ctx context.Context, st *store.Store, since uint64, keys []string, pred func(store.Record) bool) (time.Time, error) {
	left := make(map[string]bool, len(keys))
	for _, k := range keys {
		left[k] = true
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := st.Watch(wctx, since)
	if err != nil {
		return time.Time{}, err
	}
	for ch := range w.Changes() {
		if ch.Kind != store.ChangeStatus || !left[ch.Key] {
			continue
		}
		rec, err := st.Get(ctx, ch.Key)
		if err != nil {
			return time.Time{}, err
		}
		if pred(rec) {
			delete(left, ch.Key)
			if len(left) == 0 {
				return time.Now(), nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("%d of %d sandboxes still waiting: %w", len(left), len(keys), w.Err())
}

// running holds for a sandbox whose current generation runs.
func running(rec store.Record) bool {
	return rec.Status.Phase == store.PhaseRunning && rec.Status.ObservedGeneration == rec.Generation
}
