package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	akclient "github.com/agentkernel/agentkernel-controller/client"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
)

// exec, cp and logs through akctl, against a whole controller whose
// Nomad test server runs commands as real local processes.

// akctlIO runs one akctl command line against tc with stdin.
func akctlIO(t *testing.T, tc *testController, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append([]string{"--addr", tc.addr}, args...), &env{stdin: stdin, stdout: &stdout, stderr: &stderr})
	return code, stdout.String(), stderr.String()
}

// liveSandboxes starts a controller with raw_exec allowed and applies a
// running sandbox "raw" and a stopped one "off".
func liveSandboxes(t *testing.T, inside sandboxio.Options) *testController {
	t.Helper()
	tc := startController(t, ctlOptions{allowRawExec: true, inside: inside})
	dir := t.TempDir()
	decl := rawHCL + `sandbox "off" {
  driver  = "raw_exec"
  command = ["/bin/sleep", "infinity"]
  network = "host"
  state   = "stopped"
}
`
	if err := os.WriteFile(filepath.Join(dir, "s.hcl"), []byte(decl), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := akctlIO(t, tc, nil, "apply", "-f", filepath.Join(dir, "s.hcl"), "--wait"); code != 0 {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	return tc
}

func TestAkctlExec(t *testing.T) {
	tc := liveSandboxes(t, sandboxio.Options{})
	value := "it's \"quoted\" $HOME `id`\nand  spaces"
	tests := []struct {
		name                   string
		args                   []string
		stdin                  string
		wantCode               int
		wantStdout, wantStderr string // wantStderr: a part of it
	}{
		{"exit 0", []string{"exec", "raw", "--", "true"}, "", 0, "", ""},
		{"exit code passes through", []string{"exec", "raw", "--", "sh", "-c", "echo out; echo err >&2; exit 7"}, "", 7, "out\n", "err"},
		{"command not found", []string{"exec", "raw", "--", "/no/such/cmd"}, "", 127, "", "/no/such/cmd"},
		{"stdin with -i", []string{"exec", "-i", "raw", "--", "cat"}, "piped\x00bytes\n", 0, "piped\x00bytes\n", ""},
		{"no stdin without -i", []string{"exec", "raw", "--", "cat"}, "ignored", 0, "", ""},
		{"env without a shell", []string{"exec", "-e", "V=" + value, "raw", "--", "printenv", "V"}, "", 0, value + "\n", ""},
		{"workdir", []string{"exec", "-w", "/tmp", "raw", "--", "pwd"}, "", 0, "/tmp\n", ""},
		{"namespace/name", []string{"exec", "default/raw", "--", "true"}, "", 0, "", ""},
		{"flags between the name and --", []string{"exec", "raw", "-e", "A=1", "--", "sh", "-c", `printf %s "$A"; exit 4`}, "", 4, "1", ""},
		{"a flag right before --", []string{"exec", "raw", "-i", "--", "sh", "-n", "-c", "cat"}, "x", 0, "", ""},
		{"not running", []string{"exec", "off", "--", "true"}, "", 1, "", "sandbox default/off is Stopped, not Running"},
		{"missing sandbox", []string{"exec", "nope", "--", "true"}, "", 1, "", "nope"},
		{"no command", []string{"exec", "raw"}, "", 2, "", "want a sandbox and a command"},
	}
	for _, tc2 := range tests {
		t.Run(tc2.name, func(t *testing.T) {
			code, out, errOut := akctlIO(t, tc, strings.NewReader(tc2.stdin), tc2.args...)
			if code != tc2.wantCode || out != tc2.wantStdout || !strings.Contains(errOut, tc2.wantStderr) {
				t.Errorf("akctl %s: exit %d stdout %q stderr %q; want %d %q and stderr holding %q",
					strings.Join(tc2.args, " "), code, out, errOut, tc2.wantCode, tc2.wantStdout, tc2.wantStderr)
			}
		})
	}
}

// "--" ends akctl's flags wherever it stands; what follows is the
// command's, flags and all.
func TestParseArgsDoubleDash(t *testing.T) {
	tests := []struct {
		args []string
		want []string
		ns   string
	}{
		{[]string{"box", "--", "ls", "-la"}, []string{"box", "ls", "-la"}, "default"},
		{[]string{"box", "-n", "a", "--", "grep", "-n", "x"}, []string{"box", "grep", "-n", "x"}, "a"},
		{[]string{"-n", "a", "box", "--", "-n"}, []string{"box", "-n"}, "a"},
		{[]string{"--", "box", "-n", "b"}, []string{"box", "-n", "b"}, "default"},
		{[]string{"box", "-n", "b"}, []string{"box"}, "b"},
	}
	for _, tc := range tests {
		fs := newFlagSet("t")
		ns := fs.String("n", "default", "")
		got, err := parseArgs(fs, tc.args, "", &env{stdout: io.Discard, stderr: io.Discard})
		if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") || *ns != tc.ns {
			t.Errorf("%q: %q ns %q %v; want %q ns %q", tc.args, got, *ns, err, tc.want, tc.ns)
		}
	}
}

func TestAkctlAttachNeedsATerminal(t *testing.T) {
	tc := liveSandboxes(t, sandboxio.Options{})
	code, _, errOut := akctlIO(t, tc, strings.NewReader("exit\n"), "attach", "raw")
	if code != exitUsage || !strings.Contains(errOut, "needs a terminal") {
		t.Errorf("attach from a pipe: %d %q", code, errOut)
	}
}

func TestAkctlCp(t *testing.T) {
	tc := liveSandboxes(t, sandboxio.Options{})
	_, taskDir, _ := akctlIO(t, tc, nil, "exec", "raw", "--", "printenv", "NOMAD_TASK_DIR")
	taskDir = strings.TrimSpace(taskDir)
	local := t.TempDir()
	data := make([]byte, 1<<20)
	rand.Read(data)
	names := []string{"plain.bin", "with space.bin", `it's "q".bin`, "ünïcødé-файл.bin"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(local, n), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	mustRun := func(stdin io.Reader, args ...string) string {
		t.Helper()
		code, out, errOut := akctlIO(t, tc, stdin, args...)
		if code != 0 {
			t.Fatalf("akctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	for _, n := range names {
		mustRun(nil, "cp", filepath.Join(local, n), "raw:"+taskDir+"/up/"+n)
		back := filepath.Join(t.TempDir(), "back")
		mustRun(nil, "cp", "raw:"+taskDir+"/up/"+n, back)
		got, err := os.ReadFile(back)
		fi, _ := os.Stat(back)
		if err != nil || !bytes.Equal(got, data) || fi.Mode().Perm() != 0o640 {
			t.Errorf("%q round trip: %v, equal %v, mode %v", n, err, bytes.Equal(got, data), fi.Mode())
		}
	}
	// Standard input and output.
	mustRun(strings.NewReader("from stdin\n"), "cp", "-", "default/raw:"+taskDir+"/stdin.txt")
	if out := mustRun(nil, "cp", "raw:"+taskDir+"/stdin.txt", "-"); out != "from stdin\n" {
		t.Errorf("cp to stdout: %q", out)
	}
	// A directory, both ways.
	mustRun(nil, "cp", "-r", local, "raw:"+taskDir+"/tree")
	back := filepath.Join(t.TempDir(), "tree")
	mustRun(nil, "cp", "-r", "raw:"+taskDir+"/tree", back)
	for _, n := range names {
		got, err := os.ReadFile(filepath.Join(back, n))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("directory copy %q: %v", n, err)
		}
	}
	// With a link in it, copied out twice into the same place.
	if code, _, errOut := akctlIO(t, tc, nil, "exec", "raw", "--", "ln", "-s", "plain.bin", taskDir+"/tree/link"); code != 0 {
		t.Fatalf("ln: %s", errOut)
	}
	for i := 0; i < 2; i++ {
		mustRun(nil, "cp", "-r", "raw:"+taskDir+"/tree", back)
	}
	if l, err := os.Readlink(filepath.Join(back, "link")); err != nil || l != "plain.bin" {
		t.Errorf("link copied out: %q %v", l, err)
	}
	code, _, errOut := akctlIO(t, tc, nil, "cp", "raw:"+taskDir+"/tree", filepath.Join(t.TempDir(), "x"))
	if code != 1 || !strings.Contains(errOut, "add -r") {
		t.Errorf("directory without -r: %d %q", code, errOut)
	}
	for _, p := range []string{"relative/x", taskDir + "/../../etc/x", taskDir + "/a\x00b"} {
		code, _, errOut := akctlIO(t, tc, strings.NewReader("x"), "cp", "-", "raw:"+p)
		if code == 0 || !strings.Contains(errOut, "invalid") && !strings.Contains(errOut, "absolute") {
			t.Errorf("cp to %q: exit %d %q, want a refusal", p, code, errOut)
		}
	}
}

func TestAkctlLimits(t *testing.T) {
	tc := liveSandboxes(t, sandboxio.Options{MaxFileBytes: 100, SessionsPerSandbox: 1})
	_, taskDir, _ := akctlIO(t, tc, nil, "exec", "raw", "--", "printenv", "NOMAD_TASK_DIR")
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, make([]byte, 101), 0o644)
	code, _, errOut := akctlIO(t, tc, nil, "cp", big, "raw:"+strings.TrimSpace(taskDir)+"/big")
	if code != 1 || !strings.Contains(errOut, "100") {
		t.Errorf("cp past the limit: %d %q", code, errOut)
	}
	// A followed log holds the sandbox's only session.
	pc, err := akclient.New(akclient.Config{Address: tc.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rc, err := pc.Sandbox("default", "raw").Logs(ctx, akclient.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	code, _, errOut = akctlIO(t, tc, nil, "exec", "raw", "--", "true")
	if code != 1 || !strings.Contains(errOut, "retry") {
		t.Errorf("exec past the session limit: %d %q, want a refusal saying to retry", code, errOut)
	}
}

func TestAkctlLogs(t *testing.T) {
	tc := liveSandboxes(t, sandboxio.Options{})
	appendLog := func(s string) {
		t.Helper()
		code, _, errOut := akctlIO(t, tc, nil, "exec", "-e", "TEXT="+s, "raw", "--", "sh", "-c", `printf '%s' "$TEXT" >> "$NOMAD_ALLOC_DIR/logs/sandbox.stdout.0"`)
		if code != 0 {
			t.Fatalf("append: %s", errOut)
		}
	}
	appendLog("one\ntwo\nthree\n")
	if _, out, _ := akctlIO(t, tc, nil, "logs", "raw"); out != "one\ntwo\nthree\n" {
		t.Errorf("logs: %q", out)
	}
	if _, out, _ := akctlIO(t, tc, nil, "logs", "--tail", "1", "raw"); out != "three\n" {
		t.Errorf("logs --tail 1: %q", out)
	}
	if code, out, _ := akctlIO(t, tc, nil, "logs", "--stderr", "raw"); code != 0 || out != "" {
		t.Errorf("logs --stderr: %d %q", code, out)
	}
	// Follow until the output holds the new line, then interrupt.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		var stderr bytes.Buffer
		done <- run(ctx, []string{"--addr", tc.addr, "logs", "-f", "--tail", "1", "raw"}, &env{stdin: strings.NewReader(""), stdout: pw, stderr: &stderr})
		pw.Close()
	}()
	buf := make([]byte, 64)
	got := ""
	for !strings.Contains(got, "four\n") {
		n, err := pr.Read(buf)
		got += string(buf[:n])
		if strings.HasPrefix(got, "three\n") && !strings.Contains(got, "four") {
			appendLog("four\n")
		}
		if err != nil {
			t.Fatalf("follow: %q %v", got, err)
		}
	}
	cancel()
	go io.Copy(io.Discard, pr)
	<-done
	if got != "three\nfour\n" {
		t.Errorf("followed %q", got)
	}
}

func TestAkctlInsideHelpAndUsage(t *testing.T) {
	cases := []cliCase{
		{name: "exec_help", args: []string{"exec", "-h"}},
		{name: "attach_help", args: []string{"attach", "-h"}},
		{name: "cp_help", args: []string{"cp", "-h"}},
		{name: "logs_help", args: []string{"logs", "-h"}},
		{name: "cp_usage_two_local", args: []string{"cp", "a", "b"}},
		{name: "cp_usage_two_remote", args: []string{"cp", "x:/a", "y:/b"}},
		{name: "cp_usage_relative_remote", args: []string{"cp", "a", "box:rel"}},
		{name: "logs_usage_bad_tail", args: []string{"logs", "--tail", "-5", "box"}},
		{name: "exec_usage_bad_env", args: []string{"exec", "-e", "NOVALUE", "box", "--", "true"}},
	}
	runCases(t, "inside", cases)
}

// lockedBuffer collects the controller's log while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// What akctl runs and copies is audited by the controller, without the
// data: the command and the variables' names, never their values, the
// input or the output.
func TestAkctlWorkIsAuditedWithoutData(t *testing.T) {
	var logs lockedBuffer
	tc := liveSandboxes(t, sandboxio.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	code, out, errOut := akctlIO(t, tc, strings.NewReader("stdin-secret"), "exec", "-i", "-e", "TOKEN=env-secret", "raw", "--", "sh", "-c", `cat; printf '%s' "$TOKEN"`)
	if code != 0 || out != "stdin-secretenv-secret" {
		t.Fatalf("exec: %d %q %s", code, out, errOut)
	}
	_, dir, _ := akctlIO(t, tc, nil, "exec", "raw", "--", "printenv", "NOMAD_TASK_DIR")
	if code, _, errOut := akctlIO(t, tc, strings.NewReader("file-secret"), "cp", "-", "raw:"+strings.TrimSpace(dir)+"/f"); code != 0 {
		t.Fatalf("cp: %s", errOut)
	}
	got := logs.String()
	for _, want := range []string{"msg=exec", "TOKEN", "exitCode=0", "msg=file", "op=write"} {
		if !strings.Contains(got, want) {
			t.Errorf("the audit log lacks %q:\n%s", want, got)
		}
	}
	for _, secret := range []string{"stdin-secret", "env-secret", "file-secret"} {
		if strings.Contains(got, secret) {
			t.Errorf("the audit log holds %q:\n%s", secret, got)
		}
	}
}
