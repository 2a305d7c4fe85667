// Package store owns the controller's durable record of what users declared
// and what the controller observed: sandbox specs with their generations and
// resource versions, status kept apart from spec, a bounded event list per
// sandbox, and a change feed that watchers resume by revision. It is one
// bbolt file that only the controller process opens.
package store

// The bbolt file holds these buckets. meta holds raw scalars; every other
// value is a small JSON entry struct, so that fields can be added without
// a migration.
//
//	meta/
//	|--> schema_version      -> uint64, 8 bytes big-endian
//	|--> store_id            -> 32 hex digits, random, written once at initialisation
//	|--> created_at          -> RFC 3339 UTC timestamp, written once
//	|--> revision            -> uint64 big-endian: the revision of the last write
//	|--> compacted_revision  -> uint64 big-endian: changes at or below it are gone
//	|--> nomad_index         -> uint64 big-endian: the highest Nomad job modify
//	                            index a status recorded (gchold.go)
//	|--> gc_hold             -> GCHold JSON, while garbage collection is held
//
//	sandboxes/
//	|--> <namespace>/<name>  -> sandboxEntry (spec, source, hash, labels,
//	                            apply set, generation, resource version,
//	                            times, deletion mark)
//
//	status/
//	|--> <namespace>/<name>  -> statusEntry (written only by UpdateStatus)
//
//	events/
//	|--> <namespace>/<name>  -> eventsEntry (the last Options.MaxEvents events)
//
//	changes/
//	|--> <revision>          -> changesEntry (uint64 big-endian key; the keys
//	                            one write transaction changed)
//
// A write transaction that changes anything takes exactly one new revision:
// meta/revision moves to it, one changes/ entry records every key it
// touched, and each sandbox record it wrote gets it as resource version. A
// write that changes nothing rolls back, so the revision and the file stay
// as they were.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the store's file inside its data directory.
const FileName = "controller.db"

var (
	bucketMeta      = []byte("meta")
	bucketSandboxes = []byte("sandboxes")
	bucketStatus    = []byte("status")
	bucketEvents    = []byte("events")
	bucketChanges   = []byte("changes")

	keySchemaVersion     = []byte("schema_version")
	keyStoreID           = []byte("store_id")
	keyCreatedAt         = []byte("created_at")
	keyRevision          = []byte("revision")
	keyCompactedRevision = []byte("compacted_revision")
)

// allBuckets are created at initialisation; every later transaction may
// assume they exist.
var allBuckets = [][]byte{bucketMeta, bucketSandboxes, bucketStatus, bucketEvents, bucketChanges}

// Defaults for Options fields left zero.
const (
	DefaultLockTimeout     = time.Second
	DefaultRetainRevisions = 10000
	DefaultMaxEvents       = 50
)

// Options tune Open. The zero value is the production configuration.
type Options struct {
	// LockTimeout bounds the wait for bbolt's exclusive file lock, held by
	// any other process that has the store open. Zero means one second.
	LockTimeout time.Duration

	// Logger receives the store's few log lines. Nil discards them.
	Logger *slog.Logger

	// Now is the clock for every recorded time. Nil means time.Now.
	Now func() time.Time

	// RetainRevisions is how many revisions of the change feed are kept
	// at least; a watcher that asks for older history gets ErrCompacted
	// and must relist. The feed is trimmed in steps of a sixteenth of
	// this, so it briefly holds up to that much more. Zero means
	// DefaultRetainRevisions.
	RetainRevisions uint64

	// MaxEvents bounds each sandbox's event list; older events are
	// dropped. Zero means DefaultMaxEvents.
	MaxEvents int

	// NoSync skips fsync on commit. It is unsafe: a crash or power loss
	// can lose acknowledged writes or corrupt the file. It exists for
	// tests and benchmarks that do not test durability, and nothing else.
	NoSync bool
}

