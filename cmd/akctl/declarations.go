package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// declFlags are the flags of the commands that read declarations (apply,
// diff, delete -f): the paths and what validate takes to load them.
type declFlags struct {
	files     []string
	vars      varFlags
	namespace string
	// nsSet is true when the namespace flag was given; otherwise the
	// controller's default namespace applies (see withControllerDefault).
	nsSet bool
	// pools are the pools the last load found, beside its sandboxes.
	pools []spec.Pool
}

func (d *declFlags) register(fs *flag.FlagSet) {
	fs.Func("f", "declaration `path`: a file, a directory or - (repeatable; paths may also follow the flags)", func(s string) error {
		d.files = append(d.files, s)
		return nil
	})
	d.vars.register(fs)
	d.namespace = spec.DefaultNamespace
	set := func(s string) error {
		d.namespace, d.nsSet = s, true
		return nil
	}
	fs.Func("n", "`namespace` for sandboxes that do not set one (default: the controller's default namespace)", set)
	fs.Func("namespace", "the same as -n", set)
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
	d.pools = res.Pools
	return res.Sandboxes, nil
}

// objects are the apply request's objects: the sandboxes, then the pools
// of the last load.
func (d *declFlags) objects(sandboxes []spec.Sandbox) []api.ApplyObject {
	out := make([]api.ApplyObject, 0, len(sandboxes)+len(d.pools))
	for _, s := range sandboxes {
		out = append(out, api.ApplyObject{Sandbox: s, Source: s.Source})
	}
	for _, p := range d.pools {
		st := p.Settings
		out = append(out, api.ApplyObject{Sandbox: p.Sandbox(), Source: p.Source, Pool: &st})
	}
	return out
}

// kindName is how akctl names an object of an apply or a diff.
func kindName(kind string) string {
	if kind == "" {
		return "sandbox"
	}
	return kind
}

// withControllerDefault reloads the declarations with the controller's
// default namespace when the user named none and it is not "default", so
// that akctl and the controller agree on where undeclared namespaces go.
// Declarations were loaded first without asking, so that invalid files
// are reported even when no controller is reachable.
func (d *declFlags) withControllerDefault(ctx context.Context, e *env, c *client, sandboxes []spec.Sandbox, positional []string, onInvalid int) ([]spec.Sandbox, error) {
	if d.nsSet {
		return sandboxes, nil
	}
	var vi api.VersionInfo
	if err := c.do(ctx, http.MethodGet, "/v1/version", nil, &vi); err != nil {
		// The request that follows reports an unreachable controller
		// with the right words; an older one without the route keeps
		// "default".
		return sandboxes, nil
	}
	if vi.DefaultNamespace == "" || vi.DefaultNamespace == d.namespace {
		return sandboxes, nil
	}
	d.namespace = vi.DefaultNamespace
	return d.load(e, positional, onInvalid)
}

// checkPruneFlags refuses a prune that would delete every sandbox, and a
// selector that would do nothing.
func checkPruneFlags(prune bool, applySet, selector string) error {
	switch {
	case prune && applySet == "" && selector == "":
		return usagef("--prune needs --apply-set NAME or -l SELECTOR: without either it would delete every sandbox")
	case selector != "" && !prune:
		return usagef("-l only scopes --prune; add --prune or drop -l")
	}
	return nil
}

// loadAndConnect loads declarations, connects to the controller and
// applies its default namespace: what apply and diff start with. The
// caller closes the client.
func (d *declFlags) loadAndConnect(ctx context.Context, e *env, paths []string, onInvalid int) ([]spec.Sandbox, *client, error) {
	sandboxes, err := d.load(e, paths, onInvalid)
	if err != nil {
		return nil, nil, err
	}
	c, err := newClient(e)
	if err != nil {
		return nil, nil, err
	}
	if sandboxes, err = d.withControllerDefault(ctx, e, c, sandboxes, paths, onInvalid); err != nil {
		c.close()
		return nil, nil, err
	}
	return sandboxes, c, nil
}
