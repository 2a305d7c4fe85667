package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

const claimUsage = `Usage: akctl claim [flags] POOL

Takes a Ready sandbox from a pool: the controller marks one claimed and
answers at once, without waiting for Nomad. The sandbox is then an
ordinary sandbox (exec, cp, logs, delete) until it is deleted or its TTL
runs out; it never returns to the pool, which makes a new one.

Prints the sandbox's name, allocation, node and ports; -o json (or yaml)
prints the item exactly as "akctl get NAME -o json" (or yaml) does, and
-o name prints sandbox/<namespace>/<name> alone.

Examples:
  akctl claim python
  akctl claim python -n agents --ttl 30m --wait 10s -l task=t-123 -o json

Exit codes: 0 claimed, 1 no pool of that name, none Ready in time (after
--wait) or the request failed, 2 usage error.
`

func runClaim(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("claim")
	namespace := namespaceFlag(fs, "`namespace` of the pool")
	ttl := fs.Duration("ttl", 0, "lifetime of the claimed sandbox, as `duration` (default: the pool's claim_ttl)")
	wait := fs.Duration("wait", 0, "wait up to `duration` for a Ready sandbox when none is")
	output := fs.String("o", "text", "output `format`: text, json, yaml or name")
	labels := map[string]string{}
	fs.Func("l", "add the label `key=value` to the claimed sandbox (repeatable)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want key=value, got %q", s)
		}
		labels[k] = v
		return nil
	})
	e.globals.register(fs)
	names, err := parseArgs(fs, args, claimUsage, e)
	if err != nil {
		return err
	}
	switch {
	case len(names) != 1:
		return usagef("name one pool (got %d)", len(names))
	case *output != "text" && *output != "json" && *output != "yaml" && *output != "name":
		return usagef("unknown output format %q: use text, json, yaml or name", *output)
	case *ttl < 0 || *wait < 0:
		return usagef("--ttl and --wait must not be negative")
	}
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()
	// The request lasts as long as the wait, and then some.
	c.timeout = max(c.timeout, *wait+c.timeout)
	req := api.ClaimRequest{Labels: labels}
	if *ttl > 0 {
		req.TTL = ttl.String()
	}
	if *wait > 0 {
		req.Wait = wait.String()
	}
	var raw json.RawMessage
	path := "/v1/pools/" + url.PathEscape(*namespace) + "/" + url.PathEscape(names[0]) + "/claim"
	if err := c.do(ctx, http.MethodPost, path, req, &raw); err != nil {
		if isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("pool/%s/%s not found", *namespace, names[0])
		}
		return err
	}
	if *output == "json" || *output == "yaml" {
		return writeRaw(e.stdout, raw, *output)
	}
	var it api.Item
	if err := json.Unmarshal(raw, &it); err != nil {
		return fmt.Errorf("read the controller's answer: %w", err)
	}
	if *output == "name" {
		return writeItem(e.stdout, it, "name")
	}
	fmt.Fprintf(e.stdout, "sandbox/%s/%s claimed from pool/%s/%s\n", it.Namespace, it.Name, *namespace, names[0])
	fmt.Fprintf(e.stdout, "  alloc %s on node %s", dash(it.Status.AllocID), dash(it.Status.Node))
	for _, p := range it.Status.Ports {
		fmt.Fprintf(e.stdout, ", port %s %s:%d", p.Label, p.HostIP, p.Value)
	}
	fmt.Fprintln(e.stdout)
	if it.Pool != nil && it.Pool.ExpiresAt != nil {
		fmt.Fprintf(e.stdout, "  expires %s\n", it.Pool.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// getPools is "akctl get pools [NAME]".
func getPools(ctx context.Context, e *env, c *client, ns, selector string, names []string, output string) error {
	path := "/v1/pools"
	if len(names) == 1 {
		path += "/" + url.PathEscape(ns) + "/" + url.PathEscape(names[0])
	} else if q := listQuery(ns, selector); len(q) > 0 {
		path += "?" + q.Encode()
	}
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, path, nil, &raw); err != nil {
		if len(names) == 1 && isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("pool/%s/%s not found", ns, names[0])
		}
		return err
	}
	c.noteStale(e)
	if output == "json" || output == "yaml" {
		return writeRaw(e.stdout, raw, output)
	}
	var items []api.PoolItem
	if len(names) == 1 {
		var it api.PoolItem
		if err := json.Unmarshal(raw, &it); err != nil {
			return fmt.Errorf("read the controller's answer: %w", err)
		}
		items = []api.PoolItem{it}
	} else {
		var l api.PoolList
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("read the controller's answer: %w", err)
		}
		items = l.Items
	}
	if output == "name" {
		for _, it := range items {
			fmt.Fprintf(e.stdout, "pool/%s/%s\n", it.Namespace, it.Name)
		}
		return nil
	}
	if len(items) == 0 {
		if ns == "" {
			fmt.Fprintln(e.stderr, "No pools found.")
		} else {
			fmt.Fprintf(e.stderr, "No pools found in namespace %s.\n", ns)
		}
		return nil
	}
	tw := newTable(e.stdout)
	writePoolTable(tw, items, e.clock())
	return tw.Flush()
}

