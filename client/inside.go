package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// SandboxHandle works inside one running sandbox. Operations on a
// sandbox that is not Running fail with ErrNotRunning (the error's Phase
// says which phase it is in).
type SandboxHandle struct {
	c               *Client
	namespace, name string
}

// Sandbox returns the handle of the sandbox namespace/name. It does not
// check that the sandbox exists.
func (c *Client) Sandbox(namespace, name string) *SandboxHandle {
	return &SandboxHandle{c: c, namespace: namespace, name: name}
}

func (h *SandboxHandle) path(op string) string { return sandboxPath(h.namespace, h.name) + "/" + op }

// ExecRequest is a command to run to its end.
type ExecRequest struct {
	// Command is the argument vector; the first is the program.
	Command []string `json:"command"`
	// Env is added to the task's environment, each value exactly as
	// written.
	Env map[string]string `json:"env,omitempty"`
	// Stdin is the command's whole standard input.
	Stdin []byte `json:"stdin,omitempty"`
	// Workdir is the directory the command starts in.
	Workdir string `json:"workdir,omitempty"`
	// Timeout kills the command when it runs longer; zero is the
	// controller's default (60s).
	Timeout time.Duration `json:"-"`
}

// ExecResult is how a command ended.
type ExecResult struct {
	// ExitCode is the command's; 127 for a command that does not exist,
	// 126 for one that cannot run, -1 when it was killed at its timeout.
	ExitCode int    `json:"exitCode"`
	Stdout   []byte `json:"stdout"`
	Stderr   []byte `json:"stderr"`
	// Truncated says the controller kept only the first part of an
	// output past its limit.
	Truncated  bool  `json:"truncated"`
	TimedOut   bool  `json:"timedOut"`
	DurationMs int64 `json:"durationMs"`
}

