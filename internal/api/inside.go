package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Inside is the work done inside running sandboxes: exec, files, logs.
type Inside interface {
	Exec(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, req sandboxio.ExecRequest) (sandboxio.ExecResult, error)
	StartStream(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, req sandboxio.StreamRequest) (*sandboxio.StreamSession, error)
	Open(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, path string) (*sandboxio.Opened, error)
	Write(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, req sandboxio.WriteRequest) (sandboxio.WriteResult, error)
	Remove(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, path string, recursive bool) error
	ReadTar(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, dir string, w io.Writer) error
	WriteTar(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, dir string, mkdir bool, r io.Reader) (sandboxio.TarResult, error)
	Logs(ctx context.Context, t sandboxio.Target, who sandboxio.Caller, req sandboxio.LogRequest, w io.Writer) error
	MaxFileBytes() int64
}

// Routes of the work inside a sandbox. Any instance serves them: they
// read the sandbox from the store and talk to Nomad.
const (
	routeExec       = "POST /v1/sandboxes/{namespace}/{name}/exec"
	routeExecStream = "GET /v1/sandboxes/{namespace}/{name}/exec"
	routeFileGet    = "GET /v1/sandboxes/{namespace}/{name}/files"
	routeFilePut    = "PUT /v1/sandboxes/{namespace}/{name}/files"
	routeFileDelete = "DELETE /v1/sandboxes/{namespace}/{name}/files"
	routeLogs       = "GET /v1/sandboxes/{namespace}/{name}/logs"
)

// Headers of a file read.
const (
	HeaderFileType = "X-Agentkernel-File-Type"
	HeaderFileMode = "X-Agentkernel-File-Mode"
	HeaderFileSize = "X-Agentkernel-File-Size"
)

// Codes of the work inside a sandbox.
const (
	CodeNotRunning      = "not_running"       // 409
	CodeTooManyRequests = "too_many_requests" // 429
	CodeFailed          = "failed"            // 422: the operation ran in the sandbox and failed there
)

// ExecRequest is the body of POST .../exec.
type ExecRequest struct {
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	// Stdin is base64 in JSON.
	Stdin   []byte `json:"stdin,omitempty"`
	Workdir string `json:"workdir,omitempty"`
	// Timeout is a Go duration ("30s"); 60s when empty, at most 1h.
	Timeout string `json:"timeout,omitempty"`
}

// ExecResponse is how the command ended. Stdout and Stderr are base64
// in JSON.
type ExecResponse struct {
	ExitCode   int    `json:"exitCode"`
	Stdout     []byte `json:"stdout"`
	Stderr     []byte `json:"stderr"`
	Truncated  bool   `json:"truncated"`
	TimedOut   bool   `json:"timedOut"`
	DurationMs int64  `json:"durationMs"`
}

// FileEntry is one entry of a directory listing.
type FileEntry struct {
	Name    string    `json:"name"`
	Type    string    `json:"type"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"`
	ModTime time.Time `json:"modTime"`
}

// DirectoryListing is the answer to GET .../files for a directory.
type DirectoryListing struct {
	Path    string      `json:"path"`
	Entries []FileEntry `json:"entries"`
}

// WriteResponse is the answer to PUT .../files.
type WriteResponse struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode string `json:"mode,omitempty"`
	// Files counts the regular files of an archive.
	Files int `json:"files,omitempty"`
}

// RemoveResponse is the answer to DELETE .../files.
type RemoveResponse struct {
	Path string `json:"path"`
}

func (s *Server) routeInside() {
	s.mux.HandleFunc(routeExec, s.handle(s.exec))
	s.mux.HandleFunc(routeExecStream, s.handle(s.execStream))
	s.mux.HandleFunc(routeFileGet, s.handle(s.fileGet))
	s.mux.HandleFunc(routeFilePut, s.handle(s.filePut))
	s.mux.HandleFunc(routeFileDelete, s.handle(s.fileDelete))
	s.mux.HandleFunc(routeLogs, s.handle(s.logs))
}

func (s *Server) inside() (Inside, error) {
	if s.opts.Inside == nil {
		return nil, errorf(http.StatusNotImplemented, CodeNotImplemented,
			"This controller does not work inside sandboxes: it runs without a Nomad client.")
	}
	return s.opts.Inside, nil
}

