package main

import (
	"bytes"
	"testing"
	"time"
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
