package sandboxio

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The scripts run here with the machine's own sh, as they run in a
// sandbox: these tests check what they do with hostile names and data,
// apart from how they reach the sandbox (which the API tests cover).

func runLocal(t *testing.T, argv []string, stdin []byte) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %q: %v", argv, err)
	}
	return code, out.String(), errb.String()
}

func TestWrapperPassesEnvAndWorkdirAsWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), `a dir "with" $quotes`)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hostile := "it's \"quoted\" $HOME `id` $(id)\nsecond line\\n  spaced  "
	cmd := Command{
		Argv: []string{"sh", "-c", `printf '%s|%s|' "$V" "$W"; pwd`},
		// n, shift and t are names a wrapper could have used for itself.
		Env:     map[string]string{"V": hostile, "W": "", "n": "a[$(echo PWNED)]", "t": "-1", "shift": "--"},
		Workdir: dir,
	}
	cmd.Argv = []string{"sh", "-c", `printf '%s|%s|%s|%s|%s|' "$V" "$W" "$n" "$t" "$shift"; pwd`}
	code, out, errOut := runLocal(t, cmd.argv(), nil)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := hostile + "||a[$(echo PWNED)]|-1|--|" + dir + "\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestWrapperReportsAMissingCommandAs127(t *testing.T) {
	cmd := Command{Argv: []string{"/nonexistent/program"}, Env: map[string]string{"A": "1"}}
	code, _, errOut := runLocal(t, cmd.argv(), nil)
	if code != ExitNotFound {
		t.Errorf("exit %d, want %d (stderr %q)", code, ExitNotFound, errOut)
	}
	if !strings.Contains(errOut, "nonexistent") {
		t.Errorf("stderr %q does not name the command", errOut)
	}
}

func TestCommandWithoutEnvOrWorkdirRunsAsGiven(t *testing.T) {
	argv := []string{"printf", "%s", "a b"}
	if diff := cmp.Diff(argv, Command{Argv: argv}.argv()); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
}

