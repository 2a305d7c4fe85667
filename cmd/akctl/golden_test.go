package main

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden from the current output")

// cliCase is one run of akctl: a command line and what it may read,
// checked against testdata/golden/<golden>.txtar.
type cliCase struct {
	name    string
	args    []string
	stdin   string
	environ []string

	// files are laid out in a fresh working directory (a trailing "/"
	// makes an empty directory). Without files the case runs in the
	// package directory, where the examples are ../../examples.
	files map[string]string
	// modes overrides the 0644 of some files.
	modes map[string]fs.FileMode
	// showFiles records the files as they are after the run in the golden.
	showFiles bool
	// unchanged asserts that every file keeps its bytes.
	unchanged bool
	// check makes further assertions on the result.
	check func(t *testing.T, r result)

	// ctl, when set, starts a controller for the case (see
	// startController); "$ADDR" in args and environ is its address, and
	// "$DEAD" an address nothing listens on. Output is normalised before
	// it is compared (see testController.normalize).
	ctl *ctlOptions
	// before are akctl runs made first, against the same controller;
	// each must exit 0, or, when its first word is "!" as in a shell,
	// must fail.
	before [][]string
}

type result struct {
	code           int
	stdout, stderr string
}

// oldTime is the mtime every laid-out file starts with, so that a
// needless rewrite shows even on file systems with coarse timestamps.
var oldTime = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

// runGolden runs c under t and compares the outcome with its golden file.
// Whatever the case, a run must not leave stray files behind, change a
// file's mode, or touch a file it did not change.
func runGolden(t *testing.T, golden string, c cliCase) result {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("testdata", "golden", golden+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	if c.files != nil {
		dir := t.TempDir()
		layOut(t, dir, c.files, c.modes)
		t.Chdir(dir)
	}

	var tc *testController
	if c.ctl != nil {
		tc = startController(t, *c.ctl)
	}
	dead := ""
	expand := func(args []string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			if strings.Contains(a, "$DEAD") && dead == "" {
				dead = deadAddr(t)
			}
			a = strings.ReplaceAll(a, "$DEAD", dead)
			if tc != nil {
				a = strings.ReplaceAll(a, "$ADDR", tc.addr)
			}
			out[i] = a
		}
		return out
	}
	for _, args := range c.before {
		mustFail := len(args) > 0 && args[0] == "!"
		if mustFail {
			args = args[1:]
		}
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), expand(args), &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, now: func() time.Time { return akctlNow }})
		if (code != exitOK) != mustFail {
			t.Fatalf("akctl %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
		}
	}

	var stdout, stderr bytes.Buffer
	code := run(t.Context(), expand(c.args), &env{
		stdin:   strings.NewReader(c.stdin),
		stdout:  &stdout,
		stderr:  &stderr,
		environ: expand(c.environ),
		now:     func() time.Time { return akctlNow },
	})
	r := result{code: code, stdout: tc.normalize(t, stdout.String(), dead), stderr: tc.normalize(t, stderr.String(), dead)}

	if c.files != nil {
		checkFiles(t, c)
	}
	got := archive(t, c, r)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./cmd/akctl -update to create it)", err)
		}
		if diff := cmp.Diff(string(want), got); diff != "" {
			t.Errorf("akctl %s: output differs from %s (-want +got):\n%s", strings.Join(c.args, " "), filepath.Base(path), diff)
		}
	}
	if c.check != nil {
		c.check(t, r)
	}
	return r
}

func layOut(t *testing.T, dir string, files map[string]string, modes map[string]fs.FileMode) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := fs.FileMode(0o644)
		if m, ok := modes[name]; ok {
			mode = m
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		// WriteFile's mode passes through the umask.
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, oldTime, oldTime); err != nil {
			t.Fatal(err)
		}
	}
}

// checkFiles compares the working directory after a run with c.files.
func checkFiles(t *testing.T, c cliCase) {
	t.Helper()
	var want []string
	for name := range c.files {
		if !strings.HasSuffix(name, "/") {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, listFiles(t)); diff != "" {
		t.Errorf("files in the working directory after the run (-want +got):\n%s", diff)
	}
	for _, name := range want {
		fi, err := os.Stat(filepath.FromSlash(name))
		if err != nil {
			continue // reported above
		}
		wantMode := fs.FileMode(0o644)
		if m, ok := c.modes[name]; ok {
			wantMode = m
		}
		if got := fi.Mode().Perm(); got != wantMode {
			t.Errorf("%s: mode %v after the run, want %v", name, got, wantMode)
		}
		b, err := os.ReadFile(filepath.FromSlash(name))
		if err != nil {
			t.Error(err)
			continue
		}
		same := string(b) == c.files[name]
		if c.unchanged && !same {
			t.Errorf("%s was changed; want it byte for byte as before (-before +after):\n%s", name, cmp.Diff(c.files[name], string(b)))
		}
		if same && !fi.ModTime().Equal(oldTime) {
			t.Errorf("%s was rewritten with the same content (mtime %v)", name, fi.ModTime())
		}
	}
}

func listFiles(t *testing.T) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		got = append(got, filepath.ToSlash(p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

// archive renders a run in txtar form: the runs made before it and the
// command line as comments, then
// standard input if any, the exit code, standard output, standard error
// and, with showFiles, each file after the run with its mode.
func archive(t *testing.T, c cliCase, r result) string {
	t.Helper()
	var b strings.Builder
	for _, args := range c.before {
		b.WriteString("# given")
		if len(args) > 0 && args[0] == "!" {
			b.WriteString(" !")
			args = args[1:]
		}
		b.WriteString(" akctl")
		for _, a := range args {
			b.WriteString(" " + shellQuote(a))
		}
		b.WriteString("\n")
	}
	b.WriteString("# akctl")
	for _, a := range c.args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	for _, kv := range c.environ {
		b.WriteString("# env " + shellQuote(kv) + "\n")
	}
	section := func(name, content string) {
		if content != "" && !strings.HasSuffix(content, "\n") {
			t.Errorf("%s does not end in a newline: %q", name, content)
			content += "\n"
		}
		fmt.Fprintf(&b, "-- %s --\n%s", name, content)
	}
	if c.stdin != "" {
		section("stdin", c.stdin)
	}
	section("code", strconv.Itoa(r.code)+"\n")
	section("stdout", r.stdout)
	section("stderr", r.stderr)
	if c.showFiles {
		for _, name := range listFiles(t) {
			fi, err := os.Stat(filepath.FromSlash(name))
			if err != nil {
				t.Fatal(err)
			}
			content, err := os.ReadFile(filepath.FromSlash(name))
			if err != nil {
				t.Fatal(err)
			}
			section(fmt.Sprintf("%s %04o", name, fi.Mode().Perm()), string(content))
		}
	}
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\"'\\$`*?;&|<>(){}[]#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
