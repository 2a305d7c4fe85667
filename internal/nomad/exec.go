package nomad

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"
)

// This file is the sandbox's working surface as Nomad offers it: exec
// sessions, the allocation file system and the task's logs, each a call
// of Nomad's client API for one allocation.

// StartError is an exec whose command Nomad could not start: a program
// that does not exist or may not be executed. Nomad ends the session
// with its message instead of an exit code (fact 112).
type StartError struct {
	Message string
}

func (e *StartError) Error() string { return e.Message }

// NotFound reports whether the program does not exist, as opposed to
// existing but refusing to run.
func (e *StartError) NotFound() bool {
	m := strings.ToLower(e.Message)
	return !strings.Contains(m, "permission denied") && !strings.Contains(m, "exec format error")
}

// Allocation reads one allocation: its node and client status, which an
// exec session needs.
func (c *Client) Allocation(ctx context.Context, ns, id string) (*api.Allocation, error) {
	a, _, err := c.api.Allocations().Info(id, query(ctx, ns))
	if err != nil {
		return nil, classify(fmt.Sprintf("get allocation %q", id), err)
	}
	return a, nil
}

// ExecOptions describe one exec session.
type ExecOptions struct {
	Task    string
	Command []string
	TTY     bool
	// Stdin is sent to the command; nil is none (stdin closed at once).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Resize carries the terminal's size when TTY is set.
	Resize <-chan api.TerminalSize
}

// Exec runs a command in a task of a running allocation and returns its
// exit code. A command that could not start is a *StartError; a session
// that ended otherwise without an exit code is classified as the other
// calls' errors are. Cancelling ctx ends the session, and Nomad then
// kills the command.
func (c *Client) Exec(ctx context.Context, alloc *api.Allocation, o ExecOptions) (int, error) {
	if len(o.Command) > 0 {
		if err := c.checkProgram(ctx, alloc, o.Task, o.Command[0]); err != nil {
			return -1, err
		}
	}
	stdin := o.Stdin
	if stdin == nil {
		stdin = bytes.NewReader(nil)
	}
	stdout, stderr := o.Stdout, o.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	// nomad/api returns when ctx ends while its reading goroutine may
	// still deliver output: the writers are closed on return so that
	// nothing reaches the caller's writers after it.
	var mu sync.Mutex
	closed := false
	defer func() {
		mu.Lock()
		closed = true
		mu.Unlock()
	}()
	guard := func(w io.Writer) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			if closed {
				return 0, io.ErrClosedPipe
			}
			return w.Write(p)
		})
	}
	start := time.Now()
	code, err := c.exec.Allocations().Exec(ctx, alloc, o.Task, o.TTY, o.Command, stdin, guard(stdout), guard(stderr), o.Resize,
		query(ctx, alloc.Namespace))
	if c.onRequest != nil {
		status := http.StatusSwitchingProtocols
		if err != nil && code == -2 && ctx.Err() == nil && !isSessionEnd(err) {
			status = 0
		}
		c.onRequest(http.MethodGet, "/v1/client/allocation/:id/exec", status, time.Since(start))
	}
	if err == nil {
		return code, nil
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("exec in allocation %q: %w", alloc.ID, ctx.Err())
	}
	if msg := err.Error(); strings.Contains(msg, "failed to start command") {
		// "rpc error: code = Unknown desc = failed to start command: ..."
		if i := strings.Index(msg, "failed to start command"); i >= 0 {
			msg = msg[i:]
		}
		return -1, &StartError{Message: msg}
	}
	return -1, classify(fmt.Sprintf("exec in allocation %q", alloc.ID), sessionError(err))
}

// The exec driver (Nomad 2.0.5, seen on a cgroup v1 host) never answers
// an exec of a program that does not exist in the task, and from then on
// no exec session of that task answers at all: one mistyped command
// would make a sandbox unreachable. Its task directory is the task's
// root, readable through the file-system API without an exec, so the
// program is looked for there first and a missing one fails as a
// command that cannot start does on other drivers.

