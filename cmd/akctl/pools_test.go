package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

const poolHCL = `pool "py" {
  size = 2
  max  = 3
  sandbox {
    driver  = "raw_exec"
    command = ["/bin/sleep", "infinity"]
    network = "host"
  }
}
pool "empty" {
  size = 0
  sandbox {
    driver  = "raw_exec"
    command = ["/bin/sleep", "infinity"]
    network = "host"
  }
}
`

// waitPoolReady polls "get pools NAME -o json" until ready sandboxes wait
// and claimed ones are claimed.
func waitPoolReady(t *testing.T, tc *testController, name string, ready, claimed int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, _ := akctlIO(t, tc, nil, "get", "pools", name, "-o", "json")
		var it api.PoolItem
		if code == 0 && json.Unmarshal([]byte(out), &it) == nil && it.Status.Ready == ready && it.Status.Claimed == claimed && it.Status.ObservedGeneration == it.Generation {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s not at %d ready: %s", name, ready, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAkctlPoolsAndClaim(t *testing.T) {
	tc := startController(t, ctlOptions{allowRawExec: true})
	dir := t.TempDir()
	file := filepath.Join(dir, "pools.hcl")
	if err := os.WriteFile(file, []byte(poolHCL), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := akctlIO(t, tc, nil, "apply", "-f", file, "--wait")
	if code != 0 || out != "pool/default/empty created\npool/default/py created\n" || !strings.Contains(errOut, "waiting for pool/default/py to fill") {
		t.Fatalf("apply: %d %q %s", code, out, errOut)
	}
	// --wait returned once the pool was filled.
	if code, out, _ := akctlIO(t, tc, nil, "get", "pools", "py", "-o", "json"); code != 0 || !strings.Contains(out, `"ready": 2`) {
		t.Errorf("the pool after apply --wait: %d %s", code, out)
	}
	if code, out, _ := akctlIO(t, tc, nil, "diff", "-f", file); code != 0 || out != "" {
		t.Errorf("diff after apply: %d %q, want 0 and nothing", code, out)
	}
	changed := strings.Replace(poolHCL, "size = 2", "size = 3", 1)
	if err := os.WriteFile(file, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := akctlIO(t, tc, nil, "diff", "-f", file); code != 1 || !strings.Contains(out, "~ update pool default/py\n    pool.size: 2 -> 3") {
		t.Errorf("diff of a size change: %d %q", code, out)
	}
	waitPoolReady(t, tc, "py", 2, 0)

	code, out, errOut = akctlIO(t, tc, nil, "claim", "py")
	if code != 0 || !regexp.MustCompile(`^sandbox/default/py-[a-z0-9]{5} claimed from pool/default/py\n  alloc [0-9a-f-]{36} on node \S+\n$`).MatchString(out) {
		t.Fatalf("claim: %d %q %s", code, out, errOut)
	}
	claimed := strings.TrimPrefix(strings.Fields(out)[0], "sandbox/default/")
	code, out, _ = akctlIO(t, tc, nil, "claim", "py", "-l", "task=t-9", "-o", "json")
	var it api.Item
	if code != 0 || json.Unmarshal([]byte(out), &it) != nil || it.Pool == nil || !it.Pool.Claimed || it.Labels["task"] != "t-9" {
		t.Fatalf("claim -o json: %d %s", code, out)
	}
	// The same item as get -o json.
	if code, got, _ := akctlIO(t, tc, nil, "get", it.Name, "-o", "json"); code != 0 || !strings.Contains(got, `"claimed": true`) {
		t.Errorf("get %s -o json: %d %s", it.Name, code, got)
	}

	code, out, _ = akctlIO(t, tc, nil, "get")
	if code != 0 || !regexp.MustCompile(`(?m)^default +`+claimed+` +Running +True +\S+ +py \(claimed\)$`).MatchString(out) {
		t.Errorf("get: %d\n%s", code, out)
	}
	// max 3 and 2 claimed: one waits, Ready once the refill runs.
	waitPoolReady(t, tc, "py", 1, 2)
	if code, out, _ := akctlIO(t, tc, nil, "get", "pools"); code != 0 ||
		!regexp.MustCompile(`(?m)^NAMESPACE +NAME +READY +PENDING +CLAIMED +SIZE +MAX +PHASE +AGE\ndefault +empty +0 +0 +0 +0 +- +Running +\S+\ndefault +py +1 +0 +2 +2 +3 +Pending \(Exhausted\) +\S+\n$`).MatchString(out) {
		t.Errorf("get pools: %d\n%s", code, out)
	}

	for _, c := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"claim", "nope"}, 1, "pool/default/nope not found"},
		{[]string{"claim", "empty"}, 1, "has no Ready sandbox"},
		{[]string{"claim", "empty", "--wait", "50ms"}, 1, "within the wait (50ms)"},
		{[]string{"claim"}, 2, "name one pool"},
		{[]string{"claim", "py", "-l", "novalue"}, 2, "want key=value"},
		{[]string{"get", "pools", "nope"}, 1, "pool/default/nope not found"},
	} {
		code, out, errOut := akctlIO(t, tc, nil, c.args...)
		if code != c.code || !strings.Contains(errOut, c.contains) {
			t.Errorf("akctl %v: %d %q %q, want %d and %q", c.args, code, out, errOut, c.code, c.contains)
		}
	}
}