// target reads the sandbox an operation works in.
func (s *Server) target(r *http.Request) (sandboxio.Target, error) {
	rec, err := s.getSandbox(r.Context(), pathKey(r))
	if err != nil {
		return sandboxio.Target{}, notFoundAs(err, r)
	}
	t := sandboxio.Target{
		Namespace: rec.Sandbox.Namespace, Name: rec.Sandbox.Name, JobID: rec.Sandbox.JobID(),
		Phase: string(rec.Status.Phase), AllocID: rec.Status.AllocID,
	}
	switch {
	case rec.Deleting():
		t.Phase = string(store.PhaseDeleting)
	case s.opts.Cluster != nil && !s.view().leads:
		// Only the leader's store has live status; Nomad says where the
		// sandbox runs.
		t.Phase, t.AllocID = "", ""
	case t.Phase == "":
		t.Phase = string(store.PhasePending)
	}
	return t, nil
}

func caller(r *http.Request) sandboxio.Caller {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return sandboxio.Caller{Remote: r.RemoteAddr, Token: tok}
}

// insideError maps a failure of the work inside a sandbox to its answer.
func insideError(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var nr *sandboxio.NotRunningError
	var ne *nomad.Error
	switch {
	case errors.As(err, &nr):
		return errorf(http.StatusConflict, CodeNotRunning, "%s.", upperFirst(nr.Error())).
			with(map[string]string{"phase": nr.Phase})
	case errors.Is(err, sandboxio.ErrBusy):
		return errorf(http.StatusTooManyRequests, CodeTooManyRequests, "%s; retry when one ends.", upperFirst(err.Error())).retry()
	case errors.Is(err, sandboxio.ErrTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "%s.", upperFirst(err.Error()))
	case errors.Is(err, sandboxio.ErrInvalid):
		return errorf(http.StatusBadRequest, CodeInvalid, "%s.", upperFirst(strings.TrimPrefix(err.Error(), sandboxio.ErrInvalid.Error()+": ")))
	case errors.Is(err, sandboxio.ErrNotFound):
		return errorf(http.StatusNotFound, CodeNotFound, "No such file or directory in the sandbox: %s.", strings.TrimPrefix(err.Error(), sandboxio.ErrNotFound.Error()+": "))
	case errors.Is(err, sandboxio.ErrNotEmpty), errors.Is(err, sandboxio.ErrIsDirectory), errors.Is(err, sandboxio.ErrNotDirectory):
		return errorf(http.StatusConflict, CodeConflict, "%s.", upperFirst(err.Error()))
	case errors.Is(err, sandboxio.ErrFailed):
		return errorf(http.StatusUnprocessableEntity, CodeFailed, "%s.", upperFirst(err.Error()))
	case errors.Is(err, context.Canceled):
		return &apiError{status: 499, code: CodeInternal, message: "The client went away.", cause: err}
	case errors.Is(err, nomad.ErrTransient):
		e := errorf(http.StatusServiceUnavailable, CodeNotReady, "Nomad could not be reached: %v", err)
		return e.retry()
	case errors.As(err, &ne):
		return &apiError{status: http.StatusBadGateway, code: CodeBadGateway, message: "Nomad refused the operation: " + err.Error(), cause: err}
	}
	return &apiError{status: http.StatusInternalServerError, code: CodeInternal,
		message: "The operation failed: " + err.Error(), cause: err}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) error {
	in, err := s.inside()
	if err != nil {
		return err
	}
	var req ExecRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	var timeout time.Duration
	if req.Timeout != "" {
		if timeout, err = time.ParseDuration(req.Timeout); err != nil || timeout <= 0 {
			return errorf(http.StatusBadRequest, CodeInvalid, "The timeout %q is not a positive duration such as \"30s\".", req.Timeout)
		}
	}
	t, err := s.target(r)
	if err != nil {
		return err
	}
	res, err := in.Exec(r.Context(), t, caller(r), sandboxio.ExecRequest{
		Command: sandboxio.Command{Argv: req.Command, Env: req.Env, Workdir: req.Workdir},
		Stdin:   req.Stdin, Timeout: timeout,
	})
	if err != nil {
		return insideError(err)
	}
	writeJSON(w, http.StatusOK, ExecResponse{
		ExitCode: res.ExitCode, Stdout: nonNil(res.Stdout), Stderr: nonNil(res.Stderr),
		Truncated: res.Truncated, TimedOut: res.TimedOut, DurationMs: res.Duration.Milliseconds(),
	})
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// maxStreamFrame bounds one message a client sends on an exec stream.
const maxStreamFrame = 1 << 20

// upgrader accepts exec WebSockets. Origins are not checked: the API
// token, which a browser never sends by itself, is what admits a caller.
var upgrader = websocket.Upgrader{
	ReadBufferSize:  32 << 10,
	WriteBufferSize: 32 << 10,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// streamCommand reads a streamed exec's query.
func streamCommand(r *http.Request) (sandboxio.StreamRequest, error) {
	q := r.URL.Query()
	var req sandboxio.StreamRequest
	raw := q.Get("command")
	if raw == "" {
		return req, errorf(http.StatusBadRequest, CodeInvalid, "The query parameter command is missing: give the command as a JSON list, such as command=[\"sh\"].")
	}
	if err := json.Unmarshal([]byte(raw), &req.Argv); err != nil {
		return req, errorf(http.StatusBadRequest, CodeInvalid, "The query parameter command is not a JSON list of strings: %v.", err)
	}
	if v := q.Get("tty"); v != "" {
		tty, err := strconv.ParseBool(v)
		if err != nil {
			return req, errorf(http.StatusBadRequest, CodeInvalid, "The query parameter tty is %q; want true or false.", v)
		}
		req.TTY = tty
	}
	for _, kv := range q["env"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return req, errorf(http.StatusBadRequest, CodeInvalid, "The env parameter %q is not NAME=value.", kv)
		}
		if req.Env == nil {
			req.Env = map[string]string{}
		}
		req.Env[k] = v
	}
	req.Workdir = q.Get("workdir")
	return req, nil
}

func (s *Server) execStream(w http.ResponseWriter, r *http.Request) error {
	in, err := s.inside()
	if err != nil {
		return err
	}
	if !websocket.IsWebSocketUpgrade(r) {
		return errorf(http.StatusBadRequest, CodeInvalid,
			"GET on exec opens a WebSocket session and needs the Upgrade: websocket header; POST runs a command and answers once it ended.")
	}
	req, err := streamCommand(r)
	if err != nil {
		return err
	}
	t, err := s.target(r)
	if err != nil {
		return err
	}
	sess, err := in.StartStream(r.Context(), t, caller(r), req)
	if err != nil {
		return insideError(err)
	}
	// Past the upgrade, errors are close frames.
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		sess.Close()
		return nil // the upgrader answered the client
	}
	s.runStream(r.Context(), conn, sess)
	return nil
}

