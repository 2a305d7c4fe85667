// Package ctltest runs the controller's reconcile loop in-process against
// a Nomad test server, for the tests of what sits on top of it: the API,
// akctl and the client package. It is assembled as cmd/controller does,
// without the listeners.
package ctltest

import (
	"context"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Options shape the loop and its Nomad.
type Options struct {
	// AllowRawExec lets the policy accept raw_exec sandboxes.
	AllowRawExec bool
	// Drivers are the drivers the Nomad node has; nil means docker, exec
	// and raw_exec.
	Drivers []string
}

// Loop is a running reconcile loop and its Nomad test server.
type Loop struct {
	// Nomad is a client of the test server.
	Nomad *nomad.Client
	// Policy is what the reconciler renders jobs with; an API over the
	// same store validates with it.
	Policy     reconcile.Config
	Controller *reconcile.Controller
}

// Start runs a Nomad test server in instant mode (every step of a job's
// life inside the request: these tests are about what sits on top, not
// placement timing) and the loop over st, both stopped at the test's end.
func Start(t testing.TB, st *store.Store, o Options) *Loop {
	t.Helper()
	drivers := o.Drivers
	if drivers == nil {
		drivers = []string{"docker", "exec", "raw_exec"}
	}
	srv := nomadtest.New(nomadtest.Options{Instant: true, Drivers: drivers})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	nc, err := nomad.NewClient(nomad.Config{Address: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	policy := reconcile.Config{Render: nomad.RenderOptions{Owner: st.StoreID(), AllowRawExec: o.AllowRawExec}}
	ctrl := reconcile.New(reconcile.Options{
		Reconciler: reconcile.NewReconciler(st, nc, policy, nil, nil),
		Queue:      reconcile.NewQueue(reconcile.QueueOptions{}),
		Store:      st,
		Watcher:    nomad.NewWatcher(nc, nomad.WatchOptions{Owner: st.StoreID()}),
		Owner:      st.StoreID(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ctrl.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &Loop{Nomad: nc, Policy: policy, Controller: ctrl}
}
