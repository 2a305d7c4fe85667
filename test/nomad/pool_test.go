//go:build realnomad

package nomad

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// poolItem is what `akctl get pools NAME -o json` shows of a pool.
type poolItem struct {
	Generation uint64
	Status     struct {
		ObservedGeneration      uint64
		Ready, Pending, Claimed int
	}
}

// TestRealNomadPool keeps a pool on a real agent and claims from it: the
// claimed sandbox's allocation runs the job's current version in Nomad,
// the claim wrote nothing to Nomad (the job's version and modify index
// are those from before it), the pool refills, and deleting the pool
// leaves the claimed sandbox running.
func TestRealNomadPool(t *testing.T) {
	t.Parallel()
	s := newSuite(t)
	c := s.startController(t.TempDir())
	pool := s.prefix + "-pool"
	decl := t.TempDir()
	src := fmt.Sprintf(`pool %q {
  size = 2
  sandbox {
    driver    = %q
    network   = "host"
    command   = ["/bin/sleep", "3600"]
    vcpus     = 0.1
    memory_mb = 32
  }
}
`, pool, s.driver)
	if err := os.WriteFile(filepath.Join(decl, "pool.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustAkctl("apply", "-f", decl, "-namespace", s.ns)
	readPool := func() poolItem {
		var p poolItem
		out := c.mustAkctl("get", "pools", pool, "-n", s.ns, "-o", "json")
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("get pools: %v\n%s", err, out)
		}
		return p
	}
	poolAt := func(ready, claimed int) func() (bool, string) {
		return func() (bool, string) {
			p := readPool()
			return p.Status.ObservedGeneration == p.Generation && p.Status.Ready == ready && p.Status.Claimed == claimed,
				fmt.Sprintf("%+v", p.Status)
		}
	}
	eventually(t, converge, "2 ready", poolAt(2, 0))

	out := c.mustAkctl("claim", pool, "-n", s.ns, "--ttl", "30m", "-o", "json")
	var claimed sandbox
	if err := json.Unmarshal([]byte(out), &claimed); err != nil {
		t.Fatalf("claim: %v\n%s", err, out)
	}
	if !claimed.ready() || claimed.Status.AllocID == "" {
		t.Fatalf("claimed %s is not Ready: %s", claimed.Name, out)
	}
	// The claim is a claim about Nomad: the allocation runs there, for
	// the job's current version, and the job was not written again.
	job, _, err := s.nomad.Jobs().Info(claimed.Status.JobID, s.q())
	if err != nil {
		t.Fatal(err)
	}
	alloc, _, err := s.nomad.Allocations().Info(claimed.Status.AllocID, s.q())
	if err != nil {
		t.Fatal(err)
	}
	if alloc.ClientStatus != api.AllocClientStatusRunning || *alloc.Job.Version != *job.Version {
		t.Errorf("claimed allocation %s: %s, version %d; job version %d", alloc.ID, alloc.ClientStatus, *alloc.Job.Version, *job.Version)
	}
	if *job.Version != 0 || claimed.Status.JobVersion == nil || *claimed.Status.JobVersion != 0 {
		t.Errorf("the claimed sandbox's job is at version %d (status says %v): the claim must not write the job", *job.Version, claimed.Status.JobVersion)
	}
	if got := c.mustAkctl("exec", "-n", s.ns, claimed.Name, "--", "sh", "-c", "echo claimed"); got != "claimed\n" {
		t.Errorf("exec in the claimed sandbox: %q", got)
	}

	eventually(t, converge, "refilled to 2 beside the claimed one", poolAt(2, 1))
	after, _, err := s.nomad.Jobs().Info(claimed.Status.JobID, s.q())
	if err != nil {
		t.Fatal(err)
	}
	if *after.JobModifyIndex != *job.JobModifyIndex {
		t.Errorf("the claimed sandbox's job was modified after the claim (index %d -> %d)", *job.JobModifyIndex, *after.JobModifyIndex)
	}

	// Deleting the pool deletes its unclaimed sandboxes; the claimed one
	// keeps running.
	c.mustAkctl("delete", "-f", decl, "-n", s.ns, "--wait")
	jobs := s.jobs()
	var live []string
	for _, j := range jobs {
		if !j.Stop && strings.HasPrefix(j.ID, "agentkernel-"+pool+"-") {
			live = append(live, j.ID)
		}
	}
	if len(live) != 1 || live[0] != claimed.Status.JobID {
		t.Errorf("after deleting the pool, live jobs %v; want only the claimed %s", live, claimed.Status.JobID)
	}
	c.mustAkctl("delete", "-n", s.ns, claimed.Name, "--wait")
}
