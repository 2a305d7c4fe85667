package nomadtest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The client file system, GET /v1/client/fs/{ls,stat,cat,readat,stream}/
// :alloc?path=..., over the allocation's directory, with the recorded
// agent's answers (lifecycle/fs, README section 4) and the order of its
// code (command/agent/fs_endpoint.go, client/fs_endpoint.go,
// client/allocdir):
//
//   - paths are relative to the allocation directory; one that leaves it
//     is "Path escapes the alloc directory";
//   - ls and stat answer JSON, and an error with its status: 404 for an
//     unknown allocation or a missing path, 403 for a denial, else 500;
//   - cat and readat answer the file's bytes with a sniffed Content-Type
//     that is never HTML and the agent's anti-XSS headers; their errors,
//     every one, come back 200 text/plain with the error as the body,
//     because the agent's untrusted-content writer has sent its 200 by
//     the time the error is written (helper/noxssrw);
//   - stream answers framed JSON and follows the file by default, with
//     `{}` heartbeats (logs.go).

// fsRoute adds the header the agent's CORS wrapper puts on every client
// file-system answer.
func fsRoute(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Origin")
		h(w, r)
	}
}

// fsRefusal is the agent's answer to a client file-system request it
// cannot serve: a status and the error's text.
type fsRefusal struct {
	status int
	msg    string
}

func (f *fsRefusal) Error() string { return f.msg }

func refuse(status int, msg string) *fsRefusal { return &fsRefusal{status: status, msg: msg} }

func readFS(a *aclObj, ns string) bool { return a.allowNs(ns, capReadFS) }

// readLogs is the logs endpoint's check: read-fs or read-logs.
func readLogs(a *aclObj, ns string) bool {
	return a.allowNs(ns, capReadFS) || a.allowNs(ns, capReadLogs)
}

