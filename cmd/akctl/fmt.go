package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

const fmtUsage = `Usage: akctl fmt [flags] [PATH...]

Rewrites declaration files in canonical HCL layout, as terraform fmt does,
and prints the name of each file it changed. PATH is a file, a directory
(every *.hcl file in it, not in subdirectories) or "-" (standard input to
standard output, alone); the default is the current directory. A file that
does not parse is reported and left untouched. Under -check nothing is
written: the files (or <stdin>) that need formatting are listed.

Examples:
  akctl fmt examples/
  akctl fmt -check sandboxes/      # in CI: fail when a file needs formatting
  akctl fmt - < box.hcl

Exit codes: 0 formatted (or nothing to do), 1 a file needs formatting under
-check or does not parse, 2 usage error.
`

func runFmt(_ context.Context, e *env, args []string) error {
	fs := newFlagSet("fmt")
	check := fs.Bool("check", false, "write nothing; list files that need formatting and exit 1 if any")
	paths, err := parseArgs(fs, args, fmtUsage, e)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}

	if len(paths) > 1 && slices.Contains(paths, "-") {
		return usagef("\"-\" formats standard input to standard output and cannot be combined with other paths")
	}

	var files []string
	failed, changed := false, false
	for _, p := range paths {
		if p == "-" {
			ok, needed := formatStdin(e, *check)
			failed = failed || !ok
			changed = changed || needed
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(e.stderr, "akctl fmt: %v\n", err)
			failed = true
			continue
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(p, "*.hcl"))
		if err != nil {
			return fmt.Errorf("list %s: %w", p, err)
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}

	seen := map[string]bool{}
	for _, f := range files {
		if abs, err := filepath.Abs(f); err == nil {
			if seen[abs] {
				continue
			}
			seen[abs] = true
		}
		src, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(e.stderr, "akctl fmt: %v\n", err)
			failed = true
			continue
		}
		out, diags := spec.Format(src, f)
		if diags.HasErrors() {
			writeParseErrors(e, f, src, diags)
			failed = true
			continue
		}
		if bytes.Equal(src, out) {
			continue
		}
		changed = true
		fmt.Fprintln(e.stdout, f)
		if *check {
			continue
		}
		if err := replaceFile(f, out); err != nil {
			fmt.Fprintf(e.stderr, "akctl fmt: %v\n", err)
			failed = true
		}
	}
	if failed || (*check && changed) {
		return &exitError{code: exitFailure}
	}
	return nil
}

// formatStdin formats standard input to standard output; under -check it
// writes only the name, as for files. It reports whether it succeeded and
// whether the input needed formatting.
func formatStdin(e *env, check bool) (ok, needed bool) {
	src, err := io.ReadAll(io.LimitReader(e.stdin, spec.DefaultMaxSourceBytes+1))
	if err == nil && len(src) > spec.DefaultMaxSourceBytes {
		err = fmt.Errorf("input is larger than %d bytes", spec.DefaultMaxSourceBytes)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "akctl fmt: read standard input: %v\n", err)
		return false, false
	}
	out, diags := spec.Format(src, spec.StdinName)
	if diags.HasErrors() {
		writeParseErrors(e, spec.StdinName, src, diags)
		return false, false
	}
	needed = !bytes.Equal(src, out)
	if check {
		if needed {
			fmt.Fprintln(e.stdout, spec.StdinName)
		}
		return true, needed
	}
	if _, err := e.stdout.Write(out); err != nil {
		fmt.Fprintf(e.stderr, "akctl fmt: write standard output: %v\n", err)
		return false, needed
	}
	return true, needed
}

func writeParseErrors(e *env, name string, src []byte, diags hcl.Diagnostics) {
	files := map[string]*hcl.File{name: {Bytes: src}}
	_ = spec.WriteDiagnostics(e.stderr, files, diags, 100, false)
}

// replaceFile writes through a temporary file and a rename, keeping the
// file's mode, so that a crash or a full disk never leaves half a file.
func replaceFile(path string, data []byte) error {
	// A rename would replace a symlink with a regular file and leave its
	// target as it was: write the target instead.
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".fmt-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
