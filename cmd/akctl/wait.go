package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

const waitUsage = `Usage: akctl wait --for=ready|deleted [flags] NAME... | --all

Waits until the named sandboxes (or, with --all, every sandbox of the
namespace; for ready, those not being deleted) are ready or gone. A sandbox is ready when its Ready condition
is True for its current generation; one declared with state = "stopped"
counts once it is Stopped. Waiting for ready fails at once when a sandbox
is Failed or in Conflict, or is deleted. --timeout, here, bounds the whole
wait (default 5m); on timeout the sandboxes still waited for are listed
with their phase and reason.

The controller's watch stream is followed from the revision of a list, on
the instance whose store answered that list; when the stream is refused
(the leader changed, or the stream fell behind) akctl lists again, and if
watching keeps failing it polls every second instead.

Examples:
  akctl wait --for=ready hello worker
  akctl wait --for=deleted -n team-a hello --timeout 2m
  akctl wait --for=ready --all -n team-a

Ctrl-C stops the wait, not the controller: akctl says the sandboxes are
still converging, prints the command that keeps waiting for those not
done yet, and exits 130.

Exit codes: 0 done, 1 failure or timeout, 2 usage error, 130 interrupted.
`

type sandboxKey struct{ namespace, name string }

func (k sandboxKey) String() string { return "sandbox/" + k.namespace + "/" + k.name }

type waitGoal int

const (
	goalReady waitGoal = iota
	goalDeleted
)

func runWait(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("wait")
	forFlag := fs.String("for", "", "`condition` to wait for: ready or deleted")
	namespace := namespaceFlag(fs, "`namespace` of the sandboxes")
	all := fs.Bool("all", false, "wait for every sandbox of the namespace")
	allNS := fs.Bool("A", false, "with --all: every namespace")
	e.globals.register(fs)
	names, err := parseArgs(fs, args, waitUsage, e)
	if err != nil {
		return err
	}
	var goal waitGoal
	switch *forFlag {
	case "ready":
		goal = goalReady
	case "deleted", "delete":
		goal = goalDeleted
	case "":
		return usagef("--for is required: ready or deleted")
	default:
		return usagef("unknown --for %q: use ready or deleted", *forFlag)
	}
	switch {
	case *all && len(names) > 0:
		return usagef("name sandboxes or use --all, not both")
	case !*all && len(names) == 0:
		return usagef("no sandboxes named: give NAMEs or --all")
	case *allNS && !*all:
		return usagef("-A only applies to --all")
	}
	timeout := e.globals.waitTimeout()
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()

	var keys []sandboxKey
	if *all {
		ns := *namespace
		if *allNS {
			ns = ""
		}
		l, err := c.list(ctx, ns, "")
		if err != nil {
			return err
		}
		for _, it := range l.Items {
			// A sandbox on its way out will never be ready; --all means
			// the ones that are declared.
			if goal == goalReady && it.DeletionRequestedAt != nil {
				continue
			}
			keys = append(keys, sandboxKey{it.Namespace, it.Name})
		}
	} else {
		for _, n := range names {
			keys = append(keys, sandboxKey{*namespace, n})
		}
	}
	return waitFor(ctx, e, c, keys, goal, timeout)
}

// waiter follows a set of sandboxes until each reaches the goal.
type waiter struct {
	e      *env
	goal   waitGoal
	keys   []sandboxKey
	items  map[sandboxKey]*api.Item // nil: gone
	done   map[sandboxKey]bool
	failed error
}

// waitFor waits until every key reaches goal, printing progress on
// standard error: the current state first, then every sandbox as it gets
// there. It follows /v1/watch and falls back to polling.
func waitFor(ctx context.Context, e *env, c *client, keys []sandboxKey, goal waitGoal, timeout time.Duration) error {
	if len(keys) == 0 {
		return nil
	}
	w := &waiter{e: e, goal: goal, keys: keys, items: map[sandboxKey]*api.Item{}, done: map[sandboxKey]bool{}}
	what := "ready"
	if goal == goalDeleted {
		what = "deleted"
	}
	fmt.Fprintf(e.stderr, "waiting for %s to be %s (timeout %s)\n", countSandboxes(len(keys)), what, timeout)

	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := w.run(wctx, c)
	switch {
	case err == nil:
		return nil
	case w.failed != nil:
		return w.failed
	case ctx.Err() != nil:
		return w.interrupted(e)
	case errors.Is(err, context.DeadlineExceeded):
		return w.timedOut(timeout)
	}
	return err
}

