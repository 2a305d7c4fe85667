package spec

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
)

// benchFiles writes 10,000 sandboxes over 100 files, each using a
// variable, a local and a function, as a fleet would.
func benchFiles(b *testing.B) []string {
	dir := b.TempDir()
	write(b, dir, "vars.hcl", "variable \"team\" {\n  default = \"ml\"\n}\nlocals {\n  image = \"python:3.12-alpine\"\n}\n")
	var paths []string
	for f := range 100 {
		var sb strings.Builder
		for i := range 100 {
			fmt.Fprintf(&sb, `sandbox "agent-%03d-%03d" {
  image     = local.image
  vcpus     = 0.5
  memory_mb = 512
  labels    = { team = var.team, shard = "%d" }
  env       = { AGENT_ID = format("%%03d-%%03d", %d, %d) }
  file "/workspace/AGENTS.md" {
    content = "Work in /workspace only.\n"
  }
}
`, f, i, f, f, i)
		}
		paths = append(paths, write(b, dir, fmt.Sprintf("fleet-%03d.hcl", f), sb.String()))
	}
	return append(paths, filepath.Join(dir, "vars.hcl"))
}

// BenchmarkLoad10k is the whole load: read, parse, evaluate, validate.
func BenchmarkLoad10k(b *testing.B) {
	paths := benchFiles(b)
	b.ResetTimer()
	for b.Loop() {
		res, diags := Load(paths, Options{})
		if diags.HasErrors() || len(res.Sandboxes) != 10_000 {
			b.Fatalf("%d sandboxes, %s", len(res.Sandboxes), diags.Error())
		}
	}
}

// BenchmarkParseOnly10k is the baseline: HCL parsing of the same files
// and nothing else, the floor any HCL loader pays.
func BenchmarkParseOnly10k(b *testing.B) {
	paths := benchFiles(b)
	b.ResetTimer()
	for b.Loop() {
		p := hclparse.NewParser()
		for _, path := range paths {
			if _, diags := p.ParseHCLFile(path); diags.HasErrors() {
				b.Fatal(diags.Error())
			}
		}
	}
}
