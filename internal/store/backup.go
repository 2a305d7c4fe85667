package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the store to w while the controller
// keeps running: it copies the file as one read transaction sees it, so
// writes that commit meanwhile are not in the copy and do not tear it. The
// read transaction is held for the whole copy, and bbolt cannot grow its
// memory map meanwhile, so a very slow w can delay writers that need to.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("back up store: %w", err)
	}
	var n int64
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx: ctx, w: w})
		return err
	})
	if err != nil {
		return n, fmt.Errorf("back up store: %w", err)
	}
	return n, nil
}

// Restore writes a backup read from r as the store of dataDir, which must
// be missing or empty (else ErrNotEmpty). The copy is written to a
// temporary file, synced and checked to be a store this binary can open
// before it is renamed into place, so a failed restore leaves no store
// file behind.
func Restore(r io.Reader, dataDir string) error {
	if err := restore(r, dataDir); err != nil {
		return fmt.Errorf("restore store into %q: %w", dataDir, err)
	}
	return nil
}

func restore(r io.Reader, dataDir string) (err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%d entries found, starting with %q: %w", len(entries), entries[0].Name(), ErrNotEmpty)
	}
	tmp, err := os.CreateTemp(dataDir, FileName+".restore-*")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpPath)
		}
	}()
	if _, err := io.Copy(tmp, r); err != nil {
		return fmt.Errorf("write copy: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync copy: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := checkBackup(tmpPath); err != nil {
		return err
	}
	if err := os.Rename(tmpPath, filepath.Join(dataDir, FileName)); err != nil {
		return err
	}
	return syncDir(dataDir)
}

// checkBackup opens the copy read-only and checks that it holds a store
// of a schema this binary can open.
func checkBackup(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("check copy: not a store file: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("check copy: no meta bucket; not a controller store")
		}
		if len(meta.Get(keyStoreID)) == 0 {
			return errors.New("check copy: no store ID; not a controller store")
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("check copy: bucket %s missing", b)
			}
		}
		v := getU64(meta.Get(keySchemaVersion))
		if v == 0 {
			return errors.New("check copy: schema version missing")
		}
		if v > SchemaVersion {
			return fmt.Errorf("check copy: file has schema version %d, this controller knows up to version %d: %w",
				v, SchemaVersion, ErrSchemaTooNew)
		}
		return nil
	})
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", dir, err)
	}
	return nil
}
