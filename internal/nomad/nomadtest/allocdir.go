package nomadtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Allocation directories, laid out as a Nomad client lays them out
// (client/allocdir):
//
//	<root>/<alloc ID>/alloc/{data,logs,tmp}
//	<root>/<alloc ID>/alloc/logs/<task>.stdout.0 and <task>.stderr.0
//	<root>/<alloc ID>/<task>/{local,private,secrets,tmp}
//
// An allocation's tree is made on the first exec, file-system or log
// request for it, so that allocations nobody looks into cost nothing. The
// root is Options.AllocDir, or a temporary directory made on first use. A
// purge removes the directories of the job's allocations, as the agent's
// garbage collection does; Close removes every one, and a temporary root.

// errServerClosed answers a client request that comes after Close.
var errServerClosed = errors.New("the test server is closed")

// Directory modes as the recorded agent lists them (lifecycle/fs 01, 02):
// every directory rwxrwxrwx, a task's tmp sticky as well.
const (
	allocDirMode = os.FileMode(0o777)
	taskTmpMode  = os.ModeSticky | 0o777
	logFileMode  = os.FileMode(0o644)
)

// allocDirs owns the root and the directories made under it. Its lock is
// taken after s.mu, never before.
type allocDirs struct {
	dir string // Options.AllocDir

	mu     sync.Mutex
	root   string // absolute, symlinks resolved; "" until first use
	temp   bool   // root was made by the server and goes with Close
	built  map[string]string
	closed bool
}

// rootLocked makes or opens the root. Callers hold d.mu.
func (d *allocDirs) rootLocked() (string, error) {
	if d.root != "" {
		return d.root, nil
	}
	var root string
	if d.dir == "" {
		dir, err := os.MkdirTemp("", "nomadtest-alloc-")
		if err != nil {
			return "", fmt.Errorf("make the allocation root: %w", err)
		}
		root, d.temp = dir, true
	} else {
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			return "", fmt.Errorf("make the allocation root: %w", err)
		}
		root = d.dir
	}
	// The escape check compares resolved paths with the root, which must
	// be resolved too (a temporary directory may sit behind a symlink).
	abs, err := filepath.Abs(root)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("resolve the allocation root %s: %w", root, err)
	}
	d.root = abs
	d.built = make(map[string]string)
	return abs, nil
}

// ensure returns the directory of the allocation, making its tree the
// first time. Callers hold s.mu, so that a purge cannot remove the
// allocation in between.
func (d *allocDirs) ensure(ca *clientAlloc) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return "", errServerClosed
	}
	if dir, ok := d.built[ca.id]; ok {
		return dir, nil
	}
	root, err := d.rootLocked()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ca.id)
	if err := buildAllocDir(dir, ca.taskNames); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("build the directory of allocation %s: %w", ca.id, err)
	}
	d.built[ca.id] = dir
	return dir, nil
}

func buildAllocDir(dir string, tasks []string) error {
	type mkdir struct {
		path string
		mode os.FileMode
	}
	dirs := []mkdir{
		{dir, allocDirMode},
		{filepath.Join(dir, "alloc"), allocDirMode},
		{filepath.Join(dir, "alloc", "data"), allocDirMode},
		{filepath.Join(dir, "alloc", "logs"), allocDirMode},
		{filepath.Join(dir, "alloc", "tmp"), allocDirMode},
	}
	for _, t := range tasks {
		td := filepath.Join(dir, t)
		dirs = append(dirs,
			mkdir{td, allocDirMode},
			mkdir{filepath.Join(td, "local"), allocDirMode},
			mkdir{filepath.Join(td, "private"), allocDirMode},
			mkdir{filepath.Join(td, "secrets"), allocDirMode},
			mkdir{filepath.Join(td, "tmp"), taskTmpMode},
		)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, 0o700); err != nil {
			return err
		}
		// Chmod, since the mode given to Mkdir is cut by the umask.
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
	}
	for _, t := range tasks {
		for _, typ := range []string{"stdout", "stderr"} {
			f, err := os.OpenFile(logFile(dir, t, typ), os.O_CREATE|os.O_WRONLY, logFileMode)
			if err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
	return nil
}

// logFile is the first, and here only, log file of a task's stream.
func logFile(allocDir, task, typ string) string {
	return filepath.Join(allocDir, "alloc", "logs", task+"."+typ+".0")
}

// remove removes the directory of an allocation, if it was made.
func (d *allocDirs) remove(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dir, ok := d.built[id]
	if !ok {
		return nil
	}
	delete(d.built, id)
	return removeTree(dir)
}

// removeAll removes every directory made, and the root if it is
// temporary; later requests that need a directory fail.
func (d *allocDirs) removeAll() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.root == "" {
		return nil
	}
	if d.temp {
		return removeTree(d.root)
	}
	var errs []error
	for _, dir := range d.built {
		errs = append(errs, removeTree(dir))
	}
	clear(d.built)
	return errors.Join(errs...)
}

// removeTree removes dir, trying a second time: a process killed a moment
// ago may still have been creating a file in it.
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove allocation directory: %w", err)
	}
	return nil
}

// errPathEscapes is the agent's answer to a path that leaves the
// allocation directory (lifecycle/fs 08).
var errPathEscapes = errors.New("Path escapes the alloc directory") //nolint:staticcheck // the agent's text

// resolvePath joins a request's path to the allocation directory and
// refuses one that leaves it, by ".." or through a symlink, as the agent's
// escapingfs.PathEscapesAllocDir does. A path that does not exist is not
// an escape: the caller's stat reports it.
func resolvePath(allocDir, path string) (string, error) {
	full := filepath.Join(allocDir, path)
	const base = "/alloc-dir/alloc-id"
	rel, err := filepath.Rel(base, filepath.Join(base, path))
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(rel, "..") {
		return "", errPathEscapes
	}
	resolved, err := filepath.EvalSymlinks(full)
	if err != nil {
		if os.IsNotExist(err) {
			return full, nil
		}
		return "", err
	}
	if len(resolved) < len(allocDir) || !strings.EqualFold(resolved[:len(allocDir)], allocDir) {
		return "", errPathEscapes
	}
	return full, nil
}

// removeAllocDirLocked garbage-collects a purged allocation: the processes
// of its exec sessions are killed, and its directory removed once they are
// gone. Callers hold s.mu.
func (s *Server) removeAllocDirLocked(id string) {
	waitReaped(s.endExecsLocked(func(e *execSession) bool { return e.allocID == id }))
	if err := s.dirs.remove(id); err != nil {
		s.log.Debug("remove allocation directory", "alloc_id", id, "err", err)
	}
}
