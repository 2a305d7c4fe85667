package nomad

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
)

// memClient serves a Nomad test server on an in-memory network inside
// the synctest bubble and returns a client of it. The node has the exec
// driver, and drivers.
func memClient(t *testing.T, timeout time.Duration, drivers ...string) (*Client, *nomadtest.MemNet, *nomadtest.Server) {
	t.Helper()
	mem := nomadtest.NewMemNet()
	srv := nomadtest.New(nomadtest.Options{Drivers: append([]string{"exec"}, drivers...)})
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(mem.Listener()) }()
	t.Cleanup(func() {
		_ = srv.Close()
		mem.Close()
		_ = hs.Close()
	})
	c, err := NewClient(Config{Address: mem.URL(), HTTPClient: mem.HTTPClient(), RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return c, mem, srv
}

// A Nomad that vanishes without a reset holds a request until the
// client's own bound: with it, 30 s and a transient error the caller
// retries; without, as long as the kernel keeps the connection.
func TestRequestToASilentNomadEndsAtTheTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, mem, _ := memClient(t, 0)
		mem.SetSilent(true)
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		_, err := c.Job(ctx, "default", "agentkernel-x")
		if took := time.Since(start); took != DefaultRequestTimeout {
			t.Errorf("the call returned after %s, want the %s bound", took, DefaultRequestTimeout)
		}
		if !errors.Is(err, ErrTransient) {
			t.Errorf("err = %v, want transient (a retry may reach a server that answers)", err)
		}
	})
}

// The caller's own deadline stays the caller's: not a Nomad failure.
func TestCallersDeadlineIsNotATimeoutOfNomad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, mem, _ := memClient(t, time.Minute)
		mem.SetSilent(true)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := c.Job(ctx, "default", "agentkernel-x")
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTransient) {
			t.Errorf("err = %v, want the caller's deadline, not transient", err)
		}
	})
}

// A blocking query waits as long as it asked, past the plain bound.
func TestBlockingQueryGetsItsWaitOnTopOfTheTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, _ := memClient(t, 10*time.Second)
		_, meta, err := c.API().Jobs().List(nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		q := (&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 2 * time.Minute}).WithContext(t.Context())
		if _, _, err := c.API().Jobs().List(q); err != nil {
			t.Fatalf("a blocking query of 2m with a 10s bound: %v", err)
		}
		if took := time.Since(start); took < 2*time.Minute {
			t.Errorf("the blocking query returned after %s; nothing changed, so it should have waited its 2m", took)
		}
	})
}
