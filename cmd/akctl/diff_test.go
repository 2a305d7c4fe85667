package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

func TestDiff(t *testing.T) {
	two := map[string]string{"decl/box.hcl": boxHCL, "decl/worker.hcl": workerHCL}
	sized := map[string]string{"sized.hcl": sizedHCL}
	notes := map[string]string{"notes.hcl": `variable "greeting" {
  default = "Be careful."
}

sandbox "notes" {
  image = "alpine"

  file "/workspace/AGENTS.md" {
    content = "# Agents\n\n${var.greeting}\nDo not delete files.\n"
  }
}
`}
	cases := []cliCase{
		{name: "create_exits_1", args: ak("diff", "-f", "decl/worker.hcl"), files: two, ctl: live},
		{name: "no_changes_exits_0", args: ak("diff", "-f", "decl"), files: two, ctl: live, before: [][]string{ak("apply", "-f", "decl", "--wait")}},
		{
			name: "update_with_nomad_plan", args: ak("diff", "-f", "sized.hcl", "-var", "mem=1024"), files: sized, ctl: live,
			before: [][]string{ak("apply", "-f", "sized.hcl", "--wait")},
		},
		{
			name: "prune_apply_set", args: ak("diff", "-f", "decl/box.hcl", "--apply-set", "team", "--prune"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl", "--apply-set", "team", "--wait")},
		},
		{
			name: "prune_selector", args: ak("diff", "-f", "decl/box.hcl", "-l", "team=infra", "--prune"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl", "--wait")},
		},
		{
			name: "json", args: ak("diff", "-o", "json", "-f", "sized.hcl", "-var", "mem=1024"), files: sized, ctl: live,
			before: [][]string{ak("apply", "-f", "sized.hcl", "--wait")},
		},
		{
			name: "file_content_as_a_line_diff", args: ak("diff", "-f", "notes.hcl", "-var", "greeting=Be very careful."), files: notes, ctl: live,
			before: [][]string{ak("apply", "-f", "notes.hcl", "--wait")},
		},
		{name: "job_name_taken_by_a_foreign_job", args: ak("diff", "-f", "decl/box.hcl"), files: two, ctl: &ctlOptions{foreignJob: "agentkernel-box"}},
		{name: "namespace_nomad_does_not_have", args: ak("diff", "-f", "decl", "-namespace", "team-a"), files: two, ctl: live},
		{name: "invalid_declarations_exit_3", args: ak("diff", "-f", "bad.hcl"), files: map[string]string{"bad.hcl": "sandbox \"box\" {\n  image = 1\n  memory_mb = 0\n}\n"}},
		{name: "refused_exits_3", args: ak("diff", "-f", "raw.hcl"), files: map[string]string{"raw.hcl": rawHCL}, ctl: live},
		{name: "unreachable_exits_3", args: []string{"--addr", "$DEAD", "diff", "-f", "box.hcl"}, files: map[string]string{"box.hcl": boxHCL}},
		{name: "usage_prune_without_scope_exits_2", args: ak("diff", "-f", "box.hcl", "--prune")},
		{name: "usage_no_paths", args: ak("diff")},
		{name: "help", args: []string{"diff", "-h"}},
	}
	runCases(t, "diff", cases)
}

// TestDiffOfLongTextIsBounded: a changed file content (or any long
// string) is shown as a summary line with both sizes and hashes and a
// bounded unified diff of the changed lines, never the whole value.
func TestDiffOfLongTextIsBounded(t *testing.T) {
	const mib = 1 << 20
	oneLine := strings.Repeat("a", mib)
	oneChar := oneLine[:mib/2] + "X" + oneLine[mib/2+1:]
	var lines []string
	for i := range 1000 {
		lines = append(lines, fmt.Sprintf("line %d", i+1))
	}
	text := strings.Join(lines, "\n") + "\n"
	oneLineChanged := strings.Replace(text, "line 500\n", "line 500, changed\n", 1)
	allChanged := strings.ReplaceAll(text, "line", "LINE")

	tests := []struct {
		name     string
		change   api.FieldChange
		want     []string // substrings of the output, in order
		maxBytes int
	}{
		{
			name:   "one character of a 1 MiB line",
			change: api.FieldChange{Path: "spec.files[0].content", Op: "replace", Old: oneLine, New: oneChar},
			want: []string{
				"    spec.files[0].content: 1048576 bytes, sha256:" + shortSum(oneLine) + " -> 1048576 bytes, sha256:" + shortSum(oneChar) + "\n",
				"      @@ -1 +1 @@\n",
				"      -[…524256 bytes]" + strings.Repeat("a", 96) + "[…524224 bytes] (no newline at end)\n",
				"      +[…524256 bytes]" + strings.Repeat("a", 32) + "X" + strings.Repeat("a", 63) + "[…524224 bytes] (no newline at end)\n",
			},
			maxBytes: 1024,
		},
		{
			name:   "one line of a thousand",
			change: api.FieldChange{Path: "spec.files[0].content", Op: "replace", Old: text, New: oneLineChanged},
			want: []string{
				"    spec.files[0].content: " + fmt.Sprint(len(text)) + " bytes, sha256:" + shortSum(text) + " -> " + fmt.Sprint(len(oneLineChanged)) + " bytes, sha256:" + shortSum(oneLineChanged) + "\n",
				"      @@ -497,7 +497,7 @@\n       line 497\n       line 498\n       line 499\n      -line 500\n      +line 500, changed\n       line 501\n       line 502\n       line 503\n",
			},
			maxBytes: 1024,
		},
		{
			name:   "every line of a thousand",
			change: api.FieldChange{Path: "spec.files[0].content", Op: "replace", Old: text, New: allChanged},
			want: []string{
				"      @@ -1,1000 +1,1000 @@\n      -line 1\n      -line 2\n",
				"      … 1977 more lines\n",
			},
			maxBytes: 1024,
		},
		{
			name:   "a 1 MiB file added",
			change: api.FieldChange{Path: "spec.files[0].content", Op: "add", New: oneLine},
			want: []string{
				"    spec.files[0].content: (none) -> 1048576 bytes, sha256:" + shortSum(oneLine) + "\n",
				"      @@ -0,0 +1 @@\n      +" + strings.Repeat("a", 96) + "[…1048480 bytes] (no newline at end)\n",
			},
			maxBytes: 1024,
		},
		{
			name:   "a file removed",
			change: api.FieldChange{Path: "spec.files[0].content", Op: "remove", Old: "one\ntwo\n"},
			want: []string{
				"    spec.files[0].content: 8 bytes, sha256:" + shortSum("one\ntwo\n") + " -> (none)\n",
				"      @@ -1,2 +0,0 @@\n      -one\n      -two\n",
			},
			maxBytes: 1024,
		},
		{
			name:   "control characters are escaped",
			change: api.FieldChange{Path: "spec.files[0].content", Op: "replace", Old: "a\n", New: "a\x1b[31m\n"},
			want:   []string{"      -a\n      +a\\x1b[31m\n"},
		},
		{
			name:   "a short value stays on one line",
			change: api.FieldChange{Path: "spec.image", Op: "replace", Old: "alpine:3.19", New: "alpine:3.20"},
			want:   []string{"    spec.image: \"alpine:3.19\" -> \"alpine:3.20\"\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			writeDiff(&b, &api.DiffResponse{Changed: true, Planned: true, Objects: []api.ObjectDiff{{
				Namespace: "default", Name: "box", Action: "update", Changes: []api.FieldChange{tt.change},
				Plan: &api.PlanSummary{DiffType: "Edited"},
			}}})
			got := b.String()
			rest := got
			for _, want := range tt.want {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("output lacks (in order) %q:\n%s", want, clip(got))
				}
				rest = rest[i+len(want):]
			}
			if tt.maxBytes > 0 && len(got) > tt.maxBytes {
				t.Errorf("output is %d bytes, want at most %d:\n%s", len(got), tt.maxBytes, clip(got))
			}
		})
	}
}

func shortSum(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:12]
}

// clip keeps a failure message readable when the output is huge.
func clip(s string) string {
	if len(s) > 4096 {
		return s[:4096] + fmt.Sprintf("... (%d bytes in all)", len(s))
	}
	return s
}