// interruptedError is a command stopped by a signal (Ctrl-C). It says
// where things stand, since akctl stopping does not stop the controller,
// and how to pick the wait up again.
type interruptedError struct {
	// state is what holds now, as a clause: "the apply was committed ...".
	state string
	// resume are the commands that keep waiting, one per namespace.
	resume []string
}

func (e *interruptedError) Error() string {
	var b strings.Builder
	b.WriteString("interrupted; " + e.state)
	for _, r := range e.resume {
		b.WriteString("\nTo keep waiting: " + r)
	}
	return b.String()
}

// interrupted reports a wait stopped by a signal, with the command that
// waits for what was not done yet.
func (w *waiter) interrupted(e *env) *interruptedError {
	goal, state := "ready", "the sandboxes are still converging: the controller carries on without akctl."
	if w.goal == goalDeleted {
		goal, state = "deleted", "the deletions are still in progress: the controller carries on without akctl."
	}
	byNS := map[string][]string{}
	for _, k := range w.keys {
		if !w.done[k] {
			byNS[k.namespace] = append(byNS[k.namespace], k.name)
		}
	}
	ie := &interruptedError{state: state}
	addr := ""
	if e.globals.addr != "" {
		addr = " --addr " + e.globals.addr
	}
	for _, ns := range slices.Sorted(maps.Keys(byNS)) {
		ie.resume = append(ie.resume, fmt.Sprintf("akctl%s wait --for=%s -n %s %s", addr, goal, ns, strings.Join(byNS[ns], " ")))
	}
	return ie
}

// maxRelists bounds how many times in a row wait lists again because a
// watch was refused before it brought anything: a follower that keeps
// answering lists through a leader it cannot stream from would otherwise
// make it spin. After that it polls.
const maxRelists = 3

