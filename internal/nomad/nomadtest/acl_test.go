package nomadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/nomad/api"
)

// TestConformanceACLReplay replays the ACL session of more/ 300-366 in
// recorded order against a server with ACLs on and not yet bootstrapped:
// the bootstrap, the policies and tokens it creates, and then every
// allowed and denied request of the limited tokens.
func TestConformanceACLReplay(t *testing.T) {
	// Job, allocation and evaluation bodies are encoded from the api
	// structs, in their key order (see doc.go), so those compare by keys
	// and selected fields, as the other job conformance tests do; the
	// rest, ACL bodies, variables, locks and errors, compare exactly.
	keys := func(check bodyCheck, skip []string, fields ...string) replayStep {
		return replayStep{replayCase: replayCase{body: check, skipKeys: skip, fields: fields}, bindIndex: true}
	}
	checks := map[string]replayStep{
		// The ACL agent's RPC port was 4657.
		"302": {replayCase: replayCase{body: bodyDigits}},
		"310": keys(bodyKeys, nil, "Warnings", "KnownLeader"),
		"311": keys(bodyKeysSuper, apiJobKeysMissing, "ID", "Namespace", "Status", "Version", "Stop", "Meta"),
		"312": keys(bodyKeysSuper, []string{"AllocatedResources"},
			"0.ClientStatus", "0.DesiredStatus", "0.JobVersion", "0.Name", "0.TaskGroup"),
		"313": keys(bodyKeysSuper, nil, "0.Status", "0.TriggeredBy", "0.JobID", "0.Type", "0.PlanAnnotations.DesiredTGUpdates"),
		"314": keys(bodyKeys, nil, "Versions.0.Version", "Diffs", "Versions.0.ID"),
		"316": keys(bodyKeysSuper, []string{"SharedResources", "SigningKeyID",
			"AllocatedResources", "Metrics", "NetworkStatus", "Resources", "TaskResources"},
			"ClientStatus", "DesiredStatus", "JobVersion", "Name", "TaskGroup", "Job.ID"),
		// The agent planned the identical spec of the running batch job as
		// an in-place update, a quirk seen only on this agent; this server
		// plans it as ignore, as the agent without ACLs did (more/ 516).
		"317": keys(bodyKeys, nil, "Diff.Type", "Diff.TaskGroups.0.Type", "FailedTGAllocs", "CreatedEvals"),
		"337": keys(bodyKeysSuper, apiJobKeysMissing, "ID", "Namespace", "Status"),
		"338": keys(bodyIDs, nil),
		"352": keys(bodyIDs, nil),
		"362": keys(bodyKeys, nil, "VolumeEvalID", "VolumeEvalIndex"),
		"363": keys(bodyKeys, nil, "VolumeEvalID", "VolumeEvalIndex"),
	}
	replaySession(t, "3[0-6]?-*.http", Options{ACLs: true}, nil, checks)
}

// aclFixture is a server with ACLs, the policies of the recorded session,
// the acl-sleep job running, and a token per policy.
type aclFixture struct {
	*fixture
	mgmt, limited, locks string
}

const (
	recordedMgmtSecret = "0610cbf8-a1c5-2c28-3b73-d0aeafcfa305"
	sandboxSubmitRules = "namespace \"default\" {\n  capabilities = [\"submit-job\", \"read-job\"]\n}\n"
	locksRWRules       = "namespace \"default\" {\n  capabilities = [\"submit-job\", \"read-job\", \"list-jobs\"]\n  variables {\n    path \"locks/*\" {\n      capabilities = [\"write\", \"read\", \"list\", \"destroy\"]\n    }\n  }\n}\n"
)

