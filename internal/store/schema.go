package store

import (
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this binary writes. Bump it, and add the
// step from the previous version to currentSchema.migrations, whenever an
// existing file must be rewritten to be read correctly. Adding a field to
// an entry struct does not need a bump.
const SchemaVersion = 2

// migration rewrites a file from one schema version to the next, inside
// the opening transaction.
type migration func(tx *bolt.Tx) error

// schemaPlan is the version a binary writes and the steps that bring an
// older file up to it: migrations[v] turns version v into v+1.
type schemaPlan struct {
	version    uint64
	migrations map[uint64]migration
}

var currentSchema = schemaPlan{
	version: SchemaVersion,
	migrations: map[uint64]migration{
		// Version 2 adds pools: records with a pool or a member part.
		// Nothing is rewritten; the bump keeps a controller that knows
		// no pools from opening a store that may hold them, where it
		// would run each pool as a sandbox.
		1: func(*bolt.Tx) error { return nil },
	},
}

// migrateImpl refuses a file newer than plan and runs, in order, every
// step from the file's version up to plan's. All steps share the caller's
// transaction, so a failed step leaves the file at its old version.
func migrateImpl(tx *bolt.Tx, plan schemaPlan, log *slog.Logger) error {
	meta := tx.Bucket(bucketMeta)
	found := getU64(meta.Get(keySchemaVersion))
	if found == 0 {
		return fmt.Errorf("read meta: schema version missing")
	}
	if found > plan.version {
		return fmt.Errorf("check schema: file has version %d, this controller knows up to version %d; run a newer controller: %w",
			found, plan.version, ErrSchemaTooNew)
	}
	for v := found; v < plan.version; v++ {
		step, ok := plan.migrations[v]
		if !ok {
			return fmt.Errorf("migrate schema: no migration from version %d to %d", v, v+1)
		}
		if err := step(tx); err != nil {
			return fmt.Errorf("migrate schema from version %d to %d: %w", v, v+1, err)
		}
		log.Info("store schema migrated", "from_version", v, "to_version", v+1)
	}
	if found != plan.version {
		if err := meta.Put(keySchemaVersion, u64(plan.version)); err != nil {
			return fmt.Errorf("migrate schema: write version: %w", err)
		}
	}
	return nil
}
