package spec

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/hcl/v2"
)

// loadStrings loads in-memory files, named as given, in name order.
func loadStrings(t testing.TB, files map[string]string, opts Options) (*Result, hcl.Diagnostics) {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	srcs := make([]SourceFile, 0, len(names))
	for _, n := range names {
		srcs = append(srcs, SourceFile{Name: n, Dir: t.TempDir(), Src: []byte(files[n])})
	}
	return LoadSources(srcs, opts)
}

// loadOne loads a single sandbox body and fails the test on any error.
func loadOne(t *testing.T, body string) Sandbox {
	t.Helper()
	res, diags := loadStrings(t, map[string]string{"a.hcl": "sandbox \"box\" {\n" + body + "\n}\n"}, Options{})
	if diags.HasErrors() {
		t.Fatalf("unexpected diagnostics: %s", diags.Error())
	}
	if len(res.Sandboxes) != 1 {
		t.Fatalf("got %d sandboxes, want 1", len(res.Sandboxes))
	}
	return res.Sandboxes[0]
}

// base is what `sandbox "box" { image = "img" }` means.
func base() Sandbox {
	return Sandbox{
		Namespace: "default",
		Name:      "box",
		Spec: Spec{
			Driver: "docker", Image: "img", Command: []string{"sh", "-c", "sleep infinity"},
			Profile: "moderate", VCPUs: 1, MemoryMB: 512, Network: "none", State: "running",
		},
	}
}

var ignoreSource = cmpopts.IgnoreFields(Sandbox{}, "Source")

