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
	"github.com/agentkernel/agentkernel-controller/internal/ctltest"
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
	loop := ctltest.Start(t, st, ctltest.Options{AllowRawExec: true})
	nc, rcfg := loop.Nomad, loop.Policy
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