// Store is the controller's desired-state store. Its methods are safe for
// concurrent use; bbolt serialises writers and lets readers run alongside.
type Store struct {
	db        *bolt.DB
	dir       string
	log       *slog.Logger
	now       func() time.Time
	retain    uint64
	maxEvents int
	storeID   string
	createdAt time.Time

	// commitMu guards commitCh, which is closed and replaced after every
	// commit that took a new revision, waking watchers without polling,
	// and orders watcher registration with Close.
	commitMu sync.Mutex
	commitCh chan struct{}

	closeOnce sync.Once
	closing   chan struct{}
	watchers  sync.WaitGroup
}

// Open opens the store in dataDir, creating the directory (mode 0700) and
// the file (mode 0600) when missing. A store written by an older binary is
// migrated; one written by a newer binary is refused.
func Open(dataDir string, opts Options) (*Store, error) {
	return open(dataDir, opts, currentSchema)
}

func open(dataDir string, opts Options, plan schemaPlan) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RetainRevisions == 0 {
		opts.RetainRevisions = DefaultRetainRevisions
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dataDir, FileName)
	// As etcd does: the hashmap freelist stays fast as the file
	// fragments, and not writing the freelist on every commit saves a
	// page write per transaction; bbolt rebuilds it by scanning the file
	// when it opens, which for a store this size is quick.
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoSync:         opts.NoSync,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if err == nil {
		// Status writes from several workers share a commit: a batch
		// waits this long for company, about the time of one fsync.
		db.MaxBatchDelay = 2 * time.Millisecond
	}
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store: data dir %q is in use by another controller (lock not acquired within %s): %w",
			dataDir, opts.LockTimeout, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	s := &Store{
		db:        db,
		dir:       dataDir,
		log:       opts.Logger,
		now:       opts.Now,
		retain:    opts.RetainRevisions,
		maxEvents: opts.MaxEvents,
		commitCh:  make(chan struct{}),
		closing:   make(chan struct{}),
	}
	if err := s.initialise(plan); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	return s, nil
}

// initialise creates a new store's buckets and identity, or checks and
// migrates an existing one, in one transaction.
func (s *Store) initialise(plan schemaPlan) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return s.createImpl(tx, plan.version)
		}
		if err := migrateImpl(tx, plan, s.log); err != nil {
			return err
		}
		id := meta.Get(keyStoreID)
		if len(id) == 0 {
			return errors.New("read meta: store ID missing")
		}
		s.storeID = string(id)
		created, err := time.Parse(time.RFC3339Nano, string(meta.Get(keyCreatedAt)))
		if err != nil {
			return fmt.Errorf("read meta: creation time: %w", err)
		}
		s.createdAt = created
		return nil
	})
}

func (s *Store) createImpl(tx *bolt.Tx, version uint64) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("create store ID: %w", err)
	}
	s.storeID = hex.EncodeToString(raw[:])
	s.createdAt = s.now().UTC()
	meta := tx.Bucket(bucketMeta)
	for _, kv := range []struct{ k, v []byte }{
		{keySchemaVersion, u64(version)},
		{keyStoreID, []byte(s.storeID)},
		{keyCreatedAt, []byte(s.createdAt.Format(time.RFC3339Nano))},
		{keyRevision, u64(0)},
		{keyCompactedRevision, u64(0)},
	} {
		if err := meta.Put(kv.k, kv.v); err != nil {
			return fmt.Errorf("write meta %s: %w", kv.k, err)
		}
	}
	s.log.Info("store initialised", "store_id", s.storeID, "schema_version", version)
	return nil
}

// Close stops every watcher and closes the file. It is safe to call more
// than once.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.commitMu.Lock()
		close(s.closing)
		s.commitMu.Unlock()
		s.watchers.Wait()
		if cerr := s.db.Close(); cerr != nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	})
	return err
}