func newACLFixture(t *testing.T, f *fixture) *aclFixture {
	t.Helper()
	af := &aclFixture{fixture: f, mgmt: recordedMgmtSecret}
	for name, rules := range map[string]string{"sandbox-submit": sandboxSubmitRules, "locks-rw": locksRWRules} {
		if err := f.srv.SetACLPolicy(name, rules); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if af.limited, err = f.srv.CreateACLToken("sandbox-controller", "sandbox-submit"); err != nil {
		t.Fatal(err)
	}
	if af.locks, err = f.srv.CreateACLToken("locks-client", "locks-rw"); err != nil {
		t.Fatal(err)
	}
	job := loadJob(t, "agentkernel-sleep-raw")
	job.ID, job.Name = ptr("acl-sleep"), ptr("acl-sleep")
	if _, _, err := f.srv.RunJob(job); err != nil {
		t.Fatal(err)
	}
	return af
}

// TestConformanceACLEventStreams compares event streams with the recorded
// ones (more/ 321-325): an allowed stream sends `{}` at once and then only
// its topic; a denied one answers 200 with the stream headers, sends not
// one byte and closes, here after exactly deniedStreamClose (326).
func TestConformanceACLEventStreams(t *testing.T) {
	cases := []struct {
		fact  string
		token func(af *aclFixture) string
		topic string // of every event line; "" for a denied stream
	}{
		{"more/321", func(af *aclFixture) string { return af.limited }, "Job"},
		{"more/322", func(*aclFixture) string { return "" }, ""},
		{"more/323", func(af *aclFixture) string { return af.limited }, "Allocation"},
		{"more/324", func(af *aclFixture) string { return af.limited }, ""},
		{"more/325", func(af *aclFixture) string { return af.mgmt }, "Job"},
	}
	for _, tc := range cases {
		t.Run(tc.fact, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sc := loadStream(t, tc.fact)
				af := newACLFixture(t, newPipeFixture(t, Options{ACLToken: recordedMgmtSecret}))
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, af.base+sc.target, nil)
				if tok := tc.token(af); tok != "" {
					req.Header.Set("X-Nomad-Token", tok)
				}
				start := time.Now()
				resp, err := af.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != sc.status {
					t.Errorf("status %d, recorded %d", resp.StatusCode, sc.status)
				}
				for _, h := range []string{"Cache-Control", "Content-Type", "Vary"} {
					if got, want := resp.Header.Get(h), sc.headers.Get(h); got != want {
						t.Errorf("%s = %q, recorded %q", h, got, want)
					}
				}
				if !resp.Close {
					t.Error("no Connection: close")
				}
				if tc.topic == "" {
					body, err := io.ReadAll(resp.Body)
					if len(sc.lines) != 0 || len(body) != 0 || err != nil {
						t.Errorf("denied stream sent %q (%v); recorded %q", body, err, sc.lines)
					}
					if elapsed := time.Since(start); elapsed != deniedStreamClose {
						t.Errorf("denied stream closed after %v, want %v", elapsed, deniedStreamClose)
					}
					return
				}
				r := bufio.NewReader(resp.Body)
				first, err := r.ReadString('\n')
				if err != nil || first != "{}\n" || sc.lines[0] != "{}" {
					t.Fatalf("stream starts %q (%v), recorded %q", first, err, sc.lines[0])
				}
				l, err := r.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				var sl streamLine
				if err := json.Unmarshal([]byte(l), &sl); err != nil || len(sl.Events) == 0 {
					t.Fatalf("line %q: %v", l, err)
				}
				for _, e := range sl.Events {
					if e.Topic != tc.topic {
						t.Errorf("event of topic %s on a %s stream", e.Topic, tc.topic)
					}
				}
			})
		})
	}
}

// aclReq is one request of an enforcement table.
type aclReq struct {
	method, target, body string
}

func (af *aclFixture) send(t *testing.T, tok string, q aclReq) (*http.Response, []byte) {
	t.Helper()
	hdr := http.Header{}
	if tok != "" {
		hdr.Set("X-Nomad-Token", tok)
	}
	return af.do(t, q.method, q.target, []byte(q.body), hdr)
}

const sleepJobOther = `{"Job":{"ID":"acl-sleep","Namespace":"other","Type":"batch","TaskGroups":[{"Name":"main","Count":1,"Tasks":[{"Name":"sleep","Driver":"raw_exec","Config":{"command":"/bin/sleep"}}]}]}}`

