package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// sandboxEntry is the stored form of one declared sandbox: its
// declaration (whose JSON fields it shares, flattened) and the local
// resource version.
type sandboxEntry struct {
	Declaration
	ResourceVersion uint64 `json:"resourceVersion"`
	// PastHashes are the spec hashes the record had before its current
	// one, the latest last, at most maxPastHashes.
	PastHashes []string `json:"pastHashes,omitempty"`
}

// maxPastHashes bounds the spec hashes a record remembers.
const maxPastHashes = 16

// sandboxHeader is the part of a sandboxEntry that change detection and
// label selection read. Decoding only it skips building the spec, most of
// the cost of decoding an entry.
type sandboxHeader struct {
	Sandbox struct {
		Labels map[string]string `json:"labels"`
	} `json:"sandbox"`
	Hash                string             `json:"hash"`
	ApplySet            string             `json:"applySet"`
	Generation          uint64             `json:"generation"`
	ResourceVersion     uint64             `json:"resourceVersion"`
	CreatedAt           time.Time          `json:"createdAt"`
	DeletionRequestedAt *time.Time         `json:"deletionRequestedAt"`
	PastHashes          []string           `json:"pastHashes"`
	Pool                *spec.PoolSettings `json:"pool"`
	Member              *Member            `json:"member"`
}

// Record is a sandbox as the store holds it: the declaration and the
// store's bookkeeping, with the last recorded status.
type Record struct {
	// Sandbox is the declaration as last applied, Source included.
	Sandbox spec.Sandbox
	// Hash is Sandbox.Spec.Hash() as last applied.
	Hash string
	// ApplySet names the apply that last wrote the record; prune works
	// within one apply set.
	ApplySet string
	// Generation starts at 1 and grows only when the spec's hash changes
	// (or a record marked for deletion is applied again).
	Generation uint64
	// ResourceVersion is the store revision of the record's last spec,
	// label, apply set or deletion-mark write. Status and event writes
	// leave it alone.
	ResourceVersion uint64
	CreatedAt       time.Time
	UpdatedAt       time.Time
	// DeletionRequestedAt is set once the sandbox is marked for deletion;
	// the record stays until Finalize.
	DeletionRequestedAt *time.Time
	// PastHashes are the spec hashes this record had before Hash (the
	// latest last; a bounded few): a job carrying one runs a spec this
	// store once declared, not one it never knew.
	PastHashes []string
	// Pool, when set, makes the record a pool (Sandbox holds its
	// template); Member, a sandbox of a pool.
	Pool   *spec.PoolSettings
	Member *Member
	Status Status
}

// Key is the record's "namespace/name".
func (r Record) Key() string { return r.Sandbox.Key() }

// Deleting reports whether the record is marked for deletion.
func (r Record) Deleting() bool { return r.DeletionRequestedAt != nil }

// ListOptions narrow List. The zero value lists everything.
type ListOptions struct {
	// Namespace limits the list to one namespace; empty means all.
	Namespace string
	// Selector limits the list to sandboxes whose labels match.
	Selector Selector
}

// Get returns the record stored under key ("namespace/name").
func (s *Store) Get(ctx context.Context, key string) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, fmt.Errorf("get sandbox %q: %w", key, err)
	}
	var rec Record
	err := s.view(func(tx *bolt.Tx) error {
		e, ok, err := getSandboxImpl(tx, key)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		rec, err = recordImpl(tx, key, e)
		return err
	})
	if err != nil {
		return Record{}, fmt.Errorf("get sandbox %q: %w", key, err)
	}
	return rec, nil
}

// List returns the records that match opts, sorted by key, and the store
// revision they were read at: watching from that revision misses nothing.
// Records marked for deletion are included.
func (s *Store) List(ctx context.Context, opts ListOptions) ([]Record, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("list sandboxes: %w", err)
	}
	var (
		recs []Record
		rev  uint64
	)
	err := s.view(func(tx *bolt.Tx) error {
		rev = revisionImpl(tx)
		c := tx.Bucket(bucketSandboxes).Cursor()
		var k, v []byte
		var prefix []byte
		if opts.Namespace != "" {
			prefix = []byte(opts.Namespace + "/")
			k, v = c.Seek(prefix)
		} else {
			k, v = c.First()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if !opts.Selector.Empty() {
				var h sandboxHeader
				if err := json.Unmarshal(v, &h); err != nil {
					return fmt.Errorf("decode sandbox %q: %w", k, err)
				}
				if !opts.Selector.Matches(h.Sandbox.Labels) {
					continue
				}
			}
			e, err := decodeSandbox(k, v)
			if err != nil {
				return err
			}
			rec, err := recordImpl(tx, string(k), e)
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list sandboxes: %w", err)
	}
	return recs, rev, nil
}

func getSandboxImpl(tx *bolt.Tx, key string) (sandboxEntry, bool, error) {
	v := tx.Bucket(bucketSandboxes).Get([]byte(key))
	if v == nil {
		return sandboxEntry{}, false, nil
	}
	e, err := decodeSandbox([]byte(key), v)
	return e, err == nil, err
}

func decodeSandbox(k, v []byte) (sandboxEntry, error) {
	var e sandboxEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return sandboxEntry{}, fmt.Errorf("decode sandbox %q: %w", k, err)
	}
	return e, nil
}

func putSandboxImpl(tx *bolt.Tx, e *sandboxEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode sandbox %q: %w", e.Sandbox.Key(), err)
	}
	if err := tx.Bucket(bucketSandboxes).Put([]byte(e.Sandbox.Key()), v); err != nil {
		return fmt.Errorf("write sandbox %q: %w", e.Sandbox.Key(), err)
	}
	return nil
}

func recordImpl(tx *bolt.Tx, key string, e sandboxEntry) (Record, error) {
	st, _, err := getStatusImpl(tx, key)
	if err != nil {
		return Record{}, err
	}
	sb := e.Sandbox
	sb.Source = e.Source
	return Record{
		Sandbox:             sb,
		Hash:                e.Hash,
		ApplySet:            e.ApplySet,
		Generation:          e.Generation,
		ResourceVersion:     e.ResourceVersion,
		CreatedAt:           e.CreatedAt,
		UpdatedAt:           e.UpdatedAt,
		DeletionRequestedAt: e.DeletionRequestedAt,
		PastHashes:          e.PastHashes,
		Pool:                e.Pool,
		Member:              e.Member,
		Status:              st,
	}, nil
}

// checkKey refuses identities that would make "namespace/name" ambiguous.
func checkKey(ns, name string) error {
	switch {
	case ns == "":
		return fmt.Errorf("sandbox %q: namespace is empty", name)
	case name == "":
		return fmt.Errorf("sandbox in namespace %q: name is empty", ns)
	case strings.Contains(ns, "/") || strings.Contains(name, "/"):
		return fmt.Errorf("sandbox %q: namespace and name must not contain \"/\"", ns+"/"+name)
	}
	return nil
}

// labelsEqual treats nil and empty label maps as equal.
func labelsEqual(a, b map[string]string) bool { return maps.Equal(a, b) }
