package sandboxio

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
)

// File types of FileInfo.Type.
const (
	TypeFile      = "file"
	TypeDirectory = "directory"
	TypeSymlink   = "symlink"
	TypeOther     = "other"
)

// FileInfo describes a file or directory entry inside a sandbox.
type FileInfo struct {
	Name    string
	Type    string
	Size    int64
	Mode    fs.FileMode // permission bits only
	ModTime time.Time
}

// Opened is a path read from a sandbox: a file's content, or a
// directory's entries.
type Opened struct {
	Info FileInfo
	// Entries lists a directory, sorted by name.
	Entries []FileInfo
	// Body is a file's content; Close it. It fails at its end if the
	// sandbox could not send the whole file.
	Body io.ReadCloser
	// SizeUnknown says Info.Size is not the content's length: a file
	// that stat calls empty but that has content when read, as the
	// kernel's (/proc, /sys) do. Body then ends where the content does.
	SizeUnknown bool
}

// Exit codes of the file scripts below, beside a command's own.
const (
	exitNoPermission = 43
	exitNotFound     = 44
	exitIsDirectory  = 45
	exitNotEmpty     = 46
	exitShortWrite   = 47
	exitNotDirectory = 48
)

// The file scripts. Each is fixed text: paths, modes and sizes arrive as
// positional arguments and contents on standard input, so nothing a
// caller sends is read by the shell as code. They use only what POSIX sh,
// coreutils and busybox all have.
const (
	// readScript prints "d" and the entries of a directory (for each,
	// "size mode mtime type" on a line, then the name ended by NUL), or
	// "f size mode" and the file's bytes.
	readScript = `p=$1
if [ -d "$p" ]; then
  [ -r "$p" ] && [ -x "$p" ] || { echo "permission denied: $p" >&2; exit 43; }
  printf 'd\n'
  cd -- "$p" || exit 43
  for f in * .*; do
    case $f in .|..) continue;; esac
    if [ -e "$f" ] || [ -L "$f" ]; then stat -c '%s %a %Y %F' -- "$f" && printf '%s\0' "$f"; fi
  done
  exit 0
fi
[ -e "$p" ] || exit 44
[ -r "$p" ] || { echo "permission denied: $p" >&2; exit 43; }
h=$(stat -L -c '%s %a' -- "$p") || exit 1
printf 'f %s\n' "$h"
exec cat -- "$p"`

	// writeScript writes stdin to a temporary file beside the target;
	// given the expected size it checks it and renames the file into
	// place, so that a reader never sees half a file and a cut transfer
	// leaves the old one. Without a size ("-") it leaves the temporary
	// file for commitScript. The temporary file is its owner's alone until
	// chmod gives it the mode asked for: a secret being uploaded is never
	// readable by others, not even in part.
	writeScript = `p=$1; mode=$2; mk=$3; t=$4; n=$5
d=${p%/*}; [ -n "$d" ] || d=/
if [ "$mk" = 1 ]; then mkdir -p -- "$d" || exit 1; fi
[ -d "$d" ] || exit 44
[ -d "$p" ] && exit 45
umask 077
cat > "$t" || { rm -f -- "$t"; exit 1; }
[ "$n" = - ] && exit 0
got=$(($(wc -c < "$t")))
if [ "$got" -ne "$n" ]; then rm -f -- "$t"; exit 47; fi
chmod "$mode" "$t" && mv -f -- "$t" "$p" || { rm -f -- "$t"; exit 1; }`

	commitScript = `t=$1; p=$2; mode=$3; n=$4
got=$(($(wc -c < "$t"))) || exit 1
if [ "$got" -ne "$n" ]; then rm -f -- "$t"; exit 47; fi
chmod "$mode" "$t" && mv -f -- "$t" "$p" || { rm -f -- "$t"; exit 1; }`

	abortScript = `rm -f -- "$1"`

	removeScript = `p=$1
[ -e "$p" ] || [ -L "$p" ] || exit 44
if [ -d "$p" ] && [ ! -L "$p" ]; then
  if [ "$2" = 1 ]; then exec rm -rf -- "$p"; fi
  rmdir -- "$p" 2>/dev/null || exit 46
  exit 0
fi
exec rm -f -- "$p"`

	tarReadScript = `[ -e "$1" ] || exit 44
[ -d "$1" ] || exit 48
cd -- "$1" && exec tar -cf - .`

	tarWriteScript = `if [ "$2" = 1 ]; then mkdir -p -- "$1" || exit 1; fi
[ -e "$1" ] || exit 44
[ -d "$1" ] || exit 48
cd -- "$1" && exec tar -xf -`
)

