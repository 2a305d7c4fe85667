package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

const describeUsage = `Usage: akctl describe [flags] NAME

Shows one sandbox as kubectl describe does: its spec in short (file
contents and secret values are never shown: files by path and size,
secrets by the Nomad variable they come from), its status with the
conditions, and its last 20 events, oldest first.

--stale lets any controller instance answer from its own copy; a note on
standard error says when the answer came from a follower's copy.

Examples:
  akctl describe hello
  akctl describe -n team-a worker

Exit codes: 0 success, 1 the sandbox does not exist or the request failed,
2 usage error.
`

// describeEvents is how many of the latest events describe shows.
const describeEvents = 20

func runDescribe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("describe")
	namespace := namespaceFlag(fs, "`namespace` of the sandbox")
	e.globals.register(fs)
	names, err := parseArgs(fs, args, describeUsage, e)
	if err != nil {
		return err
	}
	if len(names) != 1 {
		return usagef("name one sandbox (got %d)", len(names))
	}
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()
	k := sandboxKey{*namespace, names[0]}
	it, err := c.get(ctx, k.namespace, k.name)
	if err != nil {
		return notFound(err, k)
	}
	var evs api.EventList
	if err := c.do(ctx, http.MethodGet, sandboxPath(k.namespace, k.name)+"/events", nil, &evs); err != nil {
		return notFound(err, k)
	}
	c.noteStale(e)
	describe(e.stdout, &it, evs.Items, e.clock())
	return nil
}

