package reconcile

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

const poolHCL = `pool "py" {
  size      = %d
  claim_ttl = "1h"
  sandbox {
    driver    = "exec"
    command   = ["/bin/sleep", "infinity"]
    memory_mb = %d
  }
}
`

// poolStatus reads the pool's status counts.
func (h *harness) poolCounts(key string) store.PoolCounts {
	rec, err := h.st.Get(h.t.Context(), key)
	if err != nil || rec.Status.Pool == nil || rec.Status.ObservedGeneration != rec.Generation {
		return store.PoolCounts{Ready: -1}
	}
	return *rec.Status.Pool
}

// poolMembers lists the live sandboxes of pool "py".
func (h *harness) poolMembers() (unclaimed, claimed []store.Record) {
	recs, _, err := h.st.List(h.t.Context(), store.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, r := range recs {
		if r.Member == nil || r.Deleting() {
			continue
		}
		if r.Member.Claimed() {
			claimed = append(claimed, r)
		} else {
			unclaimed = append(unclaimed, r)
		}
	}
	return unclaimed, claimed
}

// ownedJobs lists the live Nomad jobs of this controller, by ID.
func (h *harness) ownedJobs() []string {
	stubs, _, err := h.nc.ListOwned(h.t.Context(), "*", h.st.StoreID())
	if err != nil {
		h.t.Fatal(err)
	}
	var ids []string
	for _, s := range stubs {
		if s.Stop || s.Status == "dead" {
			continue
		}
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

func (h *harness) poolSteady(size, claimed int) func() bool {
	return func() bool {
		c := h.poolCounts("default/py")
		u, cl := h.poolMembers()
		return c == store.PoolCounts{Ready: size, Claimed: claimed} && len(u) == size && len(cl) == claimed &&
			h.allPhase(keysOf(append(u, cl...)), store.PhaseRunning)()
	}
}

func keysOf(recs []store.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Key())
	}
	return out
}

// The pool keeps size sandboxes Ready; claims take them without a Nomad
// write; the pool makes new ones; a claimed sandbox's TTL deletes it.
func TestPoolRefillsAfterClaimsAndClaimsWriteNothingToNomad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.cachedController(func(o *Options) { o.ResyncPeriod = time.Hour })
		h.apply(fmt.Sprintf(poolHCL, 3, 256))
		h.eventually("3 ready", h.poolSteady(3, 0))

		h.srv.ResetRequests()
		var claimed []store.Record
		for range 2 {
			rec, err := h.st.Claim(t.Context(), "default/py", store.ClaimOptions{})
			if err != nil {
				t.Fatal(err)
			}
			claimed = append(claimed, rec)
		}
		h.eventually("refilled to 3 beside 2 claimed", h.poolSteady(3, 2))
		h.settle()
		if w := h.writes(); w != 2 {
			t.Errorf("2 claims and the refill made %d Nomad writes, want 2 (the 2 new sandboxes' jobs): %v", w, h.srv.Requests())
		}
		for _, c := range claimed {
			j := h.job(c.Sandbox.JobID())
			if j == nil || *j.Version != 0 || *j.Stop {
				t.Errorf("claimed %s: job %v changed by the claim", c.Key(), j)
			}
		}
		if got, want := len(h.ownedJobs()), 5; got != want {
			t.Errorf("%d owned jobs, want %d: %v", got, want, h.ownedJobs())
		}

		// The claims' TTL (the pool's claim_ttl) deletes them.
		h.advance(time.Hour + time.Second)
		time.Sleep(time.Hour + time.Second)
		h.eventually("claimed sandboxes gone", func() bool {
			for _, c := range claimed {
				if _, err := h.st.Get(t.Context(), c.Key()); !errors.Is(err, store.ErrNotFound) {
					return false
				}
			}
			return true
		})
		h.eventually("the pool at 3, nothing claimed", h.poolSteady(3, 0))
		h.settle()
		if got := len(h.ownedJobs()); got != 3 {
			t.Errorf("%d owned jobs after the claims expired, want 3: %v", got, h.ownedJobs())
		}
	})
}

// A template change replaces only the unclaimed sandboxes; a smaller size
// deletes only unclaimed ones.
func TestPoolTemplateChangeAndShrinkLeaveClaimedAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.cachedController(func(o *Options) { o.ResyncPeriod = time.Hour })
		h.apply(fmt.Sprintf(poolHCL, 3, 256))
		h.eventually("3 ready", h.poolSteady(3, 0))
		c, err := h.st.Claim(t.Context(), "default/py", store.ClaimOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h.eventually("refilled", h.poolSteady(3, 1))

		h.apply(fmt.Sprintf(poolHCL, 3, 512))
		h.eventually("3 new ready", func() bool {
			u, _ := h.poolMembers()
			for _, r := range u {
				if r.Sandbox.Spec.MemoryMB != 512 {
					return false
				}
			}
			return h.poolSteady(3, 1)()
		})
		if j := h.job(c.Sandbox.JobID()); j == nil || *j.TaskGroups[0].Tasks[0].Resources.MemoryMB != 256 || *j.Version != 0 {
			t.Errorf("the claimed sandbox's job changed with the template")
		}

		h.apply(fmt.Sprintf(poolHCL, 1, 512))
		h.eventually("1 ready beside the claimed", h.poolSteady(1, 1))
		h.settle()
		jobs := h.ownedJobs()
		if len(jobs) != 2 || !slices.Contains(jobs, c.Sandbox.JobID()) {
			t.Errorf("owned jobs %v, want the claimed one's and one more", jobs)
		}
	})
}

// A controller stopped in the middle of claims, and a new one started on
// the same store (a restart, or a new leader with the replicated copy):
// no claim lost, no sandbox made twice.
func TestPoolRestartMidClaimsLosesAndDuplicatesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		r := h.cachedController(func(o *Options) { o.ResyncPeriod = time.Hour })
		h.apply(fmt.Sprintf(poolHCL, 5, 256))
		h.eventually("5 ready", h.poolSteady(5, 0))

		var claimed []string
		claim := func() {
			rec, err := h.st.Claim(t.Context(), "default/py", store.ClaimOptions{})
			if err != nil {
				t.Fatal(err)
			}
			claimed = append(claimed, rec.Key())
		}
		claim()
		claim()
		r.stop() // while the pool is refilling, perhaps mid-write
		claim()

		h.cachedController(func(o *Options) { o.ResyncPeriod = time.Hour })
		h.eventually("refilled after the restart", h.poolSteady(5, 3))
		h.settle()
		_, cl := h.poolMembers()
		if got := keysOf(cl); !slices.Equal(got, sorted(claimed)) {
			t.Errorf("claimed after the restart %v, want %v", got, sorted(claimed))
		}
		if jobs := h.ownedJobs(); len(jobs) != 8 {
			t.Errorf("%d owned jobs, want 8 (5 waiting, 3 claimed): %v", len(jobs), jobs)
		}
	})
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
