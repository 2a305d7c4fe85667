package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// clock is a deterministic store clock: every reading is one second after
// the previous one.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openStore opens a store in a fresh directory, closed when the test ends.
// Behaviour tests use NoSync: they test semantics, not durability.
func openStore(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	return openStoreIn(t, t.TempDir(), opts)
}

func openStoreIn(t testing.TB, dir string, opts store.Options) *store.Store {
	t.Helper()
	if opts.Now == nil {
		opts.Now = newClock().Now
	}
	opts.NoSync = true
	s, err := store.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// sandbox builds a sandbox; image stands for any spec change.
func sandbox(ns, name, image string, labels map[string]string) spec.Sandbox {
	return spec.Sandbox{
		Namespace: ns,
		Name:      name,
		Labels:    labels,
		Spec: spec.Spec{
			Driver:   "docker",
			Image:    image,
			Command:  []string{"sleep", "infinity"},
			Profile:  "default",
			VCPUs:    1,
			MemoryMB: 512,
			Network:  "bridge",
			State:    "running",
		},
		Source: spec.Source{File: "sandboxes.hcl", StartLine: 1, StartCol: 1, EndLine: 9, EndCol: 2},
	}
}

func objects(sbs ...spec.Sandbox) []store.Object {
	objs := make([]store.Object, len(sbs))
	for i, sb := range sbs {
		objs[i] = store.Object{Sandbox: sb}
	}
	return objs
}

func mustApply(t testing.TB, s *store.Store, opts store.ApplyOptions, sbs ...spec.Sandbox) store.ApplyResult {
	t.Helper()
	res, err := s.Apply(t.Context(), objects(sbs...), opts)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func mustGet(t testing.TB, s *store.Store, key string) store.Record {
	t.Helper()
	rec, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return rec
}

func mustRevision(t testing.TB, s *store.Store) uint64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

func labels(kv ...string) map[string]string {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
