package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// newFlagSet makes a command's flag set. It prints nothing itself:
// parseArgs prints usage on -h and turns errors into usage errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses flags that may come before, between or after the
// positional arguments ("akctl validate examples/ -var team=ml"), which
// the flag package alone stops at.
func parseArgs(fs *flag.FlagSet, args []string, usage string, e *env) ([]string, error) {
	var positional []string
	for {
		if len(args) > 0 && args[0] == "--" {
			// Everything after -- is positional ("exec box -- sh -c x").
			return append(positional, args[1:]...), nil
		}
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				printUsage(e.stdout, fs, usage)
				return nil, flag.ErrHelp
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			// The flag package ate the -- that ended the flags.
			return append(positional, rest...), nil
		}
		args = rest
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func printUsage(w io.Writer, fs *flag.FlagSet, usage string) {
	fmt.Fprint(w, usage)
	fmt.Fprintln(w, "\nFlags:")
	fs.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		line := "  -" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%-24s %s", line, help)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// varFlags collects -var and -var-file into one ordered list, since their
// relative order decides which value wins.
type varFlags struct{ vals []spec.VarValue }

func (v *varFlags) register(fs *flag.FlagSet) {
	fs.Func("var", "set variable `name=value` (repeatable; the last one wins)", func(s string) error {
		vv, err := spec.ParseVarFlag(s)
		if err != nil {
			// The flag package already quotes the value and names -var.
			return errors.New("want name=value")
		}
		v.vals = append(v.vals, vv)
		return nil
	})
	fs.Func("var-file", "read variable values from an HCL or JSON `file` (repeatable)", func(s string) error {
		if strings.TrimSpace(s) == "" {
			return fmt.Errorf("empty -var-file path")
		}
		v.vals = append(v.vals, spec.VarValue{File: s})
		return nil
	})
}

// namespaceFlag registers -n and its long form --namespace, one value.
func namespaceFlag(fs *flag.FlagSet, usage string) *string {
	ns := new(string)
	*ns = "default"
	fs.StringVar(ns, "n", *ns, usage)
	fs.StringVar(ns, "namespace", *ns, "the same as -n")
	return ns
}
