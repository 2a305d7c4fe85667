package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

const deleteUsage = `Usage: akctl delete [flags] NAME...
       akctl delete [flags] -f PATH...

Deletes sandboxes named on the command line (in namespace -n) or declared
in files (-f, with -var and -var-file as in apply); pools declared in the
files are deleted too (their unclaimed sandboxes, then the pool; claimed
sandboxes stay until deleted or expired). The controller marks
each sandbox and removes it once its Nomad job is gone; --wait waits for
that. A sandbox that does not exist is reported (exit 1) and the others
are still deleted; with --ignore-not-found it counts as deleted.

Examples:
  akctl delete hello
  akctl delete -n team-a worker-1 worker-2 --wait
  akctl delete -f sandboxes/

Exit codes: 0 deleted, 1 a sandbox does not exist, a request failed or
the wait failed, 2 usage error, 130 interrupted (the deletion stays
requested).
`

func runDelete(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("delete")
	var decl declFlags
	decl.register(fs)
	wait := fs.Bool("wait", false, "wait until each sandbox is gone (--timeout bounds the wait)")
	ignoreNotFound := fs.Bool("ignore-not-found", false, "treat a sandbox or pool that does not exist as deleted")
	e.globals.register(fs)
	e.globals.registerTimeoutWait(fs)
	names, err := parseArgs(fs, args, deleteUsage, e)
	if err != nil {
		return err
	}
	var keys []sandboxKey
	var sandboxes []spec.Sandbox
	switch {
	case len(decl.files) > 0 && len(names) > 0:
		return usagef("name sandboxes or use -f, not both")
	case len(decl.files) > 0:
		if sandboxes, err = decl.load(e, nil, exitFailure); err != nil {
			return err
		}
	case len(names) == 0:
		return usagef("no sandboxes named: give NAMEs or -f PATH")
	default:
		if len(decl.vars.vals) > 0 {
			return usagef("-var and -var-file only apply with -f")
		}
		for _, n := range names {
			keys = append(keys, sandboxKey{decl.namespace, n})
		}
	}
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()
	if len(decl.files) > 0 {
		if sandboxes, err = decl.withControllerDefault(ctx, e, c, sandboxes, nil, exitFailure); err != nil {
			return err
		}
		for _, s := range sandboxes {
			keys = append(keys, sandboxKey{s.Namespace, s.Name})
		}
	}

	failed := false
	var deleted []sandboxKey
	for _, k := range keys {
		err := c.do(ctx, http.MethodDelete, sandboxPath(k.namespace, k.name), nil, nil)
		switch {
		case err == nil:
			fmt.Fprintf(e.stdout, "%s deleted\n", k)
			deleted = append(deleted, k)
		case isStatus(err, http.StatusNotFound) && *ignoreNotFound:
		case isStatus(err, http.StatusNotFound):
			fmt.Fprintf(e.stderr, "akctl delete: %s not found\n", k)
			failed = true
		default:
			// The controller is unreachable or refuses: the others would
			// fail the same way.
			return err
		}
	}
	// Pools declared in the files go too: their unclaimed sandboxes
	// first, then the pool; claimed sandboxes stay until deleted.
	var pools []sandboxKey
	for _, p := range decl.pools {
		k := sandboxKey{p.Namespace, p.Name}
		err := c.do(ctx, http.MethodDelete, poolPath(k.namespace, k.name), nil, nil)
		switch {
		case err == nil:
			fmt.Fprintf(e.stdout, "pool/%s/%s deleted\n", k.namespace, k.name)
			pools = append(pools, k)
		case isStatus(err, http.StatusNotFound) && *ignoreNotFound:
		case isStatus(err, http.StatusNotFound):
			fmt.Fprintf(e.stderr, "akctl delete: pool/%s/%s not found\n", k.namespace, k.name)
			failed = true
		default:
			return err
		}
	}
	if *wait && len(pools) > 0 {
		if err := waitPoolsGone(ctx, c, pools, e.globals.waitTimeout()); err != nil {
			return err
		}
	}
	if *wait {
		if err := waitFor(ctx, e, c, deleted, goalDeleted, e.globals.waitTimeout()); err != nil {
			if ie, ok := errors.AsType[*interruptedError](err); ok {
				ie.state = "the deletion was committed and is still in progress: the controller carries on without akctl."
			}
			return err
		}
	}
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}

// waitPoolsGone polls each pool until the controller no longer has it:
// its unclaimed sandboxes are gone, and so is it.
func waitPoolsGone(ctx context.Context, c *client, pools []sandboxKey, timeout time.Duration) error {
	return pollPools(ctx, c, pools, timeout, nil,
		func(_ *api.PoolItem, err error) (bool, error) { return isStatus(err, http.StatusNotFound), nil },
		func(k sandboxKey, _ *api.PoolItem) error {
			return fmt.Errorf("pool/%s/%s is still being deleted after %s", k.namespace, k.name, timeout)
		})
}

func poolPath(namespace, name string) string {
	return "/v1/pools/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
}
