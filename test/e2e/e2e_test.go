// Package e2e runs the built binaries as a user would: controller -dev as
// a process, akctl against it, and Nomad's API on the side.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
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

// build compiles the two commands once per test run.
func build(t *testing.T) (controller, akctl string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries; skipped with -short")
	}
	dir := t.TempDir()
	for _, name := range []string{"controller", "akctl"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../../cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return filepath.Join(dir, "controller"), filepath.Join(dir, "akctl")
}

type devProcess struct {
	cmd        *exec.Cmd
	api, nomad string
}

// startController starts controller -dev on free ports and reads the
// addresses it prints.
func startController(t *testing.T, bin string) *devProcess {
	t.Helper()
	cmd := exec.Command(bin, "-dev", "-dev-nomad", "sim", "-dev-nomad-addr", "127.0.0.1:0", "-listen", "127.0.0.1:0", "-log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("controller did not stop within 20s of SIGTERM")
		}
	})
	sc := bufio.NewScanner(stdout)
	apiRE, nomadRE := regexp.MustCompile(`API:\s+(\S+)`), regexp.MustCompile(`Nomad test server:\s+(\S+)`)
	for p.api == "" || p.nomad == "" {
		if !sc.Scan() {
			t.Fatal("controller exited before printing its addresses")
		}
		if m := apiRE.FindStringSubmatch(sc.Text()); m != nil {
			p.api = m[1]
		}
		if m := nomadRE.FindStringSubmatch(sc.Text()); m != nil {
			p.nomad = m[1]
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return p
}

func akctl(t *testing.T, bin, addr string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--addr", addr}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("akctl %v: %v", args, err)
	}
	return string(out), code
}

func mustAkctl(t *testing.T, bin, addr string, args ...string) string {
	t.Helper()
	out, code := akctl(t, bin, addr, args...)
	if code != 0 {
		t.Fatalf("akctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func nomadJob(t *testing.T, nomad, id string) (stopped bool, exists bool) {
	t.Helper()
	resp, err := http.Get(nomad + "/v1/job/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 404 {
		return false, false
	}
	var j struct{ Stop bool }
	_ = json.NewDecoder(resp.Body).Decode(&j)
	return j.Stop, true
}

func TestEndToEnd(t *testing.T) {
	ctrlBin, akctlBin := build(t)
	p := startController(t, ctrlBin)

	out := mustAkctl(t, akctlBin, p.api, "apply", "-f", "examples/")
	if n := strings.Count(out, " created"); n < 4 {
		t.Fatalf("apply created %d sandboxes:\n%s", n, out)
	}
	mustAkctl(t, akctlBin, p.api, "wait", "--for=ready", "--all", "--timeout", "60s")

	// Stop a job behind the controller's back, as `nomad job stop` would.
	req, _ := http.NewRequest(http.MethodDelete, p.nomad+"/v1/job/agentkernel-hello", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		stopped, exists := nomadJob(t, p.nomad, "agentkernel-hello")
		if exists && !stopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stopped job was not repaired")
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustAkctl(t, akctlBin, p.api, "wait", "--for=ready", "hello", "--timeout", "60s")

	mustAkctl(t, akctlBin, p.api, "delete", "-f", "examples/", "--wait")
	resp, err = http.Get(p.nomad + "/v1/jobs?prefix=agentkernel-")
	if err != nil {
		t.Fatal(err)
	}
	var jobs []struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&jobs)
	resp.Body.Close()
	if len(jobs) != 0 {
		t.Errorf("jobs left in Nomad after deleting everything: %v", jobs)
	}
	if out := mustAkctl(t, akctlBin, p.api, "get", "-A", "-o", "json"); !strings.Contains(out, `"items": []`) && !strings.Contains(out, `"items":[]`) {
		t.Errorf("sandboxes left after delete:\n%s", out)
	}
}