// TestACLEnforcement checks what each policy allows, endpoint by
// endpoint, beyond the recorded session: the shorthand policies, globs,
// deny, variables paths, nodes, namespaces and the ACL endpoints.
func TestACLEnforcement(t *testing.T) {
	policies := map[string]string{
		"read-default":  `namespace "default" { policy = "read" }`,
		"write-default": `namespace "default" { policy = "write" }`,
		"deny-default":  `namespace "default" { policy = "deny" }`,
		"read-all":      `namespace "*" { policy = "read" }`,
		"sandbox-deny": `
namespace "*" { policy = "read" }
namespace "sandbox-*" { policy = "deny" }
`,
		"vars-read": `
namespace "default" {
  variables {
    path "locks/*" { capabilities = ["read"] }
  }
}`,
		"vars-destroy": `
namespace "default" {
  variables {
    path "locks/*" { capabilities = ["destroy"] }
  }
}`,
		"vars-deny-secret": `
namespace "default" {
  variables {
    path "locks/*" { capabilities = ["read", "write"] }
    path "locks/secret" { capabilities = ["deny"] }
  }
}`,
		"node-read":     `node { policy = "read" }`,
		"agent-only":    `agent { policy = "read" }`,
		"operator-read": `operator { policy = "read" }`,
	}
	const putLockVar = `{"Items":{"k":"v"}}`
	cases := []struct {
		name     string
		policies []string // "" for the anonymous caller, "management" for the management token
		req      aclReq
		status   int
	}{
		{"read policy lists jobs", []string{"read-default"}, aclReq{"GET", "/v1/jobs", ""}, 200},
		{"read policy reads a job", []string{"read-default"}, aclReq{"GET", "/v1/job/acl-sleep", ""}, 200},
		{"read policy cannot register", []string{"read-default"}, aclReq{"PUT", "/v1/jobs", sleepJob}, 403},
		{"read policy cannot stop", []string{"read-default"}, aclReq{"DELETE", "/v1/job/acl-sleep", ""}, 403},
		{"read policy grants no variables", []string{"read-default"}, aclReq{"GET", "/v1/var/locks/a", ""}, 403},
		{"read policy validates", []string{"read-default"}, aclReq{"PUT", "/v1/validate/job", sleepJob}, 200},
		{"write policy registers", []string{"write-default"}, aclReq{"PUT", "/v1/jobs", sleepJob}, 200},
		{"write policy plans", []string{"write-default"}, aclReq{"POST", "/v1/job/acl-sleep/plan", sleepJob}, 200},
		{"write policy purges", []string{"write-default"}, aclReq{"DELETE", "/v1/job/acl-sleep?purge=true", ""}, 200},
		{"deny wins over write", []string{"write-default", "deny-default"}, aclReq{"GET", "/v1/job/acl-sleep", ""}, 403},
		{"namespace glob reads another namespace", []string{"read-all"}, aclReq{"GET", "/v1/job/acl-sleep?namespace=other", ""}, 404},
		{"closest glob wins", []string{"sandbox-deny"}, aclReq{"GET", "/v1/job/x?namespace=sandbox-a", ""}, 403},
		{"farther glob applies elsewhere", []string{"sandbox-deny"}, aclReq{"GET", "/v1/job/acl-sleep", ""}, 200},
		{"list of all namespaces with list-jobs somewhere", []string{"read-default"}, aclReq{"GET", "/v1/jobs?namespace=*", ""}, 200},
		{"allocations need read-job", []string{"node-read"}, aclReq{"GET", "/v1/allocations", ""}, 403},
		{"evaluations with read-job", []string{"read-default"}, aclReq{"GET", "/v1/evaluations", ""}, 200},
		{"register into another namespace", []string{"write-default"}, aclReq{"PUT", "/v1/jobs", sleepJobOther}, 403},
		{"variables read of a missing variable", []string{"vars-read"}, aclReq{"GET", "/v1/var/locks/a", ""}, 404},
		{"variables read is not write", []string{"vars-read"}, aclReq{"PUT", "/v1/var/locks/a", putLockVar}, 403},
		{"variables read is not lock", []string{"vars-read"}, aclReq{"PUT", "/v1/var/locks/a?lock-acquire", "{}"}, 403},
		{"variables read is not renew", []string{"vars-read"}, aclReq{"PUT", "/v1/var/locks/a?lock-renew", `{"Lock":{"ID":"x"}}`}, 403},
		{"variables read outside the path", []string{"vars-read"}, aclReq{"GET", "/v1/var/sandboxes/a", ""}, 403},
		{"variables destroy deletes", []string{"vars-destroy"}, aclReq{"DELETE", "/v1/var/locks/a", ""}, 204},
		{"variables destroy does not read", []string{"vars-destroy"}, aclReq{"GET", "/v1/var/locks/a", ""}, 403},
		{"variables path deny wins", []string{"vars-deny-secret"}, aclReq{"GET", "/v1/var/locks/secret", ""}, 403},
		{"variables write", []string{"vars-deny-secret"}, aclReq{"PUT", "/v1/var/locks/b", putLockVar}, 200},
		{"nodes with node read", []string{"node-read"}, aclReq{"GET", "/v1/nodes", ""}, 200},
		{"nodes without node read", []string{"operator-read"}, aclReq{"GET", "/v1/nodes", ""}, 403},
		{"namespace read with a capability in it", []string{"read-default"}, aclReq{"GET", "/v1/namespace/default", ""}, 200},
		{"namespace read without one", []string{"read-default"}, aclReq{"GET", "/v1/namespace/other", ""}, 403},
		{"namespace write is management", []string{"write-default"}, aclReq{"PUT", "/v1/namespace/x", `{"Name":"x"}`}, 403},
		{"namespace write by management", []string{"management"}, aclReq{"PUT", "/v1/namespace/x", `{"Name":"x"}`}, 200},
		{"namespace delete is management", []string{"read-all"}, aclReq{"DELETE", "/v1/namespace/other", ""}, 403},
		{"own policy", []string{"agent-only"}, aclReq{"GET", "/v1/acl/policy/agent-only", ""}, 200},
		{"another policy", []string{"agent-only"}, aclReq{"GET", "/v1/acl/policy/read-all", ""}, 403},
		{"policy write is management", []string{"write-default"}, aclReq{"PUT", "/v1/acl/policy/p", `{"Name":"p","Rules":"node { policy = \"read\" }"}`}, 403},
		{"token create is management", []string{"write-default"}, aclReq{"POST", "/v1/acl/token", `{"Type":"client","Policies":["read-all"]}`}, 403},
		{"token self", []string{"agent-only"}, aclReq{"GET", "/v1/acl/token/self", ""}, 200},
		{"anonymous has no self", []string{""}, aclReq{"GET", "/v1/acl/token/self", ""}, 403},
		{"anonymous without an anonymous policy", []string{""}, aclReq{"GET", "/v1/job/acl-sleep", ""}, 403},
		{"anonymous lists no variables", []string{""}, aclReq{"GET", "/v1/vars", ""}, 200},
		{"management does anything", []string{"management"}, aclReq{"GET", "/v1/nodes", ""}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newLoopbackFixture(t, Options{ACLToken: recordedMgmtSecret})
			af := newACLFixture(t, f)
			resp, body := af.send(t, af.mgmt, aclReq{"PUT", "/v1/namespace/other", `{"Name":"other"}`})
			if resp.StatusCode != 200 {
				t.Fatalf("create namespace: %d %s", resp.StatusCode, body)
			}
			for name, rules := range policies {
				if err := f.srv.SetACLPolicy(name, rules); err != nil {
					t.Fatal(err)
				}
			}
			tok := ""
			switch tc.policies[0] {
			case "":
			case "management":
				tok = af.mgmt
			default:
				var err error
				if tok, err = f.srv.CreateACLToken("t", tc.policies...); err != nil {
					t.Fatal(err)
				}
			}
			resp, body = af.send(t, tok, tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: %d %.300s, want %d", tc.req.method, tc.req.target, resp.StatusCode, body, tc.status)
			}
			if resp.StatusCode == http.StatusForbidden && string(body) != "Permission denied" {
				t.Errorf("403 body %q", body)
			}
		})
	}
}