// defaultExecPath is where a name without a slash is looked for when
// the task sets no PATH.
const defaultExecPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// checkProgram returns a *StartError when the task runs under the exec
// driver and argv0 is not a file of its root. Any doubt (another driver,
// a path the agent will not stat, an error asking) lets the exec go on.
func (c *Client) checkProgram(ctx context.Context, alloc *api.Allocation, task, argv0 string) error {
	t := findTask(alloc, task)
	if t == nil || t.Driver != "exec" {
		return nil
	}
	var candidates []string
	switch {
	case strings.HasPrefix(argv0, "/"):
		candidates = []string{argv0}
	case strings.Contains(argv0, "/"):
		return nil // relative to a working directory the session decides
	default:
		pathList := defaultExecPath
		if v, ok := t.Env["PATH"]; ok && v != "" {
			pathList = v
		}
		for _, dir := range strings.Split(pathList, ":") {
			if strings.HasPrefix(dir, "/") {
				candidates = append(candidates, strings.TrimSuffix(dir, "/")+"/"+argv0)
			}
		}
	}
	key := alloc.ID + "\x00" + task + "\x00" + argv0
	c.progMu.Lock()
	found := c.programs[key]
	c.progMu.Unlock()
	if found {
		return nil
	}
	for _, p := range candidates {
		fi, err := c.Stat(ctx, alloc, "/"+task+p)
		switch {
		case err == nil && !fi.IsDir:
			c.progMu.Lock()
			if c.programs == nil || len(c.programs) > 4096 {
				c.programs = map[string]bool{}
			}
			c.programs[key] = true
			c.progMu.Unlock()
			return nil
		case err == nil, errors.Is(err, ErrNoSuchFile):
			continue
		default:
			return nil
		}
	}
	if strings.HasPrefix(argv0, "/") {
		return &StartError{Message: fmt.Sprintf("failed to start command: exec: %q: stat %s: no such file or directory", argv0, argv0)}
	}
	return &StartError{Message: fmt.Sprintf("failed to start command: exec: %q: executable file not found in $PATH", argv0)}
}

func findTask(alloc *api.Allocation, name string) *api.Task {
	if alloc.Job == nil {
		return nil
	}
	for _, g := range alloc.Job.TaskGroups {
		if g.Name == nil || alloc.TaskGroup != *g.Name {
			continue
		}
		for _, t := range g.Tasks {
			if t.Name == name {
				return t
			}
		}
	}
	return nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// isSessionEnd reports an error Nomad sent as the session's close reason,
// which means the request reached it.
func isSessionEnd(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "task not found") || strings.Contains(msg, "Unknown allocation") ||
		strings.Contains(msg, "not running") || strings.Contains(msg, "websocket closed before")
}

// sessionError turns the reasons Nomad closes a session with into the
// kinds the rest of the package uses.
func sessionError(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Unknown allocation"), strings.Contains(msg, "task not found"):
		return fmt.Errorf("%w: %s", ErrNotFound, msg)
	case strings.Contains(strings.ToLower(msg), "permission denied"):
		return fmt.Errorf("%w: %s", ErrPermissionDenied, msg)
	}
	return err
}

// FileInfo is an entry of the allocation file system, as Nomad's stat
// and ls answer it.
type FileInfo = api.AllocFileInfo

// File-system errors. Nomad answers them with 200 and a text body
// (lifecycle facts, section 4), which these replace.
var (
	ErrNoSuchFile  = errors.New("no such file or directory")
	ErrIsDirectory = errors.New("is a directory")
	ErrPathEscapes = errors.New("path escapes the allocation directory")
)

// fsError sorts the text Nomad's file-system endpoints answer with 200.
func fsError(op, text string) error {
	text = strings.TrimSpace(text)
	switch {
	case strings.Contains(text, "no such file or directory"):
		return fmt.Errorf("%s: %w", op, ErrNoSuchFile)
	case strings.HasSuffix(text, "is a directory"):
		return fmt.Errorf("%s: %w", op, ErrIsDirectory)
	case strings.Contains(text, "escapes the alloc"):
		return fmt.Errorf("%s: %w", op, ErrPathEscapes)
	}
	return &Error{Op: op, Kind: ErrInvalid, Status: http.StatusOK, Body: text, Err: errors.New(text)}
}

