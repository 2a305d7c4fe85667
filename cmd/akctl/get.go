package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

const getUsage = `Usage: akctl get [flags] [NAME]

Lists the sandboxes of a namespace (-A: of every namespace), or shows one
by NAME, with their phase, readiness and age (and, for sandboxes of a
pool, the pool and whether they are claimed). "akctl get pools" lists the
pools with their ready, pending and claimed counts. -o wide adds the Nomad job,
allocation, node and generation; -o json prints {"items": [...]} (or the
one item) exactly as the controller's API returns them, -o yaml the same
as YAML, -o name one sandbox/<namespace>/<name> a line.

--watch keeps going after the list: a row (with -o json, an item on one
line; -o yaml, a document) for every change, until interrupted.

When the controller runs as several instances, the leader answers (the
others pass the request on); --stale lets the instance at --addr answer
from its own copy. A note on standard error says when an answer came
from a follower's copy, which may lag the leader's.

Examples:
  akctl get
  akctl get -A -l team=ml -o wide
  akctl get hello -o json | jq .status
  akctl get --watch
  akctl get pools -n agents

Exit codes: 0 success, 1 the sandbox does not exist or the request failed,
2 usage error.
`

func runGet(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("get")
	namespace := namespaceFlag(fs, "`namespace` of the sandboxes")
	allNS := fs.Bool("A", false, "list the sandboxes of every namespace")
	selector := fs.String("l", "", "only sandboxes whose labels match `selector`, such as team=ml,tier!=dev")
	output := fs.String("o", "table", "output `format`: table, wide, json, yaml or name")
	watch := fs.Bool("watch", false, "after the list, print every change until interrupted")
	e.globals.register(fs)
	names, err := parseArgs(fs, args, getUsage, e)
	if err != nil {
		return err
	}
	// "get pools" lists pools; "get sandboxes NAME" names a sandbox
	// called "pools".
	pools := false
	if len(names) > 0 {
		switch names[0] {
		case "pool", "pools":
			pools, names = true, names[1:]
		case "sandbox", "sandboxes":
			names = names[1:]
		}
	}
	if pools && (*watch || *output == "wide") {
		return usagef("get pools takes -o table, json, yaml or name, without --watch")
	}
	switch {
	case *output != "table" && *output != "wide" && *output != "json" && *output != "yaml" && *output != "name":
		return usagef("unknown output format %q: use table, wide, json, yaml or name", *output)
	case len(names) > 1:
		return usagef("name at most one sandbox (got %d)", len(names))
	case len(names) == 1 && (*allNS || *selector != ""):
		return usagef("-A and -l list sandboxes; they cannot be used with a NAME")
	}
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()
	ns := *namespace
	if *allNS {
		ns = ""
	}
	if pools {
		return getPools(ctx, e, c, ns, *selector, names, *output)
	}

	if (*output == "json" || *output == "yaml") && !*watch {
		// Pass the controller's JSON through untouched (as YAML, its
		// fields converted one for one): fields this akctl does not know
		// yet survive.
		path := "/v1/sandboxes"
		if len(names) == 1 {
			path = sandboxPath(ns, names[0])
		} else if q := listQuery(ns, *selector); len(q) > 0 {
			path += "?" + q.Encode()
		}
		var raw json.RawMessage
		if err := c.do(ctx, http.MethodGet, path, nil, &raw); err != nil {
			if len(names) == 1 {
				return notFound(err, sandboxKey{ns, names[0]})
			}
			return err
		}
		c.noteStale(e)
		return writeRaw(e.stdout, raw, *output)
	}

	var items []api.Item
	var rev uint64
	var storeID string
	if len(names) == 1 {
		it, err := c.get(ctx, ns, names[0])
		if err != nil {
			return notFound(err, sandboxKey{ns, names[0]})
		}
		items = []api.Item{it}
	} else {
		l, err := c.list(ctx, ns, *selector)
		if err != nil {
			return err
		}
		items, rev, storeID = l.Items, l.Revision, l.StoreID
	}
	c.noteStale(e)

	now := e.clock()
	if *output == "json" || *output == "yaml" || *output == "name" {
		if err := printItems(e, items, *output); err != nil {
			return err
		}
	} else if len(items) == 0 && !*watch {
		if ns == "" {
			fmt.Fprintln(e.stderr, "No sandboxes found.")
		} else {
			fmt.Fprintf(e.stderr, "No sandboxes found in namespace %s.\n", ns)
		}
		return nil
	} else {
		tw := newTable(e.stdout)
		withPool := false
		for i := range items {
			withPool = withPool || items[i].Pool != nil
		}
		writeHeader(tw, *output == "wide", withPool)
		for i := range items {
			writeRow(tw, &items[i], *output == "wide", withPool, now)
		}
		tw.Flush()
	}
	if !*watch {
		return nil
	}
	for relists := 0; ; relists++ {
		delivered, err := watchItems(ctx, e, c, ns, *selector, names, rev, storeID, *output)
		if delivered {
			relists = 0
		}
		if len(names) == 1 || !mustListAgain(err) || relists >= maxRelists {
			return err
		}
		// The store that listed cannot go on (with -ha: another leader
		// answers now), and its revisions mean nothing to the next one:
		// list there, print what changed meanwhile, and follow that store.
		if c.log != nil {
			fmt.Fprintf(c.log, "akctl: listing again: %v\n", err)
		}
		l, err := c.list(ctx, ns, *selector)
		if err != nil {
			return err
		}
		rev, storeID = l.Revision, l.StoreID
		if err := printItems(e, l.Items, *output); err != nil {
			return err
		}
	}
}

