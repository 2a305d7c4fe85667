// Command akctl is the client of agentkernel-controller: it validates and
// formats sandbox declarations, and (later) applies them to the controller.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, documented in the README and in `akctl help`.
const (
	exitOK      = 0
	exitFailure = 1 // invalid declarations, files that need formatting
	exitUsage   = 2 // bad command line
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
}

type command struct {
	name, summary string
	run           func(ctx context.Context, e *env, args []string) error
}

func commands() []command {
	return []command{
		{"validate", "check declarations and report every problem", runValidate},
		{"fmt", "rewrite declarations in canonical layout", runFmt},
	}
}

const mainUsage = `akctl manages agentkernel sandboxes declared in HCL.

Usage:
  akctl <command> [flags] [arguments]

Commands:
%s
Run "akctl <command> -h" for a command's flags and examples.

Exit codes:
  0  success
  1  the declarations are invalid, or files need formatting (fmt -check)
  2  the command line is wrong
`

func printMainUsage(w io.Writer) {
	var list string
	for _, c := range commands() {
		list += fmt.Sprintf("  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, mainUsage, list)
}

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		printMainUsage(e.stderr)
		return exitUsage
	}
	name := args[0]
	if name == "help" && len(args) > 1 {
		// "akctl help validate" is "akctl validate -h".
		name, args = args[1], []string{args[1], "-h"}
	}
	switch {
	case name == "help" || name == "-h" || name == "--help" || name == "-help":
		printMainUsage(e.stdout)
		return exitOK
	case len(name) > 1 && name[0] == '-':
		fmt.Fprintf(e.stderr, "akctl: %s: flags go after the command, as in \"akctl validate %s ...\"\n\n", name, name)
		printMainUsage(e.stderr)
		return exitUsage
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ue *usageError
		var ee *exitError
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
		default:
			fmt.Fprintf(e.stderr, "akctl %s: %v\n", name, err)
			return exitFailure
		}
	}
	fmt.Fprintf(e.stderr, "akctl: unknown command %q\n\n", name)
	printMainUsage(e.stderr)
	return exitUsage
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ()})
	stop()
	os.Exit(code)
}