// wrapClosed turns bbolt's error for a closed database into ErrClosed.
func wrapClosed(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// view runs a read transaction; on a closed store it fails with ErrClosed
// rather than bbolt's own error, so callers can tell shutdown apart.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// StoreID is the random identity created with the store. The controller
// stamps it on every Nomad job it creates, as ownership.
func (s *Store) StoreID() string { return s.storeID }

// CreatedAt is when the store was initialised.
func (s *Store) CreatedAt() time.Time { return s.createdAt }

// Path is the store's file.
func (s *Store) Path() string { return s.db.Path() }

// Revision is the revision of the last write.
func (s *Store) Revision(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	var rev uint64
	err := s.view(func(tx *bolt.Tx) error {
		rev = revisionImpl(tx)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return rev, nil
}

func revisionImpl(tx *bolt.Tx) uint64 {
	return getU64(tx.Bucket(bucketMeta).Get(keyRevision))
}

func compactedRevisionImpl(tx *bolt.Tx) uint64 {
	return getU64(tx.Bucket(bucketMeta).Get(keyCompactedRevision))
}

// errNoChange rolls back a write transaction that found nothing to write,
// so that bbolt does not commit (and fsync) an empty transaction.
var errNoChange = errors.New("no change")

// writeTx is one write transaction: the revision it will take if it changes
// anything, and the changes it has recorded so far.
type writeTx struct {
	tx      *bolt.Tx
	rev     uint64
	now     time.Time
	changes []Change
	index   map[string]int // key -> position in changes
	// touched: the transaction wrote derived data (the pools' index)
	// but no change: it commits without taking a revision.
	touched bool
}

// record notes that key changed in this transaction. Each key appears at
// most once per revision; a later kind replaces an earlier one, and
// callers record the more significant kind last.
func (w *writeTx) record(kind ChangeKind, key string, generation uint64) {
	if i, ok := w.index[key]; ok {
		w.changes[i].Kind = kind
		w.changes[i].Generation = generation
		return
	}
	if w.index == nil {
		w.index = make(map[string]int)
	}
	w.index[key] = len(w.changes)
	w.changes = append(w.changes, Change{Revision: w.rev, Kind: kind, Key: key, Generation: generation})
}

// update runs fn in one write transaction. If fn recorded changes, the
// transaction takes the next revision, appends them to the change feed,
// compacts the feed and commits; if it recorded none, it rolls back.
func (s *Store) update(ctx context.Context, fn func(w *writeTx) error) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var rev uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		var changed bool
		var err error
		if rev, changed, err = s.writeRevision(tx, fn); err == nil && !changed {
			return errNoChange
		}
		return err
	})
	if errors.Is(err, errNoChange) {
		return rev, nil
	}
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return 0, ErrClosed
	}
	if err != nil {
		return 0, err
	}
	s.notifyCommit()
	return rev, nil
}

// batch is update for small writes that many goroutines make at once:
// bbolt's Batch runs concurrent calls in one transaction, one commit and
// one fsync for all of them, each call still taking a revision of its
// own. fn may run twice (alone, when another call of its batch failed),
// so it must do nothing but write through w. A call that records no
// change still commits with its batch; callers skip those beforehand.
func (s *Store) batch(ctx context.Context, fn func(w *writeTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var changed bool
	err := s.db.Batch(func(tx *bolt.Tx) error {
		var err error
		_, changed, err = s.writeRevision(tx, fn)
		return err
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	if err != nil {
		return err
	}
	if changed {
		s.notifyCommit()
	}
	return nil
}

// writeRevision runs fn in tx as the next revision: if fn recorded
// changes, they take that revision in the change feed, which is compacted;
// otherwise nothing is written. It returns the store's revision after fn
// and whether fn changed anything.
func (s *Store) writeRevision(tx *bolt.Tx, fn func(w *writeTx) error) (uint64, bool, error) {
	w := &writeTx{tx: tx, rev: revisionImpl(tx) + 1, now: s.now().UTC()}
	if err := fn(w); err != nil {
		return 0, false, err
	}
	if len(w.changes) == 0 {
		return w.rev - 1, w.touched, nil
	}
	if err := s.putChangesImpl(w); err != nil {
		return 0, false, err
	}
	return w.rev, true, nil
}

func (s *Store) notifyCommit() {
	s.commitMu.Lock()
	close(s.commitCh)
	s.commitCh = make(chan struct{})
	s.commitMu.Unlock()
}

// committed returns a channel closed by the next commit.
func (s *Store) committed() <-chan struct{} {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	return s.commitCh
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// ctxWriter stops a long copy when its context ends.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
