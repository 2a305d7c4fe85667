package main

import (
	"io/fs"
	"testing"
)

const (
	messy = `sandbox "box" {
image="alpine"
    vcpus = 0.5
  memory_mb=512
  labels = {
  team = "ml"
    tier="dev"
  }
}
`
	tidy = `sandbox "box" {
  image     = "alpine"
  vcpus     = 0.5
  memory_mb = 512
  labels = {
    team = "ml"
    tier = "dev"
  }
}
`
	// unclosed does not parse; fmt must keep it exactly, messy layout
	// included.
	unclosed = `sandbox "box" {
image="alpine"
`
)

func TestFmt(t *testing.T) {
	cases := []cliCase{
		{name: "rewrites_messy_file", args: []string{"fmt", "box.hcl"}, files: map[string]string{"box.hcl": messy}},
		{name: "leaves_tidy_file_untouched", args: []string{"fmt", "box.hcl"}, files: map[string]string{"box.hcl": tidy}, unchanged: true},
		{
			name: "keeps_mode_of_rewritten_file", args: []string{"fmt", "box.hcl"},
			files: map[string]string{"box.hcl": messy}, modes: map[string]fs.FileMode{"box.hcl": 0o640},
		},
		{
			name: "directory_formats_hcl_files_only", args: []string{"fmt", "decl"},
			files: map[string]string{
				"decl/a.hcl":       messy,
				"decl/b.hcl":       tidy,
				"decl/c.hcl":       messy,
				"decl/notes.txt":   messy,
				"decl/sub/d.hcl":   messy,
				"decl/vars.hcl.bk": messy,
			},
		},
		{
			name: "default_path_is_working_directory", args: []string{"fmt"},
			files: map[string]string{"box.hcl": messy, "tidy.hcl": tidy},
		},
		{name: "empty_directory", args: []string{"fmt", "empty"}, files: map[string]string{"empty/": ""}},
		{
			name: "syntax_error_left_untouched", args: []string{"fmt", "box.hcl"},
			files: map[string]string{"box.hcl": unclosed}, unchanged: true,
		},
		{
			name: "syntax_error_does_not_stop_other_files", args: []string{"fmt", "."},
			files: map[string]string{"a.hcl": unclosed, "b.hcl": messy},
		},
		{name: "missing_path", args: []string{"fmt", "missing.hcl", "box.hcl"}, files: map[string]string{"box.hcl": messy}},

		{name: "check_lists_messy_files", args: []string{"fmt", "-check", "."}, files: map[string]string{"a.hcl": messy, "b.hcl": tidy, "c.hcl": messy}, unchanged: true},
		{name: "check_passes_tidy_files", args: []string{"fmt", "-check", "."}, files: map[string]string{"a.hcl": tidy, "b.hcl": tidy}, unchanged: true},
		{name: "check_flag_after_path", args: []string{"fmt", ".", "-check"}, files: map[string]string{"a.hcl": messy}, unchanged: true},
		{name: "check_syntax_error", args: []string{"fmt", "-check", "."}, files: map[string]string{"a.hcl": unclosed, "b.hcl": tidy}, unchanged: true},

		{name: "stdin_to_stdout", args: []string{"fmt", "-"}, stdin: messy},
		{name: "stdin_tidy", args: []string{"fmt", "-"}, stdin: tidy},
		{name: "stdin_syntax_error", args: []string{"fmt", "-"}, stdin: unclosed},
		{name: "stdin_with_file", args: []string{"fmt", "-", "box.hcl"}, stdin: messy, files: map[string]string{"box.hcl": messy}},
		{name: "check_stdin", args: []string{"fmt", "-check", "-"}, stdin: messy},
		{name: "check_stdin_tidy", args: []string{"fmt", "-check", "-"}, stdin: tidy},
		{name: "check_same_file_twice", args: []string{"fmt", "-check", "box.hcl", "."}, files: map[string]string{"box.hcl": messy}},

		{name: "usage_unknown_flag", args: []string{"fmt", "-w", "."}, files: map[string]string{"a.hcl": messy}, unchanged: true},
		{name: "usage_check_with_value", args: []string{"fmt", "-check=maybe", "."}, files: map[string]string{"a.hcl": messy}, unchanged: true},
		{name: "help_short", args: []string{"fmt", "-h"}},
		{name: "help_long", args: []string{"fmt", "--help"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.files != nil {
				c.showFiles = true
			}
			runGolden(t, "fmt/"+c.name, c)
		})
	}
}
