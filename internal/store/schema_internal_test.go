package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// These tests exercise the migration machinery with an invented chain
// (1 -> 2 -> 3) from a file written at version 1.
var version1 = schemaPlan{version: 1, migrations: map[uint64]migration{}}

func TestOpenMigratesAnOlderSchemaStepByStep(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{NoSync: true}, version1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var ran []string
	plan := schemaPlan{version: 3, migrations: map[uint64]migration{
		1: func(tx *bolt.Tx) error {
			ran = append(ran, "1->2")
			_, err := tx.CreateBucket([]byte("added_in_v2"))
			return err
		},
		2: func(tx *bolt.Tx) error {
			ran = append(ran, "2->3")
			if tx.Bucket([]byte("added_in_v2")) == nil {
				return errors.New("step 2 ran before step 1")
			}
			return nil
		},
	}}
	s, err = open(dir, Options{NoSync: true}, plan)
	if err != nil {
		t.Fatalf("open with the v3 plan: %v", err)
	}
	if got := strings.Join(ran, ","); got != "1->2,2->3" {
		t.Errorf("migrations ran %q, want 1->2,2->3", got)
	}
	var version uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		version = getU64(tx.Bucket(bucketMeta).Get(keySchemaVersion))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if version != 3 {
		t.Errorf("schema version after migration = %d, want 3", version)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The file is now newer than this binary's schema.
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open of a v3 file = %v, want ErrSchemaTooNew", err)
	}
	if want := fmt.Sprintf("file has version 3, this controller knows up to version %d", SchemaVersion); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestFailedMigrationLeavesTheFileAtItsVersion(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{NoSync: true}, version1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	plan := schemaPlan{version: 3, migrations: map[uint64]migration{
		1: func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("added_in_v2"))
			return err
		},
		2: func(*bolt.Tx) error { return errors.New("disk says no") },
	}}
	_, err = open(dir, Options{NoSync: true}, plan)
	if err == nil || !strings.Contains(err.Error(), "migrate schema from version 2 to 3: disk says no") {
		t.Fatalf("open = %v, want the failing step named", err)
	}
	s, err = Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatalf("reopen at version 1: %v", err)
	}
	defer s.Close()
	if err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("added_in_v2")) != nil {
			return errors.New("the first step's work survived the failed migration")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestUnchangedApplyCommitsNoTransaction(t *testing.T) {
	s, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var objs []Object
	for i := range 100 {
		objs = append(objs, Object{Sandbox: spec.Sandbox{Namespace: "team", Name: fmt.Sprint("s", i), Spec: spec.Spec{Image: "img:1"}}})
	}
	if _, err := s.Apply(t.Context(), objs, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	txID := func() int {
		var id int
		_ = s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	before, beforeID := s.db.Stats(), txID()
	res, err := s.Apply(t.Context(), objs, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after, afterID := s.db.Stats(), txID()
	if res.Changed() {
		t.Error("re-apply reported changes")
	}
	if w := after.TxStats.GetWrite() - before.TxStats.GetWrite(); w != 0 {
		t.Errorf("re-applying an unchanged batch wrote %d pages", w)
	}
	if afterID != beforeID {
		t.Errorf("re-applying an unchanged batch committed a transaction: ID %d -> %d", beforeID, afterID)
	}
}

// A store written before pools (version 1) opens as version 2, its records
// as they were; a version 1 binary refuses the result.
func TestVersion1StoreOpensAsVersion2(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{NoSync: true}, version1)
	if err != nil {
		t.Fatal(err)
	}
	sb := spec.Sandbox{Namespace: "default", Name: "old", Spec: spec.Spec{Driver: "docker", Image: "a", Command: []string{"x"}, State: "running"}}
	if _, err := s.Apply(t.Context(), []Object{{Sandbox: sb}}, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatalf("open a version 1 store: %v", err)
	}
	if rec, err := s.Get(t.Context(), "default/old"); err != nil || rec.Generation != 1 {
		t.Errorf("the record after the migration: %v %+v", err, rec)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := open(dir, Options{NoSync: true}, version1); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("a version 1 binary opening the migrated store: %v, want ErrSchemaTooNew", err)
	}
}