const sleepJob = `{"Job":{"ID":"acl-sleep","Type":"batch","Meta":{"agentkernel-managed":"true"},"TaskGroups":[{"Name":"main","Count":1,"Tasks":[{"Name":"sleep","Driver":"raw_exec","Config":{"command":"/bin/sleep","args":["1000"]},"Resources":{"CPU":50,"MemoryMB":32}}]}]}}`

// TestACLListsAreFiltered: lists keep what the caller may see.
func TestACLListsAreFiltered(t *testing.T) {
	// instant mode: the lists are read right after the register, and what
	// is checked is the ACL filter, not when the allocations appear.
	f := newLoopbackFixture(t, Options{Instant: true, ACLToken: recordedMgmtSecret})
	af := newACLFixture(t, f)
	for _, q := range []aclReq{
		{"PUT", "/v1/namespace/other", `{"Name":"other"}`},
		{"PUT", "/v1/jobs?namespace=other", sleepJob},
		{"PUT", "/v1/var/locks/a", `{"Items":{"k":"v"}}`},
		{"PUT", "/v1/var/sandboxes/a", `{"Items":{"k":"v"}}`},
	} {
		if resp, body := af.send(t, af.mgmt, q); resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", q.method, q.target, resp.StatusCode, body)
		}
	}
	readDefault := `namespace "default" { policy = "read" }`
	if err := f.srv.SetACLPolicy("read-default", readDefault); err != nil {
		t.Fatal(err)
	}
	tok, err := f.srv.CreateACLToken("reader", "read-default")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, tok, target string
		want              []string // Namespace/ID or Name or Path of each entry
	}{
		{"jobs of all namespaces", tok, "/v1/jobs?namespace=*", []string{"default/acl-sleep"}},
		{"jobs of all namespaces, management", af.mgmt, "/v1/jobs?namespace=*", []string{"default/acl-sleep", "other/acl-sleep"}},
		{"allocations of all namespaces", tok, "/v1/allocations?namespace=*", []string{"default/acl-sleep"}},
		{"evaluations of all namespaces", tok, "/v1/evaluations?namespace=*", []string{"default/acl-sleep"}},
		{"namespaces", tok, "/v1/namespaces", []string{"default"}},
		{"variables under a path", af.locks, "/v1/vars", []string{"locks/a"}},
		{"policies of a client", tok, "/v1/acl/policies", []string{"read-default"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := af.send(t, tc.tok, aclReq{"GET", tc.target, ""})
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			var entries []struct{ ID, JobID, Namespace, Name, Path string }
			if err := json.Unmarshal(body, &entries); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				switch {
				case e.Path != "":
					got = append(got, e.Path)
				case e.JobID != "":
					got = append(got, e.Namespace+"/"+e.JobID)
				case e.ID != "":
					got = append(got, e.Namespace+"/"+e.ID)
				default:
					got = append(got, e.Name)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestACLRoutesDenyByDefault sends a request to every route with a token
// whose policy grants nothing those routes need, and with an unknown
// token: each must be refused unless it is one of the few that any
// caller may use. A route added without an ACL check fails here.
func TestACLRoutesDenyByDefault(t *testing.T) {
	// instant mode: the routes need the job's allocation and evaluation
	// the moment the job is registered; placement timing is not the point.
	f := newLoopbackFixture(t, Options{Instant: true, ACLToken: recordedMgmtSecret})
	af := newACLFixture(t, f)
	if err := f.srv.SetACLPolicy("agent-only", `agent { policy = "read" }`); err != nil {
		t.Fatal(err)
	}
	tok, err := f.srv.CreateACLToken("agent-only", "agent-only")
	if err != nil {
		t.Fatal(err)
	}
	allocID := firstAllocID(f, "acl-sleep")
	f.srv.mu.Lock()
	evalID := f.srv.jobs[nsKey{"default", "acl-sleep"}].evals[0].e.ID
	f.srv.mu.Unlock()
	open := map[string]int{
		"GET /v1/agent/health":   200,
		"GET /v1/status/leader":  200,
		"POST /v1/acl/bootstrap": 400, // done already
		"GET /v1/vars":           200, // filtered to nothing
		"GET /v1/namespaces":     200, // filtered to nothing
		"GET /v1/acl/policies":   200, // filtered to the token's own
		"GET /v1/acl/token/self": 200,
		// Exec's denial is a close frame after the upgrade (TestExecACL);
		// without one the handler finds no WebSocket.
		"GET /v1/client/allocation/{id}/exec": 500,
		// cat and readat answer every error 200, the denial too.
		"GET /v1/client/fs/cat/{id}":    200,
		"GET /v1/client/fs/readat/{id}": 200,
	}
	reqs := []aclReq{
		{"GET", "/v1/jobs", ""}, {"PUT", "/v1/jobs", sleepJob},
		{"GET", "/v1/job/acl-sleep", ""}, {"PUT", "/v1/job/acl-sleep", sleepJob}, {"DELETE", "/v1/job/acl-sleep", ""},
		{"GET", "/v1/job/acl-sleep/allocations", ""}, {"GET", "/v1/job/acl-sleep/evaluations", ""},
		{"GET", "/v1/job/acl-sleep/summary", ""}, {"GET", "/v1/job/acl-sleep/versions", ""},
		{"GET", "/v1/job/acl-sleep/deployment", ""}, {"GET", "/v1/job/acl-sleep/deployments", ""},
		{"GET", "/v1/deployments", ""}, {"GET", "/v1/deployment/" + evalID, ""}, {"GET", "/v1/deployment/allocations/" + evalID, ""},
		{"POST", "/v1/job/acl-sleep/plan", sleepJob}, {"PUT", "/v1/validate/job", sleepJob},
		{"GET", "/v1/allocation/" + allocID, ""}, {"GET", "/v1/allocations", ""},
		{"GET", "/v1/evaluation/" + evalID, ""}, {"GET", "/v1/evaluations", ""},
		{"GET", "/v1/nodes", ""}, {"GET", "/v1/node/" + f.srv.nodeID, ""},
		{"GET", "/v1/node/pools", ""}, {"PUT", "/v1/node/pools", `{"Name":"x"}`},
		{"GET", "/v1/node/pool/default", ""}, {"DELETE", "/v1/node/pool/x", ""},
		{"GET", "/v1/namespaces", ""}, {"POST", "/v1/namespace", `{"Name":"x"}`},
		{"GET", "/v1/namespace/default", ""}, {"PUT", "/v1/namespace/x", `{"Name":"x"}`}, {"DELETE", "/v1/namespace/x", ""},
		{"GET", "/v1/vars", ""}, {"GET", "/v1/var/locks/a", ""}, {"PUT", "/v1/var/locks/a", `{"Items":{"k":"v"}}`},
		{"DELETE", "/v1/var/locks/a", ""}, {"PUT", "/v1/var/locks/a?lock-acquire", "{}"},
		{"PUT", "/v1/var/locks/a?lock-renew", `{"Lock":{"ID":"x"}}`}, {"PUT", "/v1/var/locks/a?lock-release", `{"Lock":{"ID":"x"}}`},
		{"GET", "/v1/status/leader", ""}, {"GET", "/v1/agent/health", ""},
		{"POST", "/v1/acl/bootstrap", ""}, {"GET", "/v1/acl/policies", ""},
		{"GET", "/v1/acl/policy/sandbox-submit", ""}, {"PUT", "/v1/acl/policy/p", `{"Rules":"node { policy = \"read\" }"}`},
		{"DELETE", "/v1/acl/policy/sandbox-submit", ""}, {"GET", "/v1/acl/tokens", ""},
		{"POST", "/v1/acl/token", `{"Type":"management"}`}, {"GET", "/v1/acl/token/self", ""},
		{"GET", "/v1/acl/token/00000000-0000-0000-0000-000000000000", ""},
		{"DELETE", "/v1/acl/token/00000000-0000-0000-0000-000000000000", ""},
		{"GET", "/v1/event/stream", ""},
		{"GET", "/v1/client/allocation/" + allocID + "/exec", ""},
		{"GET", "/v1/client/fs/ls/" + allocID + "?path=/", ""}, {"GET", "/v1/client/fs/stat/" + allocID + "?path=/", ""},
		{"GET", "/v1/client/fs/cat/" + allocID + "?path=/x", ""}, {"GET", "/v1/client/fs/readat/" + allocID + "?path=/x&offset=0", ""},
		{"GET", "/v1/client/fs/stream/" + allocID + "?path=/x", ""}, {"GET", "/v1/client/fs/logs/" + allocID + "?task=sleep&type=stdout", ""},
	}
	// Every route of the mux is covered by a request above.
	covered := map[string]bool{}
	for _, q := range reqs {
		req, _ := http.NewRequest(q.method, f.base+q.target, nil)
		_, pattern := f.srv.mux.Handler(req)
		covered[pattern] = true
	}
	for _, rt := range f.srv.apiRoutes() {
		if !covered[rt.pattern] {
			t.Errorf("route %s has no request in this test", rt.pattern)
		}
	}
	for _, q := range reqs {
		if q.target == "/v1/event/stream" {
			continue // a denied stream is a 200; TestConformanceACLEventStreams covers it
		}
		req, _ := http.NewRequest(q.method, f.base+q.target, nil)
		_, pattern := f.srv.mux.Handler(req)
		for _, who := range []struct{ name, tok string }{{"agent-only token", tok}, {"unknown token", "00000000-1111-2222-3333-444444444444"}} {
			want, isOpen := open[q.method+" "+pattern]
			if !isOpen || who.name == "unknown token" && !openPath(q.target) {
				want = http.StatusForbidden
			}
			resp, body := af.send(t, who.tok, q)
			if resp.StatusCode != want {
				t.Errorf("%s %s with the %s: %d %.200s, want %d", q.method, q.target, who.name, resp.StatusCode, body, want)
			}
		}
	}
}

// TestACLAnonymousPolicy: a request without a token holds the policy
// named "anonymous", as Nomad's anonymous token does.
func TestACLAnonymousPolicy(t *testing.T) {
	f := newLoopbackFixture(t, Options{ACLToken: recordedMgmtSecret})
	af := newACLFixture(t, f)
	if resp, _ := af.send(t, "", aclReq{"GET", "/v1/job/acl-sleep", ""}); resp.StatusCode != 403 {
		t.Fatalf("before the anonymous policy: %d", resp.StatusCode)
	}
	if err := f.srv.SetACLPolicy("anonymous", `namespace "default" { policy = "read" }`); err != nil {
		t.Fatal(err)
	}
	if resp, body := af.send(t, "", aclReq{"GET", "/v1/job/acl-sleep", ""}); resp.StatusCode != 200 {
		t.Errorf("with the anonymous policy: %d %s", resp.StatusCode, body)
	}
	if resp, _ := af.send(t, "", aclReq{"PUT", "/v1/jobs", sleepJob}); resp.StatusCode != 403 {
		t.Errorf("anonymous register: %d, want 403", resp.StatusCode)
	}
	resp, body := af.send(t, af.mgmt, aclReq{"GET", "/v1/acl/tokens", ""})
	if resp.StatusCode != 200 || strings.Contains(string(body), "SecretID") || !strings.Contains(string(body), `"Name":"locks-client"`) {
		t.Errorf("token list: %d %s", resp.StatusCode, body)
	}
}

// TestACLRegisterOrder: a register is validated and its namespace looked
// up before the ACL check (more/ 361, 365, 366).
func TestACLRegisterOrder(t *testing.T) {
	f := newLoopbackFixture(t, Options{ACLToken: recordedMgmtSecret})
	af := newACLFixture(t, f)
	invalid := `{"Job":{"ID":"bad job","Namespace":"other","TaskGroups":[]}}`
	cases := []struct {
		name   string
		req    aclReq
		status int
		text   string
	}{
		{"invalid job", aclReq{"PUT", "/v1/jobs", invalid}, 500, ""},
		{"nonexistent namespace", aclReq{"PUT", "/v1/jobs", sleepJobOther}, 500,
			"1 error occurred:\n\t* job \"acl-sleep\" is in nonexistent namespace \"other\"\n\n"},
		{"malformed body", aclReq{"PUT", "/v1/jobs", "{"}, 400, ""},
	}
	for _, tc := range cases {
		resp, body := af.send(t, af.limited, tc.req)
		if resp.StatusCode != tc.status || tc.text != "" && string(body) != tc.text {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, body, tc.status, tc.text)
		}
	}
	if resp, body := af.send(t, af.mgmt, aclReq{"PUT", "/v1/namespace/other", `{"Name":"other"}`}); resp.StatusCode != 200 {
		t.Fatalf("create namespace: %d %s", resp.StatusCode, body)
	}
	if resp, _ := af.send(t, af.limited, aclReq{"PUT", "/v1/jobs", sleepJobOther}); resp.StatusCode != 403 {
		t.Errorf("register into an existing namespace without rights: %d, want 403", resp.StatusCode)
	}
}

// TestACLPolicyParse covers the policy language: shorthand expansion and
// the diagnostics of invalid policies, each pointing at its attribute.
func TestACLPolicyParse(t *testing.T) {
	t.Run("expansion", func(t *testing.T) {
		pr, diags := parsePolicy("p", `
namespace "default" {
  policy       = "read"
  capabilities = ["submit-job"]
  variables {
    path "a/*" { capabilities = ["read"] }
    path "b" { capabilities = ["deny", "write"] }
  }
}
node { policy = "read" }
agent { policy = "write" }
operator { policy = "write" }
`)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		got := string(mustJSON(pr.rulesJSON("")))
		for _, want := range []string{
			`"Capabilities":["submit-job","list-jobs","parse-job","read-job",`,
			`{"Capabilities":["read","list"],"PathSpec":"a/*"}`,
			`{"Capabilities":["deny"],"PathSpec":"b"}`,
			`"Node":{"Policy":"read"}`, `"Agent":{"Policy":"write"}`,
			`"Operator":{"Capabilities":["snapshot-save","license-read"],"Policy":"write"}`,
		} {
			if !strings.Contains(got, want) {
				t.Errorf("RulesJSON %s lacks %s", got, want)
			}
		}
		a := compileACL([]*policyRules{pr})
		if !a.allowNs("default", capSubmitJob) || !a.allowNs("default", capListJobs) || a.allowNs("default", "alloc-exec") ||
			!a.allowVar("default", "a/x/y", varCapList) || a.allowVar("default", "b", varCapWrite) || !a.nodeRead() {
			t.Errorf("compiled %+v", a)
		}
	})
	cases := []struct {
		name, rules, summary string
		line                 int
	}{
		{"bad namespace policy", "namespace \"default\" {\n  policy = \"admin\"\n}", "Invalid namespace policy", 2},
		{"bad capability", "namespace \"default\" {\n  capabilities = [\"read-jobs\"]\n}", "Invalid namespace capability", 2},
		{"bad namespace name", "namespace \"a.b\" {\n  policy = \"read\"\n}", "Invalid namespace name", 1},
		{"variables without paths", "namespace \"default\" {\n  variables {\n  }\n}", "Invalid variables rule", 2},
		{"bad variable capability", "namespace \"default\" {\n  variables {\n    path \"a\" { capabilities = [\"admin\"] }\n  }\n}", "Invalid variable capability", 3},
		{"leading slash", "namespace \"default\" {\n  variables {\n    path \"/a\" { capabilities = [\"read\"] }\n  }\n}", "Invalid variable path", 3},
		{"bad node policy", "node {\n  policy = \"all\"\n}", "Invalid policy", 2},
		{"nothing but a comment", "# no rules\n", "Empty policy", 1},
		{"unknown block", "nodes {\n  policy = \"read\"\n}", "Unsupported block type", 1},
		{"syntax", "namespace \"default\" {", "Unclosed configuration block", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := parsePolicy("p", tc.rules)
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			d := diags[0]
			if d.Summary != tc.summary || d.Subject == nil || d.Subject.Start.Line != tc.line {
				t.Errorf("diagnostic %q at %v, want %q on line %d", d.Summary, d.Subject, tc.summary, tc.line)
			}
		})
	}
}

// TestACLMethods covers the Go methods: errors, and tokens that work
// through the api client.
func TestACLMethods(t *testing.T) {
	off := New(Options{})
	if err := off.SetACLPolicy("p", `node { policy = "read" }`); !errors.Is(err, ErrACLsDisabled) {
		t.Errorf("SetACLPolicy without ACLs: %v", err)
	}
	if _, err := off.CreateACLToken("t", "p"); err == nil {
		t.Error("CreateACLToken without ACLs: no error")
	}

	f := newLoopbackFixture(t, Options{ACLs: true})
	var diags hcl.Diagnostics
	if err := f.srv.SetACLPolicy("p", `node { policy = "all" }`); !errors.As(err, &diags) || len(diags) != 1 {
		t.Errorf("invalid policy: %v", err)
	}
	if err := f.srv.SetACLPolicy("bad name", `node { policy = "read" }`); err == nil {
		t.Error("invalid policy name: no error")
	}
	if _, err := f.srv.CreateACLToken("t", "missing"); err == nil {
		t.Error("token with a missing policy: no error")
	}
	if _, err := f.srv.CreateACLToken("t"); err == nil {
		t.Error("token without policies: no error")
	}

	// Bootstrap through the api client, then manage policies and tokens
	// with it.
	boot, _, err := f.api.ACLTokens().Bootstrap(nil)
	if err != nil || boot.Type != "management" || boot.Name != "Bootstrap Token" || !boot.Global {
		t.Fatalf("bootstrap: %+v %v", boot, err)
	}
	if _, _, err := f.api.ACLTokens().Bootstrap(nil); err == nil || !strings.Contains(err.Error(), "ACL bootstrap already done (reset index: 11)") {
		t.Errorf("second bootstrap: %v", err)
	}
	mgmt, _ := api.NewClient(&api.Config{Address: f.base, SecretID: boot.SecretID, HttpClient: f.http})
	if _, err := mgmt.ACLPolicies().Upsert(&api.ACLPolicy{Name: "nodes", Rules: `node { policy = "read" }`}, nil); err != nil {
		t.Fatalf("upsert policy: %v", err)
	}
	created, _, err := mgmt.ACLTokens().Create(&api.ACLToken{Name: "n", Type: "client", Policies: []string{"nodes"}}, nil)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	secret, err := f.srv.CreateACLToken("n2", "nodes")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{created.SecretID, secret} {
		c, _ := api.NewClient(&api.Config{Address: f.base, SecretID: s, HttpClient: f.http})
		self, _, err := c.ACLTokens().Self(nil)
		if err != nil || self.SecretID != s || self.Policies[0] != "nodes" {
			t.Errorf("self: %+v %v", self, err)
		}
		if _, _, err := c.Nodes().List(nil); err != nil {
			t.Errorf("nodes with node read: %v", err)
		}
		if _, _, err := c.Jobs().List(nil); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("jobs without list-jobs: %v", err)
		}
	}
	p, _, err := mgmt.ACLPolicies().Info("nodes", nil)
	if err != nil || p.Rules != `node { policy = "read" }` {
		t.Errorf("policy info: %+v %v", p, err)
	}
}

// TestACLBootstrap covers the bootstrap endpoint in each mode.
func TestACLBootstrap(t *testing.T) {
	cases := []struct {
		name   string
		opts   Options
		body   string
		status int
		text   string
	}{
		{"ACLs off", Options{}, "", 400, "ACL support disabled"},
		{"bootstrapped by Options.ACLToken", Options{ACLToken: "s"}, "", 400, "ACL bootstrap already done (reset index: 11)"},
		{"operator-chosen secret", Options{ACLs: true}, `{"BootstrapSecret":"2b778dd9-f5f1-6f29-b4b4-9a5fa948757a"}`, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newLoopbackFixture(t, tc.opts)
			resp, body := f.do(t, http.MethodPost, "/v1/acl/bootstrap", []byte(tc.body), nil)
			if resp.StatusCode != tc.status || tc.text != "" && string(body) != tc.text {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, body, tc.status, tc.text)
			}
			if tc.status == 200 && !strings.Contains(string(body), `"SecretID":"2b778dd9-f5f1-6f29-b4b4-9a5fa948757a"`) {
				t.Errorf("body %s", body)
			}
		})
	}
}
