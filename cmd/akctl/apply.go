package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

const applyUsage = `Usage: akctl apply -f PATH... [flags]

Loads sandbox declarations as validate does (problems are printed with
their source and nothing is sent) and applies them to the controller in
one request: every sandbox or none. One line per sandbox (and pool) says
what happened: created, configured, unchanged, or pruned.

--prune marks for deletion the sandboxes that the declarations no longer
hold, among those of --apply-set NAME and/or matching -l SELECTOR; one of
the two is required. --wait then waits, showing progress on standard
error, until every applied sandbox is Ready (or Stopped, when declared
stopped), and fails as soon as one is Failed or in Conflict; then until
every applied pool keeps its size Ready (or is held below it by max).

Examples:
  akctl apply -f examples/
  akctl apply -f sandboxes/ --apply-set team-ml --prune --wait
  akctl apply -f box.hcl --dry-run
  cat box.hcl | akctl apply -f -

Ctrl-C during --wait stops akctl, not the apply: it says that the apply
was committed and is still converging, prints the "akctl wait" command
that keeps waiting, and exits 130.

Exit codes: 0 applied (and ready under --wait), 1 invalid declarations, a
request the controller refused or failed, or a failed or timed-out wait,
2 usage error, 130 interrupted.
`

func runApply(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("apply")
	var decl declFlags
	decl.register(fs)
	dryRun := fs.Bool("dry-run", false, "ask the controller what would happen; write nothing")
	prune := fs.Bool("prune", false, "delete the sandboxes of --apply-set or -l that the declarations do not hold")
	applySet := fs.String("apply-set", "", "record the sandboxes as members of the apply set `name`; scopes --prune")
	selector := fs.String("l", "", "label `selector` scoping --prune, such as team=ml")
	var expect uint64
	fs.Func("expect-revision", "apply only if the store is still at `rev` (diff -o json shows it)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return errors.New("want a store revision, a whole number above 0")
		}
		expect = n
		return nil
	})
	wait := fs.Bool("wait", false, "wait until every applied sandbox is ready")
	output := fs.String("o", "text", "output `format`: text or json (the controller's answer)")
	e.globals.register(fs)
	e.globals.registerTimeoutWait(fs)
	paths, err := parseArgs(fs, args, applyUsage, e)
	if err != nil {
		return err
	}
	if err := checkPruneFlags(*prune, *applySet, *selector); err != nil {
		return err
	}
	switch {
	case *wait && *dryRun:
		return usagef("--wait cannot be used with --dry-run: nothing is applied")
	case *output != "text" && *output != "json":
		return usagef("unknown output format %q: use text or json", *output)
	}
	sandboxes, c, err := decl.loadAndConnect(ctx, e, paths, exitFailure)
	if err != nil {
		return err
	}
	defer c.close()

	req := api.ApplyRequest{
		Objects:          decl.objects(sandboxes),
		DryRun:           *dryRun,
		ApplySet:         *applySet,
		Prune:            *prune,
		PruneSelector:    *selector,
		ExpectedRevision: expect,
	}
	var resp api.ApplyResponse
	if err := c.do(ctx, http.MethodPost, "/v1/apply", req, &resp); err != nil {
		if ctx.Err() != nil && !*dryRun {
			return &interruptedError{state: "the controller had not answered, so the apply may or may not have been committed: akctl get shows what it holds."}
		}
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(resp); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	} else {
		suffix := ""
		if resp.DryRun {
			suffix = " (dry run)"
		}
		for _, r := range resp.Results {
			fmt.Fprintf(e.stdout, "%s/%s/%s %s%s\n", kindName(r.Kind), r.Namespace, r.Name, r.Action, suffix)
		}
	}
	if !*wait {
		return nil
	}
	var keys []sandboxKey
	for _, r := range resp.Results {
		if r.Action != "pruned" && r.Kind == "" {
			keys = append(keys, sandboxKey{r.Namespace, r.Name})
		}
	}
	var pools []sandboxKey
	for _, r := range resp.Results {
		if r.Action != "pruned" && r.Kind == "pool" {
			pools = append(pools, sandboxKey{r.Namespace, r.Name})
		}
	}
	err = waitFor(ctx, e, c, keys, goalReady, e.globals.waitTimeout())
	if err == nil && len(pools) > 0 {
		err = waitPoolsFilled(ctx, e, c, pools, e.globals.waitTimeout())
	}
	if ie, ok := errors.AsType[*interruptedError](err); ok {
		ie.state = fmt.Sprintf("the apply was committed (store revision %d) and is still converging: the controller carries on without akctl.", resp.Revision)
	}
	return err
}
