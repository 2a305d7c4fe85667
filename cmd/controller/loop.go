package main

import (
	"context"
	"sync/atomic"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
)

// loopRef is the reconcile loop as the API reaches it: the one that runs
// alone, or with -ha the current term's while this instance leads.
type loopRef struct {
	ctrl atomic.Pointer[reconcile.Controller]
	// leading, with -ha, reports whether this instance leads now.
	leading func() bool
}

func (l *loopRef) current() *reconcile.Controller {
	if l.leading != nil && !l.leading() {
		return nil
	}
	return l.ctrl.Load()
}

func (l *loopRef) GC() apiserver.GCStatus {
	c := l.current()
	if c == nil {
		return apiserver.GCStatus{Reason: "This instance does not lead; the leader's reconcile loop decides garbage collection."}
	}
	return gcStatus(c.GCState())
}

func (l *loopRef) ConfirmGC(ctx context.Context) (apiserver.GCStatus, error) {
	c := l.current()
	if c == nil {
		return l.GC(), apiserver.ErrNotLeader
	}
	st, err := c.ConfirmGC(ctx)
	return gcStatus(st), err
}

// Observed is the current loop's Observed; without a loop (a follower),
// nothing is.
func (l *loopRef) Observed(key string, generation uint64) bool {
	c := l.current()
	return c != nil && c.Observed(key, generation)
}

func (l *loopRef) Requeue(key string) {
	if c := l.current(); c != nil {
		c.Requeue(key)
	}
}

func gcStatus(st reconcile.GCState) apiserver.GCStatus {
	return apiserver.GCStatus{Enabled: st.Enabled, Reason: st.Reason, Hold: st.Hold}
}
