package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
)

// nsBox declares one sandbox whose namespace comes from a variable, so
// that the -o json output shows which value won.
const nsBox = `variable "ns" {
  type    = string
  default = "from-default"
}

sandbox "box" {
  namespace = var.ns
  image     = "alpine"
}
`

// brokenA and brokenB hold several errors each, and a sandbox declared
// in both.
const (
	brokenA = `sandbox "web" {
  image     = "python:3.12-alpine"
  memory_mb = "lots"
  vcpus     = 0.5
  drivr     = "docker"
}

sandbox "Bad_Name" {
  image = "alpine"
}
`
	brokenB = `sandbox "worker" {
  driver = "docker"
  image  = "alpine"
  labels = {
    team = var.team
  }
}

sandbox "web" {
  image = "alpine"
}
`
)

func TestValidate(t *testing.T) {
	cases := []cliCase{
		// The examples, alone and together. restrictive.hcl reads
		// AGENTS.md beside it although the working directory is elsewhere.
		{name: "example_exec", args: []string{"validate", "../../examples/exec.hcl"}},
		{name: "example_fleet", args: []string{"validate", "../../examples/fleet.hcl"}},
		{name: "example_minimal", args: []string{"validate", "../../examples/minimal.hcl"}},
		{name: "example_restrictive_reads_file_beside_it", args: []string{"validate", "../../examples/restrictive.hcl"}},
		{name: "examples_dir", args: []string{"validate", "../../examples/"}},
		{name: "examples_dir_json", args: []string{"validate", "-o", "json", "../../examples/"}, check: checkJSON},
		{name: "examples_files_and_dir_read_each_file_once", args: []string{"validate", "../../examples/minimal.hcl", "../../examples"}},
		{name: "fleet_var_applies_to_every_file", args: []string{"validate", "-var", "team=infra", "../../examples/"}},
		{name: "fleet_var_failing_validation", args: []string{"validate", "-var", "team=Infra", "../../examples/fleet.hcl"}},
		{name: "fleet_env_failing_validation", args: []string{"validate", "../../examples/"}, environ: []string{"AKCTL_VAR_team=Infra"}},
		{name: "flags_after_paths", args: []string{"validate", "../../examples/", "-var", "team=Infra"}},
		{name: "var_flag_for_other_file_is_undeclared", args: []string{"validate", "-var", "team=infra", "../../examples/minimal.hcl"}},

		// Where variable values come from, lowest precedence first.
		{name: "var_default", args: []string{"validate", "-o", "json", "box.hcl"}, files: map[string]string{"box.hcl": nsBox}, check: checkJSON},
		{
			name: "var_env_beats_default", args: []string{"validate", "-o", "json", "box.hcl"},
			environ: []string{"AKCTL_VAR_ns=from-env", "AKCTL_VAR_other=ignored"},
			files:   map[string]string{"box.hcl": nsBox}, check: checkJSON,
		},
		{
			name: "var_flag_beats_env", args: []string{"validate", "-o", "json", "-var", "ns=from-flag", "box.hcl"},
			environ: []string{"AKCTL_VAR_ns=from-env"},
			files:   map[string]string{"box.hcl": nsBox}, check: checkJSON,
		},
		{
			name: "var_file_beats_env", args: []string{"validate", "-o", "json", "-var-file", "prod.hcl", "box.hcl"},
			environ: []string{"AKCTL_VAR_ns=from-env"},
			files:   map[string]string{"box.hcl": nsBox, "prod.hcl": "ns = \"from-hcl-file\"\n"}, check: checkJSON,
		},
		{
			name: "var_later_flag_wins", args: []string{"validate", "-o", "json", "-var", "ns=first", "-var", "ns=second", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox}, check: checkJSON,
		},
		{
			name: "var_file_after_var_wins", args: []string{"validate", "-o", "json", "-var", "ns=from-flag", "-var-file", "prod.hcl", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox, "prod.hcl": "ns = \"from-hcl-file\"\n"}, check: checkJSON,
		},
		{
			name: "var_after_var_file_wins", args: []string{"validate", "-o", "json", "-var-file", "prod.hcl", "-var", "ns=from-flag", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox, "prod.hcl": "ns = \"from-hcl-file\"\n"}, check: checkJSON,
		},
		{
			name: "var_file_json", args: []string{"validate", "-o", "json", "-var-file", "prod.json", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox, "prod.json": "{\"ns\": \"from-json-file\"}\n"}, check: checkJSON,
		},
		{
			name: "var_file_undeclared_is_a_warning", args: []string{"validate", "-var-file", "prod.json", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox, "prod.json": "{\"ns\": \"from-json-file\", \"nss\": \"typo\"}\n"},
		},
		{
			name: "var_file_undeclared_is_a_warning_json", args: []string{"validate", "-o", "json", "-var-file", "prod.json", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox, "prod.json": "{\"ns\": \"from-json-file\", \"nss\": \"typo\"}\n"}, check: checkJSON,
		},
		{
			name: "var_file_missing", args: []string{"validate", "-var-file", "prod.hcl", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox},
		},
		{
			name: "var_file_with_syntax_error", args: []string{"validate", "-var-file", "prod.hcl", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox, "prod.hcl": "ns = \"unterminated\n"},
		},
		{
			name: "var_undeclared_suggests_name", args: []string{"validate", "-var", "nss=x", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox},
		},
		{
			name: "var_undeclared_json", args: []string{"validate", "-o", "json", "-var", "nss=x", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox}, check: checkJSON,
		},
		{
			name: "var_required_without_value", args: []string{"validate", "box.hcl"},
			files: map[string]string{"box.hcl": "variable \"image\" {\n  type = string\n}\n\nsandbox \"box\" {\n  image = var.image\n}\n"},
		},

		{name: "namespace_flag", args: []string{"validate", "-o", "json", "-namespace", "team-a", "../../examples/minimal.hcl"}, check: checkJSON},
		{
			name: "namespace_flag_does_not_override_declared", args: []string{"validate", "-o", "json", "-namespace", "team-a", "box.hcl"},
			files: map[string]string{"box.hcl": nsBox}, check: checkJSON,
		},
		{
			name: "stdin", args: []string{"validate", "-"},
			stdin: "sandbox \"from-stdin\" {\n  image = \"alpine\"\n}\n",
		},
		{
			name: "stdin_with_files", args: []string{"validate", "-o", "json", "-", "../../examples/minimal.hcl"},
			stdin: "sandbox \"from-stdin\" {\n  image = \"alpine\"\n}\n", check: checkJSON,
		},
		{
			name: "stdin_invalid", args: []string{"validate", "-"},
			stdin: "sandbox \"from-stdin\" {\n  image = \"alpine\"\n  vcpus = -1\n}\n",
		},
		{
			name: "double_dash_ends_flags", args: []string{"validate", "--", "-box.hcl"},
			files: map[string]string{"-box.hcl": "sandbox \"dash\" {\n  image = \"alpine\"\n}\n"},
		},
		{
			name: "no_sandboxes", args: []string{"validate", "vars.hcl"},
			files: map[string]string{"vars.hcl": "variable \"unused\" {\n  default = 1\n}\n"},
		},

		// Invalid declarations: every problem, in file order, exit 1.
		{
			name: "invalid_several_files", args: []string{"validate", "."},
			files: map[string]string{"a.hcl": brokenA, "b.hcl": brokenB},
		},
		{
			name: "invalid_several_files_json", args: []string{"validate", "-o", "json", "."},
			files: map[string]string{"a.hcl": brokenA, "b.hcl": brokenB}, check: checkJSONPlaced,
		},
		{
			name: "invalid_one_error", args: []string{"validate", "box.hcl"},
			files: map[string]string{"box.hcl": "sandbox \"box\" {\n  image = \"alpine\"\n  memory_mb = 0\n}\n"},
		},
		{
			name: "invalid_syntax", args: []string{"validate", "box.hcl", "ok.hcl"},
			files: map[string]string{"box.hcl": "sandbox \"box\" {\n  image = \"alpine\"\n", "ok.hcl": "sandbox \"ok\" {\n  image = \"alpine\"\n}\n"},
		},
		{name: "missing_path", args: []string{"validate", "missing.hcl"}, files: map[string]string{}},
		{name: "dir_without_declarations", args: []string{"validate", "empty"}, files: map[string]string{"empty/": ""}},

		// Usage errors exit 2 and print nothing on stdout.
		{name: "usage_no_paths", args: []string{"validate"}},
		{name: "usage_unknown_flag", args: []string{"validate", "-x", "../../examples/"}},
		{name: "usage_unknown_flag_after_path", args: []string{"validate", "../../examples/", "-x"}},
		{name: "usage_bad_output", args: []string{"validate", "-o", "yaml", "../../examples/"}},
		{name: "usage_output_without_value", args: []string{"validate", "../../examples/", "-o"}},
		{name: "usage_var_without_equals", args: []string{"validate", "-var", "team", "../../examples/"}},
		{name: "usage_var_without_name", args: []string{"validate", "-var", "=ml", "../../examples/"}},
		{name: "usage_empty_var_file", args: []string{"validate", "-var-file", "", "../../examples/"}},
		{name: "help_short", args: []string{"validate", "-h"}},
		{name: "help_long", args: []string{"validate", "--help"}},
		{name: "help_after_path", args: []string{"validate", "../../examples/", "-h"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.files != nil {
				c.unchanged = true // validate never writes
			}
			r := runGolden(t, "validate/"+c.name, c)
			if r.code == exitUsage && r.stdout != "" {
				t.Errorf("usage error wrote to stdout:\n%s", r.stdout)
			}
		})
	}
}