// script is the argv that runs one of the scripts above.
func script(text string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", text, "ak"}, args...)
}

// run runs argv in the allocation with stdin and stdout attached and
// returns its exit code and the start of its stderr.
func (s *Service) run(ctx context.Context, alloc *api.Allocation, argv []string, stdin io.Reader, stdout io.Writer) (int, string, error) {
	stderr := &limitedBuffer{max: 4096}
	code, err := s.nomad.Exec(ctx, alloc, nomad.ExecOptions{Task: s.task, Command: argv, Stdin: stdin, Stdout: stdout, Stderr: stderr})
	if err != nil {
		var se *nomad.StartError
		if errors.As(err, &se) {
			return 0, "", fmt.Errorf("%w: the sandbox cannot run /bin/sh, which file operations outside the task's directories need: %s", ErrFailed, se.Message)
		}
		return 0, "", err
	}
	return code, strings.TrimSpace(stderr.buf.String()), nil
}

// scriptError turns a file script's exit code into an error.
func scriptError(code int, p, stderr string) error {
	switch code {
	case 0:
		return nil
	case exitNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, p)
	case exitIsDirectory:
		return fmt.Errorf("%w: %s", ErrIsDirectory, p)
	case exitNotDirectory:
		return fmt.Errorf("%w: %s", ErrNotDirectory, p)
	case exitNotEmpty:
		return fmt.Errorf("%w: %s: remove it with recursive=true", ErrNotEmpty, p)
	}
	if stderr == "" {
		stderr = fmt.Sprintf("exit status %d", code)
	}
	return fmt.Errorf("%w: %s: %s", ErrFailed, p, stderr)
}

// layoutOf learns, once per allocation, where its directories appear in
// the sandbox. A sandbox without a shell has no layout: everything then
// goes through exec, which needs one too and says so.
func (s *Service) layoutOf(ctx context.Context, alloc *api.Allocation) layout {
	s.mu.Lock()
	l, ok := s.layouts[alloc.ID]
	s.mu.Unlock()
	if ok {
		return l
	}
	out := &limitedBuffer{max: 2*4096 + 2}
	code, _, err := s.run(ctx, alloc, []string{"/bin/sh", "-c", `printf '%s\n%s\n' "$NOMAD_ALLOC_DIR" "$NOMAD_TASK_DIR"`}, nil, out)
	if err != nil || code != 0 || out.cut {
		return layout{}
	}
	lines := strings.Split(out.buf.String(), "\n")
	if len(lines) < 2 {
		return layout{}
	}
	l = layoutFrom(lines[0], lines[1], s.task)
	s.mu.Lock()
	if len(s.layouts) > 4096 {
		clear(s.layouts)
	}
	s.layouts[alloc.ID] = l
	s.mu.Unlock()
	return l
}

// Open reads a path of a sandbox: through the allocation file system
// when the path lies in the task's directories, through exec otherwise.
// The session slot is held until Body is closed.
func (s *Service) Open(ctx context.Context, t Target, who Caller, p string) (*Opened, error) {
	if err := CheckPath(p); err != nil {
		return nil, err
	}
	alloc, err := s.running(ctx, t)
	if err != nil {
		return nil, err
	}
	release, err := s.acquire(t)
	if err != nil {
		return nil, err
	}
	start := s.now()
	o, via, err := s.open(ctx, alloc, p)
	attrs := []slog.Attr{slog.String("op", "read"), slog.String("path", p), slog.String("via", via)}
	if err != nil {
		release()
		s.auditFile(t, who, start, err, attrs...)
		return nil, err
	}
	if o.Body == nil {
		release()
		s.auditFile(t, who, start, nil, append(attrs, slog.Int("entries", len(o.Entries)))...)
		return o, nil
	}
	s.auditFile(t, who, start, nil, append(attrs, slog.Int64("size", o.Info.Size))...)
	o.Body = &releasingBody{ReadCloser: o.Body, release: release}
	return o, nil
}

type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func (s *Service) open(ctx context.Context, alloc *api.Allocation, p string) (*Opened, string, error) {
	if fp, ok := s.layoutOf(ctx, alloc).fsPath(p); ok {
		o, err := s.openFS(ctx, alloc, p, fp)
		if !errors.Is(err, errUseExec) {
			return o, "fs", err
		}
	}
	o, err := s.openExec(ctx, alloc, p)
	return o, "exec", err
}

// errUseExec: the file system API cannot answer for this path (a
// symlink, a device); exec can.
var errUseExec = errors.New("read through exec")

