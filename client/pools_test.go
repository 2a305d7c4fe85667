package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/client"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
)

const poolSrc = `pool "py" {
  size      = 1
  claim_ttl = "1h"
  sandbox {
    driver  = "raw_exec"
    command = ["/bin/sleep", "infinity"]
    network = "host"
  }
}
`

// A pool applied from HCL; a claim that waits for it, writes a file and
// answers with a sandbox to work in; the pool's typed refusals.
func TestClaimFromAPool(t *testing.T) {
	c := startController(t, sandboxio.Options{})
	ctx := t.Context()
	res, err := c.client.ApplyHCL(ctx, []client.HCLFile{{Name: "pool.hcl", Src: []byte(poolSrc)}}, client.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 1 || res.Results[0].Kind != "pool" || res.Results[0].Action != "created" {
		t.Fatalf("apply: %+v", res.Results)
	}
	sb, err := c.client.Claim(ctx, "default", "py", client.ClaimOptions{
		Wait: 30 * time.Second, TTL: 10 * time.Minute,
		Labels: map[string]string{"task": "t-7"}, Files: map[string]string{"/tmp/akclient-claim.txt": "from the claim"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Pool == nil || !sb.Pool.Claimed || sb.Pool.Name != "py" || sb.Labels["task"] != "t-7" || !sb.Ready() {
		t.Fatalf("claimed %+v, pool %+v", sb, sb.Pool)
	}
	if d := sb.Pool.ExpiresAt.Sub(*sb.Pool.ClaimedAt); d != 10*time.Minute {
		t.Errorf("claimed for %s, want 10m", d)
	}
	out, err := c.client.Sandbox(sb.Namespace, sb.Name).Exec(ctx, client.ExecRequest{Command: []string{"sh", "-c", "cat /tmp/akclient-claim.txt; rm /tmp/akclient-claim.txt"}})
	if err != nil || string(out.Stdout) != "from the claim" {
		t.Fatalf("exec in the claimed sandbox: %v %+v", err, out)
	}

	_, err = c.client.Claim(ctx, "default", "nope", client.ClaimOptions{})
	if !errors.Is(err, client.ErrNotFound) {
		t.Errorf("claim on no pool: %v, want ErrNotFound", err)
	}
	// The refill takes a moment: a claim that does not wait may find none.
	for range 100 {
		if _, err = c.client.Claim(ctx, "default", "py", client.ClaimOptions{}); err != nil {
			break
		}
		// The refill was quick; that one is taken too.
	}
	var ce *client.Error
	if !errors.Is(err, client.ErrNoneReady) || !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &ce) || ce.RetryAfter <= 0 ||
		!strings.Contains(ce.Message, "no Ready sandbox") {
		t.Errorf("claim with none ready: %v, want ErrNoneReady with a RetryAfter", err)
	}
}
