package nomadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"
)

// Exec: GET /v1/client/allocation/:id/exec?task=&tty=&command=<JSON array>,
// upgraded to a WebSocket, in the frames of the recorded agent (111, 112)
// and the order of its code (command/agent/alloc_endpoint.go,
// client/alloc_endpoint.go, drivers/shared/executor/exec_utils.go).
//
// The command runs as a real process on the machine running the server,
// as a raw_exec task's would: in the task's directory, with the task's
// environment, in a process group of its own (a session with the
// terminal as its controlling one when tty=true). The client sends
//
//	{"stdin":{"data":"<base64>"}}  {"stdin":{"close":true}}  {"tty_size":{"height":H,"width":W}}  {}
//
// and gets
//
//	{"stdout":{"data":"<base64>"}}  {"stderr":{"data":"<base64>"}}
//	{"stdout":{"close":true}}  {"stderr":{"close":true}}  {"exited":true,"result":{"exit_code":N}}
//
// after which the server closes the connection without a close frame. An
// error is a close frame instead: 1011 for what the agent answers with
// status 500, 1008 for the rest (toWsCode). Closing the connection from
// the client kills the process group; so do a stop or restart of the task,
// a purge of the job and Close.

// execUpgrader refuses browsers, which are the only clients that send an
// Origin header: a page that reached the server, by DNS rebinding for
// one, could otherwise run commands on the machine. nomad/api sends none.
var execUpgrader = websocket.Upgrader{
	CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "" },
}

// execRequest is the query of an exec request.
type execRequest struct {
	task    string
	command []string
	tty     bool
}

// parseExecRequest parses the query as the agent's allocExec does.
func parseExecRequest(q url.Values) (execRequest, error) {
	req := execRequest{task: q.Get("task")}
	if err := json.Unmarshal([]byte(q.Get("command")), &req.command); err != nil {
		return req, fmt.Errorf("failed to marshal command into json: %v", err)
	}
	if v := q.Get("tty"); v != "" {
		tty, err := strconv.ParseBool(v)
		if err != nil {
			return req, fmt.Errorf("tty value is not a boolean: %v", err)
		}
		req.tty = tty
	}
	return req, nil
}

// closeExec ends a session with an error, as the agent's
// execStreamHandleError does: a close frame whose code is 1011 for a 500,
// 1008 otherwise, with the error's text as the reason, then the
// connection closed.
func closeExec(conn *websocket.Conn, status int, msg string) {
	code := websocket.ClosePolicyViolation
	if status == http.StatusInternalServerError {
		code = websocket.CloseInternalServerErr
	}
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, msg))
	_ = conn.Close()
}

// startFailed is how a command that cannot start comes back from the
// agent's executor plugin, through gRPC (112).
func startFailed(err error) string {
	return "rpc error: code = Unknown desc = failed to start command: " + err.Error()
}

func (s *Server) handleAllocExec(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	if !websocket.IsWebSocketUpgrade(r) {
		// The agent's handler parses the command, then finds no
		// connection to stream on.
		if _, err := parseExecRequest(q); err != nil {
			writeText(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeText(w, http.StatusInternalServerError, "websocket connection not found in context")
		return
	}
	conn, err := execUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered
	}
	acl, err := s.wsHandshake(conn, r)
	if err != nil {
		closeExec(conn, http.StatusBadRequest, err.Error())
		return
	}
	req, err := parseExecRequest(q)
	if err != nil {
		closeExec(conn, http.StatusInternalServerError, err.Error())
		return
	}

	s.mu.Lock()
	ca, ok := s.clientAllocLocked(id)
	if !ok {
		s.mu.Unlock()
		closeExec(conn, http.StatusNotFound, errUnknownAlloc(id))
		return
	}
	if status, msg := execRefused(ca, acl, req); msg != "" {
		s.mu.Unlock()
		closeExec(conn, status, msg)
		return
	}
	if s.closed {
		s.mu.Unlock()
		closeExec(conn, http.StatusInternalServerError, errServerClosed.Error())
		return
	}
	dir, err := s.dirs.ensure(ca)
	if err != nil {
		s.mu.Unlock()
		closeExec(conn, http.StatusInternalServerError, err.Error())
		return
	}
	e := &execSession{allocID: id, task: req.task, conn: conn, reaped: make(chan struct{}), finished: make(chan struct{})}
	s.execs[e] = struct{}{}
	cmd := exec.Command(req.command[0], req.command[1:]...)
	cmd.Dir = filepath.Join(dir, req.task)
	cmd.Env = taskEnv(ca, ca.tasks[req.task], dir, os.LookupEnv)
	wedgeKey := id + "/" + req.task
	if ca.tasks[req.task].driver == "exec" && (s.execWedged[wedgeKey] || programMissing(cmd)) {
		// The exec driver never answers an exec of a missing program,
		// and no later exec of the task either (seen on a real Nomad
		// 2.0.5 agent): the session stays open, silent, until the client
		// or the server ends it.
		if s.execWedged == nil {
			s.execWedged = map[string]bool{}
		}
		s.execWedged[wedgeKey] = true
		close(e.reaped)
	}
	wedged := s.execWedged[wedgeKey]
	s.mu.Unlock()

	defer func() {
		close(e.finished)
		s.mu.Lock()
		delete(s.execs, e)
		s.mu.Unlock()
	}()
	if wedged {
		s.log.Debug("exec wedged", "alloc_id", id, "task", req.task, "command", req.command)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				_ = conn.Close()
				return
			}
		}
	}
	s.log.Debug("exec", "alloc_id", id, "task", req.task, "command", req.command, "tty", req.tty)
	if req.tty {
		e.runTTY(cmd)
	} else {
		e.runPipes(cmd)
	}
}