// Exec runs a command to its end and returns its output. A command that
// ran is a result whatever its exit code; an error means it could not be
// run.
func (h *SandboxHandle) Exec(ctx context.Context, req ExecRequest) (*ExecResult, error) {
	body := struct {
		ExecRequest
		Timeout string `json:"timeout,omitempty"`
	}{ExecRequest: req}
	if req.Timeout > 0 {
		body.Timeout = req.Timeout.String()
	}
	var out ExecResult
	if err := h.c.do(ctx, http.MethodPost, h.path("exec"), nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct {
	Width, Height int
}

// StreamRequest is a command run with live standard streams.
type StreamRequest struct {
	Command []string
	Env     map[string]string
	Workdir string
	// TTY gives the command a terminal: Stdout then carries both of its
	// outputs, and Resize changes the terminal's size.
	TTY bool
	// Stdin, when set, is copied to the command until it ends; its end
	// closes the command's standard input. A goroutine reads it and may
	// still be blocked in Read when ExecStream returns, and will take one
	// more chunk: give a reader you can close (an io.Pipe, a file) when
	// the program reads the same input afterwards.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Resize, when set, delivers terminal sizes (the first one soon after
	// the start).
	Resize <-chan TerminalSize
}

// Frames of the exec stream: Nomad's own.
type (
	streamIO struct {
		Data  []byte `json:"data,omitempty"`
		Close bool   `json:"close,omitempty"`
	}
	streamInput struct {
		Stdin   *streamIO `json:"stdin,omitempty"`
		TTYSize *struct {
			Height int `json:"height"`
			Width  int `json:"width"`
		} `json:"tty_size,omitempty"`
	}
	streamOutput struct {
		Stdout *streamIO `json:"stdout,omitempty"`
		Stderr *streamIO `json:"stderr,omitempty"`
		Exited bool      `json:"exited,omitempty"`
		Result *struct {
			ExitCode int `json:"exit_code"`
		} `json:"result,omitempty"`
	}
)

// ExecStream runs a command over a WebSocket with live standard streams
// and returns its exit code once it ends. Ending ctx ends the session.
func (h *SandboxHandle) ExecStream(ctx context.Context, req StreamRequest) (int, error) {
	cmd, err := json.Marshal(req.Command)
	if err != nil {
		return 0, err
	}
	q := url.Values{"command": {string(cmd)}}
	if req.TTY {
		q.Set("tty", "true")
	}
	for k, v := range req.Env {
		q.Add("env", k+"="+v)
	}
	if req.Workdir != "" {
		q.Set("workdir", req.Workdir)
	}
	hreq, err := h.c.request(ctx, http.MethodGet, h.path("exec"), q, nil)
	if err != nil {
		return 0, err
	}
	u := *hreq.URL
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	hdr := http.Header{}
	for _, k := range []string{"Authorization", "User-Agent"} {
		if v := hreq.Header.Get(k); v != "" {
			hdr.Set(k, v)
		}
	}
	conn, resp, err := h.c.dialer().DialContext(ctx, u.String(), hdr)
	if err != nil {
		if resp != nil && resp.StatusCode/100 != 1 && resp.StatusCode/100 != 2 {
			defer resp.Body.Close()
			return 0, readError(resp)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("open an exec session in %s/%s: %w", h.namespace, h.name, err)
	}
	defer conn.Close()
	return runSession(ctx, conn, req)
}

// dialer is a WebSocket dialer that reaches the controller as the HTTP
// client does.
func (c *Client) dialer() *websocket.Dialer {
	d := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, Proxy: http.ProxyFromEnvironment}
	if tr, ok := c.http.Transport.(*http.Transport); ok {
		if tr.TLSClientConfig != nil {
			// The WebSocket handshake is HTTP/1.1: a configuration that
			// offers h2, as http.Transport makes its own, would let a
			// proxy choose HTTP/2 and break it.
			d.TLSClientConfig = tr.TLSClientConfig.Clone()
			d.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		d.Proxy = tr.Proxy
		if tr.DialContext != nil {
			d.NetDialContext = tr.DialContext
		}
	}
	if c.unixPath != "" {
		path := c.unixPath
		d.Proxy = nil
		d.NetDialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "unix", path)
		}
	}
	return d
}

func runSession(ctx context.Context, conn *websocket.Conn, req StreamRequest) (int, error) {
	var wmu sync.Mutex
	write := func(v streamInput) error {
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(time.Minute))
		return conn.WriteJSON(v)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-sctx.Done()
		if ctx.Err() != nil {
			// Unblocks the read below.
			_ = conn.Close()
		}
	}()
	if req.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := req.Stdin.Read(buf)
				if n > 0 {
					if write(streamInput{Stdin: &streamIO{Data: append([]byte(nil), buf[:n]...)}}) != nil {
						return
					}
				}
				if err != nil {
					_ = write(streamInput{Stdin: &streamIO{Close: true}})
					return
				}
				if sctx.Err() != nil {
					return
				}
			}
		}()
	} else {
		// The session may already be over (a command that could not
		// start ends it at once): what it sent is still to be read, and
		// the read below reports how it ended.
		_ = write(streamInput{Stdin: &streamIO{Close: true}})
	}
	if req.Resize != nil {
		go func() {
			for {
				select {
				case <-sctx.Done():
					return
				case sz, ok := <-req.Resize:
					if !ok {
						return
					}
					in := streamInput{}
					in.TTYSize = &struct {
						Height int `json:"height"`
						Width  int `json:"width"`
					}{sz.Height, sz.Width}
					if write(in) != nil {
						return
					}
				}
			}
		}()
	}
	for {
		var f streamOutput
		if err := conn.ReadJSON(&f); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Text != "" {
				return 0, fmt.Errorf("exec session ended: %s", ce.Text)
			}
			return 0, fmt.Errorf("exec session ended before the command: %w", err)
		}
		switch {
		case f.Stdout != nil && len(f.Stdout.Data) > 0 && req.Stdout != nil:
			if _, err := req.Stdout.Write(f.Stdout.Data); err != nil {
				return 0, fmt.Errorf("write the command's output: %w", err)
			}
		case f.Stderr != nil && len(f.Stderr.Data) > 0 && req.Stderr != nil:
			if _, err := req.Stderr.Write(f.Stderr.Data); err != nil {
				return 0, fmt.Errorf("write the command's error output: %w", err)
			}
		case f.Exited:
			code := 0
			if f.Result != nil {
				code = f.Result.ExitCode
			}
			return code, nil
		}
	}
}

// FileInfo describes a file read from a sandbox.
type FileInfo struct {
	// Size is the content's length, or -1 when the controller does not
	// know it before sending (a /proc file, which stat calls empty).
	Size int64
	Mode fs.FileMode
}

