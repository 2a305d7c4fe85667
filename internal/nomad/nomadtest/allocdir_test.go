package nomadtest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestAllocDirTemporary: without Options.AllocDir the directories live in
// a temporary root, made on first use and removed by Close.
func TestAllocDirTemporary(t *testing.T) {
	f, alloc := newSandbox(t, Options{})
	f.srv.dirs.mu.Lock()
	made := f.srv.dirs.root
	f.srv.dirs.mu.Unlock()
	if made != "" {
		t.Fatalf("a root %s before any request", made)
	}
	dir := allocDirOf(t, f, alloc.ID)
	root := filepath.Dir(dir)
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close the root %s is still there: %v", root, err)
	}
}