// programMissing reports a command that cannot be found to start.
func programMissing(cmd *exec.Cmd) bool {
	if cmd.Err != nil {
		return true
	}
	p := cmd.Path
	if !filepath.IsAbs(p) {
		p = filepath.Join(cmd.Dir, p)
	}
	fi, err := os.Stat(p)
	return err != nil || fi.IsDir()
}

// execRefused checks an exec request against the allocation in the order
// of the agent's client (execImpl): alloc-exec, the task and command
// given, the task in the allocation, alloc-node-exec for a driver without
// file-system isolation, then the task's state. A denial comes back with
// no status code, which the agent's HTTP side makes a 500.
func execRefused(ca *clientAlloc, acl *aclObj, req execRequest) (int, string) {
	if !acl.allowNs(ca.namespace, capAllocExec) {
		return http.StatusInternalServerError, "Permission denied"
	}
	if req.task == "" {
		return http.StatusBadRequest, "must provide task name"
	}
	if len(req.command) == 0 {
		return http.StatusBadRequest, "command is not present"
	}
	t := ca.tasks[req.task]
	if t == nil {
		return http.StatusInternalServerError, "task not found"
	}
	if noFSIsolation[t.driver] && !acl.allowNs(ca.namespace, capAllocNodeExec) {
		return http.StatusInternalServerError, "Permission denied"
	}
	switch {
	case t.state == "":
		return http.StatusBadRequest, fmt.Sprintf("unknown task name %q", req.task)
	case !t.started:
		return http.StatusNotFound, fmt.Sprintf("task %q not started yet.", req.task)
	case t.state != "running":
		// The task runner drops its driver handle when the task stops,
		// and with it the exec handler.
		return http.StatusNotFound, fmt.Sprintf("task %q is not running.", req.task)
	}
	return 0, ""
}

// wsHandshake reads the first message of a session opened with
// ws_handshake=true, which browsers use to send the token they cannot put
// in a header, and returns the ACL of the token it names; otherwise the
// request's own (command/agent/websockets.go).
func (s *Server) wsHandshake(conn *websocket.Conn, r *http.Request) (*aclObj, error) {
	hv := r.URL.Query().Get("ws_handshake")
	if hv == "" {
		return aclOf(r), nil
	}
	on, err := strconv.ParseBool(hv)
	if err != nil {
		return nil, fmt.Errorf("ws_handshake value is not a boolean: %v", err)
	}
	if !on {
		return aclOf(r), nil
	}
	var h struct {
		Version   int    `json:"version"`
		AuthToken string `json:"auth_token"`
	}
	if err := conn.ReadJSON(&h); err != nil {
		return nil, err
	}
	if tok := requestSecret(r); tok != "" && tok != h.AuthToken {
		return nil, errors.New("handshake auth token mismatched auth header token")
	}
	if h.Version != 1 {
		return nil, fmt.Errorf("unexpected handshake value: %v", h.Version)
	}
	id, known := s.identifySecret(h.AuthToken)
	if !known {
		return nil, errors.New("ACL token not found")
	}
	if id == nil {
		return nil, nil
	}
	return id.acl, nil
}

// execSession is one running exec: its process group, and what ends it
// early.
type execSession struct {
	allocID, task string
	conn          *websocket.Conn
	sendMu        sync.Mutex

	mu      sync.Mutex
	pgid    int        // 0 until the process started
	outputs []*os.File // the read ends of its output, closed by kill
	killed  bool       // kill came, maybe before the process started
	done    bool       // output and exit sent: nothing left to kill

	reaped   chan struct{} // closed once the process has been waited for
	finished chan struct{} // closed when the handler returns
}