// ReadFile opens a file of the sandbox; the caller closes it. A directory
// fails with ErrConflict (read it with ReadDir or ReadTar), a missing
// path with ErrNotFound.
func (h *SandboxHandle) ReadFile(ctx context.Context, path string) (io.ReadCloser, FileInfo, error) {
	req, err := h.c.request(ctx, http.MethodGet, h.path("files"), url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, FileInfo{}, err
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := h.c.send(req)
	if err != nil {
		return nil, FileInfo{}, err
	}
	if resp.Header.Get("X-Agentkernel-File-Type") == "directory" {
		resp.Body.Close()
		return nil, FileInfo{}, &Error{StatusCode: http.StatusConflict, Code: "conflict",
			Message: fmt.Sprintf("%s in sandbox %s/%s is a directory", path, h.namespace, h.name)}
	}
	info := FileInfo{Size: resp.ContentLength}
	if m, err := strconv.ParseUint(resp.Header.Get("X-Agentkernel-File-Mode"), 8, 32); err == nil {
		info.Mode = fs.FileMode(m)
	}
	return resp.Body, info, nil
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string `json:"name"`
	// Type is file, directory, symlink or other.
	Type    string    `json:"type"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"`
	ModTime time.Time `json:"modTime"`
}

// ReadDir lists a directory of the sandbox.
func (h *SandboxHandle) ReadDir(ctx context.Context, path string) ([]DirEntry, error) {
	req, err := h.c.request(ctx, http.MethodGet, h.path("files"), url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Agentkernel-File-Type") != "directory" {
		return nil, &Error{StatusCode: http.StatusConflict, Code: "conflict",
			Message: fmt.Sprintf("%s in sandbox %s/%s is not a directory", path, h.namespace, h.name)}
	}
	var l struct {
		Entries []DirEntry `json:"entries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, fmt.Errorf("read the listing of %s: %w", path, err)
	}
	return l.Entries, nil
}

// WriteOptions shape a file write.
type WriteOptions struct {
	// Mode is the file's permissions; zero is 0644.
	Mode fs.FileMode
	// Mkdir creates missing parent directories.
	Mkdir bool
	// Size, when known, lets the controller refuse a file past its limit
	// (ErrTooLarge) before any byte is sent; -1 or 0 for unknown.
	Size int64
}

// WriteFile writes r's bytes to path, replacing the file whole: a write
// that fails leaves the old file as it was.
func (h *SandboxHandle) WriteFile(ctx context.Context, path string, r io.Reader, o WriteOptions) error {
	q := url.Values{"path": {path}}
	if o.Mode != 0 {
		q.Set("mode", fmt.Sprintf("%04o", o.Mode.Perm()))
	}
	if o.Mkdir {
		q.Set("mkdir", "true")
	}
	return h.put(ctx, q, r, o.Size)
}

func (h *SandboxHandle) put(ctx context.Context, q url.Values, r io.Reader, size int64) error {
	req, err := h.c.request(ctx, http.MethodPut, h.path("files"), q, r)
	if err != nil {
		return err
	}
	if size > 0 {
		req.ContentLength = size
	}
	resp, err := h.c.send(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// Remove removes a file, or with recursive a directory and what it holds.
func (h *SandboxHandle) Remove(ctx context.Context, path string, recursive bool) error {
	q := url.Values{"path": {path}}
	if recursive {
		q.Set("recursive", "true")
	}
	return h.c.do(ctx, http.MethodDelete, h.path("files"), q, nil, nil)
}

// ReadTar streams the directory dir as a tar archive, paths relative to
// it; the caller closes it. An archive cut by a failure ends in a read
// error, never as a shorter archive.
func (h *SandboxHandle) ReadTar(ctx context.Context, dir string) (io.ReadCloser, error) {
	req, err := h.c.request(ctx, http.MethodGet, h.path("files"), url.Values{"path": {dir}, "archive": {"tar"}}, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteTar unpacks a tar archive into the directory dir (made with
// mkdir). Entries that would land outside dir are refused, owners are
// not kept.
func (h *SandboxHandle) WriteTar(ctx context.Context, dir string, r io.Reader, mkdir bool) error {
	q := url.Values{"path": {dir}, "archive": {"tar"}}
	if mkdir {
		q.Set("mkdir", "true")
	}
	return h.put(ctx, q, r, 0)
}

// LogOptions choose what Logs reads.
type LogOptions struct {
	// Stderr reads the task's standard error instead of its output.
	Stderr bool
	// Follow keeps the stream open for new output until ctx ends.
	Follow bool
	// Tail, when positive, starts that many lines from the end; zero
	// reads the whole log. Use TailNone for no past lines.
	Tail int
}

// TailNone asks Logs for no past lines, only new ones (with Follow).
const TailNone = -1

// Logs streams the task's output as written; the caller closes it.
func (h *SandboxHandle) Logs(ctx context.Context, o LogOptions) (io.ReadCloser, error) {
	q := url.Values{"stream": {"stdout"}}
	if o.Stderr {
		q.Set("stream", "stderr")
	}
	if o.Follow {
		q.Set("follow", "true")
	}
	switch {
	case o.Tail > 0:
		q.Set("tail", strconv.Itoa(o.Tail))
	case o.Tail == TailNone:
		q.Set("tail", "0")
	}
	req, err := h.c.request(ctx, http.MethodGet, h.path("logs"), q, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := h.c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ExitError is a command's non-zero exit code, for callers that treat
// one as an error.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return "exit status " + strconv.Itoa(e.Code) }

// Check turns a result with a non-zero exit code into an *ExitError
// carrying the start of its error output.
func (r *ExecResult) Check() error {
	if r.ExitCode == 0 {
		return nil
	}
	msg := strings.TrimSpace(string(r.Stderr))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		return &ExitError{Code: r.ExitCode}
	}
	return fmt.Errorf("%w: %s", &ExitError{Code: r.ExitCode}, msg)
}
