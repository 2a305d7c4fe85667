package nomadtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestAllocRunsWhenItsTimersFireTogether: a placed allocation is received
// ClientDelay after the plan and runs SchedulingDelay after it. When the
// two moments are a nanosecond apart, as under load when timers fire late
// together, the run must still follow the receive; before, the run could
// take the lock first, find the allocation not yet received, and leave it
// pending for good (about 3 in 1,000 at N = 10,000 with the defaults).
// Real time, not synctest: the race is between goroutines woken together.
func TestAllocRunsWhenItsTimersFireTogether(t *testing.T) {
	const n = 300
	f := newLoopbackFixture(t, Options{
		EvalDelay:       time.Millisecond,
		ClientDelay:     time.Millisecond,
		SchedulingDelay: time.Millisecond + time.Nanosecond,
	})
	base := loadJob(t, "agentkernel-sleep-raw")
	for i := range n {
		j := *base
		id := fmt.Sprintf("agentkernel-timers-%03d", i)
		j.ID, j.Name = &id, &id
		f.register(t, &j)
	}

	deadline := time.Now().Add(10 * time.Second)
	var index uint64
	for {
		al, meta, err := f.api.Allocations().List(&api.QueryOptions{WaitIndex: index, WaitTime: time.Second})
		if err != nil {
			t.Fatalf("list allocations: %v", err)
		}
		index = meta.LastIndex
		running, pending := 0, []string{}
		for _, a := range al {
			switch a.ClientStatus {
			case "running":
				running++
			case "pending":
				if len(pending) < 5 {
					pending = append(pending, a.JobID)
				}
			}
		}
		if running == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d allocations running; still pending, among others: %v", running, n, pending)
		}
	}
}
