package reconcile

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// A sandbox no node can run (its driver is missing, as docker on a
// machine without it) says so, with Nomad's reason, once Nomad has had
// time to place it and has not; never Ready, never a silent wait.
func TestUnplaceableSandboxSaysWhy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessOn(t, nomadtest.Options{Drivers: []string{"exec", "raw_exec"}})
		h.cachedController(func(o *Options) { o.ResyncPeriod = time.Hour })
		h.apply(`sandbox "needs-docker" {
  image = "python:3.12-alpine"
}`)
		reason := func() string {
			c, _ := h.record("default/needs-docker").Status.Condition(CondReady)
			return c.Reason
		}
		h.eventually("no allocation", func() bool { return reason() == ReasonNoAlloc })
		h.settle()
		if r := reason(); r != ReasonNoAlloc {
			t.Fatalf("right after the register: %s, want %s (Nomad is not asked before %s)", r, ReasonNoAlloc, unplacedAfter)
		}
		h.advance(unplacedAfter + time.Second)
		time.Sleep(unplacedAfter + 2*time.Second)
		h.eventually("the reason", func() bool { return reason() == ReasonUnplaceable })
		st := h.record("default/needs-docker").Status
		c, _ := st.Condition(CondReady)
		if st.Phase != store.PhasePending || c.Status != store.ConditionFalse ||
			!strings.Contains(c.Message, "Nomad cannot place it: group sandbox: 1 of 1 nodes evaluated filtered out (missing drivers on 1)") {
			t.Errorf("status %s, Ready %s %q", st.Phase, c.Status, c.Message)
		}
	})
}