// execIO, execInput and execOutput are the frames, as nomad/api's
// ExecStreaming types and the agent's drivers proto encode them. An exit
// code 0 is left out of the result, as the agent's encoder does with the
// proto's omitempty.
type execIO struct {
	Data  []byte `json:"data,omitempty"`
	Close bool   `json:"close,omitempty"`
}

type execInput struct {
	Stdin   *execIO `json:"stdin,omitempty"`
	TTYSize *struct {
		Height int `json:"height"`
		Width  int `json:"width"`
	} `json:"tty_size,omitempty"`
}

type execResult struct {
	ExitCode int `json:"exit_code,omitempty"`
}

type execOutput struct {
	Stdout *execIO     `json:"stdout,omitempty"`
	Stderr *execIO     `json:"stderr,omitempty"`
	Exited bool        `json:"exited,omitempty"`
	Result *execResult `json:"result,omitempty"`
}

func (e *execSession) send(v execOutput) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	// A failed write means the client is gone: readInput sees it too and
	// kills the process.
	_ = e.conn.WriteMessage(websocket.TextMessage, b)
}

// started records the process group, and kills it at once when a kill
// came while it was starting.
func (e *execSession) started(pgid int, outputs ...*os.File) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pgid, e.outputs = pgid, outputs
	if e.killed {
		e.killLocked()
	}
}

// kill ends the process group of a session that is still running and
// closes its output, so that the session ends even if a process left the
// group holding it.
func (e *execSession) kill() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.killed = true
	e.killLocked()
}

func (e *execSession) killLocked() {
	if e.done || e.pgid == 0 {
		return
	}
	_ = syscall.Kill(-e.pgid, syscall.SIGKILL)
	for _, f := range e.outputs {
		_ = f.Close()
	}
}

// finish sends the end of the output and the exit code, and closes the
// connection as the agent does, without a close frame (111: EOF).
func (e *execSession) finish(streams []string, code int) {
	e.mu.Lock()
	e.done = true
	e.mu.Unlock()
	for _, st := range streams {
		e.send(outputFrame(st, &execIO{Close: true}))
	}
	e.send(execOutput{Exited: true, Result: &execResult{ExitCode: code}})
	_ = e.conn.Close()
}

func outputFrame(stream string, op *execIO) execOutput {
	if stream == "stderr" {
		return execOutput{Stderr: op}
	}
	return execOutput{Stdout: op}
}

// pump sends what the process writes, 4096 bytes at most a frame as the
// agent's executor reads it, until the stream ends.
func (e *execSession) pump(r io.Reader, stream string, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			e.send(outputFrame(stream, &execIO{Data: append([]byte(nil), buf[:n]...)}))
		}
		if err != nil {
			return
		}
	}
}

// readInput passes stdin and terminal sizes to the process until the
// connection ends; a connection that ends before the session does kills
// the process group.
func (e *execSession) readInput(stdin io.WriteCloser, closeStdin func() error, resize func(h, w int) error) {
	for {
		var in execInput
		if err := e.conn.ReadJSON(&in); err != nil {
			e.kill()
			return
		}
		switch {
		case in.Stdin != nil:
			if len(in.Stdin.Data) > 0 {
				_, _ = stdin.Write(in.Stdin.Data)
			}
			if in.Stdin.Close {
				_ = closeStdin()
			}
		case in.TTYSize != nil && resize != nil:
			_ = resize(in.TTYSize.Height, in.TTYSize.Width)
		}
	}
}

// runPipes runs the command with pipes for stdin, stdout and stderr.
// As with the agent's executor, the output ends, and the exit code comes,
// once the process has exited and every process holding its output has
// let go of it.
func (e *execSession) runPipes(cmd *exec.Cmd) {
	pipes, err := newPipes()
	if err != nil {
		closeExec(e.conn, http.StatusInternalServerError, startFailed(err))
		return
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes.stdinR, pipes.stdoutW, pipes.stderrW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	// The child has its copies; the parent keeps only its own ends.
	pipes.stdinR.Close()
	pipes.stdoutW.Close()
	pipes.stderrW.Close()
	if err != nil {
		pipes.stdinW.Close()
		pipes.stdoutR.Close()
		pipes.stderrR.Close()
		close(e.reaped)
		closeExec(e.conn, http.StatusInternalServerError, startFailed(err))
		return
	}
	e.started(cmd.Process.Pid, pipes.stdoutR, pipes.stderrR)
	var wg sync.WaitGroup
	wg.Add(2)
	go e.pump(pipes.stdoutR, "stdout", &wg)
	go e.pump(pipes.stderrR, "stderr", &wg)
	go e.readInput(pipes.stdinW, pipes.stdinW.Close, nil)
	waitErr := cmd.Wait()
	close(e.reaped)
	_ = pipes.stdinW.Close()
	wg.Wait()
	pipes.stdoutR.Close()
	pipes.stderrR.Close()
	e.finish([]string{"stdout", "stderr"}, exitCode(cmd.ProcessState, waitErr))
}

type execPipes struct {
	stdinR, stdinW, stdoutR, stdoutW, stderrR, stderrW *os.File
}

func newPipes() (*execPipes, error) {
	var p execPipes
	var files []*os.File
	for _, pair := range []struct{ r, w **os.File }{{&p.stdinR, &p.stdinW}, {&p.stdoutR, &p.stdoutW}, {&p.stderrR, &p.stderrW}} {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, err
		}
		*pair.r, *pair.w = r, w
		files = append(files, r, w)
	}
	return &p, nil
}

