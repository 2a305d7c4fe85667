package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ChangeKind says what a change did to a key.
type ChangeKind string

const (
	// ChangeSpec: created, or spec, labels or apply set changed, or a
	// deletion mark cleared by a new apply.
	ChangeSpec ChangeKind = "spec"
	// ChangeStatus: the status changed (events may have been added too).
	ChangeStatus ChangeKind = "status"
	// ChangeDeleted: marked for deletion.
	ChangeDeleted ChangeKind = "deleted"
	// ChangeFinalized: the record is gone.
	ChangeFinalized ChangeKind = "finalized"
	// ChangeEvents: only events were added.
	ChangeEvents ChangeKind = "events"
)

// Change is one key changed by the write that took Revision. A write
// transaction takes one revision; when it changes several keys (an apply
// of several objects, a prune) they share that revision and are delivered
// one after the other.
type Change struct {
	Revision   uint64     `json:"revision"`
	Kind       ChangeKind `json:"kind"`
	Key        string     `json:"key"`
	Generation uint64     `json:"generation"`
}

type changesEntry struct {
	Changes []Change `json:"changes"`
}

// putChangesImpl appends w's changes to the feed, moves meta/revision to
// w.rev and drops the feed's entries that fell out of the retained window.
func (s *Store) putChangesImpl(w *writeTx) error {
	v, err := json.Marshal(changesEntry{Changes: w.changes})
	if err != nil {
		return fmt.Errorf("encode changes: %w", err)
	}
	changes := w.tx.Bucket(bucketChanges)
	if err := changes.Put(u64(w.rev), v); err != nil {
		return fmt.Errorf("write changes: %w", err)
	}
	meta := w.tx.Bucket(bucketMeta)
	if err := meta.Put(keyRevision, u64(w.rev)); err != nil {
		return fmt.Errorf("write revision: %w", err)
	}
	if w.rev <= s.retain {
		return nil
	}
	// Compacting in steps of a sixteenth of the window, rather than one
	// revision per write, keeps most writes from touching the feed's
	// oldest page. The feed holds at least RetainRevisions revisions.
	floor := w.rev - s.retain
	if floor < compactedRevisionImpl(w.tx)+max(1, s.retain/16) {
		return nil
	}
	var drop [][]byte
	c := changes.Cursor()
	for k, _ := c.First(); k != nil && getU64(k) <= floor; k, _ = c.Next() {
		drop = append(drop, k)
	}
	for _, k := range drop {
		if err := changes.Delete(k); err != nil {
			return fmt.Errorf("compact changes: %w", err)
		}
	}
	if err := meta.Put(keyCompactedRevision, u64(floor)); err != nil {
		return fmt.Errorf("write compacted revision: %w", err)
	}
	return nil
}

// Watcher streams the changes after a revision. Read Changes until it is
// closed, then Err says why.
//
// Each watcher reads the change feed at its own pace, a page at a time and
// outside any transaction while it waits for its reader, so a slow watcher
// never holds up writers. A watcher that falls so far behind that the feed
// was compacted past it stops with ErrCompacted; its owner lists again and
// watches from the list's revision.
//
// To resume after a restart, watch from the last revision whose changes
// were all handled: changes sharing a revision arrive together, but a
// reader may stop between them.
type Watcher struct {
	ch  chan Change
	err error // written before ch is closed
}

// Changes yields changes in revision order. It is closed when the
// watch's context ends, the store closes, or the watcher falls behind.
func (w *Watcher) Changes() <-chan Change { return w.ch }

// Err is why Changes was closed: the context's error, ErrClosed, or an
// error wrapping ErrCompacted. Call it only after Changes is closed.
func (w *Watcher) Err() error { return w.err }

// watchPage bounds how many changes a watcher holds in memory at once.
const watchPage = 256

// Watch streams every change after revision since: first those the feed
// still holds, then new ones as they commit. If the feed was compacted
// past since, Watch fails with ErrCompacted: list, then watch from the
// list's revision (etcd's contract). A since beyond the store's revision
// was not read from this store, and waiting for the store to pass it
// would skip every change on the way: Watch fails with ErrFutureRevision,
// and the caller recovers the same way.
func (s *Store) Watch(ctx context.Context, since uint64) (*Watcher, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("watch from revision %d: %w", since, err)
	}
	var compacted, current uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		compacted, current = compactedRevisionImpl(tx), revisionImpl(tx)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("watch from revision %d: %w", since, err)
	}
	if since < compacted {
		return nil, fmt.Errorf("watch from revision %d: history up to revision %d was compacted: %w", since, compacted, ErrCompacted)
	}
	if since > current {
		return nil, fmt.Errorf("watch from revision %d: the store is at revision %d: %w", since, current, ErrFutureRevision)
	}
	// Registering under commitMu orders it with Close, which must not
	// start waiting for watchers while one is still being added.
	s.commitMu.Lock()
	select {
	case <-s.closing:
		s.commitMu.Unlock()
		return nil, fmt.Errorf("watch from revision %d: %w", since, ErrClosed)
	default:
	}
	s.watchers.Add(1)
	s.commitMu.Unlock()
	w := &Watcher{ch: make(chan Change)}
	go func() {
		defer s.watchers.Done()
		defer close(w.ch)
		w.err = s.runWatch(ctx, since, w.ch)
	}()
	return w, nil
}

func (s *Store) runWatch(ctx context.Context, since uint64, out chan<- Change) error {
	for {
		// Take the commit signal before reading, so a commit that lands
		// after the read still wakes us.
		committed := s.committed()
		page, err := s.readChanges(since)
		if err != nil {
			if errors.Is(err, bolt.ErrDatabaseNotOpen) {
				return ErrClosed
			}
			return err
		}
		for _, c := range page {
			select {
			case out <- c:
			case <-ctx.Done():
				return ctx.Err()
			case <-s.closing:
				return ErrClosed
			}
			since = c.Revision
		}
		if len(page) > 0 {
			continue
		}
		select {
		case <-committed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		}
	}
}

// readChanges returns up to about watchPage changes after since. It keeps
// whole revisions together so that since can advance to the last one.
func (s *Store) readChanges(since uint64) ([]Change, error) {
	var page []Change
	err := s.db.View(func(tx *bolt.Tx) error {
		if compacted := compactedRevisionImpl(tx); since < compacted {
			return fmt.Errorf("watcher at revision %d fell behind the change feed, compacted up to revision %d: %w",
				since, compacted, ErrCompacted)
		}
		c := tx.Bucket(bucketChanges).Cursor()
		for k, v := c.Seek(u64(since + 1)); k != nil && len(page) < watchPage; k, v = c.Next() {
			var e changesEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode changes at revision %d: %w", getU64(k), err)
			}
			page = append(page, e.Changes...)
		}
		return nil
	})
	return page, err
}