func writePoolTable(tw io.Writer, items []api.PoolItem, now time.Time) {
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tREADY\tPENDING\tCLAIMED\tSIZE\tMAX\tPHASE\tAGE")
	for _, it := range items {
		maxText := "-"
		if it.Max > 0 {
			maxText = fmt.Sprint(it.Max)
		}
		phase := it.Status.Phase
		if exhausted(it) {
			phase += " (Exhausted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", it.Namespace, it.Name, it.Status.Ready, it.Status.Pending,
			it.Status.Claimed, it.Size, maxText, phase, age(it.CreatedAt, now))
	}
}

// poolColumn is the POOL column of a sandbox: its pool, and whether it is
// claimed.
func poolColumn(it *api.Item) string {
	if it.Pool == nil {
		return "-"
	}
	if it.Pool.Claimed {
		return it.Pool.Name + " (claimed)"
	}
	return it.Pool.Name
}

// waitPoolsFilled polls each pool until its current generation keeps size
// sandboxes Ready, or max holds it below that (Exhausted: as filled as it
// gets).
func waitPoolsFilled(ctx context.Context, e *env, c *client, pools []sandboxKey, timeout time.Duration) error {
	return pollPools(ctx, c, pools, timeout,
		func(k sandboxKey) {
			fmt.Fprintf(e.stderr, "waiting for pool/%s/%s to fill (timeout %s)\n", k.namespace, k.name, timeout)
		},
		func(it *api.PoolItem, err error) (bool, error) {
			if err != nil && !isStatus(err, http.StatusNotFound) {
				return false, err
			}
			return err == nil && it.Status.ObservedGeneration == it.Generation && (it.Status.Ready >= it.Size || exhausted(*it)), nil
		},
		func(k sandboxKey, it *api.PoolItem) error {
			return fmt.Errorf("pool/%s/%s: %d of %d sandboxes Ready after %s", k.namespace, k.name, it.Status.Ready, it.Size, timeout)
		})
}

// pollPools reads each pool every 100 ms until done says so, for at most
// timeout in all: then late says what was left. Ctrl-C interrupts it.
func pollPools(ctx context.Context, c *client, pools []sandboxKey, timeout time.Duration,
	start func(k sandboxKey), done func(it *api.PoolItem, err error) (bool, error), late func(k sandboxKey, it *api.PoolItem) error) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, k := range pools {
		if start != nil {
			start(k)
		}
		var last api.PoolItem
		for {
			var it api.PoolItem
			err := c.do(wctx, http.MethodGet, poolPath(k.namespace, k.name), nil, &it)
			switch {
			case ctx.Err() != nil:
				return &interruptedError{}
			case wctx.Err() != nil:
				return late(k, &last)
			}
			ok, derr := done(&it, err)
			if derr != nil {
				return derr
			}
			if ok {
				break
			}
			if err == nil {
				last = it
			}
			select {
			case <-wctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func exhausted(it api.PoolItem) bool {
	for _, c := range it.Status.Conditions {
		if c.Type == "Exhausted" && c.Status == "True" {
			return true
		}
	}
	return false
}
