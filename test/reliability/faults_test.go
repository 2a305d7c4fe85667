//go:build reliability

package reliability

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func fault(t *testing.T, nomadAddr, name, body string) {
	t.Helper()
	resp, err := http.Post(nomadAddr+"/_fault/"+name, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("fault %s: %v", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("fault %s: status %d", name, resp.StatusCode)
	}
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus polls until url answers code; the deadline only keeps a
// broken controller from hanging the run.
func waitStatus(t *testing.T, url string, code int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for status(t, url) != code {
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered %d", url, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNomadFaults puts the controller through a 30 s Nomad outage, a
// burst of 5xx answers, 1 s of latency on every request, cut event
// streams and an index gap, changing the declarations during each. The
// controller must stay up, say it is not ready while Nomad is gone, and
// converge afterwards with nothing lost.
func TestNomadFaults(t *testing.T) {
	bins := build(t)
	nomadAddr := startNomad(t, bins["akbench"])
	dataDir, declDir := t.TempDir(), t.TempDir()
	c := startController(t, bins["controller"], dataDir, nomadAddr)
	defer func() { _ = c.cmd.Process.Kill(); _ = c.cmd.Wait() }()
	apply := func(round int) map[string]bool {
		want := declare(t, declDir, round)
		akctl(t, bins["akctl"], "--addr", c.addr, "apply", "-f", declDir, "--prune", "--apply-set", "fleet")
		return want
	}
	converged(t, bins["akctl"], c.addr, nomadAddr, apply(0))

	// A 30 s outage: the listener is closed and reopened on the same address.
	fault(t, nomadAddr, "outage", `{"Duration":"30s"}`)
	waitStatus(t, c.addr+"/readyz", http.StatusServiceUnavailable, 20*time.Second)
	want := apply(1) // accepted while Nomad is away: the store is the source of truth
	if code := status(t, c.addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("controller not healthy during the outage: %d", code)
	}
	waitStatus(t, c.addr+"/readyz", http.StatusOK, 90*time.Second)
	converged(t, bins["akctl"], c.addr, nomadAddr, want)

	// Bursts of 5xx answers.
	fault(t, nomadAddr, "errors", `{"Status":500,"Body":"rpc error: EOF","Duration":"5s"}`)
	converged(t, bins["akctl"], c.addr, nomadAddr, apply(2))

	// One second of latency on every request.
	fault(t, nomadAddr, "latency", `{"Latency":"1s"}`)
	want = apply(3)
	time.Sleep(10 * time.Second)
	fault(t, nomadAddr, "reset", `{}`)
	converged(t, bins["akctl"], c.addr, nomadAddr, want)

	// Cut event streams and an index gap past the event buffer, with jobs
	// purged behind the controller's back meanwhile.
	fault(t, nomadAddr, "cut-streams", `{}`)
	for _, id := range []string{"agentkernel-s0001", "agentkernel-s0100", "agentkernel-s0200"} {
		fault(t, nomadAddr, "stop-job", `{"JobID":"`+id+`","Purge":true}`)
	}
	fault(t, nomadAddr, "jump-index", `{"By":1000}`)
	fault(t, nomadAddr, "cut-streams", `{}`)
	converged(t, bins["akctl"], c.addr, nomadAddr, want)
}