// fsStatusError sorts an error status of a file-system endpoint: the
// same conditions also come back as 404 or 500 with the error text
// (stat and ls of a missing path), which must not read as an unknown
// allocation or a failing agent.
func fsStatusError(op string, err error) error {
	var ne *Error
	if errors.As(err, &ne) && ne.Status != 0 && !strings.HasPrefix(ne.Body, "Unknown allocation") {
		if fe := fsError(op, ne.Body); errors.Is(fe, ErrNoSuchFile) || errors.Is(fe, ErrIsDirectory) || errors.Is(fe, ErrPathEscapes) {
			return fe
		}
	}
	return err
}

func fsQuery(ctx context.Context, ns string, params map[string]string) *api.QueryOptions {
	q := query(ctx, ns)
	q.Params = params
	return q
}

// readFS reads a JSON answer of a file-system endpoint into out,
// telling an error given as text apart.
func (c *Client) readFS(ctx context.Context, op, endpoint, ns string, params map[string]string, out any) error {
	body, err := c.api.Raw().Response(endpoint, fsQuery(ctx, ns, params))
	if err != nil {
		return fsStatusError(op, classify(op, err))
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		return classify(op, err)
	}
	if len(b) == 0 || (b[0] != '{' && b[0] != '[') {
		return fsError(op, string(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fsError(op, string(b))
	}
	return nil
}

// Stat describes a path of an allocation's directory (task files are
// under /<task>).
func (c *Client) Stat(ctx context.Context, alloc *api.Allocation, path string) (*FileInfo, error) {
	var fi FileInfo
	err := c.readFS(ctx, fmt.Sprintf("stat %q in allocation %q", path, alloc.ID),
		"/v1/client/fs/stat/"+alloc.ID, alloc.Namespace, map[string]string{"path": path}, &fi)
	if err != nil {
		return nil, err
	}
	return &fi, nil
}

// List lists a directory of an allocation's directory.
func (c *Client) List(ctx context.Context, alloc *api.Allocation, path string) ([]*FileInfo, error) {
	var out []*FileInfo
	err := c.readFS(ctx, fmt.Sprintf("list %q in allocation %q", path, alloc.ID),
		"/v1/client/fs/ls/"+alloc.ID, alloc.Namespace, map[string]string{"path": path}, &out)
	return out, err
}

// Cat streams a file of an allocation's directory. Call Stat first: for
// a path that is not a readable file Nomad answers 200 with an error
// text that Cat cannot tell from content.
func (c *Client) Cat(ctx context.Context, alloc *api.Allocation, path string) (io.ReadCloser, error) {
	body, err := c.api.Raw().Response("/v1/client/fs/cat/"+alloc.ID, fsQuery(ctx, alloc.Namespace, map[string]string{"path": path}))
	if err != nil {
		op := fmt.Sprintf("read %q in allocation %q", path, alloc.ID)
		return nil, fsStatusError(op, classify(op, err))
	}
	return body, nil
}

// LogOptions choose what Logs streams.
type LogOptions struct {
	Task   string
	Stream string // "stdout" or "stderr"
	Follow bool
	// FromEnd counts Offset back from the end of the log instead of
	// forward from its start.
	FromEnd bool
	Offset  int64
}

// Logs streams a task's output as it is (Nomad's plain form). With
// Follow it stays open until ctx ends or the task's log ends.
func (c *Client) Logs(ctx context.Context, alloc *api.Allocation, o LogOptions) (io.ReadCloser, error) {
	origin := "start"
	if o.FromEnd {
		origin = "end"
	}
	body, err := c.api.Raw().Response("/v1/client/fs/logs/"+alloc.ID, fsQuery(ctx, alloc.Namespace, map[string]string{
		"task": o.Task, "type": o.Stream, "plain": "true", "follow": strconv.FormatBool(o.Follow),
		"origin": origin, "offset": strconv.FormatInt(o.Offset, 10),
	}))
	if err != nil {
		return nil, classify(fmt.Sprintf("read the %s log of allocation %q", o.Stream, alloc.ID), err)
	}
	return body, nil
}