// runStream relays frames between a client's WebSocket and the exec
// session, in the frames Nomad's own exec endpoint uses.
func (s *Server) runStream(ctx context.Context, conn *websocket.Conn, sess *sandboxio.StreamSession) {
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	// A frame is a chunk of stdin or a size; nothing needs a megabyte.
	conn.SetReadLimit(maxStreamFrame)
	fw := &frameWriter{conn: conn}
	stdin, stdinW := io.Pipe()
	resize := make(chan nomadapi.TerminalSize, 1)
	go func() {
		// The client's frames: stdin, its end, terminal sizes. A read
		// error is the client gone, which ends the session.
		defer stdinW.Close()
		for {
			var in nomadapi.ExecStreamingInput
			if err := conn.ReadJSON(&in); err != nil {
				cancel()
				return
			}
			switch {
			case in.Stdin != nil:
				if len(in.Stdin.Data) > 0 {
					// Past the input's end (closed by the client, or the
					// command gone) data is dropped; the loop goes on
					// reading, since only a read error tells that the
					// client left.
					_, _ = stdinW.Write(in.Stdin.Data)
				}
				if in.Stdin.Close {
					stdinW.Close()
				}
			case in.TTYSize != nil:
				select {
				case resize <- *in.TTYSize:
				default:
					// A newer size replaces one not yet passed on.
					select {
					case <-resize:
					default:
					}
					resize <- *in.TTYSize
				}
			}
		}
	}()
	code, err := sess.Run(ctx, sandboxio.StreamIO{
		Stdin: stdin,
		Stdout: fw.stream(func(d []byte) nomadapi.ExecStreamingOutput {
			return nomadapi.ExecStreamingOutput{Stdout: &nomadapi.ExecStreamingIOOperation{Data: d}}
		}),
		Stderr: fw.stream(func(d []byte) nomadapi.ExecStreamingOutput {
			return nomadapi.ExecStreamingOutput{Stderr: &nomadapi.ExecStreamingIOOperation{Data: d}}
		}),
		Resize: resize,
	})
	stdin.Close()
	if err != nil {
		if ctx.Err() == nil {
			fw.close(websocket.CloseInternalServerErr, err.Error())
		}
		return
	}
	fw.send(nomadapi.ExecStreamingOutput{Stdout: &nomadapi.ExecStreamingIOOperation{Close: true}})
	fw.send(nomadapi.ExecStreamingOutput{Stderr: &nomadapi.ExecStreamingIOOperation{Close: true}})
	fw.send(nomadapi.ExecStreamingOutput{Exited: true, Result: &nomadapi.ExecStreamingExitResult{ExitCode: code}})
	fw.close(websocket.CloseNormalClosure, "")
}

