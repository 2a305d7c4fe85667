package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
)

// fakeNomadEnv makes this test binary act as a `nomad` binary: `nomad
// version` prints a version line, and `nomad agent -dev -config FILE`
// serves the Nomad test server on the config's HTTP port (its node ready
// at once, as a real agent's is after start-up) until SIGTERM, and writes
// its pid into the config's directory, so that a test can check it ended.
const fakeNomadEnv = "AGENTKERNEL_FAKE_NOMAD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeNomadEnv) == "1" {
		os.Exit(fakeNomad(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeNomad(args []string) int {
	switch {
	case len(args) == 1 && args[0] == "version":
		fmt.Println("Nomad v2.0.5-fake")
		fmt.Println("BuildDate 2026-12-01T00:00:00Z")
		return 0
	case len(args) == 4 && args[0] == "agent" && args[1] == "-dev" && args[2] == "-config":
	default:
		fmt.Fprintf(os.Stderr, "fake nomad: unexpected arguments %q\n", args)
		return 1
	}
	conf, err := os.ReadFile(args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m := regexp.MustCompile(`(?m)^\s*http\s*=\s*(\d+)\s*$`).FindSubmatch(conf)
	if m == nil || !strings.Contains(string(conf), `"fingerprint.denylist"`) || !strings.Contains(string(conf), `plugin "raw_exec"`) {
		fmt.Fprintf(os.Stderr, "fake nomad: the config lacks the HTTP port, the fingerprint denylist or raw_exec:\n%s", conf)
		return 1
	}
	srv := nomadtest.New(nomadtest.Options{Addr: "127.0.0.1:" + string(m[1]), Drivers: []string{"exec", "raw_exec"}})
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pidFile := filepath.Join(filepath.Dir(args[3]), "..", filepath.Base(filepath.Dir(args[3]))+".pid")
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o600)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	_ = srv.Close()
	return 0
}

// fakeNomadOnPath puts this test binary on PATH as nomad.
func fakeNomadOnPath(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(self, filepath.Join(bin, "nomad")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(fakeNomadEnv, "1")
	t.Setenv("TMPDIR", t.TempDir())
	return filepath.Join(bin, "nomad")
}

// With nomad on PATH, -dev starts it as `nomad agent -dev`, runs the
// examples against it, says so in its banner, and stops it on exit.
func TestDevStartsUsesAndStopsANomadOnPath(t *testing.T) {
	bin := fakeNomadOnPath(t)
	tmp := os.Getenv("TMPDIR")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-dev", "-listen", "127.0.0.1:0", "-log-level", "warn", "-dev-apply", filepath.Join("..", "..", "examples", "pool.hcl")}, pw, io.Discard)
		pw.Close()
	}()
	out := readBanner(t, pr)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	api := regexp.MustCompile(`API:\s+(\S+)`).FindStringSubmatch(out)
	agent := regexp.MustCompile(`Nomad agent:\s+(\S+) \(Nomad v2\.0\.5-fake, (\S+) agent -dev; stopped on exit\)`).FindStringSubmatch(out)
	if api == nil || agent == nil || agent[2] != bin {
		cancel()
		<-done
		t.Fatalf("banner does not name the agent started from %s:\n%s", bin, out)
	}
	eventually(t, "the pool's sandboxes Running on the agent", func() bool {
		var list apiserver.ItemList
		if getJSON(t, api[1]+"/v1/sandboxes", &list) != 200 || len(list.Items) != 3 {
			return false
		}
		for _, it := range list.Items {
			if it.Status.Phase != "Running" {
				return false
			}
		}
		return true
	})
	var jobs []struct{ ID string }
	if getJSON(t, agent[1]+"/v1/jobs", &jobs) != 200 || len(jobs) != 3 {
		t.Errorf("the agent runs %d jobs, want the pool's 3", len(jobs))
	}
	pids, _ := filepath.Glob(filepath.Join(tmp, "agentkernel-dev-nomad-*.pid"))
	if len(pids) != 1 {
		t.Fatalf("pid files %v, want the agent's", pids)
	}
	b, _ := os.ReadFile(pids[0])
	pid, _ := strconv.Atoi(string(b))

	cancel()
	if err := <-done; err != nil {
		t.Errorf("controller exited with %v", err)
	}
	// Stopped, and its directory removed: nothing left behind.
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the agent (pid %d) still runs after the controller stopped", pid)
	}
	if _, err := http.Get(agent[1] + "/v1/nodes"); err == nil {
		t.Errorf("the agent still answers at %s", agent[1])
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "agentkernel-dev-*")); len(dirs) > 1 || (len(dirs) == 1 && !strings.HasSuffix(dirs[0], ".pid")) {
		t.Errorf("left behind: %v", dirs)
	}
}

func readBanner(t *testing.T, r io.Reader) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 4096)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.String(), "data dir:") {
		if time.Now().After(deadline) {
			t.Fatalf("no banner within 30s: %q", b.String())
		}
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			t.Fatalf("controller output ended: %v\n%s", err, b.String())
		}
	}
	return b.String()
}

// -dev-nomad chooses: sim ignores a nomad on PATH; real without one fails
// and says what to do.
func TestDevNomadChoice(t *testing.T) {
	t.Run("sim with nomad on PATH", func(t *testing.T) {
		fakeNomadOnPath(t)
		d := startDevController(t) // -dev-nomad sim
		if !strings.HasPrefix(d.nomad, "http://127.0.0.1:") {
			t.Errorf("nomad %q", d.nomad)
		}
	})
	t.Run("real without nomad", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		err := run(t.Context(), []string{"-dev", "-dev-nomad", "real", "-listen", "127.0.0.1:0"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-dev-nomad=real: no nomad binary on PATH") {
			t.Errorf("run = %v", err)
		}
	})
	t.Run("a bad choice", func(t *testing.T) {
		err := run(t.Context(), []string{"-dev", "-dev-nomad", "maybe"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), `-dev-nomad "maybe": want auto, real or sim`) {
			t.Errorf("run = %v", err)
		}
	})
}

// Without a nomad binary, -dev (auto) runs the test server, as before,
// and says why in its banner.
func TestDevAutoWithoutNomadRunsTheTestServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-dev", "-dev-nomad-addr", "127.0.0.1:0", "-listen", "127.0.0.1:0", "-log-level", "warn"}, pw, io.Discard)
		pw.Close()
	}()
	out := readBanner(t, pr)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("controller exited with %v", err)
	}
	if !regexp.MustCompile(`Nomad test server: http://127\.0\.0\.1:\d+ \(in-process, no nomad binary on PATH;`).MatchString(out) {
		t.Errorf("banner:\n%s", out)
	}
}
