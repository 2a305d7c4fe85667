package spec

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// TestWriteDiagnosticsQuotesABoundedSnippet: a diagnostic quotes the
// source it points at, and that source may be a megabyte on one line or
// thousands of lines of a heredoc. The snippet stays a few lines of
// bounded width, cut around what the diagnostic points at.
func TestWriteDiagnosticsQuotesABoundedSnippet(t *testing.T) {
	huge := strings.Repeat("x", MaxFileBytes+1)
	var heredoc strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&heredoc, "line %d\n", i+1)
	}
	tests := []struct {
		name string
		src  string
		want []string // in order
	}{
		{
			name: "a huge line",
			src:  "sandbox \"big\" {\n  image = \"alpine\"\n  file \"/a\" {\n    content = \"" + huge + "\"\n  }\n}\n",
			want: []string{
				"Error: File too large\n\n  on big.hcl line 4, in sandbox \"big\":\n",
				"   4:     content = \"xxxxxxxx",
				"[…",
				" bytes]\n",
				"The content of \"/a\" is 1048577 bytes",
			},
		},
		{
			name: "thousands of lines",
			src:  "sandbox \"big\" {\n  image = \"alpine\"\n  file \"/a\" {\n    content = \"\"\n  }\n  memory_mb = <<EOT\n" + heredoc.String() + "EOT\n}\n",
			want: []string{
				"Error: Incorrect attribute value type\n\n  on big.hcl line 6, in sandbox \"big\":\n",
				"   6:   memory_mb = <<EOT\n",
				"   7: line 1\n",
				"  11: line 5 [… 996 more lines]\n",
				"a number is required",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, diags := LoadSources([]SourceFile{{Name: "big.hcl", Src: []byte(tt.src)}}, Options{})
			if !diags.HasErrors() {
				t.Fatal("no error; the test needs one that points at the big value")
			}
			var b strings.Builder
			if err := WriteDiagnostics(&b, res.Files, diags, 100, false); err != nil {
				t.Fatal(err)
			}
			got := b.String()
			rest := got
			for _, want := range tt.want {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("output lacks (in order) %q:\n%s", want, clip(got))
				}
				rest = rest[i+len(want):]
			}
			if len(got) > 2048 {
				t.Errorf("output is %d bytes, want at most 2048:\n%s", len(got), clip(got))
			}
			for _, line := range strings.Split(got, "\n") {
				if len(line) > 200 {
					t.Errorf("a line of %d bytes, want at most 200: %.200s…", len(line), line)
				}
			}
		})
	}
}

func clip(s string) string {
	if len(s) > 4096 {
		return s[:4096] + fmt.Sprintf("... (%d bytes in all)", len(s))
	}
	return s
}

// Whatever range a diagnostic has, even one past the end of its file,
// the bounded snippet renders without panicking.
func TestBoundedSnippetTakesAnyRange(t *testing.T) {
	src := []byte("a = 1\n" + strings.Repeat("é", 100) + "\n\n" + strings.Repeat("x\n", 10) + "end")
	files := map[string]*hcl.File{"f.hcl": {Bytes: src}}
	for start := 0; start <= len(src)+2; start += 3 {
		for end := start - 2; end <= len(src)+2; end += 5 {
			d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "S", Subject: &hcl.Range{
				Filename: "f.hcl", Start: hcl.Pos{Line: 1, Column: 1, Byte: start}, End: hcl.Pos{Line: 1, Column: 1, Byte: end},
			}}
			var b strings.Builder
			if err := WriteDiagnostics(&b, files, hcl.Diagnostics{d}, 100, true); err != nil {
				t.Fatalf("range %d-%d: %v", start, end, err)
			}
		}
	}
}
