// Package gitops_test runs the GitOps pipeline of this directory as a CI
// would: akctl-gitops.sh, with the akctl and controller built from this
// module, against controller -dev and its in-process Nomad test server.
// It keeps the script, the example sandboxes and the README's promises
// from rotting: each step checks the script's exit code and the lines of
// the plan a pull request would show.
package gitops_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestGitOpsPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs a controller; skipped with -short")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash on PATH")
	}
	script, err := filepath.Abs("akctl-gitops.sh")
	if err != nil {
		t.Fatal(err)
	}
	ctlBin, akctlBin := build(t)
	api := startController(t, ctlBin)

	// The declarations repository: a copy of sandboxes/, as a checkout has it.
	repo := t.TempDir()
	sandboxes := filepath.Join(repo, "sandboxes")
	copyDir(t, "sandboxes", sandboxes)
	planFile := filepath.Join(t.TempDir(), "plan.md")

	p := &pipeline{t: t, bash: bash, script: script, dir: repo, akctl: akctlBin, api: api, planFile: planFile}

	// A sandbox applied by hand, outside the apply set: no prune may touch it.
	manual := filepath.Join(t.TempDir(), "manual.hcl")
	writeFile(t, manual, strings.ReplaceAll(readFile(t, filepath.Join("sandboxes", "agent-alpha.hcl")), `"agent-alpha"`, `"manual"`))
	if out, code := p.akctlRun("apply", "-f", manual, "--wait"); code != 0 {
		t.Fatalf("akctl apply manual.hcl: exit %d\n%s", code, out)
	}

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{nil, {"plan"}, {"deploy", "sandboxes/"}, {"plan", "a", "b"}} {
			out, code := p.run(args...)
			if code != 2 || !strings.Contains(out, "usage: akctl-gitops.sh plan DIR") {
				t.Errorf("akctl-gitops.sh %q: exit %d, want 2 and the usage\n%s", args, code, out)
			}
		}
	})

	// Step by step, the life of a declarations repository.
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow() // each step builds on the one before
		}
	}

	step("plan_on_empty_controller_creates_both", func(t *testing.T) {
		plan := p.plan(1)
		wantLines(t, plan,
			"<!-- akctl-gitops-plan: gitops -->",
			"### akctl plan for `sandboxes/` (apply set `gitops`)",
			"**2 to create, 0 to update, 0 to prune.**",
			"```diff",
			"+ create sandbox default/agent-alpha",
			"+ create sandbox default/agent-beta",
			`    spec.driver: (none) -> "raw_exec"`,
			`    applySet: (none) -> "gitops"`,
		)
		notContains(t, plan, "manual", "No changes.")
	})

	step("apply_runs_both", func(t *testing.T) {
		out := p.apply(0)
		wantLines(t, out, "sandbox/default/agent-alpha created", "sandbox/default/agent-beta created")
		got := p.sandboxes()
		for _, name := range []string{"agent-alpha", "agent-beta", "manual"} {
			if s, ok := got[name]; !ok || s.Status.Phase != "Running" {
				t.Errorf("sandbox %s after apply: %+v (present %v), want Running", name, s, ok)
			}
		}
		if got["agent-alpha"].ApplySet != "gitops" || got["manual"].ApplySet != "" {
			t.Errorf("apply sets: agent-alpha %q, manual %q; want gitops and none", got["agent-alpha"].ApplySet, got["manual"].ApplySet)
		}
	})

	step("plan_after_apply_has_no_changes", func(t *testing.T) {
		plan := p.plan(0)
		wantLines(t, plan, "### akctl plan for `sandboxes/` (apply set `gitops`)", "No changes. The controller runs what `sandboxes/` declares.")
		notContains(t, plan, "```diff", "create", "prune")
	})

	alpha := filepath.Join(sandboxes, "agent-alpha.hcl")
	step("plan_shows_an_update", func(t *testing.T) {
		src := readFile(t, alpha)
		if !strings.Contains(src, "memory_mb = 64") {
			t.Fatalf("%s does not set memory_mb = 64:\n%s", alpha, src)
		}
		writeFile(t, alpha, strings.Replace(src, "memory_mb = 64", "memory_mb = 96", 1))
		plan := p.plan(1)
		wantLines(t, plan,
			"**0 to create, 1 to update, 0 to prune.**",
			"~ update sandbox default/agent-alpha",
			"    spec.memoryMB: 64 -> 96",
		)
		notContains(t, plan, "agent-beta", "+ create")
	})

	step("apply_updates", func(t *testing.T) {
		out := p.apply(0)
		wantLines(t, out, "sandbox/default/agent-alpha configured", "sandbox/default/agent-beta unchanged")
		s := p.sandboxes()["agent-alpha"]
		if s.Spec.MemoryMB != 96 || s.Status.Phase != "Running" {
			t.Errorf("agent-alpha after apply: memoryMB %v, phase %q; want 96, Running", s.Spec.MemoryMB, s.Status.Phase)
		}
	})

	step("invalid_declaration_fails_the_plan", func(t *testing.T) {
		bad := filepath.Join(sandboxes, "broken.hcl")
		writeFile(t, bad, "sandbox \"broken\" {\n  driver = \"raw_exec\"\n  network = \"host\"\n  memroy_mb = 64\n}\n")
		defer os.Remove(bad)
		plan := p.plan(2)
		wantLines(t, plan, "**Invalid declarations**: nothing can be applied until they are fixed.", "```text")
		if !strings.Contains(plan, "broken.hcl line 4") || !strings.Contains(plan, `"memroy_mb"`) {
			t.Errorf("the plan does not point at broken.hcl line 4 and memroy_mb:\n%s", plan)
		}
	})

	step("plan_shows_a_prune", func(t *testing.T) {
		if err := os.Remove(filepath.Join(sandboxes, "agent-beta.hcl")); err != nil {
			t.Fatal(err)
		}
		plan := p.plan(1)
		wantLines(t, plan, "**0 to create, 0 to update, 1 to prune.**", "- prune sandbox default/agent-beta")
		notContains(t, plan, "agent-alpha", "manual")
	})

	step("apply_prunes", func(t *testing.T) {
		out := p.apply(0)
		wantLines(t, out, "sandbox/default/agent-alpha unchanged", "sandbox/default/agent-beta pruned")
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := p.sandboxes()
			if _, ok := got["agent-beta"]; !ok {
				for _, name := range []string{"agent-alpha", "manual"} {
					if got[name].Status.Phase != "Running" {
						t.Errorf("sandbox %s after the prune: %+v, want Running", name, got[name])
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent-beta still listed 20s after the prune: %+v", got["agent-beta"])
			}
			time.Sleep(200 * time.Millisecond)
		}
		p.plan(0)
	})

	step("unreachable_controller_is_an_error", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + l.Addr().String()
		l.Close()
		q := *p
		q.api = closed
		plan := q.plan(3)
		wantLines(t, plan, "**The plan could not be computed** (akctl diff exited 3).")
		if !strings.Contains(plan, closed) {
			t.Errorf("the plan does not name the address %s:\n%s", closed, plan)
		}
	})
}