// frameWriter serialises the frames written to one WebSocket.
type frameWriter struct {
	mu   sync.Mutex
	conn *websocket.Conn
}

func (f *frameWriter) send(v nomadapi.ExecStreamingOutput) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.conn.SetWriteDeadline(time.Now().Add(time.Minute))
	return f.conn.WriteJSON(v)
}

func (f *frameWriter) close(code int, reason string) {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(5*time.Second))
}

type frameStream struct {
	f    *frameWriter
	wrap func([]byte) nomadapi.ExecStreamingOutput
}

func (f *frameWriter) stream(wrap func([]byte) nomadapi.ExecStreamingOutput) io.Writer {
	return &frameStream{f: f, wrap: wrap}
}

func (s *frameStream) Write(p []byte) (int, error) {
	if err := s.f.send(s.wrap(append([]byte(nil), p...))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pathParam reads the path query parameter.
func pathParam(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if err := sandboxio.CheckPath(p); err != nil {
		return "", insideError(err)
	}
	return p, nil
}

func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errorf(http.StatusBadRequest, CodeInvalid, "The query parameter %s is %q; want true or false.", name, v)
	}
	return b, nil
}

func archiveParam(r *http.Request) (bool, error) {
	switch v := r.URL.Query().Get("archive"); v {
	case "":
		return false, nil
	case "tar":
		return true, nil
	default:
		return false, errorf(http.StatusBadRequest, CodeInvalid, "The query parameter archive is %q; the only archive format is tar.", v)
	}
}

func modeString(m fs.FileMode) string { return fmt.Sprintf("%04o", m.Perm()) }

func (s *Server) fileGet(w http.ResponseWriter, r *http.Request) error {
	in, err := s.inside()
	if err != nil {
		return err
	}
	p, err := pathParam(r)
	if err != nil {
		return err
	}
	tarred, err := archiveParam(r)
	if err != nil {
		return err
	}
	t, err := s.target(r)
	if err != nil {
		return err
	}
	if tarred {
		lw := &lazyWriter{w: w, header: func(h http.Header) {
			h.Set("Content-Type", "application/x-tar")
			h.Set(HeaderFileType, sandboxio.TypeDirectory)
		}}
		err := in.ReadTar(r.Context(), t, caller(r), p, lw)
		if err != nil {
			if lw.started {
				// The client must not take a cut archive for a whole one.
				panic(http.ErrAbortHandler)
			}
			return insideError(err)
		}
		lw.start()
		return nil
	}
	o, err := in.Open(r.Context(), t, caller(r), p)
	if err != nil {
		return insideError(err)
	}
	if o.Body == nil {
		list := DirectoryListing{Path: p, Entries: make([]FileEntry, 0, len(o.Entries))}
		for _, e := range o.Entries {
			list.Entries = append(list.Entries, FileEntry{Name: e.Name, Type: e.Type, Size: e.Size, Mode: modeString(e.Mode), ModTime: e.ModTime})
		}
		w.Header().Set(HeaderFileType, sandboxio.TypeDirectory)
		writeJSON(w, http.StatusOK, list)
		return nil
	}
	defer o.Body.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	if !o.SizeUnknown {
		h.Set("Content-Length", strconv.FormatInt(o.Info.Size, 10))
		h.Set(HeaderFileSize, strconv.FormatInt(o.Info.Size, 10))
	}
	h.Set(HeaderFileType, sandboxio.TypeFile)
	h.Set(HeaderFileMode, modeString(o.Info.Mode))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, o.Body); err != nil {
		// Content-Length tells the client the body is short, and the
		// aborted connection makes sure it notices.
		panic(http.ErrAbortHandler)
	}
	return nil
}