func TestCommandCheck(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command
		want string // part of the error; "" for none
	}{
		{"ok", Command{Argv: []string{"true"}}, ""},
		{"empty", Command{}, "command is empty"},
		{"empty program", Command{Argv: []string{""}}, "command[0]"},
		{"nul", Command{Argv: []string{"echo", "a\x00b"}}, "NUL"},
		{"bad env name", Command{Argv: []string{"true"}, Env: map[string]string{"A-B": "x"}}, "not a variable name"},
		{"env name with =", Command{Argv: []string{"true"}, Env: map[string]string{"A=B": "x"}}, "not a variable name"},
		{"nul in env", Command{Argv: []string{"true"}, Env: map[string]string{"A": "\x00"}}, "NUL"},
		{"relative workdir", Command{Argv: []string{"true"}, Workdir: "tmp"}, "relative"},
		{"program like an option", Command{Argv: []string{"-a", "x"}}, "starts with '-'"},
		{"too many args", Command{Argv: make([]string, MaxCommandArgs+1)}, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cmd.check()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid) {
				t.Errorf("check = %v, want an invalid error containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckPath(t *testing.T) {
	tests := []struct {
		path string
		want string // part of the error; "" for none
	}{
		{"/", ""},
		{"/tmp/a b/it's \"here\"/$x/ünïcødé/日本", ""},
		{"", "empty"},
		{"tmp/a", "relative"},
		{"/tmp/../etc/passwd", "not clean"},
		{"/tmp/./a", "not clean"},
		{"/tmp//a", "not clean"},
		{"/tmp/a/", "not clean"},
		{"/tmp/..", "not clean"},
		{"/tmp/a\x00b", "control character"},
		{"/tmp/a\nb", "control character"},
		{"/tmp/a\u0085b", "control character"},
		{"/tmp/\xff", "UTF-8"},
		{"/" + strings.Repeat("a", MaxElementBytes+1), "at most"},
		{"/" + strings.Repeat("a/", MaxPathBytes/2+1), "at most"},
	}
	for _, tt := range tests {
		err := CheckPath(tt.path)
		if tt.want == "" {
			if err != nil {
				t.Errorf("CheckPath(%q) = %v", tt.path, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckPath(%.40q) = %v, want an error containing %q", tt.path, err, tt.want)
		}
	}
}

func TestWriteScriptRenamesOnlyAWholeFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, `new dir/it's "ü".bin`)
	tmp := filepath.Join(dir, "new dir/.tmp")
	data := []byte("line\n\x00binary $x `id`\n")

	code, _, errOut := runLocal(t, script(writeScript, target, "0600", "0", tmp, strconv.Itoa(len(data))), data)
	if code != exitNotFound {
		t.Fatalf("write without mkdir into a missing directory: exit %d (%s), want %d", code, errOut, exitNotFound)
	}
	code, _, errOut = runLocal(t, script(writeScript, target, "0600", "1", tmp, "999"), data)
	if code != exitShortWrite {
		t.Fatalf("write with a wrong size: exit %d (%s), want %d", code, errOut, exitShortWrite)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("a short write left the target: %v", err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("a short write left its temporary file: %v", err)
	}
	code, _, errOut = runLocal(t, script(writeScript, target, "0600", "1", tmp, strconv.Itoa(len(data))), data)
	if code != 0 {
		t.Fatalf("write: exit %d: %s", code, errOut)
	}
	got, err := os.ReadFile(target)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %q, %v; want %q", got, err, data)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", fi.Mode().Perm())
	}
	code, _, _ = runLocal(t, script(writeScript, filepath.Join(dir, "new dir"), "0644", "0", tmp, "1"), []byte("x"))
	if code != exitIsDirectory {
		t.Errorf("write onto a directory: exit %d, want %d", code, exitIsDirectory)
	}
}

func TestWriteWithoutSizeCommitsOnlyWhenTold(t *testing.T) {
	dir := t.TempDir()
	target, tmp := filepath.Join(dir, "f"), filepath.Join(dir, ".f.tmp")
	if code, _, e := runLocal(t, script(writeScript, target, "0644", "0", tmp, "-"), []byte("abc")); code != 0 {
		t.Fatalf("write: exit %d: %s", code, e)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatal("the target appeared before the commit")
	}
	// Until the commit gives it its mode, the upload is its owner's alone.
	if fi, err := os.Stat(tmp); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("temporary file before the commit: %v, mode %v; want no access for others", err, fi.Mode())
	}
	if code, _, _ := runLocal(t, script(commitScript, tmp, target, "0644", "4"), nil); code != exitShortWrite {
		t.Fatalf("commit with the wrong size: exit %d, want %d", code, exitShortWrite)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatal("a refused commit left the temporary file")
	}
	if code, _, e := runLocal(t, script(writeScript, target, "0644", "0", tmp, "-"), []byte("abc")); code != 0 {
		t.Fatalf("write: exit %d: %s", code, e)
	}
	if code, _, e := runLocal(t, script(commitScript, tmp, target, "0644", "3"), nil); code != 0 {
		t.Fatalf("commit: exit %d: %s", code, e)
	}
	if got, _ := os.ReadFile(target); string(got) != "abc" {
		t.Errorf("content %q", got)
	}
}

func TestReadScriptAnswersFilesAndDirectories(t *testing.T) {
	dir := t.TempDir()
	names := []string{"a b", `it's "q"`, "ünï", ".hidden"}
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), bytes.Repeat([]byte("x"), i), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a b", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	code, out, e := runLocal(t, script(readScript, dir), nil)
	if code != 0 {
		t.Fatalf("read dir: exit %d: %s", code, e)
	}
	br := bufio.NewReader(strings.NewReader(out))
	if head, _ := br.ReadString('\n'); head != "d\n" {
		t.Fatalf("head %q", head)
	}
	entries, err := readListing(br)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Name] = e.Type + " " + modeString(e)
	}
	want := map[string]string{"a b": "file 640", `it's "q"`: "file 640", "ünï": "file 640", ".hidden": "file 640",
		"sub": "directory 755", "link": "symlink 777"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}

	code, out, _ = runLocal(t, script(readScript, filepath.Join(dir, `it's "q"`)), nil)
	if code != 0 || out != "f 1 640\nx" {
		t.Errorf("read file: exit %d, %q", code, out)
	}
	if code, _, _ = runLocal(t, script(readScript, filepath.Join(dir, "missing")), nil); code != exitNotFound {
		t.Errorf("read missing: exit %d, want %d", code, exitNotFound)
	}
}

func modeString(e FileInfo) string { return fmt.Sprintf("%o", e.Mode.Perm()) }

