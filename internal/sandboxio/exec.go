package sandboxio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
)

// MaxCommandArgs bounds an exec's argv.
const MaxCommandArgs = 256

// Exit codes of a command that could not start, as a shell gives them.
const (
	ExitNotFound      = 127
	ExitNotExecutable = 126
)

// Command is what runs: an argv with an environment added to the task's
// and a working directory, both optional.
type Command struct {
	Argv    []string
	Env     map[string]string
	Workdir string
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// check says what is wrong with the command, if anything.
func (c Command) check() error {
	switch {
	case len(c.Argv) == 0:
		return invalidf("command is empty: give the program and its arguments as a list")
	case len(c.Argv) > MaxCommandArgs:
		return invalidf("command has %d elements; at most %d are allowed", len(c.Argv), MaxCommandArgs)
	case c.Argv[0] == "":
		return invalidf("command[0], the program, is empty")
	case strings.HasPrefix(c.Argv[0], "-"):
		// A shell's exec would read it as its own option.
		return invalidf("command[0], the program, %q starts with '-': give a path such as ./%s", c.Argv[0], c.Argv[0])
	}
	for i, a := range c.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return invalidf("command[%d] contains a NUL byte, which no argument can carry", i)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Env)) {
		if !envKeyRE.MatchString(k) {
			return invalidf("env %q is not a variable name: use letters, digits and '_', not starting with a digit", k)
		}
		if strings.IndexByte(c.Env[k], 0) >= 0 {
			return invalidf("env %q holds a NUL byte, which no variable can carry", k)
		}
	}
	if c.Workdir != "" {
		if err := CheckPath(c.Workdir); err != nil {
			return fmt.Errorf("workdir: %w", err)
		}
	}
	return nil
}

// wrapperScript sets the environment and working directory a Nomad exec
// session cannot take, then runs the command in place of the shell. The
// script is fixed: the variables, directory and command are its
// arguments ("$1"...), so no value is ever read by the shell as code.
// export "NAME=value" assigns the value as it is, quotes, '$' and
// newlines included.
const wrapperScript = `while [ "$1" != -- ]; do export "$1" || exit 126; shift; done
shift
if [ -n "$1" ]; then cd -- "$1" || exit 126; fi
shift
exec "$@"`

// The variables come first, each NAME=value, ended by "--", which no
// NAME=value is; then the directory (or ""), then the command. The
// script keeps no variable of its own that an exported name could
// overwrite.

// argv is what Nomad runs for the command.
func (c Command) argv() []string {
	if len(c.Env) == 0 && c.Workdir == "" {
		return c.Argv
	}
	keys := slices.Sorted(maps.Keys(c.Env))
	out := []string{"/bin/sh", "-c", wrapperScript, "sh"}
	for _, k := range keys {
		out = append(out, k+"="+c.Env[k])
	}
	out = append(out, "--", c.Workdir)
	return append(out, c.Argv...)
}

// ExecRequest is an exec that answers once the command ended.
type ExecRequest struct {
	Command
	Stdin []byte
	// Timeout ends the command; DefaultExecTimeout when zero.
	Timeout time.Duration
}

// ExecResult is how the command ended and what it wrote.
type ExecResult struct {
	// ExitCode is the command's; ExitNotFound or ExitNotExecutable when
	// it could not start, -1 when it was ended at its timeout.
	ExitCode       int
	Stdout, Stderr []byte
	// Truncated says output passed MaxOutputBytes and was cut.
	Truncated bool
	TimedOut  bool
	Duration  time.Duration
}

// Exec runs a command and collects its output.
func (s *Service) Exec(ctx context.Context, t Target, who Caller, req ExecRequest) (ExecResult, error) {
	if err := req.check(); err != nil {
		return ExecResult{}, err
	}
	timeout := req.Timeout
	switch {
	case timeout == 0:
		timeout = DefaultExecTimeout
	case timeout < 0 || timeout > MaxExecTimeout:
		return ExecResult{}, invalidf("timeout %s is out of range: give one above 0 and at most %s", req.Timeout, MaxExecTimeout)
	}
	alloc, err := s.running(ctx, t)
	if err != nil {
		return ExecResult{}, err
	}
	release, err := s.acquire(t)
	if err != nil {
		return ExecResult{}, err
	}
	defer release()

	start := s.now()
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stdout, stderr := &limitedBuffer{max: s.maxOutput}, &limitedBuffer{max: s.maxOutput}
	code, err := s.nomad.Exec(ectx, alloc, nomad.ExecOptions{
		Task: s.task, Command: req.argv(), Stdin: bytes.NewReader(req.Stdin), Stdout: stdout, Stderr: stderr,
	})
	res := ExecResult{Duration: s.now().Sub(start)}
	switch {
	case err == nil:
		res.ExitCode = code
	case ectx.Err() != nil && ctx.Err() == nil:
		res.ExitCode, res.TimedOut = -1, true
	default:
		var se *nomad.StartError
		if !errors.As(err, &se) {
			s.audit(t, who, "exec", req.Command, slog.String("error", err.Error()), slog.Duration("duration", res.Duration))
			return ExecResult{}, fmt.Errorf("exec in sandbox %q: %w", t.key(), err)
		}
		res.ExitCode = startExitCode(se)
		stderr.Write([]byte(se.Message + "\n"))
	}
	res.Stdout, res.Stderr = stdout.buf.Bytes(), stderr.buf.Bytes()
	res.Truncated = stdout.cut || stderr.cut
	s.audit(t, who, "exec", req.Command, slog.Int("exitCode", res.ExitCode), slog.Bool("timedOut", res.TimedOut),
		slog.Int64("durationMs", res.Duration.Milliseconds()))
	return res, nil
}

