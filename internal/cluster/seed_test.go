package cluster_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Item 1: a controller that ran alone, with a sandbox whose declaration
// is larger than one Nomad Variable, switches to HA. Its store seeds the
// copy; the next leader, with an empty data dir, holds that sandbox and
// purges nothing; the seeder, back as a follower, keeps its record.
func TestSwitchingToHAWithALargeDeclarationPurgesNothing(t *testing.T) {
	tests := []struct {
		name  string
		world func(t *testing.T) *world
	}{
		{"no ACLs", newWorld},
		{"ACLs, the example policy's token", newACLWorld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testSwitchingToHAWithALargeDeclarationPurgesNothing(t, tt.world) })
	}
}

func testSwitchingToHAWithALargeDeclarationPurgesNothing(t *testing.T, newWorld func(t *testing.T) *world) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		objs := sandboxes(2, "img:1")
		big := objs[0].Sandbox
		big.Name = "big"
		var content strings.Builder
		for i := 0; content.Len() < 300<<10; i++ {
			fmt.Fprintf(&content, "line %06d of a large file\n", i)
		}
		big.Spec.Files = []spec.File{{Path: "/data/large.txt", Content: content.String(), Mode: "0644"}}
		objs = append(objs, store.Object{Sandbox: big})

		// The store of the controller that ran alone.
		dirA := t.TempDir()
		st, err := store.Open(dirA, store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Apply(t.Context(), objs, store.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}

		var mu sync.Mutex
		a := w.start("a", dirA)
		nodes := []*node{a}
		monitor(t, &nodes, &mu)
		soleLeader(t, nodes)
		waitFor(t, "convergence on the seeder", time.Minute, a.converged(3))

		mu.Lock()
		a.kill()
		b := w.start("b", t.TempDir())
		nodes = append(nodes, b)
		mu.Unlock()
		since := time.Now()
		if got := soleLeader(t, nodes); got != b {
			t.Fatalf("%s leads, want b", got.name)
		}
		// Give the new leader's reconcile loop time to act (fake time).
		waitFor(t, "the next leader ready", time.Minute, func() bool { ok, _ := b.node.Ready(); return ok })
		time.Sleep(30 * time.Second)
		for _, wr := range w.jobWrites("", since) {
			if wr.method == http.MethodDelete {
				t.Errorf("%s purged %s", wr.instance, wr.jobID)
			}
		}
		if !w.hasJob("agentkernel-big") {
			t.Error("agentkernel-big no longer runs")
		}
		if _, err := b.st.Get(t.Context(), "default/big"); err != nil {
			t.Fatalf("the next leader's store lacks default/big: %v", err)
		}
		waitFor(t, "convergence on the next leader", time.Minute, b.converged(3))

		// The seeder comes back on its own data dir, as a follower.
		mu.Lock()
		a2 := w.start("a2", dirA)
		nodes = append(nodes, a2)
		mu.Unlock()
		waitFor(t, "the seeder back in sync", time.Minute, func() bool { ok, _ := a2.node.Ready(); return ok })
		if _, err := a2.st.Get(t.Context(), "default/big"); err != nil {
			t.Errorf("the seeder, as a follower, lost its record of default/big: %v", err)
		}
	})
}