func TestRemoveScript(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full dir")
	if err := os.MkdirAll(filepath.Join(full, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := runLocal(t, script(removeScript, full, "0"), nil); code != exitNotEmpty {
		t.Errorf("remove a full directory without recursion: exit %d, want %d", code, exitNotEmpty)
	}
	if code, _, _ := runLocal(t, script(removeScript, full, "1"), nil); code != 0 {
		t.Errorf("remove recursively: exit %d", code)
	}
	if _, err := os.Stat(full); !os.IsNotExist(err) {
		t.Error("the directory is still there")
	}
	if code, _, _ := runLocal(t, script(removeScript, full, "1"), nil); code != exitNotFound {
		t.Errorf("remove a missing path: exit %d, want %d", code, exitNotFound)
	}
}

func TestFilterTarRefusesEscapes(t *testing.T) {
	reg := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg} }
	sym := func(name, to string) tar.Header {
		return tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: to}
	}
	tests := []struct {
		name string
		hdrs []tar.Header
		ok   bool
	}{
		{"file", []tar.Header{reg("./a b/c")}, true},
		{"dir", []tar.Header{{Name: "d/", Typeflag: tar.TypeDir}}, true},
		{"the directory itself", []tar.Header{{Name: "./", Typeflag: tar.TypeDir}, reg("./a")}, true},
		{"a file named as the directory", []tar.Header{reg(".")}, false},
		{"relative link inside", []tar.Header{sym("d/l", "../c")}, true},
		{"link to the directory itself", []tar.Header{sym("self", ".")}, true},
		{"git archive's global header", []tar.Header{{Name: "pax_global_header", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "abc"}}, reg("a")}, true},
		{"dotdot", []tar.Header{reg("../x")}, false},
		{"nested dotdot", []tar.Header{reg("a/../../x")}, false},
		{"dotdot that comes back", []tar.Header{reg("x/../evil")}, true},
		{"absolute", []tar.Header{reg("/etc/passwd")}, false},
		{"absolute link", []tar.Header{sym("l", "/etc")}, false},
		{"escaping link", []tar.Header{sym("a/l", "../../etc")}, false},
		{"link chain out", []tar.Header{sym("x", "."), sym("y", "x/..")}, false},
		{"file through a link", []tar.Header{sym("x", "sub"), reg("x/f")}, false},
		{"hardlink out", []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "./.."}}, false},
		{"hardlink inside", []tar.Header{reg("a"), {Name: "h", Typeflag: tar.TypeLink, Linkname: "a"}}, true},
		{"device", []tar.Header{{Name: "dev", Typeflag: tar.TypeChar}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in bytes.Buffer
			tw := tar.NewWriter(&in)
			for _, h := range tt.hdrs {
				if h.Typeflag != tar.TypeXGlobalHeader {
					h.Mode, h.Uid, h.Gid = 0o644, 1234, 5678
				}
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
			}
			tw.Close()
			var out bytes.Buffer
			var res TarResult
			err := filterTar(&in, &out, &res, 1<<20)
			if tt.ok != (err == nil) {
				t.Fatalf("filterTar = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v is not ErrInvalid", err)
				}
				return
			}
			tr := tar.NewReader(&out)
			for {
				got, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if got.Uid != 0 || got.Gid != 0 || strings.Contains(got.Name, "..") || got.Typeflag == tar.TypeXGlobalHeader {
					t.Errorf("entry %q (type %q) %d:%d: want clean names, no owners, no global header", got.Name, got.Typeflag, got.Uid, got.Gid)
				}
			}
		})
	}
}

// A small archive must not expand past the write limit.
func TestFilterTarCountsSizesNotArchiveBytes(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, n := range []string{"a", "b"} {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Size: 600, Mode: 0o644})
		tw.Write(make([]byte, 600))
	}
	tw.Close()
	var res TarResult
	if err := filterTar(&in, io.Discard, &res, 1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("1200 bytes of files against a limit of 1000: %v, want ErrTooLarge", err)
	}
}

func TestLastLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
		ok   bool
	}{
		{"a\nb\nc\n", 2, "b\nc\n", true},
		{"a\nb\nc", 2, "b\nc", true},
		{"a\nb\n", 2, "a\nb\n", false},
		{"a\nb\n", 5, "a\nb\n", false},
		{"a\nb\n", 0, "", true},
		{"", 3, "", false},
	}
	for _, tt := range tests {
		got, ok := lastLines([]byte(tt.in), tt.n)
		if string(got) != tt.want || ok != tt.ok {
			t.Errorf("lastLines(%q, %d) = %q, %v; want %q, %v", tt.in, tt.n, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLayoutMapsTaskDirectories(t *testing.T) {
	tests := []struct {
		name, allocDir, taskLocal, path string
		want                            string // "" when not in the file system
	}{
		{"container local", "/alloc", "/local", "/local/work/a.txt", "/sandbox/local/work/a.txt"},
		// Nomad's cat refuses secrets with 200 and a text: exec reads them.
		{"container secrets", "/alloc", "/local", "/secrets/x", ""},
		{"host secrets", "/data/alloc/1234/alloc", "/data/alloc/1234/sandbox/local", "/data/alloc/1234/sandbox/secrets/token", ""},
		{"host private", "/data/alloc/1234/alloc", "/data/alloc/1234/sandbox/local", "/data/alloc/1234/sandbox/private/x", ""},
		{"container alloc", "/alloc", "/local", "/alloc/logs/sandbox.stdout.0", "/alloc/logs/sandbox.stdout.0"},
		{"container elsewhere", "/alloc", "/local", "/etc/hostname", ""},
		{"container look-alike", "/alloc", "/local", "/localx/a", ""},
		{"host task file", "/data/alloc/1234/alloc", "/data/alloc/1234/sandbox/local", "/data/alloc/1234/sandbox/local/a", "/sandbox/local/a"},
		{"host alloc dir", "/data/alloc/1234/alloc", "/data/alloc/1234/sandbox/local", "/data/alloc/1234/alloc/data/x", "/alloc/data/x"},
		{"host elsewhere", "/data/alloc/1234/alloc", "/data/alloc/1234/sandbox/local", "/etc/passwd", ""},
		{"host other alloc", "/data/alloc/1234/alloc", "/data/alloc/1234/sandbox/local", "/data/alloc/12345/x", ""},
		{"unknown layout", "/x/alloc", "/y/sandbox/local", "/x/a", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := layoutFrom(tt.allocDir, tt.taskLocal, "sandbox").fsPath(tt.path)
			if tt.want == "" {
				if ok {
					t.Errorf("fsPath(%q) = %q, want none", tt.path, got)
				}
				return
			}
			if !ok || got != tt.want {
				t.Errorf("fsPath(%q) = %q, %v; want %q", tt.path, got, ok, tt.want)
			}
		})
	}
}

// A sparse file is a few bytes in its archive and its whole size on
// disk: it is refused, never expanded. The archive is made by the
// system's tar, as a client's would be.
func TestFilterTarRefusesASparseFile(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar here")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "holes"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "holes"), 2<<30); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "--format=pax", "-S", "-C", dir, "-cf", "-", "holes").Output()
	if err != nil {
		t.Skipf("this tar makes no sparse archives: %v", err)
	}
	var res TarResult
	sink := countingWriter{w: io.Discard}
	err = filterTar(bytes.NewReader(out), &sink, &res, 256<<20)
	if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
		t.Errorf("a %d-byte archive of a 2 GiB sparse file: %v, want it refused", len(out), err)
	}
	if sink.n > 1<<20 {
		t.Errorf("%d bytes passed on before the refusal", sink.n)
	}
}

// What a sandbox prints in answer to a read is bounded: a line longer
// than the reader's buffer fails instead of growing the controller.
func TestReadListingIsBounded(t *testing.T) {
	long := strings.Repeat("x", maxExecLine+1)
	for name, in := range map[string]string{
		"long stat line": long + "\n",
		"long name":      "1 644 0 regular file\n" + long + "\x00",
		"cut entry":      "1 644 0 regular file\nname-without-end",
	} {
		_, err := readListing(bufio.NewReaderSize(strings.NewReader(in), maxExecLine))
		if !errors.Is(err, ErrFailed) {
			t.Errorf("%s: %v, want ErrFailed", name, err)
		}
	}
	got, err := readListing(bufio.NewReaderSize(strings.NewReader("3 640 0 regular file\na b\x00"), maxExecLine))
	if err != nil || len(got) != 1 || got[0].Name != "a b" || got[0].Size != 3 {
		t.Errorf("a listing: %+v %v", got, err)
	}
}