// fsTarget finds the allocation of a client request, checks the caller
// may read it and makes its directory.
func (s *Server) fsTarget(r *http.Request, allowed func(*aclObj, string) bool) (*clientAlloc, string, *fsRefusal) {
	id := r.PathValue("id")
	acl := aclOf(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, ok := s.clientAllocLocked(id)
	if !ok {
		return nil, "", refuse(http.StatusNotFound, errUnknownAlloc(id))
	}
	if !allowed(acl, ca.namespace) {
		return nil, "", refuse(http.StatusForbidden, "Permission denied")
	}
	if s.closed {
		return nil, "", refuse(http.StatusInternalServerError, errServerClosed.Error())
	}
	dir, err := s.dirs.ensure(ca)
	if err != nil {
		return nil, "", refuse(http.StatusInternalServerError, err.Error())
	}
	return ca, dir, nil
}

// allocFileInfo is a file as ls and stat show it (lifecycle/fs 01-04).
type allocFileInfo struct {
	Name        string
	IsDir       bool
	Size        int64
	FileMode    string
	ModTime     time.Time
	ContentType string
}

func fileInfo(fi os.FileInfo) allocFileInfo {
	return allocFileInfo{Name: fi.Name(), IsDir: fi.IsDir(), Size: fi.Size(), FileMode: fi.Mode().String(), ModTime: fi.ModTime()}
}

// statusOf is the status the agent's HTTP side gives an error of the
// allocation directory: the RPC error is matched by its text.
func statusOf(err error) int {
	var f *fsRefusal
	switch {
	case errors.As(err, &f):
		return f.status
	case strings.Contains(err.Error(), "no such file or directory"):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

func (s *Server) handleFSList(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if path == "" {
		path = "/"
	}
	files, err := s.list(r, path)
	if err != nil {
		writeText(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, files)
}

func (s *Server) list(r *http.Request, path string) ([]allocFileInfo, error) {
	_, dir, ref := s.fsTarget(r, readFS)
	if ref != nil {
		return nil, ref
	}
	full, err := resolvePath(dir, path)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(full)
	if err != nil {
		return nil, err
	}
	files := make([]allocFileInfo, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		files = append(files, fileInfo(fi))
	}
	return files, nil
}

func (s *Server) handleFSStat(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if path == "" {
		writeText(w, http.StatusBadRequest, "must provide a file name")
		return
	}
	ca, dir, ref := s.fsTarget(r, readFS)
	if ref != nil {
		writeText(w, ref.status, ref.msg)
		return
	}
	info, _, err := stat(dir, path)
	if errors.Is(err, os.ErrNotExist) {
		if hi, ok := chrootStat(ca, path); ok {
			info, err = hi, nil
		}
	}
	if err != nil {
		writeText(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// stat is the allocation directory's Stat: the file's info with its
// content type, and its host path.
func stat(dir, path string) (allocFileInfo, string, error) {
	full, err := resolvePath(dir, path)
	if err != nil {
		return allocFileInfo{}, "", err
	}
	fi, err := os.Stat(full)
	if err != nil {
		return allocFileInfo{}, "", err
	}
	info := fileInfo(fi)
	info.ContentType = detectContentType(fi, full)
	return info, full, nil
}

// chrootDirs are the directories the exec driver's default chroot_env
// builds a task's root from, out of the host's own.
var chrootDirs = map[string]bool{"bin": true, "etc": true, "lib": true, "lib32": true, "lib64": true, "run": true, "sbin": true, "usr": true}

// chrootStat stats a path of an exec task's root that the agent would
// have copied from the host: the test server's exec runs the host's
// programs, so the host's files are what the task's root would hold.
func chrootStat(ca *clientAlloc, path string) (allocFileInfo, bool) {
	parts := strings.SplitN(strings.TrimPrefix(filepath.Clean("/"+path), "/"), "/", 3)
	if len(parts) < 2 || !chrootDirs[parts[1]] {
		return allocFileInfo{}, false
	}
	t := ca.tasks[parts[0]]
	if t == nil || t.driver != "exec" {
		return allocFileInfo{}, false
	}
	host := "/" + strings.Join(parts[1:], "/")
	fi, err := os.Stat(host)
	if err != nil {
		return allocFileInfo{}, false
	}
	info := fileInfo(fi)
	info.ContentType = detectContentType(fi, host)
	return info, true
}

// detectContentType sniffs the first 512 bytes of a file, as the agent
// does; an empty file or a directory is application/octet-stream, and a
// name ending in .json is application/json whatever it holds.
func detectContentType(fi os.FileInfo, full string) string {
	ct := "application/octet-stream"
	if !fi.IsDir() {
		if f, err := os.Open(full); err == nil {
			buf := make([]byte, 512)
			if n, err := f.Read(buf); err == nil {
				ct = http.DetectContentType(buf[:n])
			}
			f.Close()
		}
	}
	if strings.HasSuffix(full, ".json") {
		ct = "application/json"
	}
	return ct
}

func (s *Server) handleFSCat(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if path == "" {
		untrustedError(w, "must provide a file name")
		return
	}
	s.readFile(w, r, path, 0, 0)
}

func (s *Server) handleFSReadAt(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	path := q.Get("path")
	if path == "" {
		untrustedError(w, "must provide a file name")
		return
	}
	offset, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if err != nil {
		untrustedError(w, fmt.Sprintf("error parsing offset: %v", err))
		return
	}
	var limit int64
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.ParseInt(l, 10, 64); err != nil {
			untrustedError(w, fmt.Sprintf("error parsing limit: %v", err))
			return
		}
	}
	s.readFile(w, r, path, offset, limit)
}

// untrustedError is every error of cat and readat: 200, text/plain, the
// error's text (lifecycle/fs 06-08).
func untrustedError(w http.ResponseWriter, msg string) {
	writeText(w, http.StatusOK, msg)
}

// readFile answers cat and readat: limit bytes from offset, all of them
// for a limit of 0 or less.
func (s *Server) readFile(w http.ResponseWriter, r *http.Request, path string, offset, limit int64) {
	_, dir, ref := s.fsTarget(r, readFS)
	if ref != nil {
		untrustedError(w, ref.msg)
		return
	}
	f, err := openForRead(dir, path, offset)
	if err != nil {
		untrustedError(w, err.Error())
		return
	}
	defer f.Close()
	var src io.Reader = f
	if limit > 0 {
		src = io.LimitReader(f, limit)
	}
	uw := &untrustedWriter{w: w}
	_, _ = io.Copy(uw, src)
	uw.close()
}

// openForRead opens a file of the allocation directory for streaming at
// offset, with the agent's checks in its order: the path stays inside,
// the file exists and is not a directory, and it is not in a task's
// secrets or private directory.
func openForRead(dir, path string, offset int64) (*os.File, error) {
	info, full, err := stat(dir, path)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, err.Error())
	}
	if info.IsDir {
		return nil, refuse(http.StatusBadRequest, fmt.Sprintf("file %q is a directory", path))
	}
	if err := secretPath(dir, full, path); err != nil {
		return nil, err
	}
	f, err := os.Open(full)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("can't seek to offset %d: %w", offset, err)
	}
	return f, nil
}

// secretPath refuses reading under a task's secrets and private
// directories, compared without case as the agent does.
func secretPath(dir, full, path string) error {
	rel, err := filepath.Rel(dir, full)
	if err != nil {
		return nil
	}
	parts := strings.SplitN(filepath.ToSlash(rel), "/", 3)
	if len(parts) < 2 || strings.EqualFold(parts[0], "alloc") {
		return nil
	}
	switch strings.ToLower(parts[1]) {
	case "secrets":
		return fmt.Errorf("Reading secret file prohibited: %s", path) //nolint:staticcheck // the agent's text
	case "private":
		return fmt.Errorf("Reading private file prohibited: %s", path) //nolint:staticcheck // the agent's text
	}
	return nil
}

// untrustedWriter is the agent's noxssrw writer: the Content-Type is
// sniffed from the first 512 bytes and never one a browser renders, and
// the anti-XSS headers go out with the first byte.
type untrustedWriter struct {
	w       http.ResponseWriter
	buf     []byte
	wrote   bool
	flushed bool
}

var untrustedHeaders = [][2]string{
	{"Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox"},
	{"X-Content-Type-Options", "nosniff"},
	{"X-Xss-Protection", "1; mode=block"},
}

func (u *untrustedWriter) Write(p []byte) (int, error) {
	if !u.wrote {
		for _, kv := range untrustedHeaders {
			u.w.Header().Set(kv[0], kv[1])
		}
		u.wrote = true
	}
	if u.flushed {
		return u.w.Write(p)
	}
	if len(u.buf)+len(p) < 512 {
		u.buf = append(u.buf, p...)
		return len(p), nil
	}
	u.buf = append(u.buf, p...)
	u.setType()
	u.flushed = true
	if _, err := u.w.Write(u.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (u *untrustedWriter) setType() {
	ct := http.DetectContentType(u.buf)
	for _, unsafe := range []string{"text/html", "text/xhtml", "text/xhtml+xml"} {
		if strings.HasPrefix(ct, unsafe) {
			ct = "text/plain"
			break
		}
	}
	if u.w.Header().Get("Content-Type") == "" {
		u.w.Header().Set("Content-Type", ct)
	}
}

// close sends what is buffered, and the headers, even for an empty file.
func (u *untrustedWriter) close() {
	if u.flushed {
		return
	}
	u.setType()
	_, _ = u.w.Write(u.buf)
}
