package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

const gcUsage = `Usage: akctl gc [flags]
       akctl gc confirm [flags]

Shows whether the controller collects garbage: purges the Nomad jobs it
owns whose sandbox is no longer declared. It refuses to while its store
looks lost or older than what was applied (an empty data dir beside
running jobs, a data dir restored from an older backup), and keeps
refusing across restarts until an operator confirms the store.

"gc confirm" is that confirmation: the store is the desired state. Owned
jobs it does not declare are purged, and jobs running a newer spec than
the store's are brought back to the store's. Apply the current
declarations first if the store is behind them.

Examples:
  akctl gc
  akctl gc confirm
  akctl gc -o json

Exit codes: 0 success (also while held), 1 the controller refused or
failed the request, 2 usage error.
`

func runGC(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("gc")
	output := fs.String("o", "text", "output `format`: text or json")
	e.globals.register(fs)
	rest, err := parseArgs(fs, args, gcUsage, e)
	if err != nil {
		return err
	}
	confirm := false
	switch {
	case len(rest) == 1 && rest[0] == "confirm":
		confirm = true
	case len(rest) > 0:
		return usagef("gc takes no arguments but \"confirm\"; got %q", rest[0])
	case *output != "text" && *output != "json":
		return usagef("unknown output format %q: use text or json", *output)
	}
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()
	var st api.GCStatus
	if confirm {
		err = c.do(ctx, http.MethodPost, "/v1/gc/confirm", nil, &st)
	} else {
		err = c.do(ctx, http.MethodGet, "/v1/gc", nil, &st)
	}
	if err != nil {
		return err
	}
	if *output == "json" {
		return writeJSON(e.stdout, st)
	}
	switch {
	case st.Enabled && confirm:
		fmt.Fprintln(e.stdout, "Garbage collection: on. Owned jobs the store does not declare are purged.")
		return nil
	case st.Enabled:
		fmt.Fprintln(e.stdout, "Garbage collection: on")
		return nil
	}
	tw := newTable(e.stdout)
	if st.Hold != nil {
		fmt.Fprintf(tw, "Garbage collection:\theld since %s\n", st.Hold.Since.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "Garbage collection:\toff\n")
	}
	fmt.Fprintf(tw, "Reason:\t%s\n", st.Reason)
	if h := st.Hold; h != nil && h.JobCount > 0 {
		fmt.Fprintf(tw, "Jobs:\t%d\n", h.JobCount)
		for _, j := range h.Jobs {
			fmt.Fprintf(tw, "\t%s\n", j)
		}
		if more := h.JobCount - len(h.Jobs); more > 0 {
			fmt.Fprintf(tw, "\t(%d more)\n", more)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Hold != nil {
		fmt.Fprintln(e.stdout, "\nOnce the store holds what should run, \"akctl gc confirm\" lets the controller purge and revert to it.")
	}
	return nil
}
