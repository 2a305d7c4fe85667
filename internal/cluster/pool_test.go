package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// poolState is n's view of pool "default/py": its live sandboxes by state.
func (n *node) poolState() (ready, claimed []string, steady bool) {
	recs, _, err := n.st.List(context.Background(), store.ListOptions{})
	if err != nil {
		return nil, nil, false
	}
	steady = true
	for _, r := range recs {
		switch {
		case r.Pool != nil:
			steady = steady && r.Status.ObservedGeneration == r.Generation
		case r.Member == nil:
		case r.Deleting():
			steady = false
		case r.Member.Claimed():
			claimed = append(claimed, r.Key())
		case r.Ready():
			ready = append(ready, r.Key())
		default:
			steady = false
		}
	}
	return ready, claimed, steady
}

// Claims answered by a leader that dies right after them (its pool still
// refilling) are all known to the next leader: none is handed out again,
// no job is made twice, and no claimed sandbox's job is touched.
func TestPoolClaimsSurviveAFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		var mu sync.Mutex
		var nodes []*node
		for i := range 3 {
			nodes = append(nodes, w.start(fmt.Sprintf("i%d", i), t.TempDir()))
		}
		monitor(t, &nodes, &mu)
		first := soleLeader(t, nodes)

		settings := spec.PoolSettings{Size: 5}
		sb := sandboxes(1, "img:1")[0].Sandbox
		sb.Name = "py"
		if _, err := first.node.Store(first.st).Apply(t.Context(), []store.Object{{Sandbox: sb, Pool: &settings}}, store.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "5 ready on the first leader", time.Minute, func() bool {
			ready, _, steady := first.poolState()
			return steady && len(ready) == 5
		})

		var claimed []string
		for range 3 {
			rec, err := first.node.Store(first.st).Claim(t.Context(), "default/py", store.ClaimOptions{})
			if err != nil {
				t.Fatal(err)
			}
			claimed = append(claimed, rec.Key())
		}
		slices.Sort(claimed)
		mu.Lock()
		first.kill()
		mu.Unlock()

		second := soleLeader(t, nodes)
		waitFor(t, "the pool refilled on the second leader", 2*time.Minute, func() bool {
			ready, cl, steady := second.poolState()
			return steady && len(ready) == 5 && slices.Equal(cl, claimed)
		})
		// The new leader hands out only the unclaimed.
		for range 5 {
			rec, err := second.node.Store(second.st).Claim(t.Context(), "default/py", store.ClaimOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(claimed, rec.Key()) {
				t.Errorf("%s handed out twice", rec.Key())
			}
		}
		if _, err := second.node.Store(second.st).Claim(t.Context(), "default/py", store.ClaimOptions{}); !errors.Is(err, store.ErrNoneReady) {
			t.Errorf("a sixth claim: %v, want ErrNoneReady", err)
		}

		for job, c := range registersPerJob(w.jobWrites("", time.Time{})) {
			if c != 1 {
				t.Errorf("job %s registered %d times, want once", job, c)
			}
		}
		for _, wr := range w.jobWrites("", time.Time{}) {
			for _, k := range claimed {
				if wr.method == http.MethodDelete && "default/"+wr.jobID[len(spec.JobIDPrefix):] == k {
					t.Errorf("the claimed sandbox %s's job was deleted", k)
				}
			}
		}
		for _, k := range claimed {
			if !w.hasJob(spec.JobIDPrefix + k[len("default/"):]) {
				t.Errorf("the claimed sandbox %s has no job", k)
			}
		}
	})
}
