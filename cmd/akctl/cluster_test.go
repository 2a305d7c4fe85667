package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestCluster(t *testing.T) {
	follower := &ctlOptions{follower: true}
	two := map[string]string{"decl/box.hcl": boxHCL, "decl/worker.hcl": workerHCL}
	// Applied and waited for through the follower, which passes both on.
	settled := [][]string{ak("apply", "-f", "decl", "--wait")}
	cases := []cliCase{
		{name: "version_on_a_follower", args: ak("version"), ctl: follower},
		{name: "version_on_a_follower_json", args: ak("version", "-o", "json"), ctl: follower},
		{name: "get_is_answered_by_the_leader", args: ak("get", "-v"), files: two, ctl: follower, before: settled},
		{name: "get_stale_notes_the_follower", args: ak("--stale", "get", "-v"), files: two, ctl: follower, before: settled},
		{name: "get_stale_json_keeps_stdout_clean", args: ak("get", "box", "-o", "json", "--stale"), files: two, ctl: follower, before: settled},
		{name: "describe_stale_notes_the_follower", args: ak("describe", "box", "--stale"), files: two, ctl: follower, before: settled},
		{name: "describe_is_answered_by_the_leader", args: ak("describe", "box"), files: two, ctl: follower, before: settled},
		{name: "wait_stale_reads_the_follower", args: ak("--stale", "-v", "wait", "--for=ready", "box"), files: two, ctl: follower, before: settled},
	}
	runCases(t, "cluster", cases)
}

func TestStaleNote(t *testing.T) {
	now := time.Date(2099, 1, 2, 3, 9, 5, 0, time.UTC)
	tests := []struct {
		name string
		from *servedBy
		want string
	}{
		{"leader answered", nil, ""},
		{"follower with a sync time", &servedBy{instance: "b", lastSync: "2099-01-02T03:09:02.5Z"}, "note: served by follower b (last synced 2s ago); status may lag the leader's\n"},
		{"follower never synced", &servedBy{instance: "b", lastSync: "never"}, "note: served by follower b (never synced); status may lag the leader's\n"},
		{"follower that says nothing of itself", &servedBy{}, "note: served by a follower; status may lag the leader's\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			c := &client{staleFrom: tt.from}
			e := &env{stderr: &stderr, now: func() time.Time { return now }}
			c.noteStale(e)
			c.noteStale(e)
			if got := stderr.String(); got != tt.want {
				t.Errorf("note %q, want %q (once)", got, tt.want)
			}
		})
	}
}

func TestStaleAddsToReadsOnly(t *testing.T) {
	tests := []struct {
		method, path string
		want         string // the request URI with --stale
	}{
		{"GET", "/v1/sandboxes", "/v1/sandboxes?stale=true"},
		{"GET", "/v1/sandboxes?namespace=default", "/v1/sandboxes?namespace=default&stale=true"},
		{"GET", "/v1/sandboxes/default/box", "/v1/sandboxes/default/box?stale=true"},
		{"GET", "/v1/sandboxes/default/box/events", "/v1/sandboxes/default/box/events?stale=true"},
		{"GET", "/v1/watch?", "/v1/watch?stale=true"},
		{"GET", "/v1/watch?since=7", "/v1/watch?since=7&stale=true"},
		// Version is always answered locally; diff previews what only the
		// leader would do; writes go to the leader whatever the flag.
		{"GET", "/v1/version", "/v1/version"},
		{"POST", "/v1/diff", "/v1/diff"},
		{"POST", "/v1/apply", "/v1/apply"},
		{"DELETE", "/v1/sandboxes/default/box", "/v1/sandboxes/default/box"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			for _, stale := range []bool{false, true} {
				c := &client{base: "http://controller", stale: stale}
				req, err := c.newRequest(t.Context(), tt.method, tt.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				want := tt.path
				if stale {
					want = tt.want
				}
				if got := req.URL.RequestURI(); got != want {
					t.Errorf("stale=%v: request URI %q, want %q", stale, got, want)
				}
			}
		})
	}
}