func (s *Service) openFS(ctx context.Context, alloc *api.Allocation, p, fp string) (*Opened, error) {
	st, err := s.nomad.Stat(ctx, alloc, fp)
	switch {
	case errors.Is(err, nomad.ErrNoSuchFile):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	case errors.Is(err, nomad.ErrPathEscapes):
		return nil, errUseExec
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	info := infoOfFS(st)
	info.Name = path.Base(p)
	switch info.Type {
	case TypeDirectory:
		list, err := s.nomad.List(ctx, alloc, fp)
		if err != nil {
			if errors.Is(err, nomad.ErrNoSuchFile) {
				return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
			}
			return nil, fmt.Errorf("list %s: %w", p, err)
		}
		o := &Opened{Info: info, Entries: make([]FileInfo, 0, len(list))}
		for _, e := range list {
			o.Entries = append(o.Entries, infoOfFS(e))
		}
		sort.Slice(o.Entries, func(i, j int) bool { return o.Entries[i].Name < o.Entries[j].Name })
		return o, nil
	case TypeFile:
		body, err := s.nomad.Cat(ctx, alloc, fp)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		// Nomad answers an error as text with 200; Stat said this is a
		// file, and the length it gave bounds what is content. What came
		// must end there, and the file must still be the one stat saw.
		verify := func() error {
			again, err := s.nomad.Stat(ctx, alloc, fp)
			if err != nil || again.IsDir || again.Size != st.Size || !again.ModTime.Equal(st.ModTime) {
				return fmt.Errorf("%w: %s changed or went away while it was read", ErrFailed, p)
			}
			return nil
		}
		return &Opened{Info: info, Body: &exactBody{r: body, left: info.Size, path: p, verify: verify}}, nil
	}
	return nil, errUseExec
}

// exactBody yields exactly the size Stat gave, failing if the file
// system API sent less or more (the file changed, or an error came as
// text), or if verify, asked once all of it came, finds the file changed.
type exactBody struct {
	r      io.ReadCloser
	left   int64
	path   string
	verify func() error
	done   bool
	err    error
}

func (b *exactBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	if b.left <= 0 {
		return 0, b.finish()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case err == io.EOF && b.left > 0:
		b.done, b.err = true, fmt.Errorf("%w: %s changed while it was read: %d bytes short", ErrFailed, b.path, b.left)
		return n, b.err
	case err != nil && err != io.EOF:
		return n, err
	}
	if b.left == 0 {
		// The last bytes go out only once the whole read is known good:
		// a client that counts on the length must not take a wrong
		// file for a whole one.
		if err := b.finish(); err != io.EOF {
			return 0, err
		}
		return n, io.EOF
	}
	return n, nil
}

// finish checks that nothing follows the expected bytes and that the
// file is unchanged.
func (b *exactBody) finish() error {
	b.done, b.err = true, io.EOF
	var one [1]byte
	if n, _ := io.ReadFull(b.r, one[:]); n > 0 {
		b.err = fmt.Errorf("%w: %s changed while it was read: more bytes than it held", ErrFailed, b.path)
	} else if b.verify != nil {
		if err := b.verify(); err != nil {
			b.err = err
		}
	}
	return b.err
}

func (b *exactBody) Close() error { return b.r.Close() }

// infoOfFS converts what Nomad's stat and ls answer.
func infoOfFS(fi *nomad.FileInfo) FileInfo {
	mode := parseModeString(fi.FileMode)
	t := TypeOther
	switch {
	case fi.IsDir:
		t = TypeDirectory
	case strings.HasPrefix(fi.FileMode, "-"):
		t = TypeFile
	case strings.HasPrefix(fi.FileMode, "L"):
		t = TypeSymlink
	}
	return FileInfo{Name: fi.Name, Type: t, Size: fi.Size, Mode: mode, ModTime: fi.ModTime}
}

// parseModeString reads the permission bits of Go's FileMode.String()
// ("-rw-r--r--", "dtrwxrwxrwx"): the last nine characters.
func parseModeString(s string) fs.FileMode {
	if len(s) < 9 {
		return 0
	}
	perm := s[len(s)-9:]
	var m fs.FileMode
	for i, c := range perm {
		if c != '-' {
			m |= 1 << (8 - i)
		}
	}
	return m
}

func (s *Service) openExec(ctx context.Context, alloc *api.Allocation, p string) (*Opened, error) {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		code, stderr, err := s.run(ctx, alloc, script(readScript, p), nil, pw)
		if err == nil {
			err = scriptError(code, p, stderr)
		}
		pw.CloseWithError(err)
		done <- err
	}()
	stop := func() { cancel(); pr.Close(); <-done }
	// What the sandbox prints is its own to choose: lines are bounded by
	// the reader's buffer, and a listing by maxListing entries.
	br := bufio.NewReaderSize(pr, maxExecLine)
	head, err := readLine(br, '\n')
	if err != nil {
		stop()
		if err == io.EOF {
			err = fmt.Errorf("%w: %s: the sandbox answered nothing", ErrFailed, p)
		}
		return nil, err
	}
	switch {
	case head == "d":
		entries, err := readListing(br)
		if err == nil {
			err = <-done
			cancel()
		} else {
			stop()
		}
		if err != nil {
			return nil, err
		}
		return &Opened{Info: FileInfo{Name: path.Base(p), Type: TypeDirectory}, Entries: entries}, nil
	case strings.HasPrefix(head, "f "):
		f := strings.Fields(head[2:])
		if len(f) != 2 {
			stop()
			return nil, fmt.Errorf("%w: %s: cannot read what stat said: %q", ErrFailed, p, head)
		}
		size, err1 := strconv.ParseInt(f[0], 10, 64)
		mode, err2 := strconv.ParseUint(f[1], 8, 32)
		if err1 != nil || err2 != nil {
			stop()
			return nil, fmt.Errorf("%w: %s: cannot read what stat said: %q", ErrFailed, p, head)
		}
		info := FileInfo{Name: path.Base(p), Type: TypeFile, Size: size, Mode: fs.FileMode(mode) & fs.ModePerm}
		if size == 0 {
			// Read to its end, within the write limit.
			return &Opened{Info: info, SizeUnknown: true, Body: &execBody{r: &countingReader{r: br, max: s.maxFile}, stop: stop}}, nil
		}
		// What stat counted, and no more: a file that grows meanwhile
		// is read as it was.
		return &Opened{Info: info, Body: &execBody{r: io.LimitReader(br, size), stop: stop}}, nil
	}
	stop()
	return nil, fmt.Errorf("%w: %s: unexpected answer %q", ErrFailed, p, head)
}

