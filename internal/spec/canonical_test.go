package spec

import (
	"encoding/json"
	"flag"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/golden")

// goldenSandbox is the canonical form a golden file pins: the JSON other
// packages consume and the hash that drives change detection.
type goldenSandbox struct {
	Sandbox
	Hash string `json:"hash"`
}

func TestCanonicalJSONAndHashGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "golden", "*.hcl"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			res, diags := Load([]string{in}, Options{})
			if len(diags) > 0 {
				t.Fatalf("load: %s", diags.Error())
			}
			var out []goldenSandbox
			for _, s := range res.Sandboxes {
				out = append(out, goldenSandbox{Sandbox: s, Hash: s.Spec.Hash()})
			}
			got, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := strings.TrimSuffix(in, ".hcl") + ".json"
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("canonical form changed (-golden +got); if intended, run go test ./internal/spec -update:\n%s", diff)
			}
		})
	}
}

func TestHashIsStableAcrossSpelling(t *testing.T) {
	// Every variant means the same as the first: attribute order,
	// formatting, comments, defaults spelled out, block order, spelling of
	// durations and modes, and a split across files with a variable.
	variants := []map[string]string{
		{"a.hcl": `sandbox "s" {
  image   = "img"
  network = "bridge"
  ttl     = "90m"
  port "b" {
    to = 2
  }
  port "a" {
    to = 1
  }
  file "/x" {
    content = "x"
    mode    = "600"
  }
  labels = { team = "ml" }
}`},
		{"a.hcl": `# a comment
sandbox "s" {
  labels = {team="ml"} // another
  port "a" { to = 1 }
  port "b" { to = 2 }
  file "/x" {
    mode = "0600"
    content = "x"
  }
  ttl = "1h30m"
  network = "bridge"
  image = "img"
  profile = "moderate"
  driver = "docker"
  command = ["sh", "-c", "sleep infinity"]
  state = "running"
  on_expiry = "delete"
  vcpus = 1.0
  memory_mb = 512
  read_only = false
}`},
		{
			"a.hcl": "variable \"img\" {\n  default = \"img\"\n}\nlocals {\n  net = \"bridge\"\n}\n",
			"b.hcl": `sandbox "s" {
  image   = var.img
  network = local.net
  ttl     = "5400s"
  port "a" {
    to = 1
  }
  port "b" {
    to = 2
  }
  file "/x" {
    content = "x"
    mode    = "0600"
  }
  labels = { team = "ml" }
}`,
		},
	}
	var first string
	for i, files := range variants {
		res, diags := loadStrings(t, files, Options{})
		if diags.HasErrors() {
			t.Fatalf("variant %d: %s", i, diags.Error())
		}
		h := res.Sandboxes[0].Spec.Hash()
		if i == 0 {
			first = h
			continue
		}
		if h != first {
			t.Errorf("variant %d hashes to %s, want %s\nfirst: %s\nthis:  %s", i, h, first,
				loadCanonical(t, variants[0]), res.Sandboxes[0].Spec.CanonicalJSON())
		}
	}
}

func loadCanonical(t *testing.T, files map[string]string) string {
	res, _ := loadStrings(t, files, Options{})
	return string(res.Sandboxes[0].Spec.CanonicalJSON())
}

func TestHashChangesWithMeaning(t *testing.T) {
	baseBody := `image = "img"`
	changes := []string{
		`image = "img2"`,
		"image = \"img\"\nmemory_mb = 513",
		"image = \"img\"\nenv = { A = \"1\" }",
		"image = \"img\"\nstate = \"stopped\"",
		"image = \"img\"\ncommand = [\"sleep\", \"infinity\"]",
	}
	h0 := loadOne(t, baseBody).Spec.Hash()
	for _, c := range changes {
		if h := loadOne(t, c).Spec.Hash(); h == h0 {
			t.Errorf("body %q hashes like the base", c)
		}
	}
	// Labels and identity live outside the spec: changing them must not
	// change what runs.
	if h := loadOne(t, "image = \"img\"\nlabels = { a = \"b\" }").Spec.Hash(); h != h0 {
		t.Errorf("labels changed the spec hash")
	}
}

func TestValidateCanonicalInput(t *testing.T) {
	good := base()
	if err := good.Validate(); err != nil {
		t.Fatalf("base sandbox: %v", err)
	}
	bad := base()
	bad.Name = "Bad_Name"
	bad.Spec.MemoryMB = 1
	bad.Spec.Files = []File{{Path: "/a/../b", Content: "x", Mode: "0644"}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid sandbox")
	}
	for _, want := range []string{"name: ", "memory_mb: ", `file["/a/../b"]: `} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestCanonicalizeIsIdempotent(t *testing.T) {
	res, diags := Load([]string{filepath.Join("testdata", "golden", "full.hcl")}, Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	s := res.Sandboxes[0]
	before := s.Spec.Hash()
	// A sandbox that went through JSON (the API path) keeps its hash.
	b, _ := json.Marshal(s)
	var back Sandbox
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	back.Canonicalize()
	if got := back.Spec.Hash(); got != before {
		t.Errorf("hash after JSON round trip and Canonicalize = %s, want %s", got, before)
	}
}

func TestFormat(t *testing.T) {
	in := "sandbox \"a\" {\nimage=\"x\"\n    memory_mb   = 512\n}\n"
	want := "sandbox \"a\" {\n  image     = \"x\"\n  memory_mb = 512\n}\n"
	got, diags := Format([]byte(in), "a.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("formatted (-want +got):\n%s", diff)
	}
	if again, _ := Format(got, "a.hcl"); string(again) != string(got) {
		t.Errorf("formatting is not idempotent")
	}
	if out, diags := Format([]byte("sandbox \"a\" {\n"), "a.hcl"); !diags.HasErrors() || out != nil {
		t.Errorf("unparseable input: got %q, %v; want nil output and an error", out, diags)
	}
}

// TestSpecIsALeaf keeps the dependency direction: the store, the Nomad
// layer and the controller import spec, never the other way round.
func TestSpecIsALeaf(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range pkgs {
		for name, f := range pkg.Files {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if strings.Contains(path, "/internal/") {
					t.Errorf("%s imports %s; internal/spec must import no other internal package", name, path)
				}
			}
		}
	}
}
