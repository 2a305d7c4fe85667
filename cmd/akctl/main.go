// Command akctl is the client of agentkernel-controller: it validates and
// formats sandbox declarations locally, and applies, shows, diffs, waits
// for and deletes them through the controller's API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes, documented in `akctl help`.
const (
	exitOK        = 0
	exitFailure   = 1 // invalid declarations, files that need formatting, a failed request or wait; diff: differences
	exitUsage     = 2 // bad command line
	exitDiffError = 3 // diff only: the diff could not be computed
	// exitInterrupted is 128 + SIGINT, what a shell reports for a command
	// Ctrl-C stopped.
	exitInterrupted = 130
)

// usageError marks errors in how akctl was called; they exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries an exit code for an outcome that has already been
// reported to the user, such as invalid declarations.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// env is what a command may read of its process: injected so that tests
// run commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	environ        []string
	// now is the clock ages are computed from; nil means time.Now.
	now func() time.Time
	// globals are the connection flags given before the command.
	globals globalFlags
}

func (e *env) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

// getenv looks name up in e.environ; the last value wins, as in a shell.
func (e *env) getenv(name string) string {
	v := ""
	for _, kv := range e.environ {
		if val, ok := strings.CutPrefix(kv, name+"="); ok {
			v = val
		}
	}
	return v
}

type command struct {
	name, summary string
	run           func(ctx context.Context, e *env, args []string) error
}

func commands() []command {
	return []command{
		{"validate", "check declarations and report every problem", runValidate},
		{"fmt", "rewrite declarations in canonical layout", runFmt},
		{"apply", "send declarations to the controller", runApply},
		{"diff", "show what apply would change", runDiff},
		{"get", "list sandboxes and their phase", runGet},
		{"describe", "show a sandbox's spec, status and events", runDescribe},
		{"delete", "delete sandboxes", runDelete},
		{"wait", "wait until sandboxes are ready or deleted", runWait},
		{"exec", "run a command in a running sandbox", runExec},
		{"attach", "open an interactive shell in a running sandbox", runAttach},
		{"cp", "copy files and directories to and from a sandbox", runCp},
		{"logs", "print a sandbox's output", runLogs},
		{"claim", "take a Ready sandbox from a pool", runClaim},
		{"reconcile", "ask the controller to look at sandboxes now", runReconcile},
		{"gc", "show or confirm the controller's garbage collection", runGC},
		{"version", "print the client's and the controller's version", runVersion},
		{"completion", "print a shell completion script", runCompletion},
	}
}

const mainUsage = `akctl manages agentkernel sandboxes declared in HCL.

Usage:
  akctl [global flags] <command> [flags] [arguments]

Commands:
%s
Global flags (before or after the command; not used by validate and fmt):
  --addr URL          the controller's API: http://host:port, https://...,
                      or unix:///path/controller.sock (env AKCTL_ADDR;
                      default http://127.0.0.1:7474)
  --token TOKEN       API token (env AKCTL_TOKEN)
  --token-file FILE   read the API token from FILE
  --timeout DURATION  give up waiting after DURATION: wait, apply --wait,
                      delete --wait (default 5m)
  --request-timeout DURATION
                      bound on each request (default 30s)
  -v                  log every request to standard error
  --stale             let any controller instance answer reads (get,
                      describe, wait) from its own copy, which may lag
                      the leader's; by default followers pass them on

Run "akctl <command> -h" for a command's flags and examples.

Exit codes:
  0  success
  1  the declarations are invalid, files need formatting (fmt -check),
     the controller refused or failed a request, or a wait failed;
     for diff: there are differences
  2  the command line is wrong
  3  diff only: the diff could not be computed
  exec and attach exit with the command's own code (127: no such
  command) once it ran; 1 or 2 as above when it could not be run
  130  interrupted (Ctrl-C; 143 for SIGTERM): what was applied stays
       applied, and the controller carries on
`

func printMainUsage(w io.Writer) {
	var list string
	for _, c := range commands() {
		list += fmt.Sprintf("  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, mainUsage, list)
}

func run(ctx context.Context, args []string, e *env) int {
	// Global flags may come before the command.
	gfs := newFlagSet("akctl")
	e.globals.register(gfs)
	if err := gfs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			printMainUsage(e.stdout)
			return exitOK
		}
		fmt.Fprintf(e.stderr, "akctl: %v\n\n", err)
		printMainUsage(e.stderr)
		return exitUsage
	}
	args = gfs.Args()
	if len(args) == 0 {
		printMainUsage(e.stderr)
		return exitUsage
	}
	name := args[0]
	if name == "help" && len(args) > 1 {
		// "akctl help validate" is "akctl validate -h".
		name, args = args[1], []string{args[1], "-h"}
	}
	if name == "help" {
		printMainUsage(e.stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ue *usageError
		var ee *exitError
		var ie *interruptedError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "akctl %s: %s\nRun \"akctl %s -h\" for usage.\n", name, ue.msg, name)
			return exitUsage
		case errors.As(err, &ee):
			return ee.code
		case errors.As(err, &ie):
			fmt.Fprintf(e.stderr, "akctl %s: %v\n", name, ie)
			return interruptCode(ctx)
		case ctx.Err() != nil:
			// A signal stopped a request: say so, not "context canceled".
			fmt.Fprintf(e.stderr, "akctl %s: interrupted\n", name)
			return interruptCode(ctx)
		default:
			fmt.Fprintf(e.stderr, "akctl %s: %v\n", name, err)
			if name == "diff" {
				return exitDiffError
			}
			return exitFailure
		}
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	fmt.Fprintf(e.stderr, "akctl: unknown command %q\n", name)
	if hint := suggestCommand(name, names); hint != "" {
		fmt.Fprintln(e.stderr, hint)
	}
	fmt.Fprintln(e.stderr)
	printMainUsage(e.stderr)
	return exitUsage
}

// signalled is the cause of run's context when a signal stops akctl.
type signalled struct{ sig os.Signal }

func (s signalled) Error() string { return s.sig.String() }

// interruptCode is the exit code of a run whose context was cancelled:
// 128 + the signal's number, as a shell reports it, and 130 (SIGINT)
// when no signal is named.
func interruptCode(ctx context.Context) int {
	var s signalled
	if errors.As(context.Cause(ctx), &s) {
		if n, ok := s.sig.(syscall.Signal); ok {
			return 128 + int(n)
		}
	}
	return exitInterrupted
}

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		// A second Ctrl-C ends akctl at once, without the message.
		signal.Stop(sigs)
		cancel(signalled{s})
	}()
	code := run(ctx, os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ()})
	os.Exit(code)
}