// TestWorkflowRunsTheScript holds the GitHub Actions workflow, which no
// test can run, to the script's command lines and the README's promises.
func TestWorkflowRunsTheScript(t *testing.T) {
	wf := readFile(t, "github-actions.yml")
	if strings.Contains(wf, "\t") {
		t.Error("github-actions.yml holds a tab: YAML indents with spaces only")
	}
	for _, want := range []string{
		"  pull_request:\n",
		"    branches: [main]\n",
		"bash ./akctl-gitops.sh plan sandboxes/ || code=$?\n",
		"bash ./akctl-gitops.sh apply sandboxes/\n",
		`if [ "$CODE" -ge 2 ]; then`,
		"AKCTL_ADDR: ${{ secrets.AKCTL_ADDR }}\n",
		"AKCTL_TOKEN: ${{ secrets.AKCTL_TOKEN }}\n",
		"go install \"github.com/agentkernel/agentkernel-controller/cmd/akctl@${AKCTL_VERSION}\"",
		"group: sandboxes-apply\n      cancel-in-progress: false\n",
		"uses: actions/setup-go@",
		"uses: actions/github-script@",
	} {
		if !strings.Contains(wf, want) {
			t.Errorf("github-actions.yml lacks %q", want)
		}
	}
	if strings.Contains(wf, "\n  pull_request_target:") {
		t.Error("github-actions.yml uses pull_request_target, which runs with the repository's secrets for forks")
	}
}

// pipeline runs akctl-gitops.sh in a declarations repository.
type pipeline struct {
	t                                       *testing.T
	bash, script, dir, akctl, api, planFile string
}

// run runs the script with args and returns its combined output and exit code.
func (p *pipeline) run(args ...string) (string, int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bash, append([]string{p.script}, args...)...)
	cmd.Dir = p.dir
	cmd.Env = append(cleanEnv(),
		"AKCTL="+p.akctl,
		"AKCTL_ADDR="+p.api,
		"PLAN_FILE="+p.planFile,
		"WAIT=30s",
	)
	return output(p.t, cmd)
}

