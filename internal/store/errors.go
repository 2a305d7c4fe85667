package store

import "errors"

// Sentinel errors. Returned errors wrap them with detail; test with
// errors.Is.
var (
	// ErrNotFound: no sandbox record has the key.
	ErrNotFound = errors.New("not found")

	// ErrConflict: an optimistic-concurrency check failed (expected
	// resource version or revision), or a finalize raced a re-apply.
	// Nothing was written; re-read and try again.
	ErrConflict = errors.New("conflict")

	// ErrCompacted: the change feed no longer holds the asked-for
	// history. List again and watch from the revision the list returns.
	ErrCompacted = errors.New("revision compacted")

	// ErrFutureRevision: a watch asked for the changes after a revision
	// this store has not reached, which can only come from another store
	// (another instance's) or from this one before a restore. List again
	// and watch from the revision the list returns.
	ErrFutureRevision = errors.New("revision not reached")

	// ErrStaleStatus: the status was computed for an older generation
	// than the status already recorded.
	ErrStaleStatus = errors.New("stale status")

	// ErrInUse: another process holds the store's file lock.
	ErrInUse = errors.New("store in use")

	// ErrSchemaTooNew: the file was written by a newer controller.
	ErrSchemaTooNew = errors.New("schema version too new")

	// ErrNotEmpty: restore refuses a data dir that already holds files.
	ErrNotEmpty = errors.New("data dir not empty")

	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)