// printItems writes items as watch rows (json: one item a line; yaml: a
// document each; name: sandbox/<ns>/<name>).
func printItems(e *env, items []api.Item, output string) error {
	switch output {
	case "json", "yaml", "name":
		for _, it := range items {
			if err := writeItem(e.stdout, it, output); err != nil {
				return err
			}
		}
		return nil
	}
	tw := newTable(e.stdout)
	for i := range items {
		writeRow(tw, &items[i], output == "wide", items[i].Pool != nil, e.clock())
	}
	return tw.Flush()
}

// watchItems prints every change after rev until ctx ends. Rows are not
// aligned with the earlier ones: each is written as it comes. storeID,
// when set, pins the watch to the store whose revision rev is.
func watchItems(ctx context.Context, e *env, c *client, ns, selector string, names []string, rev uint64, storeID, output string) (delivered bool, err error) {
	q := url.Values{}
	if rev > 0 {
		q.Set("since", strconv.FormatUint(rev, 10))
	}
	if storeID != "" {
		q.Set("store", storeID)
	}
	if ns != "" {
		q.Set("namespace", ns)
	}
	if selector != "" {
		q.Set("selector", selector)
	}
	last := map[string]api.Item{}
	err = c.watch(ctx, q, func(line api.WatchLine) bool {
		delivered = true
		if len(names) == 1 && line.Key != ns+"/"+names[0] {
			return true
		}
		var it api.Item
		switch {
		case line.Item != nil:
			it = *line.Item
			last[line.Key] = it
		case line.Type == "finalized":
			prev, ok := last[line.Key]
			if !ok {
				n, name, _ := strings.Cut(line.Key, "/")
				prev = api.Item{Namespace: n, Name: name}
			}
			it = prev
			it.Status.Phase = "Deleted"
			delete(last, line.Key)
		default:
			return true
		}
		if output == "json" || output == "yaml" || output == "name" {
			return writeItem(e.stdout, it, output) == nil
		}
		tw := newTable(e.stdout)
		writeRow(tw, &it, output == "wide", it.Pool != nil, e.clock())
		return tw.Flush() == nil
	})
	if ctx.Err() != nil {
		return delivered, nil // interrupted: the normal end of a watch
	}
	return delivered, err
}

func notFound(err error, k sandboxKey) error {
	if isStatus(err, 404) {
		return fmt.Errorf("%s not found", k)
	}
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 3, ' ', 0) }

func writeHeader(tw io.Writer, wide, pool bool) {
	fmt.Fprint(tw, "NAMESPACE\tNAME\tPHASE\tREADY\tAGE")
	if pool {
		fmt.Fprint(tw, "\tPOOL")
	}
	if wide {
		fmt.Fprint(tw, "\tJOB\tALLOC\tNODE\tGENERATION")
	}
	fmt.Fprintln(tw)
}

func writeRow(tw io.Writer, it *api.Item, wide, pool bool, now time.Time) {
	ready := "False"
	if isReady(it) {
		ready = "True"
	} else if c, ok := condition(it, "Ready"); !ok || c.Status == "Unknown" {
		ready = "Unknown"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", it.Namespace, it.Name, it.Status.Phase, ready, age(it.CreatedAt, now))
	if pool {
		fmt.Fprintf(tw, "\t%s", poolColumn(it))
	}
	if wide {
		gen := strconv.FormatUint(it.Generation, 10)
		if it.Status.ObservedGeneration != it.Generation {
			gen += fmt.Sprintf(" (observed %d)", it.Status.ObservedGeneration)
		}
		fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s", dash(it.Status.JobID), dash(shortID(it.Status.AllocID)), dash(it.Status.Node), gen)
	}
	fmt.Fprintln(tw)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// age is a duration as kubectl shows it: 45s, 12m, 5h, 3d.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// writeIndented passes the controller's JSON through untouched but for
// its indentation, so that fields this akctl does not know yet survive.
func writeIndented(w io.Writer, raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("read the controller's answer: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// writeRaw writes one of the controller's JSON answers as json (indented)
// or yaml.
func writeRaw(w io.Writer, raw json.RawMessage, format string) error {
	if format != "yaml" {
		return writeIndented(w, raw)
	}
	y, err := yaml.JSONToYAML(raw)
	if err != nil {
		return fmt.Errorf("read the controller's answer: %w", err)
	}
	_, err = w.Write(y)
	return err
}

// writeItem writes one sandbox of a list or a watch: a JSON line, a YAML
// document, or its name.
func writeItem(w io.Writer, it api.Item, format string) error {
	switch format {
	case "name":
		_, err := fmt.Fprintf(w, "sandbox/%s/%s\n", it.Namespace, it.Name)
		return err
	case "yaml":
		b, err := yaml.Marshal(it)
		if err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		_, err = fmt.Fprintf(w, "---\n%s", b)
		return err
	}
	return writeJSONLine(w, it)
}