// run lists the sandboxes, then watches from the list's revision on the
// store that answered the list. Each instance of a cluster numbers its
// store's revisions apart, so a watch that another store would serve is
// refused; so is one that fell behind the change feed. Either way run
// lists again, and never skips a change.
func (w *waiter) run(ctx context.Context, c *client) error {
	namespaces := map[string]bool{}
	for _, k := range w.keys {
		namespaces[k.namespace] = true
	}
	ns := ""
	if len(namespaces) == 1 {
		ns = w.keys[0].namespace
	}
	for listed, relists := false, 0; ; listed = true {
		l, err := c.list(ctx, ns, "")
		if err != nil {
			return err
		}
		present := map[sandboxKey]*api.Item{}
		for i := range l.Items {
			it := &l.Items[i]
			present[sandboxKey{it.Namespace, it.Name}] = it
		}
		for _, k := range w.keys {
			if w.goal == goalReady && present[k] == nil && !listed {
				w.failed = fmt.Errorf("%s not found", k)
				return w.failed
			}
			if w.observe(k, present[k]) {
				return nil
			}
			if w.failed != nil {
				return w.failed
			}
		}

		q := url.Values{"since": {strconv.FormatUint(l.Revision, 10)}}
		if l.StoreID != "" {
			q.Set("store", l.StoreID)
		}
		if ns != "" {
			q.Set("namespace", ns)
		}
		finished, delivered := false, false
		err = c.watch(ctx, q, func(line api.WatchLine) bool {
			delivered = true
			ns, name, _ := strings.Cut(line.Key, "/")
			k := sandboxKey{ns, name}
			if _, ok := w.items[k]; !ok {
				return true
			}
			it := line.Item
			if line.Type == "finalized" {
				it = nil
			} else if it == nil {
				return true // finalized since; its own line follows
			}
			finished = w.observe(k, it)
			return !finished && w.failed == nil
		})
		switch {
		case w.failed != nil:
			return w.failed
		case finished:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		if delivered {
			relists = 0
		}
		if mustListAgain(err) && relists < maxRelists {
			relists++
			if c.log != nil {
				fmt.Fprintf(c.log, "akctl: listing again: %v\n", err)
			}
			continue
		}
		if c.log != nil {
			fmt.Fprintf(c.log, "akctl: watch failed (%v); polling every second\n", err)
		}
		return w.poll(ctx, c)
	}
}

// poll reads every sandbox not yet done once a second.
func (w *waiter) poll(ctx context.Context, c *client) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for _, k := range w.keys {
			if w.done[k] {
				continue
			}
			it, err := c.get(ctx, k.namespace, k.name)
			var item *api.Item
			switch {
			case err == nil:
				item = &it
			case isStatus(err, http.StatusNotFound):
			default:
				return err
			}
			if w.observe(k, item) {
				return nil
			}
			if w.failed != nil {
				return w.failed
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// observe records a sandbox's state and reports whether every sandbox
// has reached the goal. A sandbox that cannot get there sets w.failed.
func (w *waiter) observe(k sandboxKey, it *api.Item) bool {
	w.items[k] = it
	if !w.done[k] {
		switch w.goal {
		case goalDeleted:
			if it == nil {
				w.done[k] = true
				fmt.Fprintf(w.e.stderr, "%s gone\n", k)
			}
		case goalReady:
			switch {
			case it == nil:
				w.failed = fmt.Errorf("%s was deleted while waiting for it to be ready", k)
			case it.DeletionRequestedAt != nil:
				w.failed = fmt.Errorf("%s is being deleted; it will not become ready", k)
			case isReady(it):
				w.done[k] = true
				fmt.Fprintf(w.e.stderr, "%s ready (%s)\n", k, it.Status.Phase)
			case it.Status.ObservedGeneration == it.Generation &&
				(it.Status.Phase == "Failed" || it.Status.Phase == "Conflict"):
				w.failed = fmt.Errorf("%s is %s%s", k, it.Status.Phase, why(it))
			}
		}
	}
	for _, k := range w.keys {
		if !w.done[k] {
			return false
		}
	}
	return true
}

func (w *waiter) timedOut(timeout time.Duration) error {
	var b strings.Builder
	what := "ready"
	if w.goal == goalDeleted {
		what = "deleted"
	}
	var pending []string
	for _, k := range w.keys {
		if w.done[k] {
			continue
		}
		line := k.String()
		if it := w.items[k]; it != nil {
			line += ": " + it.Status.Phase + why(it)
		}
		pending = append(pending, line)
	}
	slices.Sort(pending)
	fmt.Fprintf(&b, "timed out after %s; %d of %d not %s:", timeout, len(pending), len(w.keys), what)
	for _, p := range pending {
		b.WriteString("\n  " + p)
	}
	return errors.New(b.String())
}

// isReady: the Ready condition is True for the current generation, or the
// sandbox is declared stopped and is.
func isReady(it *api.Item) bool {
	if it.Status.ObservedGeneration != it.Generation {
		return false
	}
	if it.Spec.State == "stopped" {
		return it.Status.Phase == "Stopped"
	}
	c, ok := condition(it, "Ready")
	return ok && c.Status == "True"
}

func condition(it *api.Item, typ string) (api.Condition, bool) {
	for _, c := range it.Status.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return api.Condition{}, false
}

// why explains a phase: the Ready condition's reason and message, or the
// last error.
func why(it *api.Item) string {
	var parts []string
	if c, ok := condition(it, "Ready"); ok && c.Status != "True" {
		if c.Reason != "" {
			parts = append(parts, c.Reason)
		}
		if c.Message != "" {
			parts = append(parts, c.Message)
		}
	}
	if it.Status.LastError != "" && !slices.Contains(parts, it.Status.LastError) {
		parts = append(parts, it.Status.LastError)
	}
	if it.Status.ObservedGeneration != it.Generation {
		parts = append(parts, fmt.Sprintf("generation %d not yet observed", it.Generation))
	}
	if len(parts) == 0 {
		return ""
	}
	for i := range parts[:len(parts)-1] {
		parts[i] = strings.TrimSuffix(parts[i], ".")
	}
	return " (" + strings.Join(parts, ": ") + ")"
}
