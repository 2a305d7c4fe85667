package nomadtest

import (
	"net/http"
	"slices"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// Node pools answer as a Nomad 2.0.5 dev agent did: created through
// api.NodePools().Register (PUT /v1/node/pools), listed with the two
// built-in pools, read by name, and refused with the agent's status codes
// and texts where it refuses them.
func TestNodePoolsAnswerAsTheAgent(t *testing.T) {
	f := newLoopbackFixture(t, Options{SchedulingDelay: -1})
	pools := f.api.NodePools()
	if _, err := pools.Register(&api.NodePool{Name: "sandboxes", Description: "agentkernel"}, nil); err != nil {
		t.Fatalf("register node pool sandboxes: %v", err)
	}
	// Registering it again is an update, as on the agent.
	if _, err := pools.Register(&api.NodePool{Name: "sandboxes"}, nil); err != nil {
		t.Fatalf("register node pool sandboxes again: %v", err)
	}
	list, _, err := pools.List(nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list {
		names = append(names, p.Name)
	}
	if want := []string{"all", "default", "sandboxes"}; !slices.Equal(names, want) {
		t.Errorf("node pools %v, want %v", names, want)
	}
	got, _, err := pools.Info("sandboxes", nil)
	if err != nil || got.Name != "sandboxes" || got.CreateIndex == 0 || got.ModifyIndex <= got.CreateIndex {
		t.Errorf("node pool info: %+v %v; want sandboxes, updated after it was created", got, err)
	}

	for _, tc := range []struct {
		name, method, target, body string
		status                     int
		text                       string
	}{
		{"unknown pool", "GET", "/v1/node/pool/missing", "", 404, "node pool not found"},
		{"name the agent refuses", "PUT", "/v1/node/pools", `{"Name":"bad name"}`, 400,
			"invalid node pool \"bad name\": 1 error occurred:\n\t* invalid name \"bad name\", must match regex ^[a-zA-Z0-9-_]{1,128}$\n\n"},
		{"malformed body", "PUT", "/v1/node/pools", `xx`, 400, "invalid character 'x' looking for beginning of value"},
		{"built-in pool modified", "PUT", "/v1/node/pools", `{"Name":"all"}`, 400, `modifying node pool "all" is not allowed`},
		{"built-in pool all deleted", "DELETE", "/v1/node/pool/all", "", 500, `deleting node pool "all" is not allowed`},
		{"pool with the node deleted", "DELETE", "/v1/node/pool/default", "", 500,
			"1 error occurred:\n\t* node pool \"default\" has nodes in regions: [global]\n\n"},
		{"unknown pool deleted", "DELETE", "/v1/node/pool/missing", "", 500, "node pool missing not found"},
		{"wrong method", "PATCH", "/v1/node/pools", "", 405, "Invalid method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			resp, b := f.do(t, tc.method, tc.target, body, nil)
			if resp.StatusCode != tc.status || string(b) != tc.text {
				t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.target, resp.StatusCode, b, tc.status, tc.text)
			}
		})
	}

	// A pool a live job names cannot be deleted; once the job is purged it can.
	job := loadJob(t, "agentkernel-sleep-raw")
	job.NodePool = ptr("sandboxes")
	f.register(t, job)
	resp, b := f.do(t, "DELETE", "/v1/node/pool/sandboxes", nil, nil)
	if want := "1 error occurred:\n\t* node pool \"sandboxes\" has non-terminal jobs in regions: [global]\n\n"; resp.StatusCode != http.StatusInternalServerError || string(b) != want {
		t.Errorf("delete a pool in use: %d %q, want 500 %q", resp.StatusCode, b, want)
	}
	if _, _, err := f.api.Jobs().Deregister(*job.ID, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pools.Delete("sandboxes", nil); err != nil {
		t.Errorf("delete an unused pool: %v", err)
	}
	if _, _, err := pools.Info("sandboxes", nil); err == nil {
		t.Error("the deleted pool is still there")
	}
}
