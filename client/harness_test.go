package client_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/client"
	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

const testToken = "client-test-token"

// controller is a whole controller in-process, as cmd/controller wires
// it: store, Nomad test server (whose exec runs real local processes),
// reconcile loop, and the API with exec, files and logs.
type controller struct {
	url     string
	client  *client.Client
	handler http.Handler
}

func startController(t *testing.T, so sandboxio.Options) *controller {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := nomadtest.New(nomadtest.Options{Instant: true, Drivers: []string{"docker", "exec", "raw_exec"}})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	nc, err := nomad.NewClient(nomad.Config{Address: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	rcfg := reconcile.Config{Render: nomad.RenderOptions{Owner: st.StoreID(), AllowRawExec: true}}
	ctrl := reconcile.New(reconcile.Options{
		Reconciler: reconcile.NewReconciler(st, nc, rcfg, nil, nil),
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
	log := slog.New(slog.DiscardHandler)
	so.Nomad, so.Logger = nc, log
	h := api.NewServer(api.Options{
		Store: st, Policy: rcfg, Token: testToken, Logger: log, Version: "test",
		Inside: sandboxio.New(so),
	})
	hs := httptest.NewServer(h)
	c, err := client.New(client.Config{Address: hs.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		h.Close()
		hs.Close()
		cancel()
		<-done
	})
	return &controller{url: hs.URL, client: c, handler: h}
}

// apply declares sandboxes from HCL and waits until each is Ready.
func (c *controller) apply(t *testing.T, src string, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.client.ApplyHCL(ctx, []client.HCLFile{{Name: "test.hcl", Src: []byte(src)}}, client.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := c.client.WaitReady(ctx, "default", n); err != nil {
			t.Fatalf("wait for %s: %v", n, err)
		}
	}
}

func rawExec(name string) string {
	return `sandbox "` + name + `" {
  driver  = "raw_exec"
  network = "host"
  command = ["/bin/sleep", "3600"]
}
`
}