// TestWaitFollowsOneInstance: the instances of a cluster keep stores of
// their own, whose revisions count different writes. Here akctl talks to
// follower b; its list is answered by leader a, and then leadership moves
// to b, whose store already holds box as Ready. The watch from a's
// revision must not be served from b's store (that would skip b's
// changes up to it and wait in vain): it is refused, and wait lists again.
func TestWaitFollowsOneInstance(t *testing.T) {
	tests := []struct {
		name string
		// fillA and fillB are writes of other sandboxes after box's own,
		// which set where each store's revision stands.
		fillA, fillB int
	}{
		{name: "the leader's revision is beyond the follower's store", fillA: 5, fillB: 0},
		{name: "the follower's store is further along", fillA: 1, fillB: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startTwoStores(t)
			c.put(t, c.a, "box")
			for i := range tt.fillA {
				c.put(t, c.a, fmt.Sprint("a", i))
			}
			c.put(t, c.b, "box")
			c.ready(t, c.b, "default/box")
			for i := range tt.fillB {
				c.put(t, c.b, fmt.Sprint("b", i))
			}
			// Once the leader has answered the list, b takes over.
			c.afterListOnA = func() { c.lead(c.bc, c.ac) }

			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{"--addr", c.bURL, "-v", "wait", "--for=ready", "box", "--timeout", "3s"},
				&env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr})
			got := stderr.String()
			if code != exitOK || !strings.Contains(got, "sandbox/default/box ready (Running)") {
				t.Errorf("exit %d, want 0 with box ready; stderr:\n%s", code, got)
			}
			// Listing again is the recovery; polling is for watches that
			// cannot stream at all.
			if !strings.Contains(got, "listing again") || strings.Contains(got, "polling") {
				t.Errorf("want the refused watch followed by a new list, not polling; stderr:\n%s", got)
			}
		})
	}
}

// twoStores is a leader a and a follower b, each over a store of its own.
type twoStores struct {
	a, b         *store.Store
	ac, bc       *testCluster
	aURL, bURL   string
	afterListOnA func()
}

func startTwoStores(t *testing.T) *twoStores {
	t.Helper()
	c := &twoStores{}
	open := func() *store.Store {
		st, err := store.Open(t.TempDir(), store.Options{NoSync: true, Now: func() time.Time { return storeEpoch }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	c.a, c.b = open(), open()
	c.ac, c.bc = &testCluster{self: "a"}, &testCluster{self: "b"}
	serve := func(st *store.Store, cl *testCluster, wrap func(http.Handler) http.Handler) string {
		srv := api.NewServer(api.Options{Store: st, Cluster: cl, Version: "test"})
		hs := httptest.NewServer(wrap(srv))
		t.Cleanup(func() {
			srv.Close()
			hs.Close()
		})
		return hs.URL
	}
	c.aURL = serve(c.a, c.ac, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
			if r.URL.Path == "/v1/sandboxes" && c.afterListOnA != nil {
				c.afterListOnA()
			}
		})
	})
	c.bURL = serve(c.b, c.bc, func(h http.Handler) http.Handler { return h })
	c.lead(c.ac, c.bc)
	return c
}

// lead makes the first cluster's instance the leader, as both see it.
func (c *twoStores) lead(leader, other *testCluster) {
	addr := map[string]string{"a": c.aURL, "b": c.bURL}[leader.self]
	leader.mu.Lock()
	leader.leader = api.Leader{ID: leader.self, Address: addr, Self: true}
	leader.mu.Unlock()
	other.mu.Lock()
	other.leader = api.Leader{ID: leader.self, Address: addr}
	other.mu.Unlock()
}

func (c *twoStores) put(t *testing.T, st *store.Store, name string) {
	t.Helper()
	sb := spec.Sandbox{Namespace: "default", Name: name, Spec: spec.Spec{
		Driver: spec.DriverDocker, Image: "alpine", Profile: spec.ProfileModerate, VCPUs: 1, MemoryMB: 512,
		Network: spec.NetworkNone, State: spec.StateRunning,
	}}
	if _, err := st.Apply(t.Context(), []store.Object{{Sandbox: sb}}, store.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *twoStores) ready(t *testing.T, st *store.Store, key string) {
	t.Helper()
	err := st.UpdateStatus(t.Context(), key, store.Status{Phase: store.PhaseRunning, ObservedGeneration: 1,
		Conditions: []store.Condition{{Type: "Ready", Status: store.ConditionTrue, Reason: "AllocationRunning"}}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGetWatchFollowsOneInstance is TestWaitFollowsOneInstance for get
// --watch: the watch from the leader's list must not be served from
// another store; it lists again there and shows what that store holds.
func TestGetWatchFollowsOneInstance(t *testing.T) {
	c := startTwoStores(t)
	c.put(t, c.a, "box")
	for i := range 5 {
		c.put(t, c.a, fmt.Sprint("a", i))
	}
	c.put(t, c.b, "box")
	c.ready(t, c.b, "default/box")
	c.afterListOnA = func() { c.lead(c.bc, c.ac) }

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--addr", c.bURL, "-v", "get", "--watch"}, &env{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr})
	}()
	// box shows Running once the second store is listed.
	for !strings.Contains(stdout.String(), "Running") && ctx.Err() == nil {
		select {
		case <-stdout.wrote:
		case <-ctx.Done():
		}
	}
	cancel()
	<-done
	if !strings.Contains(stdout.String(), "Running") || !strings.Contains(stderr.String(), "listing again") {
		t.Errorf("get --watch did not list again on the store that took over:\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
}
