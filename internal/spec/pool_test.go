package spec

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
)

func TestPoolDecodes(t *testing.T) {
	res, diags := loadStrings(t, map[string]string{"p.hcl": `
variable "n" { default = 4 }
pool "python" {
  namespace = "agents"
  size      = var.n
  max       = 200
  claim_ttl = "90m"
  labels    = { team = "ml" }

  sandbox {
    image     = "python:3.12-alpine"
    memory_mb = 1024
  }
}
sandbox "python-x" {
  namespace = "agents"
  image     = "img"
}
`}, Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if len(res.Pools) != 1 || len(res.Sandboxes) != 1 {
		t.Fatalf("%d pools, %d sandboxes; want 1 and 1", len(res.Pools), len(res.Sandboxes))
	}
	p := res.Pools[0]
	want := Pool{Namespace: "agents", Name: "python", Labels: map[string]string{"team": "ml"},
		Settings: PoolSettings{Size: 4, Max: 200, ClaimTTL: "1h30m0s"},
		Template: Spec{Driver: "docker", Image: "python:3.12-alpine", Command: []string{"sh", "-c", "sleep infinity"},
			Profile: "moderate", VCPUs: 1, MemoryMB: 1024, Network: "none", State: "running"}}
	if diff := cmp.Diff(want, p, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Source" }, cmp.Ignore())); diff != "" {
		t.Errorf("pool (-want +got):\n%s", diff)
	}
	if p.Source.File != "p.hcl" || p.Source.StartLine != 3 {
		t.Errorf("source %v, want p.hcl line 3", p.Source)
	}
	// The hash covers the settings, not only the template.
	other := p.Settings
	other.Size++
	if PoolHash(p.Template, p.Settings) == PoolHash(p.Template, other) {
		t.Error("a size change leaves the pool's hash alone")
	}
}

// Every problem of a pool is reported at its place.
func TestPoolProblems(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // "line: summary" of each error
	}{
		{"no template", `pool "p" {
  size = 1
}`, []string{"1: Missing sandbox block"}},
		{"two templates", `pool "p" {
  size = 1
  sandbox { image = "a" }
  sandbox { image = "b" }
}`, []string{"4: Duplicate sandbox block"}},
		{"size missing", `pool "p" {
  sandbox { image = "a" }
}`, []string{"1: Missing required argument"}},
		{"ranges", `pool "p" {
  size      = 2000
  claim_ttl = "2s"
  sandbox { image = "a" }
}`, []string{"2: Pool size out of range", "3: TTL out of range"}},
		{"max below size", `pool "p" {
  size = 5
  max  = 2
  sandbox { image = "a" }
}`, []string{"3: Pool max below size"}},
		{"template with its own lifetime, identity and state", `pool "p" {
  size = 1
  sandbox {
    image     = "a"
    ttl       = "1h"
    namespace = "x"
    labels    = { a = "b" }
    state     = "stopped"
  }
}`, []string{"5: Expiry in a pool template", "6: Unexpected attribute in a pool template", "7: Unexpected attribute in a pool template", "8: Stopped pool template"}},
		{"template typo", `pool "p" {
  size = 1
  sandbox {
    imagee = "a"
  }
}`, []string{"3: Missing image", "4: Unsupported argument"}},
		{"bad and long names", `pool "Py_Pool" {
  size = 1
  sandbox { image = "a" }
}
pool "` + strings.Repeat("a", MaxPoolNameLength+1) + `" {
  size = 1
  sandbox { image = "a" }
}`, []string{"1: Invalid sandbox name", "5: Pool name too long"}},
		{"bad namespace, at the pool's attribute", `pool "p" {
  namespace = "Bad_NS"
  size      = 1
  sandbox { image = "a" }
}`, []string{"2: Invalid namespace"}},
		{"a labelled template", `pool "p" {
  size = 1
  sandbox "x" { image = "a" }
}`, []string{"3: Extraneous label for sandbox"}},
		{"settings checked without a template, each on its own", `pool "p" {
  size = -1
  max  = 20000
}`, []string{"1: Missing sandbox block", "2: Pool size out of range", "3: Pool max out of range"}},
		{"a pool and a sandbox of one name", `sandbox "p" { image = "a" }
pool "p" {
  size = 1
  sandbox { image = "a" }
}`, []string{"2: Duplicate name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := loadStrings(t, map[string]string{"p.hcl": tt.src}, Options{})
			var got []string
			for _, d := range diags {
				if d.Severity != hcl.DiagError {
					continue
				}
				var line int
				if d.Subject != nil {
					line = d.Subject.Start.Line
				}
				got = append(got, fmt.Sprintf("%d: %s", line, d.Summary))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s\nall: %s", diff, diags.Error())
			}
		})
	}
}
