//go:build realnomad

package nomad

// Run against a real Nomad agent (make test-nomad): NOMAD_ADDR names it,
// and the tests skip without it.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Every rendering registered on a real agent reads back without drift:
// the fields compared only when set (user, volumes, artifacts, reserved
// ports, templates) are not filled in by the agent.
func TestRealNomadNoDriftAfterRegister(t *testing.T) {
	if os.Getenv("NOMAD_ADDR") == "" {
		t.Skip("NOMAD_ADDR is not set: no real Nomad agent to test against")
	}
	c, err := NewClient(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.API().Namespaces().Register(&api.Namespace{Name: "agents"}, nil); err != nil {
		t.Fatalf("create namespace agents (the agent needs ACLs off or a management token): %v", err)
	}
	// A real agent refuses a job in a node pool it does not have.
	if _, err := c.API().NodePools().Register(&api.NodePool{Name: "sandboxes"}, nil); err != nil {
		t.Fatalf("create node pool sandboxes: %v", err)
	}
	inputs, _ := filepath.Glob(filepath.Join("testdata", "render", "*.hcl"))
	opts := testRenderOptions
	opts.Owner = "realnomad-test"
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			sb := loadSandbox(t, in)
			job, err := Render(&sb, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := c.Purge(cctx, sb.Namespace, sb.JobID()); err != nil {
					t.Errorf("purge: %v", err)
				}
			})
			if _, err := c.Register(ctx, job, 0); err != nil {
				t.Fatal(err)
			}
			live, err := c.Job(ctx, sb.Namespace, sb.JobID())
			if err != nil {
				t.Fatal(err)
			}
			if got := Drift(job, live); len(got) != 0 {
				t.Errorf("drift %v right after register; fields %v", got, FieldDiffs(job, live))
			}
		})
	}
}
