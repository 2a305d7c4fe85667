package spec

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const teamVar = `
variable "team" {
  type    = string
  default = "default-team"
}
sandbox "box" {
  image  = "img"
  labels = { team = var.team }
}
`

func TestVariablePrecedence(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "main.hcl", teamVar)
	write(t, dir, "a.hcl.vars", `team = "from-file-a"`)
	write(t, dir, "b.json", `{"team": "from-file-b"}`)
	fileA, fileB := filepath.Join(dir, "a.hcl.vars"), filepath.Join(dir, "b.json")

	tests := []struct {
		name    string
		environ []string
		vars    []VarValue
		want    string
	}{
		{"default", nil, nil, "default-team"},
		{"environment beats default", []string{"AKCTL_VAR_team=from-env"}, nil, "from-env"},
		{"var file beats environment", []string{"AKCTL_VAR_team=from-env"}, []VarValue{{File: fileA}}, "from-file-a"},
		{"json var file", nil, []VarValue{{File: fileB}}, "from-file-b"},
		{"var flag beats environment", []string{"AKCTL_VAR_team=from-env"}, []VarValue{{Name: "team", Value: "from-flag"}}, "from-flag"},
		{"later file beats earlier flag", nil, []VarValue{{Name: "team", Value: "from-flag"}, {File: fileA}}, "from-file-a"},
		{"later flag beats earlier file", nil, []VarValue{{File: fileA}, {Name: "team", Value: "from-flag"}}, "from-flag"},
		{"last of two flags wins", nil, []VarValue{{Name: "team", Value: "one"}, {Name: "team", Value: "two"}}, "two"},
		{"unrelated environment ignored", []string{"AKCTL_VAR_other=x", "TEAM=y"}, nil, "default-team"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, diags := Load([]string{filepath.Join(dir, "main.hcl")}, Options{Environ: tt.environ, Vars: tt.vars})
			if diags.HasErrors() {
				t.Fatalf("load: %s", diags.Error())
			}
			if got := res.Sandboxes[0].Labels["team"]; got != tt.want {
				t.Errorf("team = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestVariableTypesAndErrors(t *testing.T) {
	const decl = `
variable "n" {
  type    = number
  default = 1
}
variable "dcs" {
  type    = list(string)
  default = ["dc1"]
}
variable "req" {
  type = string
}
sandbox "box" {
  image     = var.req
  vcpus     = var.n
  placement {
    datacenters = var.dcs
  }
}
`
	tests := []struct {
		name string
		vars []VarValue
		want []diagAt
		dcs  []string
	}{
		{"required variable missing", nil, []diagAt{{"error", "No value for required variable", "a.hcl:10:1"}}, nil},
		{"collection parsed as HCL", []VarValue{{Name: "req", Value: "img"}, {Name: "dcs", Value: `["b", "a"]`}}, nil, []string{"a", "b"}},
		{"number from a string", []VarValue{{Name: "req", Value: "img"}, {Name: "n", Value: "2"}}, nil, []string{"dc1"}},
		{"not a number", []VarValue{{Name: "req", Value: "img"}, {Name: "n", Value: "two"}}, []diagAt{{"error", "Invalid value for variable", ""}}, nil},
		{"bad collection syntax", []VarValue{{Name: "req", Value: "img"}, {Name: "dcs", Value: `[`}}, []diagAt{{"error", "Invalid value for variable", ""}}, nil},
		{"undeclared -var", []VarValue{{Name: "req", Value: "img"}, {Name: "rq", Value: "x"}}, []diagAt{{"error", "Value for undeclared variable", ""}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, diags := loadStrings(t, map[string]string{"a.hcl": decl}, Options{Vars: tt.vars})
			if diff := cmp.Diff(tt.want, diagsAt(diags), cmpEmptyNil); diff != "" {
				t.Fatalf("diagnostics (-want +got):\n%s\n%s", diff, diags.Error())
			}
			if tt.dcs != nil {
				if diff := cmp.Diff(tt.dcs, res.Sandboxes[0].Spec.Placement.Datacenters); diff != "" {
					t.Errorf("datacenters (-want +got):\n%s", diff)
				}
			}
		})
	}
	t.Run("undeclared -var suggests", func(t *testing.T) {
		_, diags := loadStrings(t, map[string]string{"a.hcl": decl}, Options{Vars: []VarValue{{Name: "rq", Value: "x"}}})
		if !strings.Contains(diags.Error(), `Did you mean "req"?`) {
			t.Errorf("no suggestion in %s", diags.Error())
		}
	})
}

var cmpEmptyNil = cmp.Transformer("nilEmpty", func(d []diagAt) []diagAt {
	if len(d) == 0 {
		return nil
	}
	return d
})

func TestVarFileUndeclaredIsAWarning(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "main.hcl", teamVar)
	write(t, dir, "v.hcl", "team = \"x\"\nteem = \"y\"\n")
	res, diags := Load([]string{filepath.Join(dir, "main.hcl")}, Options{Vars: []VarValue{{File: filepath.Join(dir, "v.hcl")}}})
	want := []diagAt{{"warning", "Value for undeclared variable", filepath.Join(dir, "v.hcl") + ":2:1"}}
	if diff := cmp.Diff(want, diagsAt(diags)); diff != "" {
		t.Fatalf("diagnostics (-want +got):\n%s", diff)
	}
	if res.Sandboxes[0].Labels["team"] != "x" {
		t.Errorf("team = %q, want x", res.Sandboxes[0].Labels["team"])
	}
}

func TestVariableValidation(t *testing.T) {
	src := `
variable "team" {
  type    = string
  default = "ml"
  validation {
    condition     = can(regex("^[a-z]+$", var.team))
    error_message = "The team must be lowercase letters."
  }
}
sandbox "box" {
  image  = "img"
  labels = { team = var.team }
}
`
	_, diags := loadStrings(t, map[string]string{"a.hcl": src}, Options{Vars: []VarValue{{Name: "team", Value: "ML!"}}})
	want := []diagAt{{"error", "Invalid value for variable", "a.hcl:6:21"}}
	if diff := cmp.Diff(want, diagsAt(diags)); diff != "" {
		t.Fatalf("diagnostics (-want +got):\n%s", diff)
	}
	if !strings.Contains(diags[0].Detail, "The team must be lowercase letters.") {
		t.Errorf("detail %q lacks the error_message", diags[0].Detail)
	}
}

func TestLocalsAcrossFiles(t *testing.T) {
	files := map[string]string{
		"a.hcl": `
locals {
  image = "${local.registry}/python:3.12"
}
sandbox "box" {
  image  = local.image
  labels = local.labels
  env    = { GREETING = format("hello %s", upper(var.who)) }
}
`,
		"b.hcl": `
variable "who" {
  default = "agent"
}
locals {
  registry = "registry.example.com"
  labels   = merge({ a = "1" }, { b = jsonencode(2) })
}
`,
	}
	res, diags := loadStrings(t, files, Options{})
	if diags.HasErrors() {
		t.Fatalf("load: %s", diags.Error())
	}
	s := res.Sandboxes[0]
	got := []any{s.Spec.Image, s.Labels, s.Spec.Env["GREETING"]}
	want := []any{"registry.example.com/python:3.12", map[string]string{"a": "1", "b": "2"}, "hello AGENT"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		opts  Options
		want  []diagAt
	}{
		{"cycle in locals", map[string]string{"a.hcl": "locals {\n  a = local.b\n  b = local.a\n}\n"}, Options{}, []diagAt{
			{"error", "Cycle in local values", "a.hcl:2:7"},
			{"error", "Cycle in local values", "a.hcl:3:7"},
		}},
		{"duplicate local across files", map[string]string{"a.hcl": "locals {\n  x = 1\n}\n", "b.hcl": "locals {\n  x = 2\n}\n"}, Options{}, []diagAt{
			{"error", "Duplicate local value", "b.hcl:2:3"},
		}},
		{"duplicate variable", map[string]string{"a.hcl": "variable \"x\" {\n  default = 1\n}\nvariable \"x\" {\n  default = 2\n}\n"}, Options{}, []diagAt{
			{"error", "Duplicate variable", "a.hcl:4:10"},
		}},
		{"duplicate sandbox across files names both", map[string]string{
			"a.hcl": "sandbox \"x\" {\n  image = \"i\"\n}\n",
			"b.hcl": "\n\nsandbox \"x\" {\n  image = \"i\"\n}\n",
		}, Options{}, []diagAt{{"error", "Duplicate sandbox", "b.hcl:3:9"}}},
		{"same name in two namespaces is fine", map[string]string{
			"a.hcl": "sandbox \"x\" {\n  image = \"i\"\n}\nsandbox \"x\" {\n  namespace = \"other\"\n  image = \"i\"\n}\n",
		}, Options{}, nil},
		{"unknown top-level block", map[string]string{"a.hcl": "sandbx \"x\" {}\n"}, Options{}, []diagAt{{"error", "Unsupported block type", "a.hcl:1:1"}}},
		{"syntax error", map[string]string{"a.hcl": "sandbox \"x\" {\n  image = \n}\n"}, Options{}, []diagAt{{"error", "Invalid expression", "a.hcl:2:11"}}},
		{"undeclared variable reference", map[string]string{"a.hcl": "sandbox \"x\" {\n  image = var.nope\n}\n"}, Options{}, []diagAt{{"error", "Reference to undeclared input variable", "a.hcl:2:11"}}},
		{"undeclared local reference", map[string]string{"a.hcl": "locals {\n  image = \"i\"\n}\nsandbox \"x\" {\n  image = local.imgae\n}\n"}, Options{}, []diagAt{{"error", "Reference to undeclared local value", "a.hcl:5:11"}}},
		{"local using an undeclared variable", map[string]string{"a.hcl": "locals {\n  image = var.img\n}\n"}, Options{}, []diagAt{{"error", "Reference to undeclared input variable", "a.hcl:2:11"}}},
		{"unknown function", map[string]string{"a.hcl": "sandbox \"x\" {\n  image = nofunc(1)\n}\n"}, Options{}, []diagAt{{"error", "Call to unknown function", "a.hcl:2:11"}}},
		{"too many sandboxes", map[string]string{"a.hcl": "sandbox \"a\" {\n  image = \"i\"\n}\nsandbox \"b\" {\n  image = \"i\"\n}\n"}, Options{MaxSandboxes: 1}, []diagAt{
			{"error", "Too many sandboxes", "a.hcl:4:1"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := loadStrings(t, tt.files, tt.opts)
			if diff := cmp.Diff(tt.want, diagsAt(diags), cmpEmptyNil); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s\n%s", diff, diags.Error())
			}
		})
	}
	t.Run("duplicate sandbox detail names the first place", func(t *testing.T) {
		_, diags := loadStrings(t, map[string]string{
			"a.hcl": "sandbox \"x\" {\n  image = \"i\"\n}\n",
			"b.hcl": "sandbox \"x\" {\n  image = \"i\"\n}\n",
		}, Options{})
		if len(diags) != 1 || !strings.Contains(diags[0].Detail, "a.hcl:1,9") {
			t.Errorf("got %s, want the detail to name a.hcl:1,9", diags.Error())
		}
	})
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "b.hcl", "sandbox \"b\" {\n  image = \"i\"\n}\n")
	write(t, dir, "a.hcl", "sandbox \"a\" {\n  image = \"i\"\n  file \"/x\" {\n    content = file(\"data/x.txt\")\n  }\n}\n")
	write(t, dir, "notes.txt", "not a declaration")
	write(t, filepath.Join(dir, "data"), "x.txt", "from a file")
	big := strings.Repeat("x", MaxFileBytes+1)
	write(t, filepath.Join(dir, "data"), "big.txt", big)
	write(t, filepath.Join(dir, "data"), "bin.txt", "\xff\xfe")
	empty := t.TempDir()

	t.Run("directory loads every .hcl file, file() is relative to the declaring file", func(t *testing.T) {
		res, diags := Load([]string{dir}, Options{})
		if diags.HasErrors() {
			t.Fatalf("load: %s", diags.Error())
		}
		var names []string
		for _, s := range res.Sandboxes {
			names = append(names, s.Name)
		}
		if diff := cmp.Diff([]string{"a", "b"}, names); diff != "" {
			t.Errorf("names (-want +got):\n%s", diff)
		}
		if got := res.Sandboxes[0].Spec.Files[0].Content; got != "from a file" {
			t.Errorf("file content = %q", got)
		}
		if got := res.Sandboxes[0].Source.File; got != filepath.Join(dir, "a.hcl") {
			t.Errorf("source file = %q", got)
		}
	})
	t.Run("a file named twice is read once", func(t *testing.T) {
		p := filepath.Join(dir, "b.hcl")
		res, diags := Load([]string{p, p, dir}, Options{})
		if diags.HasErrors() || len(res.Sandboxes) != 2 {
			t.Fatalf("got %d sandboxes, %s", len(res.Sandboxes), diags.Error())
		}
	})
	t.Run("stdin", func(t *testing.T) {
		res, diags := Load([]string{"-"}, Options{Stdin: strings.NewReader("sandbox \"s\" {\n  image = \"i\"\n}\n")})
		if diags.HasErrors() || res.Sandboxes[0].Source.File != StdinName {
			t.Fatalf("got %+v, %s", res.Sandboxes, diags.Error())
		}
	})
	tests := []struct {
		name    string
		paths   []string
		opts    Options
		summary string
	}{
		{"missing file", []string{filepath.Join(dir, "nope.hcl")}, Options{}, "Cannot read file"},
		{"empty directory", []string{empty}, Options{}, "No declarations in directory"},
		{"stdin without input", []string{"-"}, Options{}, "No standard input"},
		{"file larger than the limit", []string{filepath.Join(dir, "a.hcl")}, Options{MaxSourceBytes: 10}, "Cannot read file"},
		{"stdin larger than the limit", []string{"-"}, Options{MaxSourceBytes: 10, Stdin: strings.NewReader(strings.Repeat(" ", 11))}, "Cannot read file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Load(tt.paths, tt.opts)
			if len(diags) != 1 || diags[0].Summary != tt.summary {
				t.Fatalf("got %s, want one %q", diags.Error(), tt.summary)
			}
		})
	}
	fileErrs := []struct{ name, arg, detail string }{
		{"file() beyond the size limit", "data/big.txt", "larger than the limit"},
		{"file() of binary content", "data/bin.txt", "not valid UTF-8"},
		{"file() of a missing file", "data/nope.txt", "no such file"},
	}
	for _, tt := range fileErrs {
		t.Run(tt.name, func(t *testing.T) {
			src := "sandbox \"a\" {\n  image = \"i\"\n  file \"/x\" {\n    content = file(\"" + tt.arg + "\")\n  }\n}\n"
			p := write(t, dir, "one.hcl.in", src)
			_, diags := Load([]string{p}, Options{})
			want := []diagAt{{"error", "Error in function call", p + ":4:15"}}
			if diff := cmp.Diff(want, diagsAt(diags)); diff != "" || !strings.Contains(diags[0].Detail, tt.detail) {
				t.Errorf("diagnostics (-want +got):\n%s\n%s", diff, diags.Error())
			}
		})
	}
}

