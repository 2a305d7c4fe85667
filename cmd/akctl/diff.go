package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

const diffUsage = `Usage: akctl diff -f PATH... [flags]

Shows what "akctl apply" with the same flags would change, field by field,
and what Nomad's planner says it would do with each sandbox's job. Nothing
is written. Unchanged sandboxes are not listed.

  + create sandbox default/web
    spec.image: (none) -> "python:3.12-alpine"
  ~ update sandbox default/worker
    spec.memoryMB: 512 -> 1024
    nomad: Edited, 1 destructive update
  - prune sandbox default/old

A sandbox that apply would store but the controller could not run is
marked "!", with what stands in the way instead of Nomad's plan: conflict
when its Nomad job ID is taken by a job this controller does not own
(which it never touches), missing namespace when Nomad has no such
namespace. A line on standard error counts them; they are differences
like any other (exit 1).

  ! conflict sandbox default/box
    Nomad job agentkernel-box exists but was not created by this controller ...
    spec.image: (none) -> "alpine"

A text value (a file's content, or any string with a newline or of 64
bytes or more) is shown as its sizes and sha256 prefixes, then a unified
diff of its changed lines with 3 lines of context: at most 24 lines, each
cut to 96 bytes around where it changed ("[…N bytes]" marks what is left
out), with control characters escaped.

    spec.files[0].content: 43 bytes, sha256:c34a453e7730 -> 48 bytes, sha256:fb246b2bb914
      @@ -1,4 +1,4 @@
       # Agents

      -Be careful.
      +Be very careful.
       Do not delete files.

With -o json the controller's answer is printed as it is, full values
included; its revision can be passed to apply --expect-revision to apply
exactly what was shown.

Examples:
  akctl diff -f sandboxes/
  akctl diff -f sandboxes/ --apply-set team-ml --prune

Exit codes, as kubectl diff: 0 no differences, 1 differences, 2 usage
error, 3 any other error (invalid declarations, a request the controller
refused or failed).
`

func runDiff(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("diff")
	var decl declFlags
	decl.register(fs)
	prune := fs.Bool("prune", false, "show the sandboxes of --apply-set or -l that apply --prune would delete")
	applySet := fs.String("apply-set", "", "the apply set `name`, as given to apply")
	selector := fs.String("l", "", "label `selector` scoping --prune, such as team=ml")
	output := fs.String("o", "text", "output `format`: text or json")
	e.globals.register(fs)
	paths, err := parseArgs(fs, args, diffUsage, e)
	if err != nil {
		return err
	}
	if err := checkPruneFlags(*prune, *applySet, *selector); err != nil {
		return err
	}
	switch {
	case *output != "text" && *output != "json":
		return usagef("unknown output format %q: use text or json", *output)
	}
	sandboxes, c, err := decl.loadAndConnect(ctx, e, paths, exitDiffError)
	if err != nil {
		return err
	}
	defer c.close()
	req := api.ApplyRequest{ApplySet: *applySet, Prune: *prune, PruneSelector: *selector, DryRun: true,
		Objects: decl.objects(sandboxes)}
	var resp api.DiffResponse
	if err := c.do(ctx, http.MethodPost, "/v1/diff", req, &resp); err != nil {
		return err
	}
	if *output == "json" {
		if err := writeJSON(e.stdout, resp); err != nil {
			return err
		}
	} else {
		writeDiff(e.stdout, &resp)
	}
	n := 0
	for _, o := range resp.Objects {
		if blocked(o.Action) {
			n++
		}
	}
	switch {
	case n == 1:
		fmt.Fprintln(e.stderr, "akctl diff: 1 sandbox would be stored but could not run (marked !)")
	case n > 1:
		fmt.Fprintf(e.stderr, "akctl diff: %d sandboxes would be stored but could not run (marked !)\n", n)
	}
	if resp.Changed {
		return &exitError{code: exitFailure}
	}
	return nil
}

var diffSigns = map[string]string{"create": "+", "update": "~", "prune": "-", "conflict": "!", "missing_namespace": "!"}

// blocked tells the actions of a sandbox apply would store but the
// controller could not run.
func blocked(action string) bool { return action == "conflict" || action == "missing_namespace" }

func writeDiff(w io.Writer, d *api.DiffResponse) {
	for _, o := range d.Objects {
		sign, ok := diffSigns[o.Action]
		if !ok {
			continue // unchanged
		}
		fmt.Fprintf(w, "%s %s %s %s/%s\n", sign, strings.ReplaceAll(o.Action, "_", " "), kindName(o.Kind), o.Namespace, o.Name)
		if blocked(o.Action) {
			fmt.Fprintf(w, "    %s\n", o.Message)
		}
		for _, ch := range o.Changes {
			if isText(ch.Old) || isText(ch.New) {
				writeTextChange(w, "    ", ch.Path, textSide(ch.Old, ch.Op == "add"), textSide(ch.New, ch.Op == "remove"))
				continue
			}
			fmt.Fprintf(w, "    %s: %s -> %s\n", ch.Path, diffValue(ch.Old, ch.Op == "add"), diffValue(ch.New, ch.Op == "remove"))
		}
		if o.Action == "prune" || blocked(o.Action) {
			continue
		}
		switch {
		case o.Plan != nil:
			fmt.Fprintf(w, "    nomad: %s\n", planLine(o.Plan))
		case o.PlanError != "":
			fmt.Fprintf(w, "    nomad: plan unavailable: %s\n", o.PlanError)
		case !d.Planned:
			fmt.Fprintf(w, "    nomad: plan unavailable: %s\n", d.PlanNote)
		}
	}
}

// textSide is one side of a text change: nil when the field is absent
// there; any other value than a string is shown as its JSON.
func textSide(v any, none bool) *string {
	if none || v == nil {
		return nil
	}
	if s, ok := v.(string); ok {
		return &s
	}
	s := diffValue(v, false)
	return &s
}

func diffValue(v any, none bool) string {
	if none || v == nil {
		return "(none)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// planLine sums Nomad's per-group updates as nomad job plan words them.
func planLine(p *api.PlanSummary) string {
	var u api.DesiredUpdates
	for _, g := range p.DesiredTGUpdates {
		u.Place += g.Place
		u.Stop += g.Stop
		u.Migrate += g.Migrate
		u.InPlaceUpdate += g.InPlaceUpdate
		u.DestructiveUpdate += g.DestructiveUpdate
		u.Canary += g.Canary
		u.Ignore += g.Ignore
	}
	parts := []string{dash(p.DiffType)}
	add := func(n uint64, one, many string) {
		switch {
		case n == 1:
			parts = append(parts, "1 "+one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(u.Place, "create", "create")
	add(u.DestructiveUpdate, "destructive update", "destructive updates")
	add(u.InPlaceUpdate, "in-place update", "in-place updates")
	add(u.Migrate, "migrate", "migrate")
	add(u.Canary, "canary", "canaries")
	add(u.Stop, "stop", "stop")
	add(u.Ignore, "ignore", "ignore")
	line := strings.Join(parts, ", ")
	if len(p.FailedTGAllocs) > 0 {
		groups := slices.Clone(p.FailedTGAllocs)
		slices.Sort(groups)
		line += "; cannot place group " + strings.Join(groups, ", ")
	}
	if w := strings.TrimSpace(p.Warnings); w != "" {
		line += "; warnings: " + strings.ReplaceAll(w, "\n", " ")
	}
	return line
}
