package nomadtest

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"
)

// The state is one raft-like log: every write takes the next index, and each
// table remembers the last index that touched it, because reads answer with
// table indexes (facts 4.2, 4.3) while single objects answer with their own.
//
// Tables: namespaces, nodes, jobs, job_summary, allocs, evals, deployment,
// variables, acl_policy, acl_token.

type nsKey struct{ ns, id string }

func (k nsKey) String() string { return k.ns + "/" + k.id }

type jobEntry struct {
	job      *api.Job
	spec     []byte // canonical spec, for "did it change" (facts 4.5)
	versions []*api.Job
	summary  summaryEntry
	allocs   []*alloc // creation order
	evals    []*evalEntry
	queued   map[string]int // placements a blocked eval waits for, by group
	// deployments in creation order, the newest last.
	deployments []*deployment
}

type summaryEntry struct {
	CreateIndex uint64
	ModifyIndex uint64
	counts      map[string]api.TaskGroupSummary
}

type alloc struct {
	a          *api.Allocation
	jobVersion uint64
	restarts   []time.Time // task restarts inside the restart interval
	job        *api.Job    // the version the alloc runs
	// received is set once the client has reported the alloc's tasks
	// received; until then the alloc has no task states.
	received bool
	// health is the min_healthy_time clock of a running alloc that has not
	// been reported healthy yet.
	health *time.Timer
	// shared are the alloc's group-level resources, SharedResources on
	// the wire.
	shared *api.Resources
}

type evalEntry struct {
	e *api.Evaluation
}

// nextIndex starts a write and returns its index. Callers hold s.mu.
func (s *Server) nextIndex() uint64 {
	s.index++
	return s.index
}

// touch records that a write at idx changed table and wakes its waiters.
func (s *Server) touch(idx uint64, table string) {
	s.tables[table] = idx
	switch table {
	case "jobs", "job_summary":
		s.watch.fire("jobs")
	default:
		s.watch.fire(table)
	}
}

// jobListIndex is the larger of the jobs and job_summary indexes, the index
// GET /v1/jobs answers with (facts 4.2).
func (s *Server) jobListIndex() uint64 {
	return max(s.tables["jobs"], s.tables["job_summary"])
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// watcher hands out channels that are closed on the next change of a key:
// blocking queries wait on them instead of polling.
type watcher struct {
	chans map[string]chan struct{}
}

func newWatcher() watcher { return watcher{chans: make(map[string]chan struct{})} }

func (w *watcher) ch(key string) <-chan struct{} {
	c, ok := w.chans[key]
	if !ok {
		c = make(chan struct{})
		w.chans[key] = c
	}
	return c
}

func (w *watcher) fire(key string) {
	if c, ok := w.chans[key]; ok {
		close(c)
		delete(w.chans, key)
	}
}

func jobKeyWatch(k nsKey) string    { return "job:" + k.String() }
func allocsKeyWatch(k nsKey) string { return "allocs:" + k.String() }

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