func TestEveryAttributeDecodes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want func(s *Sandbox)
	}{
		{"defaults", `image = "img"`, func(s *Sandbox) {}},
		{"namespace", `image = "img"
namespace = "agents"`, func(s *Sandbox) { s.Namespace = "agents" }},
		{"driver exec has no image", `driver = "exec"`, func(s *Sandbox) { s.Spec.Driver = "exec"; s.Spec.Image = "" }},
		{"driver raw_exec on host network", `driver = "raw_exec"
network = "host"`, func(s *Sandbox) { s.Spec.Driver = "raw_exec"; s.Spec.Image = ""; s.Spec.Network = "host" }},
		{"command", `image = "img"
command = ["python", "-m", "http.server"]`, func(s *Sandbox) { s.Spec.Command = []string{"python", "-m", "http.server"} }},
		{"profile restrictive", `image = "img"
profile = "restrictive"`, func(s *Sandbox) {
			s.Spec.Profile = "restrictive"
			s.Spec.ReadOnly = true
			s.Spec.MemoryMB = 256
		}},
		{"profile permissive", `image = "img"
profile = "permissive"`, func(s *Sandbox) {
			s.Spec.Profile = "permissive"
			s.Spec.Network = "bridge"
			s.Spec.MemoryMB = 1024
		}},
		{"explicit attributes override the profile", `image = "img"
profile = "restrictive"
read_only = false
memory_mb = 2048
network = "bridge"
vcpus = 2`, func(s *Sandbox) {
			s.Spec.Profile = "restrictive"
			s.Spec.MemoryMB = 2048
			s.Spec.Network = "bridge"
			s.Spec.VCPUs = 2
		}},
		{"fractional vcpus", `image = "img"
vcpus = 0.125`, func(s *Sandbox) { s.Spec.VCPUs = 0.125 }},
		{"memory", `image = "img"
memory_mb = 768`, func(s *Sandbox) { s.Spec.MemoryMB = 768 }},
		{"ports sorted by label", `image = "img"
network = "bridge"
port "web" {
  to = 8080
}
port "admin" {
  to     = 9000
  static = 19000
}`, func(s *Sandbox) {
			s.Spec.Network = "bridge"
			s.Spec.Ports = []Port{{Label: "admin", To: 9000, Static: 19000}, {Label: "web", To: 8080}}
		}},
		{"read_only", `image = "img"
read_only = true`, func(s *Sandbox) { s.Spec.ReadOnly = true }},
		{"env", `image = "img"
env = { LOG_LEVEL = "debug", _X = "1" }`, func(s *Sandbox) { s.Spec.Env = map[string]string{"LOG_LEVEL": "debug", "_X": "1"} }},
		{"labels", `image = "img"
labels = { team = "ml", "example.com/tier" = "a" }`, func(s *Sandbox) { s.Labels = map[string]string{"team": "ml", "example.com/tier": "a"} }},
		{"files sorted by path, default mode", `image = "img"
file "/workspace/b.md" {
  content = "b"
}
file "/workspace/a.md" {
  content = "{{ .Not.A.Template }} $${x}"
  mode    = "600"
}`, func(s *Sandbox) {
			s.Spec.Files = []File{{Path: "/workspace/a.md", Content: "{{ .Not.A.Template }} ${x}", Mode: "0600"}, {Path: "/workspace/b.md", Content: "b", Mode: "0644"}}
		}},
		{"secrets", `image = "img"
secret "OPENAI_API_KEY" {
  variable = "agentkernel/secrets/openai"
  key      = "api_key"
}`, func(s *Sandbox) {
			s.Spec.Secrets = []Secret{{Env: "OPENAI_API_KEY", Variable: "agentkernel/secrets/openai", Key: "api_key"}}
		}},
		{"ttl normalised, on_expiry defaults to delete", `image = "img"
ttl = "90m"`, func(s *Sandbox) { s.Spec.TTL = "1h30m0s"; s.Spec.OnExpiry = "delete" }},
		{"expires_at normalised to UTC", `image = "img"
expires_at = "2026-12-01T02:00:00+02:00"
on_expiry = "stop"`, func(s *Sandbox) { s.Spec.ExpiresAt = "2026-12-01T00:00:00Z"; s.Spec.OnExpiry = "stop" }},
		{"state stopped", `image = "img"
state = "stopped"`, func(s *Sandbox) { s.Spec.State = "stopped" }},
		{"placement", `image = "img"
placement {
  datacenters = ["dc2", "dc1", "dc2"]
  node_pool   = "sandboxes"
  constraint {
    attribute = "$${node.class}"
    value     = "agents"
  }
  constraint {
    operator = "distinct_hosts"
  }
}`, func(s *Sandbox) {
			s.Spec.Placement = Placement{
				Datacenters: []string{"dc1", "dc2"},
				NodePool:    "sandboxes",
				Constraints: []Constraint{{Operator: "distinct_hosts"}, {Attribute: "${node.class}", Operator: "=", Value: "agents"}},
			}
		}},
		{"null means unset", `image = "img"
memory_mb = null`, func(s *Sandbox) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadOne(t, tt.body)
			want := base()
			tt.want(&want)
			if diff := cmp.Diff(want, got, ignoreSource); diff != "" {
				t.Errorf("sandbox (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProfileDefaults(t *testing.T) {
	tests := []struct {
		profile  string
		network  string
		readOnly bool
		memory   int
		vcpus    float64
	}{
		{"restrictive", "none", true, 256, 1},
		{"moderate", "none", false, 512, 1},
		{"permissive", "bridge", false, 1024, 1},
		{"", "none", false, 512, 1}, // no profile: moderate
	}
	for _, tt := range tests {
		t.Run("profile="+tt.profile, func(t *testing.T) {
			body := `image = "img"`
			if tt.profile != "" {
				body += "\nprofile = \"" + tt.profile + "\""
			}
			sp := loadOne(t, body).Spec
			got := []any{sp.Network, sp.ReadOnly, sp.MemoryMB, sp.VCPUs}
			want := []any{tt.network, tt.readOnly, tt.memory, tt.vcpus}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("network, read_only, memory_mb, vcpus (-want +got):\n%s", diff)
			}
		})
	}
}

// diagAt is the part of a diagnostic the tests pin: what, and exactly where.
type diagAt struct {
	Severity string
	Summary  string
	Pos      string // file:line:column of the subject's start
}

func diagsAt(diags hcl.Diagnostics) []diagAt {
	out := make([]diagAt, 0, len(diags))
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		pos := ""
		if d.Subject != nil {
			pos = fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		out = append(out, diagAt{sev, d.Summary, pos})
	}
	return out
}

func TestErrorsPointAtTheAttribute(t *testing.T) {
	// Each case is one sandbox whose body starts on line 2 of a.hcl, so
	// the positions read as "line of the offending attribute".
	tests := []struct {
		name string
		body string
		want []diagAt
	}{
		{"unknown attribute suggests", `image = "img"
imag = "x"`, []diagAt{{"error", "Unsupported argument", "a.hcl:3:1"}}},
		{"unknown block suggests", `image = "img"
prot "x" {}`, []diagAt{{"error", "Unsupported block type", "a.hcl:3:1"}}},
		{"wrong type", `image = ["a"]`, []diagAt{{"error", "Incorrect attribute value type", "a.hcl:2:9"}}},
		{"invalid driver", `driver = "podman"`, []diagAt{{"error", "Invalid driver", "a.hcl:2:10"}}},
		{"docker needs image", `driver = "docker"`, []diagAt{{"error", "Missing image", "a.hcl:1:1"}}},
		{"exec refuses image", `driver = "exec"
image = "img"`, []diagAt{{"error", "Image not supported by driver", "a.hcl:3:9"}}},
		{"image with space", `image = "a b"`, []diagAt{{"error", "Invalid image", "a.hcl:2:9"}}},
		{"empty command", `image = "img"
command = []`, []diagAt{{"error", "Invalid command", "a.hcl:3:11"}}},
		{"invalid profile", `image = "img"
profile = "paranoid"`, []diagAt{{"error", "Invalid profile", "a.hcl:3:11"}}},
		{"vcpus too small", `image = "img"
vcpus = 0.01`, []diagAt{{"error", "vCPUs out of range", "a.hcl:3:9"}}},
		{"vcpus too fine", `image = "img"
vcpus = 0.1234`, []diagAt{{"error", "vCPUs too fine", "a.hcl:3:9"}}},
		{"memory fractional", `image = "img"
memory_mb = 10.5`, []diagAt{{"error", "Whole number required", "a.hcl:3:13"}}},
		{"memory out of range", `image = "img"
memory_mb = 16`, []diagAt{{"error", "Memory out of range", "a.hcl:3:13"}}},
		{"invalid network", `image = "img"
network = "wifi"`, []diagAt{{"error", "Invalid network", "a.hcl:3:11"}}},
		{"port needs network", `image = "img"
port "http" {
  to = 80
}`, []diagAt{{"error", "Port without network", "a.hcl:3:6"}}},
		{"port number out of range", `image = "img"
network = "bridge"
port "http" {
  to = 70000
}`, []diagAt{{"error", "Invalid port number", "a.hcl:5:8"}}},
		{"duplicate static port", `image = "img"
network = "bridge"
port "a" {
  static = 8080
}
port "b" {
  static = 8080
}`, []diagAt{{"error", "Duplicate static port", "a.hcl:8:12"}}},
		{"duplicate port label", `image = "img"
network = "bridge"
port "a" {}
port "a" {}`, []diagAt{{"error", "Duplicate port block", "a.hcl:5:6"}}},
		{"bad port label", `image = "img"
network = "bridge"
port "Web-UI" {}`, []diagAt{{"error", "Invalid port label", "a.hcl:4:6"}}},
		{"raw_exec cannot isolate network", `driver = "raw_exec"`, []diagAt{{"error", "Network isolation not possible with raw_exec", "a.hcl:1:1"}}},
		{"read_only needs docker", `driver = "exec"
read_only = true`, []diagAt{{"error", "Read-only root not possible with exec", "a.hcl:3:13"}}},
		{"bad env name points at the key", `image = "img"
env = {
  OK     = "1"
  "1BAD" = "2"
}`, []diagAt{{"error", "Invalid environment variable name", "a.hcl:5:3"}}},
		{"reserved env name", `image = "img"
env = { NOMAD_TASK_DIR = "/x" }`, []diagAt{{"error", "Reserved environment variable", "a.hcl:3:9"}}},
		{"bad label key", `image = "img"
labels = { "bad key" = "x" }`, []diagAt{{"error", "Invalid label key", "a.hcl:3:12"}}},
		{"bad label value", `image = "img"
labels = { team = "not ok!" }`, []diagAt{{"error", "Invalid label value", "a.hcl:3:12"}}},
		{"relative file path", `image = "img"
file "etc/x" {
  content = "x"
}`, []diagAt{{"error", "Invalid file path", "a.hcl:3:6"}}},
		{"file path with dotdot", `image = "img"
file "/workspace/../etc/passwd" {
  content = "x"
}`, []diagAt{{"error", "Invalid file path", "a.hcl:3:6"}}},
		{"file path with quote", `image = "img"
file "/workspace/a\"b" {
  content = "x"
}`, []diagAt{{"error", "Invalid file path", "a.hcl:3:6"}}},
		{"file path with look-alike slash", `image = "img"
file "/workspace∕x" {
  content = "x"
}`, []diagAt{{"error", "Invalid file path", "a.hcl:3:6"}}},
		{"file without content", `image = "img"
file "/x" {}`, []diagAt{{"error", "Missing required argument", "a.hcl:3:11"}}},
		{"bad file mode", `image = "img"
file "/x" {
  content = "x"
  mode    = "rw-r--r--"
}`, []diagAt{{"error", "Invalid file mode", "a.hcl:5:13"}}},
		{"file too large", `image = "img"
file "/x" {
  content = format("%` + fmt.Sprint(MaxFileBytes+1) + `s", "")
}`, []diagAt{{"error", "File too large", "a.hcl:4:13"}}},
		{"secret bad variable path", `image = "img"
secret "TOKEN" {
  variable = "/abs/path"
  key      = "k"
}`, []diagAt{{"error", "Invalid variable path", "a.hcl:4:14"}}},
		{"secret under reserved nomad path", `image = "img"
secret "TOKEN" {
  variable = "nomad/other"
  key      = "k"
}`, []diagAt{{"error", "Invalid variable path", "a.hcl:4:14"}}},
		{"secret bad key", `image = "img"
secret "TOKEN" {
  variable = "a/b"
  key      = "-k"
}`, []diagAt{{"error", "Invalid variable key", "a.hcl:5:14"}}},
		{"secret shadows env", `image = "img"
env = { TOKEN = "x" }
secret "TOKEN" {
  variable = "a/b"
  key      = "k"
}`, []diagAt{{"error", "Secret shadows env", "a.hcl:4:8"}}},
		{"secret bad env name", `image = "img"
secret "my-token" {
  variable = "a/b"
  key      = "k"
}`, []diagAt{{"error", "Invalid secret name", "a.hcl:3:8"}}},
		{"ttl not a duration", `image = "img"
ttl = "8 hours"`, []diagAt{{"error", "Invalid duration", "a.hcl:3:7"}}},
		{"ttl too short", `image = "img"
ttl = "10s"`, []diagAt{{"error", "TTL out of range", "a.hcl:3:7"}}},
		{"ttl and expires_at", `image = "img"
ttl = "1h"
expires_at = "2026-12-01T00:00:00Z"`, []diagAt{{"error", "Conflicting expiry", "a.hcl:4:14"}}},
		{"expires_at not a timestamp", `image = "img"
expires_at = "tomorrow"`, []diagAt{{"error", "Invalid timestamp", "a.hcl:3:14"}}},
		{"on_expiry invalid", `image = "img"
ttl = "1h"
on_expiry = "explode"`, []diagAt{{"error", "Invalid on_expiry", "a.hcl:4:13"}}},
		{"on_expiry without expiry warns", `image = "img"
on_expiry = "stop"`, []diagAt{{"warning", "on_expiry has no effect", "a.hcl:3:13"}}},
		{"invalid state", `image = "img"
state = "paused"`, []diagAt{{"error", "Invalid state", "a.hcl:3:9"}}},
		{"invalid namespace", `image = "img"
namespace = "a b"`, []diagAt{{"error", "Invalid namespace", "a.hcl:3:13"}}},
		{"two placement blocks", `image = "img"
placement {}
placement {}`, []diagAt{{"error", "Duplicate placement block", "a.hcl:4:1"}}},
		{"bad node pool", `image = "img"
placement {
  node_pool = "a b"
}`, []diagAt{{"error", "Invalid node pool", "a.hcl:4:15"}}},
		{"bad constraint operator", `image = "img"
placement {
  constraint {
    attribute = "x"
    operator  = "~="
    value     = "y"
  }
}`, []diagAt{{"error", "Invalid constraint operator", "a.hcl:6:17"}}},
		{"constraint missing value", `image = "img"
placement {
  constraint {
    attribute = "x"
  }
}`, []diagAt{{"error", "Missing constraint value", "a.hcl:4:3"}}},
		{"constraint bad regexp", `image = "img"
placement {
  constraint {
    attribute = "x"
    operator  = "regexp"
    value     = "("
  }
}`, []diagAt{{"error", "Invalid regular expression", "a.hcl:7:17"}}},
		{"several problems reported together", `driver = "exec"
image = "img"
memory_mb = 1
state = "gone"`, []diagAt{
			{"error", "Image not supported by driver", "a.hcl:3:9"},
			{"error", "Memory out of range", "a.hcl:4:13"},
			{"error", "Invalid state", "a.hcl:5:9"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := loadStrings(t, map[string]string{"a.hcl": "sandbox \"box\" {\n" + tt.body + "\n}\n"}, Options{})
			if diff := cmp.Diff(tt.want, diagsAt(diags)); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s\nall: %s", diff, diags.Error())
			}
			for _, d := range diags {
				if !strings.HasSuffix(d.Detail, ".") && !strings.HasSuffix(d.Detail, "?") {
					t.Errorf("detail %q is not a full sentence", d.Detail)
				}
			}
		})
	}
}

func TestNamesAreValidatedNeverRewritten(t *testing.T) {
	tests := []struct {
		name       string
		wantErr    string
		wantDetail string
	}{
		{"agent-1", "", ""},
		{"a", "", ""},
		{strings.Repeat("a", MaxNameLength), "", ""},
		{strings.Repeat("a", MaxNameLength+1), "Sandbox name too long", ""},
		{"My_Box", "Invalid sandbox name", `Did you mean "my-box"?`},
		{"-lead", "Invalid sandbox name", ""},
		{"trail-", "Invalid sandbox name", ""},
		{"dot.ted", "Invalid sandbox name", ""},
		{"ünïcode", "Invalid sandbox name", ""},
		{"agent\u2010one", "Invalid sandbox name", "It has U+2010 HYPHEN at column 6."}, // a hyphen look-alike
		{"g\u0435t", "Invalid sandbox name", "It has U+0435 CYRILLIC SMALL LETTER IE at column 2."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("sandbox %q {\n  image = \"img\"\n}\n", tt.name)
			res, diags := loadStrings(t, map[string]string{"a.hcl": src}, Options{})
			if tt.wantErr == "" {
				if diags.HasErrors() {
					t.Fatalf("unexpected error: %s", diags.Error())
				}
				if got := res.Sandboxes[0].Name; got != tt.name {
					t.Errorf("name = %q, want %q unchanged", got, tt.name)
				}
				return
			}
			want := []diagAt{{"error", tt.wantErr, "a.hcl:1:9"}}
			if diff := cmp.Diff(want, diagsAt(diags)); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
			if tt.wantDetail != "" && !strings.Contains(diags[0].Detail, tt.wantDetail) {
				t.Errorf("detail %q does not contain %q", diags[0].Detail, tt.wantDetail)
			}
		})
	}
}

func TestUnknownNamesGetSuggestions(t *testing.T) {
	tests := []struct{ body, want string }{
		{"image = \"img\"\nmemroy_mb = 1", `Did you mean "memory_mb"?`},
		{"image = \"img\"\nplacment {}", `Did you mean "placement"?`},
		{"image = \"img\"\nplacement = {}", `"placement" is a block`},
		{"image = \"img\"\nnetwork \"x\" {}", `"network" is an argument`},
	}
	for _, tt := range tests {
		_, diags := loadStrings(t, map[string]string{"a.hcl": "sandbox \"box\" {\n" + tt.body + "\n}\n"}, Options{})
		if len(diags) != 1 || !strings.Contains(diags[0].Detail, tt.want) {
			t.Errorf("body %q: got %s, want one diagnostic containing %q", tt.body, diags.Error(), tt.want)
		}
	}
}