func startExitCode(se *nomad.StartError) int {
	if se.NotFound() {
		return ExitNotFound
	}
	return ExitNotExecutable
}

// StreamRequest is an exec whose input and output flow while it runs.
type StreamRequest struct {
	Command
	TTY bool
}

// StreamIO carries a streamed exec's data.
type StreamIO struct {
	// Stdin ends with io.EOF when the caller closes it. Nil is none.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Resize carries terminal sizes when TTY is set.
	Resize <-chan api.TerminalSize
}

// StreamSession is a streamed exec that passed its checks and holds its
// session slot: Run it, or Close it to give the slot back.
type StreamSession struct {
	s       *Service
	t       Target
	who     Caller
	req     StreamRequest
	alloc   *api.Allocation
	release func()
}

// StartStream checks a streamed exec and takes its slot, so that every
// refusal comes before the caller commits to a stream (a WebSocket
// upgrade, say).
func (s *Service) StartStream(ctx context.Context, t Target, who Caller, req StreamRequest) (*StreamSession, error) {
	if err := req.check(); err != nil {
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
	return &StreamSession{s: s, t: t, who: who, req: req, alloc: alloc, release: release}, nil
}

// Close gives the session's slot back; Run does so itself.
func (ss *StreamSession) Close() { ss.release() }

// Run runs the command with its input and output attached, until it
// exits or ctx ends, and returns its exit code. A command that could not
// start returns ExitNotFound or ExitNotExecutable with Nomad's message
// written to Stderr, as Exec does.
func (ss *StreamSession) Run(ctx context.Context, sio StreamIO) (int, error) {
	defer ss.release()
	s, t, req := ss.s, ss.t, ss.req
	start := s.now()
	code, err := s.nomad.Exec(ctx, ss.alloc, nomad.ExecOptions{
		Task: s.task, Command: req.argv(), TTY: req.TTY, Stdin: sio.Stdin, Stdout: sio.Stdout, Stderr: sio.Stderr, Resize: sio.Resize,
	})
	d := s.now().Sub(start)
	if err != nil {
		var se *nomad.StartError
		if !errors.As(err, &se) {
			s.audit(t, ss.who, "exec", req.Command, slog.Bool("tty", req.TTY), slog.String("error", err.Error()),
				slog.Int64("durationMs", d.Milliseconds()))
			return 0, fmt.Errorf("exec in sandbox %q: %w", t.key(), err)
		}
		code = startExitCode(se)
		if sio.Stderr != nil {
			_, _ = io.WriteString(sio.Stderr, se.Message+"\n")
		}
	}
	s.audit(t, ss.who, "exec", req.Command, slog.Bool("tty", req.TTY), slog.Int("exitCode", code),
		slog.Int64("durationMs", d.Milliseconds()))
	return code, nil
}

// audit logs one line per operation: never input, output or contents,
// and of the environment only the names.
func (s *Service) audit(t Target, who Caller, msg string, c Command, attrs ...slog.Attr) {
	base := []slog.Attr{
		slog.String("sandbox", t.key()),
		slog.Any("argv", c.Argv),
	}
	if len(c.Env) > 0 {
		base = append(base, slog.Any("envNames", slices.Sorted(maps.Keys(c.Env))))
	}
	if c.Workdir != "" {
		base = append(base, slog.String("workdir", c.Workdir))
	}
	base = append(base, attrs...)
	base = append(base, slog.String("remote", who.Remote), slog.String("user", who.user()))
	s.log.LogAttrs(context.Background(), slog.LevelInfo, msg, base...)
}

// limitedBuffer keeps the first max bytes written and drops the rest,
// never failing a write: the command runs on whatever it prints.
type limitedBuffer struct {
	buf bytes.Buffer
	max int64
	cut bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := b.max - int64(b.buf.Len())
	if int64(len(p)) > room {
		b.cut = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}