// ttyEOF is the terminal's end-of-file character, Ctrl-D.
const ttyEOF = 0x04

// runTTY runs the command on a new pseudo-terminal, as its controlling
// terminal: stdout carries everything the process writes, and there is
// no stderr. Closing stdin types the end-of-file character, which is what
// ends input at a terminal; the agent closes its end of the terminal
// instead, which hangs the process up.
func (e *execSession) runTTY(cmd *exec.Cmd) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		close(e.reaped)
		closeExec(e.conn, http.StatusInternalServerError, "rpc error: code = Unknown desc = failed to open a tty: "+err.Error())
		return
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	err = cmd.Start()
	tty.Close()
	if err != nil {
		ptmx.Close()
		close(e.reaped)
		closeExec(e.conn, http.StatusInternalServerError, startFailed(err))
		return
	}
	// The terminal's master is not closed by kill: a read of it ends
	// once no process holds the terminal, which the kill sees to.
	e.started(cmd.Process.Pid)
	var wg sync.WaitGroup
	wg.Add(1)
	go e.pump(ptmx, "stdout", &wg)
	go e.readInput(ptmx,
		func() error { _, err := ptmx.Write([]byte{ttyEOF}); return err },
		func(h, w int) error { return pty.Setsize(ptmx, &pty.Winsize{Rows: uint16(h), Cols: uint16(w)}) })
	waitErr := cmd.Wait()
	close(e.reaped)
	wg.Wait()
	e.finish([]string{"stdout"}, exitCode(cmd.ProcessState, waitErr))
	ptmx.Close()
}

// exitCode is the agent's cmdExitResult: the exit status, 128 plus the
// signal for a process killed by one, -2 when there is no status.
func exitCode(ps *os.ProcessState, err error) int {
	if ps == nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ps = ee.ProcessState
		}
	}
	if ps == nil {
		return -2
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
	return ps.ExitCode()
}

// endExecsLocked kills the sessions match picks and returns them. Callers
// hold s.mu.
func (s *Server) endExecsLocked(match func(*execSession) bool) []*execSession {
	var out []*execSession
	for e := range s.execs {
		if match(e) {
			e.kill()
			out = append(out, e)
		}
	}
	return out
}

// execWait bounds how long a purge or Close waits for a killed process.
const execWait = 5 * time.Second

// waitReaped waits until the killed processes have been waited for, so
// that their directory can go.
func waitReaped(sessions []*execSession) {
	t := time.NewTimer(execWait)
	defer t.Stop()
	for _, e := range sessions {
		select {
		case <-e.reaped:
		case <-t.C:
			return
		}
	}
}

// waitExecs closes the connections of the sessions and waits for their
// handlers to return.
func waitExecs(sessions []*execSession) {
	for _, e := range sessions {
		_ = e.conn.Close()
	}
	t := time.NewTimer(execWait)
	defer t.Stop()
	for _, e := range sessions {
		select {
		case <-e.finished:
		case <-t.C:
			return
		}
	}
}

// killStoppedExecsLocked kills the sessions on tasks that no longer run:
// a stopped or restarting task takes the processes started in it along,
// as the agent's executor kills the task's whole process tree. Callers
// hold s.mu.
func (s *Server) killStoppedExecsLocked(allocIDs []string) {
	if len(s.execs) == 0 {
		return
	}
	for _, id := range allocIDs {
		a := s.allocs[id]
		s.endExecsLocked(func(e *execSession) bool {
			if e.allocID != id {
				return false
			}
			if a == nil {
				return true
			}
			ts := a.a.TaskStates[e.task]
			return ts == nil || ts.State != "running"
		})
	}
}