func TestExamplesAreValid(t *testing.T) {
	dir := filepath.Join("..", "..", "examples")
	res, diags := Load([]string{dir}, Options{})
	if len(diags) > 0 {
		t.Fatalf("examples/ has diagnostics: %s", diags.Error())
	}
	if len(res.Sandboxes) < 4 {
		t.Errorf("examples/ declares %d sandboxes, want at least 4", len(res.Sandboxes))
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.hcl"))
	for _, m := range matches {
		if NomadFileKind(m) != "" {
			continue // the controller's own jobspec and policy: examples/examples_test.go checks them
		}
		t.Run(filepath.Base(m), func(t *testing.T) {
			res, diags := Load([]string{m}, Options{})
			if len(diags) > 0 || len(res.Sandboxes)+len(res.Pools) == 0 {
				t.Errorf("%d sandboxes, diagnostics: %s", len(res.Sandboxes), diags.Error())
			}
		})
	}
	// The list of examples, by what they show.
	drivers, profiles, withSecret, withFile, withVars := map[string]bool{}, map[string]bool{}, false, false, false
	for _, s := range res.Sandboxes {
		drivers[s.Spec.Driver] = true
		profiles[s.Spec.Profile] = true
		withSecret = withSecret || len(s.Spec.Secrets) > 0
		withFile = withFile || len(s.Spec.Files) > 0
		withVars = withVars || s.Labels["team"] == "ml"
	}
	if !drivers["docker"] || !drivers["exec"] || !profiles["restrictive"] || !withSecret || !withFile || !withVars {
		t.Errorf("examples miss a kind: drivers %v, profiles %v, secret %v, file %v, variables %v", drivers, profiles, withSecret, withFile, withVars)
	}
}

func write(t testing.TB, dir, name, content string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// filebase64() reads what file() refuses: binary content, as base64.
func TestFileBase64ReadsBinary(t *testing.T) {
	dir := t.TempDir()
	data := []byte{0, 0xff, 0xfe, 'a', '\n', 0x80}
	if err := os.WriteFile(filepath.Join(dir, "blob.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	p := write(t, dir, "b.hcl", "sandbox \"b\" {\n  image = \"i\"\n  env = { BLOB = filebase64(\"blob.bin\") }\n}\n")
	res, diags := Load([]string{p}, Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	got, err := base64.StdEncoding.DecodeString(res.Sandboxes[0].Spec.Env["BLOB"])
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("BLOB decodes to %q (%v), want %q", got, err, data)
	}
}