type execBody struct {
	r    io.Reader
	stop func()
	once bool
}

func (b *execBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *execBody) Close() error {
	if !b.once {
		b.once = true
		b.stop()
	}
	return nil
}

// readListing parses readScript's directory entries.
func readListing(br *bufio.Reader) ([]FileInfo, error) {
	var out []FileInfo
	for {
		line, err := readLine(br, '\n')
		if err == io.EOF && line == "" {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(out) >= maxListing {
			return nil, fmt.Errorf("%w: the directory holds more than %d entries: read it as a tar archive", ErrFailed, maxListing)
		}
		name, err := readLine(br, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: a directory entry ended early", ErrFailed)
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("%w: cannot read the directory entry %q", ErrFailed, line)
		}
		size, _ := strconv.ParseInt(f[0], 10, 64)
		mode, _ := strconv.ParseUint(f[1], 8, 32)
		mtime, _ := strconv.ParseInt(f[2], 10, 64)
		out = append(out, FileInfo{
			Name: name, Type: typeOfStat(f[3]), Size: size,
			Mode: fs.FileMode(mode) & fs.ModePerm, ModTime: time.Unix(mtime, 0).UTC(),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Bounds on what a sandbox's answer to a read may hold.
const (
	maxExecLine = 64 << 10
	maxListing  = 100_000
)

// readLine reads up to delim, which it drops, from a reader whose
// buffer bounds the line; io.EOF only when nothing came.
func readLine(br *bufio.Reader, delim byte) (string, error) {
	b, err := br.ReadSlice(delim)
	switch {
	case err == bufio.ErrBufferFull:
		return "", fmt.Errorf("%w: the sandbox answered a line of more than %d bytes", ErrFailed, maxExecLine)
	case err == io.EOF && len(b) > 0:
		return "", fmt.Errorf("%w: the sandbox's answer ended in the middle of a line", ErrFailed)
	case err != nil:
		return "", err
	}
	return string(b[:len(b)-1]), nil
}

// typeOfStat reads stat's %F.
func typeOfStat(s string) string {
	switch {
	case strings.HasPrefix(s, "regular"):
		return TypeFile
	case s == "directory":
		return TypeDirectory
	case s == "symbolic link":
		return TypeSymlink
	}
	return TypeOther
}

// WriteRequest writes one file.
type WriteRequest struct {
	Path string
	Mode fs.FileMode
	// Mkdir creates missing parent directories.
	Mkdir bool
	// Size is the content's length, or -1 when not known in advance.
	Size int64
	Body io.Reader
}

// WriteResult is what was written.
type WriteResult struct {
	Size int64
}

// Write streams a file into the sandbox on an exec session's standard
// input and renames it into place once whole.
func (s *Service) Write(ctx context.Context, t Target, who Caller, req WriteRequest) (WriteResult, error) {
	if err := CheckPath(req.Path); err != nil {
		return WriteResult{}, err
	}
	if req.Path == "/" {
		return WriteResult{}, invalidf("path / is a directory")
	}
	if req.Mode&^fs.ModePerm != 0 {
		return WriteResult{}, invalidf("mode %o has bits beyond the permissions", req.Mode)
	}
	if req.Size > s.maxFile {
		return WriteResult{}, fmt.Errorf("%w: %d bytes, and the controller takes files of at most %d", ErrTooLarge, req.Size, s.maxFile)
	}
	alloc, err := s.running(ctx, t)
	if err != nil {
		return WriteResult{}, err
	}
	release, err := s.acquire(t)
	if err != nil {
		return WriteResult{}, err
	}
	defer release()
	start := s.now()
	n, err := s.write(ctx, alloc, req)
	s.auditFile(t, who, start, err, slog.String("op", "write"), slog.String("path", req.Path), slog.Int64("size", n),
		slog.String("mode", fmt.Sprintf("%04o", req.Mode)))
	return WriteResult{Size: n}, err
}

func (s *Service) write(ctx context.Context, alloc *api.Allocation, req WriteRequest) (int64, error) {
	tmp := path.Join(path.Dir(req.Path), "."+truncate(path.Base(req.Path), 64)+".ak-"+randomHex())
	mode := fmt.Sprintf("%04o", req.Mode)
	mk := "0"
	if req.Mkdir {
		mk = "1"
	}
	size := "-"
	if req.Size >= 0 {
		size = strconv.FormatInt(req.Size, 10)
	}
	body := &countingReader{r: req.Body, max: s.maxFile}
	code, stderr, err := s.run(ctx, alloc, script(writeScript, req.Path, mode, mk, tmp, size), body, io.Discard)
	if err == nil {
		err = scriptError(code, req.Path, stderr)
	}
	if body.err != nil || err != nil || req.Size < 0 {
		if body.err == nil && err == nil {
			// The whole body came; now its size is known.
			code, stderr, err = s.run(ctx, alloc, script(commitScript, tmp, req.Path, mode, strconv.FormatInt(body.n, 10)), nil, io.Discard)
			if err == nil {
				err = scriptError(code, req.Path, stderr)
			}
			if err == nil {
				return body.n, nil
			}
		}
		// Leave nothing behind; the target was never touched.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_, _, _ = s.run(cctx, alloc, script(abortScript, tmp), nil, io.Discard)
		cancel()
		if body.err != nil {
			return body.n, body.err
		}
		if code == exitShortWrite {
			return body.n, fmt.Errorf("%w: %s: the sandbox received fewer bytes than were sent", ErrFailed, req.Path)
		}
		return body.n, err
	}
	return body.n, nil
}

// countingReader counts what passes and fails past max bytes, keeping
// its own error apart from the transfer's.
type countingReader struct {
	r   io.Reader
	n   int64
	max int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		c.err = fmt.Errorf("%w: more than the %d bytes the controller moves in one transfer", ErrTooLarge, c.max)
		return 0, c.err
	}
	if err != nil && err != io.EOF {
		c.err = fmt.Errorf("read the upload: %w", err)
		return n, c.err
	}
	return n, err
}

func randomHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Remove deletes a file, or a directory: an empty one, or with recursive
// everything under it.
func (s *Service) Remove(ctx context.Context, t Target, who Caller, p string, recursive bool) error {
	if err := CheckPath(p); err != nil {
		return err
	}
	if p == "/" {
		return invalidf("path / cannot be removed")
	}
	alloc, err := s.running(ctx, t)
	if err != nil {
		return err
	}
	release, err := s.acquire(t)
	if err != nil {
		return err
	}
	defer release()
	start := s.now()
	r := "0"
	if recursive {
		r = "1"
	}
	code, stderr, err := s.run(ctx, alloc, script(removeScript, p, r), nil, io.Discard)
	if err == nil {
		err = scriptError(code, p, stderr)
	}
	s.auditFile(t, who, start, err, slog.String("op", "remove"), slog.String("path", p), slog.Bool("recursive", recursive))
	return err
}

func (s *Service) auditFile(t Target, who Caller, start time.Time, err error, attrs ...slog.Attr) {
	attrs = append([]slog.Attr{slog.String("sandbox", t.key())}, attrs...)
	attrs = append(attrs, slog.Int64("durationMs", s.now().Sub(start).Milliseconds()))
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	attrs = append(attrs, slog.String("remote", who.Remote), slog.String("user", who.user()))
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "file", attrs...)
}
