package main

import (
	"flag"
	"fmt"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// declFlags are the flags of the commands that read declarations (apply,
// diff, delete -f): the paths and what validate takes to load them.
type declFlags struct {
	files     []string
	vars      varFlags
	namespace string
}

func (d *declFlags) register(fs *flag.FlagSet, namespaceFlag string) {
	fs.Func("f", "declaration `path`: a file, a directory or - (repeatable; paths may also follow the flags)", func(s string) error {
		d.files = append(d.files, s)
		return nil
	})
	d.vars.register(fs)
	fs.StringVar(&d.namespace, namespaceFlag, spec.DefaultNamespace, "`name` of the namespace for sandboxes that do not set one")
}

// load reads the declarations at -f and the positional paths. Problems
// are printed with their source snippets exactly as validate prints them,
// and reported as an exit with code onInvalid.
func (d *declFlags) load(e *env, positional []string, onInvalid int) ([]spec.Sandbox, error) {
	paths := append(append([]string(nil), d.files...), positional...)
	if len(paths) == 0 {
		return nil, usagef("no declarations given: use -f with files, directories or - for standard input")
	}
	res, diags := spec.Load(paths, spec.Options{
		DefaultNamespace: d.namespace,
		Vars:             d.vars.vals,
		Environ:          e.environ,
		Stdin:            e.stdin,
	})
	if len(diags) > 0 {
		if err := spec.WriteDiagnostics(e.stderr, res.Files, diags, 100, false); err != nil {
			return nil, err
		}
	}
	if diags.HasErrors() {
		fmt.Fprintln(e.stderr, summarize(diags))
		return nil, &exitError{code: onInvalid}
	}
	return res.Sandboxes, nil
}
