//go:build realnomad

package reconcile

// Run against a real Nomad agent (make test-nomad): NOMAD_ADDR names it,
// and the tests skip without it. They create and purge jobs named
// agentkernel-real-<random> in the default namespace; the agent needs the
// raw_exec driver enabled.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// realHarness is a reconciler on a real store and a real Nomad agent.
type realHarness struct {
	*harness
	nomadWrites atomic.Int64
}

func newRealHarness(t *testing.T) *realHarness {
	t.Helper()
	if os.Getenv("NOMAD_ADDR") == "" {
		t.Skip("NOMAD_ADDR is not set: no real Nomad agent to test against")
	}
	rh := &realHarness{harness: &harness{t: t}}
	cfg := nomad.Config{OnRequest: func(method, endpoint string, code int, _ time.Duration) {
		if code == 200 && ((method == "PUT" || method == "POST") && endpoint == "/v1/jobs" || method == "DELETE") {
			rh.nomadWrites.Add(1)
		}
	}}
	rh.finish(cfg, []func(*Config){func(c *Config) { c.Render.AllowRawExec = true }})
	return rh
}

func randomName(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "real-" + hex.EncodeToString(b[:])
}

// sandboxSrc is a raw_exec sandbox on the host network: group network
// mode none fails on some hosts whatever the controller does.
func sandboxSrc(name string) string {
	return fmt.Sprintf(`sandbox %q {
  driver    = "raw_exec"
  network   = "host"
  command   = ["/bin/sleep", "3600"]
  vcpus     = 0.1
  memory_mb = 32
}`, name)
}

// reconcileUntil reconciles key until the sandbox runs: the agent places
// allocations after the register returns.
func (h *realHarness) reconcileUntilRunning(key string) {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		h.reconcile(key)
		if st := h.record(key).Status; st.Phase == store.PhaseRunning {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s not running within 60s: %+v", key, h.record(key).Status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// purge removes a test's job; it runs at cleanup, when the test's
// context has ended.
func (h *realHarness) purge(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.nc.Purge(ctx, "default", id); err != nil {
		h.t.Errorf("purge %s: %v", id, err)
	}
}

// TestRealNomadDriftOutsideRenderedFieldsIsRepaired is
// TestDriftOutsideRenderedFieldsIsRepaired against a real agent.
func TestRealNomadDriftOutsideRenderedFieldsIsRepaired(t *testing.T) {
	tests := outOfBandChanges
	for _, tt := range tests {
		for _, fresh := range []bool{false, true} {
			name := tt.name + "/index recorded"
			if fresh {
				name = tt.name + "/no index recorded"
			}
			t.Run(name, func(t *testing.T) {
				h := newRealHarness(t)
				sb := randomName(t)
				key, id := "default/"+sb, "agentkernel-"+sb
				t.Cleanup(func() { h.purge(id) })
				h.apply(sandboxSrc(sb))
				h.reconcileUntilRunning(key)
				j, err := h.nc.Job(t.Context(), "default", id)
				if err != nil {
					t.Fatal(err)
				}
				tt.change(j)
				// As `nomad job run` would: no check-and-set.
				if _, _, err := h.nc.API().Jobs().Register(j, nil); err != nil {
					t.Fatalf("change the job out of band: %v", err)
				}
				if fresh {
					st := h.record(key).Status
					st.JobModifyIndex = 0
					if err := h.st.UpdateStatus(t.Context(), key, st); err != nil {
						t.Fatal(err)
					}
				}
				w := h.nomadWrites.Load()
				h.reconcile(key)
				got, err := h.nc.Job(t.Context(), "default", id)
				if err != nil {
					t.Fatal(err)
				}
				if fresh && tt.byIndexOnly {
					if h.nomadWrites.Load() != w {
						t.Errorf("with no index recorded a change outside every compared field was written over")
					}
					return
				}
				if n := h.nomadWrites.Load() - w; n != 1 {
					t.Fatalf("%d writes after the change, want 1 repair", n)
				}
				if left := leftOver(got); len(left) > 0 {
					t.Errorf("not put back after the repair: %v", left)
				}
				if ev := h.lastEvent(key); ev.Reason != store.ReasonRepaired {
					t.Errorf("event %+v, want Repaired", ev)
				}
				w = h.nomadWrites.Load()
				h.reconcile(key)
				if h.nomadWrites.Load() != w {
					t.Errorf("the repaired job was written again")
				}
			})
		}
	}
}

// A sandbox's job gets no deployment (update max_parallel 0), and
// nothing the agent does to it afterwards (allocation updates, evaluations)
// is taken for drift.
func TestRealNomadNoDeploymentAndNoWriteAfterConverging(t *testing.T) {
	h := newRealHarness(t)
	sb := randomName(t)
	key, id := "default/"+sb, "agentkernel-"+sb
	t.Cleanup(func() { h.purge(id) })
	h.apply(sandboxSrc(sb))
	h.reconcileUntilRunning(key)
	w := h.nomadWrites.Load()
	// Longer than a deployment's min_healthy_time (10 s), had there been
	// one.
	for range 12 {
		time.Sleep(time.Second)
		h.reconcile(key)
	}
	if n := h.nomadWrites.Load() - w; n != 0 {
		t.Errorf("%d writes to a job nobody changed, want none", n)
	}
	dep, _, err := h.nc.API().Jobs().LatestDeployment(id, nil)
	if ure := (api.UnexpectedResponseError{}); errors.As(err, &ure) && ure.StatusCode() == http.StatusNotFound && strings.TrimSpace(ure.Body()) == "404 page not found" {
		// An agent answers null for a job without deployments, never 404;
		// Go's default 404 is a Nomad that has no such route at all: the
		// Nomad test server, which simulates no deployments.
		t.Skip("no writes checked; the deployment not: the Nomad at NOMAD_ADDR has no /v1/job/:id/deployment route (the Nomad test server simulates no deployments)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if dep != nil {
		t.Errorf("the sandbox's job has deployment %s (%s), want none", dep.ID, dep.Status)
	}
}