// jsonOutput is the documented -o json document, decoded strictly so that
// a renamed or dropped field fails here as well as in the golden.
type jsonOutput struct {
	Valid     *bool `json:"valid"`
	Sandboxes []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Hash      string `json:"hash"`
		File      string `json:"file"`
		Line      int    `json:"line"`
	} `json:"sandboxes"`
	Pools []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Hash      string `json:"hash"`
		File      string `json:"file"`
		Line      int    `json:"line"`
	} `json:"pools"`
	Diagnostics []struct {
		Severity  string `json:"severity"`
		Summary   string `json:"summary"`
		Detail    string `json:"detail"`
		File      string `json:"file"`
		Line      int    `json:"line"`
		Column    int    `json:"column"`
		EndLine   int    `json:"endLine"`
		EndColumn int    `json:"endColumn"`
	} `json:"diagnostics"`
}

func checkJSON(t *testing.T, r result) { checkJSONOutput(t, r, false) }

// checkJSONPlaced also requires every diagnostic to point into a file.
func checkJSONPlaced(t *testing.T, r result) { checkJSONOutput(t, r, true) }

func checkJSONOutput(t *testing.T, r result, placed bool) {
	t.Helper()
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil {
		t.Fatalf("stdout is not a JSON object: %v", err)
	}
	for _, k := range []string{"valid", "sandboxes", "diagnostics"} {
		if v, ok := keys[k]; !ok || string(v) == "null" {
			t.Errorf("JSON output lacks %q (got %s)", k, v)
		}
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(r.stdout)))
	dec.DisallowUnknownFields()
	var out jsonOutput
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("decode JSON output: %v", err)
	}
	if out.Valid == nil {
		t.Fatal("JSON output lacks valid")
	}
	if *out.Valid != (r.code == exitOK) {
		t.Errorf("valid is %v, exit code %d", *out.Valid, r.code)
	}
	if !*out.Valid && len(out.Sandboxes) != 0 {
		t.Errorf("invalid output lists %d sandboxes; want none", len(out.Sandboxes))
	}
	if r.stderr != "" {
		t.Errorf("-o json wrote to stderr:\n%s", r.stderr)
	}
	for _, s := range out.Sandboxes {
		if s.Namespace == "" || s.Name == "" || len(s.Hash) != len("sha256:")+64 || s.File == "" || s.Line < 1 {
			t.Errorf("incomplete sandbox: %+v", s)
		}
	}
	errs := 0
	for _, d := range out.Diagnostics {
		if !slices.Contains([]string{"error", "warning"}, d.Severity) || d.Summary == "" {
			t.Errorf("diagnostic without severity or summary: %+v", d)
		}
		if d.Severity == "error" {
			errs++
		}
		if d.File != "" && (d.Line < 1 || d.Column < 1 || d.EndLine < d.Line) {
			t.Errorf("diagnostic with a file but no position: %+v", d)
		}
		if placed && d.File == "" {
			t.Errorf("diagnostic without a file: %+v", d)
		}
	}
	if *out.Valid != (errs == 0) {
		t.Errorf("valid is %v with %d error diagnostics", *out.Valid, errs)
	}
}
