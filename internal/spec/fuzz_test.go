package spec

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes through parse, decode, canonicalisation
// and validation. It must never panic, and whatever it accepts must be
// valid by the API's rules too, with a hash that survives Canonicalize.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*.hcl"))
	golden, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.hcl"))
	for _, p := range append(seeds, golden...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		res, diags := LoadSources([]SourceFile{{Name: "fuzz.hcl", Dir: t.TempDir(), Src: src}}, Options{})
		if diags.HasErrors() {
			for _, d := range diags {
				if d.Summary == "" {
					t.Fatalf("diagnostic without summary: %#v", d)
				}
			}
			return
		}
		for _, s := range res.Sandboxes {
			if err := s.Validate(); err != nil {
				t.Fatalf("loader accepted what Validate rejects: %v", err)
			}
			h := s.Spec.Hash()
			s.Canonicalize()
			if s.Spec.Hash() != h {
				t.Fatalf("Canonicalize changed the hash of an accepted sandbox")
			}
		}
	})
}
