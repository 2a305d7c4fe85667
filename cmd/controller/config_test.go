package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "controller.hcl")
	if err := os.WriteFile(file, []byte(`
data_dir = "/from/file"
workers  = 8
resync   = "5m"
nomad {
  address         = "http://file:4646"
  write_rate      = 0
  request_timeout = "45s"
}
policy {
  allowed_drivers = ["docker"]
  max_memory_mb   = 2048
}
ha {
  enabled         = true
  advertise_addr  = "http://10.0.0.5:7474"
  variable_prefix = "team/agentkernel"
  lock_ttl        = "20s"
  adopt_owners    = ["old-store"]
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want func(c *config)
	}{
		{"defaults", []string{"-data-dir", "/d"}, func(c *config) { c.DataDir = "/d" }},
		{"file over defaults", []string{"-config", file}, func(c *config) {
			c.DataDir, c.Workers, c.Resync = "/from/file", 8, "5m"
			c.Nomad.Address, c.Nomad.WriteRate, c.Nomad.RequestTimeout = "http://file:4646", 0, "45s"
			c.Policy.AllowedDrivers, c.Policy.MaxMemoryMB = []string{"docker"}, 2048
			c.HA = haConfig{Enabled: true, AdvertiseAddr: "http://10.0.0.5:7474", VariablePrefix: "team/agentkernel",
				LockTTL: "20s", LockDelay: "15s", AdoptOwners: []string{"old-store"}}
		}},
		{"flags over file", []string{"-config", file, "-workers", "2", "-nomad-addr", "http://flag:4646", "-allowed-drivers", "docker,exec,raw_exec",
			"-ha-lock-delay", "5s", "-instance-id", "c1", "-adopt-owners", "", "-nomad-request-timeout", "1m"}, func(c *config) {
			c.DataDir, c.Workers, c.Resync = "/from/file", 2, "5m"
			c.Nomad.Address, c.Nomad.WriteRate, c.Nomad.RequestTimeout = "http://flag:4646", 0, "1m"
			c.Policy.AllowedDrivers, c.Policy.MaxMemoryMB = []string{"docker", "exec", "raw_exec"}, 2048
			c.HA = haConfig{Enabled: true, InstanceID: "c1", AdvertiseAddr: "http://10.0.0.5:7474", VariablePrefix: "team/agentkernel",
				LockTTL: "20s", LockDelay: "5s"}
		}},
		{"ha from flags", []string{"-data-dir", "/d", "-ha", "-advertise-addr", "https://c1.example:7474", "-ha-variable-prefix", "ak", "-ha-lock-ttl", "10s"}, func(c *config) {
			c.DataDir = "/d"
			c.HA = haConfig{Enabled: true, AdvertiseAddr: "https://c1.example:7474", VariablePrefix: "ak", LockTTL: "10s", LockDelay: "15s"}
		}},
		{"dev allows every driver and listens on 7474", []string{"-dev"}, func(c *config) {
			c.Dev = true
			c.Listen = "127.0.0.1:7474"
			c.Policy.AllowedDrivers = []string{"docker", "exec", "raw_exec"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			want := defaultConfig()
			tt.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("workers = \"many\"\nnomad {\n  adress = \"x\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"-data-dir is required"}},
		{[]string{"-data-dir", "/d", "-workers", "0"}, []string{"workers is 0"}},
		{[]string{"-data-dir", "/d", "-resync", "soon"}, []string{`resync "soon"`}},
		{[]string{"-data-dir", "/d", "-log-level", "loud"}, []string{`log level "loud"`}},
		{[]string{"-data-dir", "/d", "-allowed-drivers", "docker,podman"}, []string{`allowed driver "podman"`}},
		{[]string{"-config", bad}, []string{"bad.hcl line 1", "bad.hcl line 3", `Did you mean "address"?`}},
		{[]string{"-data-dir", "/d", "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"-data-dir", "/d", "-ha", "-ha-lock-ttl", "5s"}, []string{`lock_ttl "5s" must be a Go duration from 10s to 24h`}},
		{[]string{"-data-dir", "/d", "-ha", "-ha-lock-delay", "-1s"}, []string{`lock_delay "-1s"`}},
		{[]string{"-data-dir", "/d", "-ha", "-advertise-addr", "10.0.0.5:7474"}, []string{`advertise_addr "10.0.0.5:7474" must be a base URL`}},
		{[]string{"-dev", "-ha"}, []string{"-ha and -dev do not go together"}},
		{[]string{"-data-dir", "/d", "-nomad-request-timeout", "0s"}, []string{`nomad request_timeout "0s" must be a Go duration of at least 1s`}},
		{[]string{"-data-dir", "/d", "-ha", "-ha-variable-prefix", "team.ak"}, []string{`ha variable_prefix "team.ak" must be a Nomad Variable path`}},
		{[]string{"-data-dir", "/d", "-ha", "-ha-variable-prefix", "nomad/jobs/x"}, []string{`outside "nomad/"`}},
		{[]string{"-data-dir", "/d", "-ha", "-ha-variable-prefix", strings.Repeat("p", 52)}, []string{"at most 51 characters"}},
	}
	for _, tt := range tests {
		_, err := parseConfig(tt.args, io.Discard)
		if err == nil {
			t.Errorf("%v: no error", tt.args)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", tt.args, err, w)
			}
		}
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	t.Run("default is a 0600 unix socket in the data dir", func(t *testing.T) {
		ln, where, err := listen("", dir, false)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fi, err := os.Stat(filepath.Join(dir, "controller.sock"))
		if err != nil || fi.Mode().Perm() != 0o600 || where != "unix://"+filepath.Join(dir, "controller.sock") {
			t.Fatalf("socket %v, mode %v, where %s", err, fi.Mode().Perm(), where)
		}
		if _, _, err := listen("", dir, false); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("second listener on a live socket: %v, want in use", err)
		}
	})
	t.Run("a stale socket is replaced", func(t *testing.T) {
		p := filepath.Join(dir, "stale.sock")
		ln, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		ln2, _, err := listen(p, dir, false)
		if err != nil {
			t.Fatalf("stale socket not replaced: %v", err)
		}
		ln2.Close()
	})
	t.Run("a regular file is never replaced", func(t *testing.T) {
		p := filepath.Join(dir, "file.sock")
		if err := os.WriteFile(p, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := listen(p, dir, false); err == nil {
			t.Error("listened over a regular file")
		}
		if b, _ := os.ReadFile(p); string(b) != "keep" {
			t.Error("the file was changed")
		}
	})
	t.Run("non-loopback TCP needs a token", func(t *testing.T) {
		if _, _, err := listen("0.0.0.0:0", dir, false); err == nil || !strings.Contains(err.Error(), "without a token") {
			t.Errorf("err = %v, want a refusal", err)
		}
		ln, _, err := listen("0.0.0.0:0", dir, true)
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		ln, where, err := listen("127.0.0.1:0", dir, false)
		if err != nil || !strings.HasPrefix(where, "http://127.0.0.1:") {
			t.Fatalf("loopback without a token: %v %s", err, where)
		}
		ln.Close()
	})
}

func TestTokenFileMustBePrivate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecretFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable token accepted: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := readSecretFile(p); err != nil || tok != "s3cret" {
		t.Errorf("token %q, %v", tok, err)
	}
}

// The config the example Nomad job renders must be one this controller
// accepts: render its template with plausible values and parse it.
func TestExampleJobConfigIsAccepted(t *testing.T) {
	job, err := os.ReadFile("../../examples/controller.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// The heredoc just before the destination local/controller.hcl.
	text := string(job)
	dest := strings.Index(text, `destination = "local/controller.hcl"`)
	start := strings.LastIndex(text[:max(dest, 0)], "<<-EOT\n")
	if dest < 0 || start < 0 {
		t.Fatal("no template rendering local/controller.hcl in examples/controller.nomad.hcl")
	}
	body := text[start+len("<<-EOT\n") : dest]
	body = body[:strings.LastIndex(body, "EOT")]
	m := [][]byte{nil, []byte(body)}
	env := map[string]string{
		"NOMAD_ALLOC_DIR": "/alloc", "NOMAD_SECRETS_DIR": "/secrets", "NOMAD_NAMESPACE": "default", "NOMAD_ADDR_api": "10.0.0.5:27474",
	}
	rendered := regexp.MustCompile(`\{\{ env "([A-Za-z_]+)" \}\}`).ReplaceAllStringFunc(string(m[1]), func(s string) string {
		name := regexp.MustCompile(`"([A-Za-z_]+)"`).FindStringSubmatch(s)[1]
		v, ok := env[name]
		if !ok {
			t.Errorf("template uses %s, which this test does not render", name)
		}
		return v
	})
	file := filepath.Join(t.TempDir(), "controller.hcl")
	if err := os.WriteFile(file, []byte(rendered), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig([]string{"-config", file}, io.Discard)
	if err != nil {
		t.Fatalf("the example job's config is refused: %v\n%s", err, rendered)
	}
	if !cfg.HA.Enabled || cfg.HA.AdvertiseAddr != "http://10.0.0.5:27474" || cfg.DataDir != "/alloc/data" || cfg.TokenFile != "/secrets/api-token" {
		t.Errorf("parsed %+v: want ha on, advertising the api port, data under the alloc dir, the token from secrets", cfg)
	}
	if _, err := instance(cfg, "http://0.0.0.0:7474"); err != nil {
		t.Errorf("instance identity from the example config: %v", err)
	}
}
