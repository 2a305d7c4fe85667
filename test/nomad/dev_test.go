//go:build realnomad

package nomad

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRealNomadDev runs `controller -dev` with a real nomad binary: the
// one NOMAD_BIN names, else nomad on PATH (skipped without one; it needs
// no NOMAD_ADDR, since -dev starts its own agent). The agent is started,
// a raw_exec sandbox runs on it, and Ctrl-C stops the controller, the
// agent and the sandbox's task, leaving no process behind.
func TestRealNomadDev(t *testing.T) {
	bin := os.Getenv("NOMAD_BIN")
	if bin == "" {
		p, err := exec.LookPath("nomad")
		if err != nil {
			t.Skip("no nomad binary: set NOMAD_BIN or put nomad on PATH")
		}
		bin = p
	}
	build(t)
	decl := t.TempDir()
	if err := os.WriteFile(filepath.Join(decl, "dev.hcl"), []byte(`sandbox "dev-raw" {
  driver    = "raw_exec"
  network   = "host"
  command   = ["/bin/sleep", "3617"]
  vcpus     = 0.1
  memory_mb = 32
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "controller"), "-dev", "-dev-nomad", "real", "-dev-nomad-bin", bin,
		"-listen", "127.0.0.1:0", "-dev-apply", decl, "-log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		}
	})
	sc := bufio.NewScanner(stdout)
	var api, agent string
	apiRE := regexp.MustCompile(`API:\s+(\S+)`)
	agentRE := regexp.MustCompile(`Nomad agent:\s+(\S+) \((.*) agent -dev; stopped on exit\)`)
	for api == "" || agent == "" {
		if !sc.Scan() {
			t.Fatal("the controller stopped before printing its banner")
		}
		if m := apiRE.FindStringSubmatch(sc.Text()); m != nil {
			api = m[1]
		}
		if m := agentRE.FindStringSubmatch(sc.Text()); m != nil {
			agent = m[1]
			t.Logf("agent: %s", sc.Text())
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	eventually(t, converge, "dev-raw Running on the agent", func() (bool, string) {
		resp, err := http.Get(api + "/v1/sandboxes/default/dev-raw")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var sb sandbox
		_ = json.NewDecoder(resp.Body).Decode(&sb)
		return sb.ready(), sb.Status.Phase
	})
	if n := len(tasks(t)); n != 1 {
		t.Fatalf("%d processes of the sandbox's task, want 1", n)
	}

	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("the controller exited with %v after Ctrl-C, want 0", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the controller did not stop within a minute of Ctrl-C")
	}
	if _, err := http.Get(agent + "/v1/nodes"); err == nil {
		t.Errorf("the agent still answers at %s", agent)
	}
	eventually(t, 20*time.Second, "the sandbox's task gone", func() (bool, string) {
		left := tasks(t)
		return len(left) == 0, strings.Join(left, ", ")
	})
}

// tasks lists the processes running the test sandbox's command.
func tasks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("pgrep", "-x", "-f", "/bin/sleep 3617").Output()
	if err != nil {
		return nil // pgrep exits 1 when nothing matches
	}
	return strings.Fields(string(out))
}