// lazyWriter answers 200 with its headers at the first write, so that
// an operation that fails before writing can still answer an error.
type lazyWriter struct {
	w       http.ResponseWriter
	header  func(http.Header)
	started bool
}

func (l *lazyWriter) start() {
	if !l.started {
		l.started = true
		l.header(l.w.Header())
		l.w.WriteHeader(http.StatusOK)
	}
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	l.start()
	return l.w.Write(p)
}

func (s *Server) filePut(w http.ResponseWriter, r *http.Request) error {
	in, err := s.inside()
	if err != nil {
		return err
	}
	p, err := pathParam(r)
	if err != nil {
		return err
	}
	tarred, err := archiveParam(r)
	if err != nil {
		return err
	}
	mkdir, err := boolParam(r, "mkdir")
	if err != nil {
		return err
	}
	mode := fs.FileMode(0o644)
	if v := r.URL.Query().Get("mode"); v != "" {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || len(v) < 3 || len(v) > 4 || m > 0o777 {
			return errorf(http.StatusBadRequest, CodeInvalid, "The mode %q is not a file permission in octal, such as 0644.", v)
		}
		mode = fs.FileMode(m)
	}
	if max := in.MaxFileBytes(); r.ContentLength > max {
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge,
			"The body holds %d bytes; the controller takes files of at most %d.", r.ContentLength, max)
	}
	t, err := s.target(r)
	if err != nil {
		return err
	}
	if tarred {
		res, err := in.WriteTar(r.Context(), t, caller(r), p, mkdir, r.Body)
		if err != nil {
			return insideError(err)
		}
		writeJSON(w, http.StatusOK, WriteResponse{Path: p, Size: res.Size, Files: res.Files})
		return nil
	}
	res, err := in.Write(r.Context(), t, caller(r), sandboxio.WriteRequest{
		Path: p, Mode: mode, Mkdir: mkdir, Size: r.ContentLength, Body: r.Body,
	})
	if err != nil {
		return insideError(err)
	}
	writeJSON(w, http.StatusOK, WriteResponse{Path: p, Size: res.Size, Mode: modeString(mode)})
	return nil
}

func (s *Server) fileDelete(w http.ResponseWriter, r *http.Request) error {
	in, err := s.inside()
	if err != nil {
		return err
	}
	p, err := pathParam(r)
	if err != nil {
		return err
	}
	recursive, err := boolParam(r, "recursive")
	if err != nil {
		return err
	}
	t, err := s.target(r)
	if err != nil {
		return err
	}
	if err := in.Remove(r.Context(), t, caller(r), p, recursive); err != nil {
		return insideError(err)
	}
	writeJSON(w, http.StatusOK, RemoveResponse{Path: p})
	return nil
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) error {
	in, err := s.inside()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	req := sandboxio.LogRequest{Stream: q.Get("stream"), Tail: -1}
	if req.Stream == "" {
		req.Stream = "stdout"
	}
	if req.Follow, err = boolParam(r, "follow"); err != nil {
		return err
	}
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, CodeInvalid, "The query parameter tail is %q; want a number of lines, 0 or more.", v)
		}
		req.Tail = n
	}
	t, err := s.target(r)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	if req.Follow {
		// The server's WriteTimeout would cut a followed log.
		_ = rc.SetWriteDeadline(time.Time{})
	}
	lw := &lazyWriter{w: w, header: func(h http.Header) {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
	}}
	fw := &flushingWriter{w: lw, rc: rc}
	req.Opened = func() {
		// A followed log may stay quiet for long: answer now.
		lw.start()
		_ = rc.Flush()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := in.Logs(ctx, t, caller(r), req, fw); err != nil {
		if lw.started {
			panic(http.ErrAbortHandler)
		}
		return insideError(err)
	}
	lw.start()
	return nil
}

// flushingWriter passes each write on to the client at once.
type flushingWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f *flushingWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		_ = f.rc.Flush()
	}
	return n, err
}