// plan runs "plan sandboxes/", checks its exit code and that stdout has
// the plan file's Markdown, and returns the plan file.
func (p *pipeline) plan(wantCode int) string {
	p.t.Helper()
	_ = os.Remove(p.planFile)
	ctx, cancel := context.WithTimeout(p.t.Context(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bash, p.script, "plan", "sandboxes/")
	cmd.Dir = p.dir
	cmd.Env = append(cleanEnv(), "AKCTL="+p.akctl, "AKCTL_ADDR="+p.api, "PLAN_FILE="+p.planFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	code := exitCode(p.t, cmd.Run())
	plan := readFile(p.t, p.planFile)
	if code != wantCode {
		p.t.Fatalf("plan: exit %d, want %d\nplan file:\n%s\nstderr:\n%s", code, wantCode, plan, stderr.String())
	}
	if stdout.String() != plan {
		p.t.Errorf("plan: stdout differs from the plan file\nstdout:\n%s\nplan file:\n%s", stdout.String(), plan)
	}
	if !strings.HasPrefix(plan, "<!-- akctl-gitops-plan: gitops -->\n") {
		p.t.Errorf("plan file does not start with its marker:\n%s", plan)
	}
	return plan
}

// apply runs "apply sandboxes/" and checks its exit code.
func (p *pipeline) apply(wantCode int) string {
	p.t.Helper()
	out, code := p.run("apply", "sandboxes/")
	if code != wantCode {
		p.t.Fatalf("apply: exit %d, want %d\n%s", code, wantCode, out)
	}
	return out
}

func (p *pipeline) akctlRun(args ...string) (string, int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.akctl, args...)
	cmd.Env = append(cleanEnv(), "AKCTL_ADDR="+p.api)
	return output(p.t, cmd)
}

type sandbox struct {
	Name     string `json:"name"`
	ApplySet string `json:"applySet"`
	Spec     struct {
		MemoryMB float64 `json:"memoryMB"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

// sandboxes lists the controller's sandboxes, as a dashboard would, by name.
func (p *pipeline) sandboxes() map[string]sandbox {
	p.t.Helper()
	out, code := p.akctlRun("get", "-A", "-o", "json")
	if code != 0 {
		p.t.Fatalf("akctl get -A -o json: exit %d\n%s", code, out)
	}
	var list struct{ Items []sandbox }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		p.t.Fatalf("akctl get -o json: %v\n%s", err, out)
	}
	m := map[string]sandbox{}
	for _, s := range list.Items {
		m[s.Name] = s
	}
	return m
}

// cleanEnv is the test's environment without what would steer akctl, the
// script or the controller's Nomad elsewhere.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "AKCTL"), strings.HasPrefix(name, "NOMAD_"), name == "APPLY_SET", name == "PLAN_FILE", name == "PLAN_MAX_BYTES", name == "WAIT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func output(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	return string(out), exitCode(t, err)
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// build compiles the controller and akctl from this module into a
// temporary directory.
func build(t *testing.T) (controller, akctl string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go on PATH to build the binaries")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, "build", "-o", dir+string(filepath.Separator), "./cmd/controller", "./cmd/akctl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "controller"), filepath.Join(dir, "akctl")
}

// syncBuffer collects the controller's stderr while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startController starts controller -dev with the in-process Nomad test
// server on free loopback ports, returns its API address, and stops it
// with SIGTERM when the test ends.
func startController(t *testing.T, bin string) string {
	t.Helper()
	cmd := exec.Command(bin, "-dev", "-dev-nomad", "sim", "-dev-nomad-addr", "127.0.0.1:0",
		"-listen", "127.0.0.1:0", "-log-level", "warn", "-data-dir", t.TempDir())
	cmd.Env = cleanEnv()
	// An io.Pipe rather than StdoutPipe: Wait then waits for the copy into
	// it, which the reader below drains until the pipe is closed.
	stdout, stdoutW := io.Pipe()
	cmd.Stdout = stdoutW
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Error("controller did not stop within 20s of SIGTERM")
		}
		stdoutW.Close()
		if t.Failed() {
			t.Logf("controller stderr:\n%s", stderr.String())
		}
	})

	apiRE := regexp.MustCompile(`^\s+API:\s+(http://127\.0\.0\.1:\d+)\s*$`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		api := ""
		for sc.Scan() {
			if m := apiRE.FindStringSubmatch(sc.Text()); m != nil && api == "" {
				api = m[1]
				found <- api
			}
		}
		close(found)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case api, ok := <-found:
		if !ok {
			t.Fatalf("controller exited before printing its API address\nstderr:\n%s", stderr.String())
		}
		return api
	case <-time.After(30 * time.Second):
		t.Fatalf("controller printed no API address within 30s\nstderr:\n%s", stderr.String())
	}
	return ""
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".hcl") {
			continue
		}
		writeFile(t, filepath.Join(to, e.Name()), readFile(t, filepath.Join(from, e.Name())))
		n++
	}
	if n != 2 {
		t.Fatalf("%s holds %d declaration files, the test expects agent-alpha.hcl and agent-beta.hcl", from, n)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantLines checks that each of want is a whole line of text.
func wantLines(t *testing.T, text string, want ...string) {
	t.Helper()
	lines := map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		lines[l] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("no line %q in:\n%s", w, text)
		}
	}
}

func notContains(t *testing.T, text string, unwanted ...string) {
	t.Helper()
	for _, u := range unwanted {
		if strings.Contains(text, u) {
			t.Errorf("%q should not appear in:\n%s", u, text)
		}
	}
}
