//go:build reliability

// Package reliability holds the long, process-level tests: run them with
// `make reliability` (go test -tags reliability ./test/reliability/).
package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

const (
	fleetSize = 500
	kills     = 20
	foreign   = "s0007" // a job of this name exists in Nomad without our owner stamp
)

func build(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	bins := map[string]string{}
	for _, name := range []string{"controller", "akctl", "akbench"} {
		out := filepath.Join(dir, name)
		if b, err := exec.Command("go", "build", "-o", out, "../../cmd/"+name).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, b)
		}
		bins[name] = out
	}
	return bins
}

// startNomad runs the Nomad test server in a process of its own.
func startNomad(t *testing.T, akbench string) string {
	t.Helper()
	cmd := exec.Command(akbench, "-serve-nomad", "127.0.0.1:0", "-sched-delay", "100ms")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatal("the Nomad test server printed no address")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return strings.TrimSpace(sc.Text())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// declare writes round r's fleet: every sandbox but a rotating few (so
// that each round deletes some and brings others back), with memory
// changing for a rotating seventh (so that each round updates some).
func declare(t *testing.T, dir string, r int) map[string]bool {
	t.Helper()
	var b strings.Builder
	want := map[string]bool{}
	for i := range fleetSize {
		name := fmt.Sprintf("s%04d", i)
		if name == foreign || (i+r)%25 == 0 {
			continue
		}
		mem := 64
		if i%7 == r%7 {
			mem = 64 + 32*(r%3+1)
		}
		fmt.Fprintf(&b, "sandbox %q {\n  driver    = \"exec\"\n  command   = [\"/bin/sleep\", \"infinity\"]\n  vcpus     = 0.1\n  memory_mb = %d\n}\n", name, mem)
		want[name] = true
	}
	if err := os.WriteFile(filepath.Join(dir, "fleet.hcl"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return want
}

type controller struct {
	cmd  *exec.Cmd
	addr string
}

func startController(t *testing.T, bin, dataDir, nomadAddr string) *controller {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "-data-dir", dataDir, "-listen", addr, "-nomad-addr", nomadAddr,
		"-nomad-write-rate", "0", "-workers", "8", "-log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &controller{cmd: cmd, addr: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller never served: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func akctl(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("akctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type jobStub struct {
	ID             string
	CreateIndex    uint64
	JobModifyIndex uint64
	Status         string
	Stop           bool
	Meta           map[string]string
}

func nomadJobs(t *testing.T, nomadAddr string) []jobStub {
	t.Helper()
	resp, err := http.Get(nomadAddr + "/v1/jobs?prefix=agentkernel-&meta=true&namespace=*")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jobs []jobStub
	if err := json.NewDecoder(resp.Body).Decode(&jobs); err != nil {
		t.Fatal(err)
	}
	return jobs
}

// TestCrashLoop SIGKILLs the controller process at random moments while a
// fleet of 500 sandboxes converges and changes, then lets a last one
// finish: exactly one job per declared sandbox, none for a deleted one,
// the foreign job untouched, and the store agreeing with Nomad.
func TestCrashLoop(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)
	bins := build(t)
	nomadAddr := startNomad(t, bins["akbench"])

	// A job named like a sandbox but not the controller's.
	res, diags := spec.LoadSources([]spec.SourceFile{{Name: "f.hcl", Dir: ".", Src: []byte(fmt.Sprintf("sandbox %q {\n  driver = \"exec\"\n  command = [\"/bin/sleep\", \"infinity\"]\n}\n", foreign))}}, spec.Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	job, err := nomad.Render(&res.Sandboxes[0], nomad.RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(job.Meta, nomad.MetaOwner)
	nc, err := nomad.NewClient(nomad.Config{Address: nomadAddr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Register(t.Context(), job, 0); err != nil {
		t.Fatal(err)
	}
	foreignBefore, err := nc.Job(t.Context(), "default", spec.JobIDPrefix+foreign)
	if err != nil {
		t.Fatal(err)
	}

	dataDir, declDir := t.TempDir(), t.TempDir()
	var want map[string]bool
	for round := range kills {
		want = declare(t, declDir, round)
		c := startController(t, bins["controller"], dataDir, nomadAddr)
		akctl(t, bins["akctl"], "--addr", c.addr, "apply", "-f", declDir, "--prune", "--apply-set", "fleet")
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond) // the moment of the kill
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.cmd.Wait()
	}

	want = declare(t, declDir, kills)
	c := startController(t, bins["controller"], dataDir, nomadAddr)
	defer func() { _ = c.cmd.Process.Signal(syscall.SIGTERM); _ = c.cmd.Wait() }()
	akctl(t, bins["akctl"], "--addr", c.addr, "apply", "-f", declDir, "--prune", "--apply-set", "fleet")
	converged(t, bins["akctl"], c.addr, nomadAddr, want)
	after, err := nc.Job(t.Context(), "default", spec.JobIDPrefix+foreign)
	if err != nil || *after.JobModifyIndex != *foreignBefore.JobModifyIndex || after.Meta[nomad.MetaOwner] != "" {
		t.Errorf("the foreign job was touched: %v", err)
	}
	t.Logf("%d kills survived; %d sandboxes declared, each with exactly one job", kills, len(want))
}

// converged waits until the controller at addr has every declared
// sandbox Ready and nothing else, and Nomad holds exactly one owned job
// per declared sandbox and none for any other.
func converged(t *testing.T, akctlBin, addr, nomadAddr string, want map[string]bool) {
	t.Helper()
	akctl(t, akctlBin, "--addr", addr, "wait", "--for=ready", "--all", "--timeout", "5m")
	// Deletions finish after readiness: wait for the pruned ones to go.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var items struct{ Items []json.RawMessage }
		if err := json.Unmarshal([]byte(akctl(t, akctlBin, "--addr", addr, "get", "-A", "-o", "json")), &items); err != nil {
			t.Fatal(err)
		}
		if len(items.Items) == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store holds %d sandboxes, want %d", len(items.Items), len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
	deadline = time.Now().Add(2 * time.Minute)
	for {
		owned, extra, missing := map[string]bool{}, []string{}, []string{}
		for _, j := range nomadJobs(t, nomadAddr) {
			if j.Meta[nomad.MetaOwner] == "" {
				continue
			}
			name := strings.TrimPrefix(j.ID, spec.JobIDPrefix)
			owned[name] = true
			if !want[name] {
				extra = append(extra, name)
			}
		}
		for name := range want {
			if !owned[name] {
				missing = append(missing, name)
			}
		}
		if len(extra) == 0 && len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs of undeclared sandboxes %v, declared sandboxes without a job %v", extra, missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