func describe(w io.Writer, it *api.Item, events []api.Event, now time.Time) {
	tw := newTable(w)
	p := func(label, value string) { fmt.Fprintf(tw, "%s\t%s\n", label, value) }
	p("Name:", it.Name)
	p("Namespace:", it.Namespace)
	p("Labels:", labelList(it.Labels))
	p("Apply set:", dash(it.ApplySet))
	if it.Source.File != "" {
		p("Source:", fmt.Sprintf("%s:%d", it.Source.File, it.Source.StartLine))
	}
	p("Created:", fmt.Sprintf("%s (%s ago)", it.CreatedAt.UTC().Format(time.RFC3339), age(it.CreatedAt, now)))
	p("Generation:", fmt.Sprintf("%d (resource version %d)", it.Generation, it.ResourceVersion))
	if it.DeletionRequestedAt != nil {
		p("Deletion requested:", fmt.Sprintf("%s (%s ago)", it.DeletionRequestedAt.UTC().Format(time.RFC3339), age(*it.DeletionRequestedAt, now)))
	}
	p("Hash:", it.Hash)

	s := &it.Spec
	fmt.Fprintln(tw, "Spec:")
	p("  Driver:", s.Driver)
	if s.Image != "" {
		p("  Image:", s.Image)
	}
	p("  Command:", dash(quoteArgs(s.Command)))
	p("  Profile:", dash(s.Profile))
	p("  Resources:", fmt.Sprintf("%s vCPU, %d MB memory", strconv.FormatFloat(s.VCPUs, 'f', -1, 64), s.MemoryMB))
	p("  Network:", dash(s.Network))
	p("  Ports:", dash(specPorts(s.Ports)))
	p("  Read-only root:", strconv.FormatBool(s.ReadOnly))
	if len(s.Env) > 0 {
		p("  Env:", strings.Join(slices.Sorted(maps.Keys(s.Env)), ", "))
	}
	if len(s.Files) == 0 {
		p("  Files:", "-")
	}
	for i, f := range s.Files {
		label := ""
		if i == 0 {
			label = "  Files:"
		}
		p(label, fmt.Sprintf("%s (%s, mode %s)", f.Path, bytesOf(len(f.Content)), f.Mode))
	}
	if len(s.Secrets) == 0 {
		p("  Secrets:", "-")
	}
	for i, sec := range s.Secrets {
		label := ""
		if i == 0 {
			label = "  Secrets:"
		}
		p(label, fmt.Sprintf("%s -> %s:%s", sec.Env, sec.Variable, sec.Key))
	}
	switch {
	case s.TTL != "":
		p("  TTL:", fmt.Sprintf("%s (then %s)", s.TTL, dash(s.OnExpiry)))
	case s.ExpiresAt != "":
		p("  Expires at:", fmt.Sprintf("%s (then %s)", s.ExpiresAt, dash(s.OnExpiry)))
	}
	p("  State:", s.State)
	if pl := placement(s.Placement); pl != "" {
		p("  Placement:", pl)
	}

	st := &it.Status
	fmt.Fprintln(tw, "Status:")
	p("  Phase:", st.Phase)
	p("  Observed generation:", strconv.FormatUint(st.ObservedGeneration, 10))
	job := dash(st.JobID)
	if st.JobModifyIndex > 0 {
		job += fmt.Sprintf(" (version %d, modify index %d)", st.JobVersion, st.JobModifyIndex)
	}
	p("  Job:", job)
	alloc := dash(st.AllocID)
	if st.AllocID != "" {
		alloc += fmt.Sprintf(" (job version %d)", st.AllocJobVersion)
	}
	p("  Allocation:", alloc)
	p("  Node:", dash(st.Node))
	p("  Ports:", dash(allocPorts(st.Ports)))
	p("  Last error:", dash(st.LastError))
	if st.NextAttemptAt != nil {
		p("  Next attempt:", fmt.Sprintf("%s (in %s; akctl reconcile -n %s %s tries now)",
			st.NextAttemptAt.UTC().Format(time.RFC3339), st.NextAttemptAt.Sub(now).Round(time.Second), it.Namespace, it.Name))
	}
	tw.Flush()

	fmt.Fprintln(w, "Conditions:")
	if len(st.Conditions) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else {
		tw = newTable(w)
		fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
		for _, c := range st.Conditions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, dash(c.Reason), age(c.LastTransitionTime, now), dash(c.Message))
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "Events:")
	if len(events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return
	}
	if len(events) > describeEvents {
		events = events[len(events)-describeEvents:]
	}
	tw = newTable(w)
	fmt.Fprintln(tw, "  AGE\tTYPE\tREASON\tMESSAGE")
	for _, ev := range events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", age(ev.Time, now), ev.Type, ev.Reason, ev.Message)
	}
	tw.Flush()
}

func labelList(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ", ")
}

func specPorts(ports []spec.Port) string {
	var parts []string
	for _, pt := range ports {
		s := pt.Label
		switch {
		case pt.Static != 0:
			s += fmt.Sprintf(" static %d", pt.Static)
		default:
			s += " dynamic"
		}
		if pt.To != 0 {
			s += fmt.Sprintf(" -> %d", pt.To)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func allocPorts(ports []api.Port) string {
	var parts []string
	for _, pt := range ports {
		s := fmt.Sprintf("%s %s:%d", pt.Label, pt.HostIP, pt.Value)
		if pt.To != 0 {
			s += fmt.Sprintf(" -> %d", pt.To)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func placement(pl spec.Placement) string {
	var parts []string
	if len(pl.Datacenters) > 0 {
		parts = append(parts, "datacenters "+strings.Join(pl.Datacenters, ", "))
	}
	if pl.NodePool != "" {
		parts = append(parts, "node pool "+pl.NodePool)
	}
	for _, c := range pl.Constraints {
		parts = append(parts, strings.TrimSpace(fmt.Sprintf("%s %s %s", c.Attribute, c.Operator, c.Value)))
	}
	return strings.Join(parts, "; ")
}

func bytesOf(n int) string {
	if n == 1 {
		return "1 byte"
	}
	return fmt.Sprintf("%d bytes", n)
}

// quoteArgs joins a command line, quoting the arguments that a plain join
// would make ambiguous.
func quoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
