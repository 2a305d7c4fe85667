package main

import (
	"context"
	"fmt"
	"net/http"
)

const reconcileUsage = `Usage: akctl reconcile [flags] NAME...

Asks the controller to look at sandboxes now, ahead of their next
scheduled attempt: after fixing what made Nomad refuse a sandbox's job (a
missing namespace, a token without a capability), there is no need to
wait for the retry that its status announces.

Examples:
  akctl reconcile hello
  akctl reconcile -n team-a worker-1 worker-2

Exit codes: 0 queued, 1 a sandbox does not exist or a request failed,
2 usage error.
`

func runReconcile(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("reconcile")
	namespace := namespaceFlag(fs, "`namespace` of the sandboxes")
	e.globals.register(fs)
	names, err := parseArgs(fs, args, reconcileUsage, e)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return usagef("no sandboxes named: give one NAME or more")
	}
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()
	failed := false
	for _, n := range names {
		k := sandboxKey{*namespace, n}
		err := c.do(ctx, http.MethodPost, sandboxPath(k.namespace, k.name)+"/reconcile", nil, nil)
		switch {
		case err == nil:
			fmt.Fprintf(e.stdout, "%s queued\n", k)
		case isStatus(err, http.StatusNotFound):
			fmt.Fprintf(e.stderr, "akctl reconcile: %s not found\n", k)
			failed = true
		default:
			return err
		}
	}
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}
