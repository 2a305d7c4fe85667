//go:build realnomad

package nomad

// Run against a real Nomad agent (make test-nomad): NOMAD_ADDR names it,
// and the tests skip without it. Their jobs' names carry a random part
// (agentkernel-real-*, not-a-sandbox-<hex>), are created only if
// absent, and only what a test created is purged.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	prefix := "real-" + randomHex(t)
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			sb := loadSandbox(t, in)
			sb.Name = prefix + "-" + sb.Name
			job, err := Render(&sb, opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Register(ctx, job, 0); err != nil {
				t.Fatal(err)
			}
			purgeAtCleanup(t, c, sb.Namespace, sb.JobID())
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

// The relist's one allocation request, with its filter and paging, as a
// real agent answers it.
func TestRealNomadListWantedAllocs(t *testing.T) {
	if os.Getenv("NOMAD_ADDR") == "" {
		t.Skip("NOMAD_ADDR is not set: no real Nomad agent to test against")
	}
	c, err := NewClient(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	sb := loadSandbox(t, filepath.Join("testdata", "render", "raw-exec.hcl"))
	suffix := randomHex(t)
	sb.Name = "real-allocs-" + suffix
	sb.Spec.Network = "host" // group network mode none fails on some hosts
	opts := testRenderOptions
	opts.Owner, opts.AllowRawExec = "realnomad-allocs", true
	job, err := Render(&sb, opts)
	if err != nil {
		t.Fatal(err)
	}
	otherID := "not-a-sandbox-" + suffix
	other := api.NewServiceJob(otherID, otherID, "global", 50)
	other.AddTaskGroup(api.NewTaskGroup("g", 1).AddTask(api.NewTask("t", "raw_exec").
		SetConfig("command", "/bin/sleep").SetConfig("args", []string{"3600"})))
	other.TaskGroups[0].Networks = []*api.NetworkResource{{Mode: "host"}}
	for _, j := range []*api.Job{job, other} {
		ns := "default"
		if j.Namespace != nil {
			ns = *j.Namespace
		}
		if _, err := c.Register(ctx, j, 0); err != nil {
			t.Fatal(err)
		}
		purgeAtCleanup(t, c, ns, *j.ID)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		jobs, _, err := c.ListOwned(ctx, "*", opts.Owner)
		if err != nil {
			t.Fatal(err)
		}
		allocs, err := c.ListWantedAllocs(ctx, "*", jobs)
		if err != nil {
			t.Fatalf("list allocations with the relist's filter: %v", err)
		}
		// Both jobs placed: the agent itself must leave the other out. The
		// cluster may run other jobs, agentkernel ones among them: only
		// these two jobs' allocations are looked at.
		placed := 0
		for _, id := range []string{sb.JobID(), otherID} {
			as, _, err := c.API().Jobs().Allocations(id, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(as) > 0 {
				placed++
			}
		}
		filtered, _, err := c.API().Allocations().List(&api.QueryOptions{Namespace: "*",
			Filter: `JobID matches "^agentkernel-" and DesiredStatus == "run"`})
		if err != nil {
			t.Fatalf("the agent refused the relist's filter: %v", err)
		}
		if placed == 2 && len(allocs) == 1 && allocs[0].JobID == sb.JobID() && allocs[0].DesiredStatus == api.AllocDesiredStatusRun {
			var ours, other int
			for _, a := range filtered {
				switch a.JobID {
				case sb.JobID():
					ours++
				case otherID:
					other++
				}
			}
			if ours != 1 || other != 0 {
				t.Errorf("the agent's filtered list holds %d allocations of %s and %d of %s; want 1 and 0", ours, sb.JobID(), other, otherID)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("allocations %+v; want the one of %s and none of %s", allocs, sb.JobID(), otherID)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func randomHex(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// purgeAtCleanup purges a job the test created; it runs when the test's
// context has ended.
func purgeAtCleanup(t *testing.T, c *Client, ns, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Purge(ctx, ns, id); err != nil {
			t.Errorf("purge %s: %v", id, err)
		}
	})
}
