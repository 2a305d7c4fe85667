package spec

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestNomadFileKind(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{"controller.nomad.hcl", NomadJobspec},
		{"examples/controller.nomad.hcl", NomadJobspec},
		{"controller-policy.hcl", NomadPolicy},
		{"controller.policy.hcl", NomadPolicy},
		{"/abs/dir/agentkernel-controller-policy.hcl", NomadPolicy},

		{"minimal.hcl", ""},
		{"nomad.hcl", ""},  // a declaration file about Nomad, not a jobspec
		{"policy.hcl", ""}, // no separator before "policy"
		{"restrictivepolicy.hcl", ""},
		{"controller.nomad", ""},
		{"controller.nomad.hcl.vars", ""},
		{"controller-policy.json", ""},
		{"controller.NOMAD.hcl", ""}, // matched as the *.hcl glob matches: case-sensitively
		{"nomad.hcl.d/box.hcl", ""},  // only the file's own name counts
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NomadFileKind(tt.name); got != tt.want {
				t.Errorf("NomadFileKind(%q) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

const (
	jobspecSrc = "job \"x\" {\n  type = \"service\"\n}\n"
	policySrc  = "namespace \"default\" {\n  capabilities = [\"read-job\"]\n}\n"
	boxSrc     = "sandbox \"box\" {\n  image = \"i\"\n}\n"
)

func TestDirectoryLoadSkipsNomadFiles(t *testing.T) {
	tests := []struct {
		name          string
		files         map[string]string
		wantSandboxes []string
		want          []diagAt // file names relative to the directory
	}{
		{
			name: "jobspec and policies beside declarations are skipped",
			files: map[string]string{
				"box.hcl":               boxSrc,
				"controller.nomad.hcl":  jobspecSrc,
				"controller-policy.hcl": policySrc,
				"other.policy.hcl":      policySrc,
			},
			wantSandboxes: []string{"box"},
		},
		{
			name: "a declaration file named like a policy is skipped too",
			files: map[string]string{
				"box.hcl":         boxSrc,
				"net-policy.hcl":  strings.ReplaceAll(boxSrc, `"box"`, `"netbox"`),
				"not-a-nomad.hcl": strings.ReplaceAll(boxSrc, `"box"`, `"kept"`),
			},
			wantSandboxes: []string{"box", "kept"},
		},
		{
			name: "a directory of Nomad files only holds no declarations",
			files: map[string]string{
				"controller.nomad.hcl":  jobspecSrc,
				"controller-policy.hcl": policySrc,
			},
			want: []diagAt{{"error", "No declarations in directory", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, src := range tt.files {
				write(t, dir, name, src)
			}
			res, diags := Load([]string{dir}, Options{})
			if diff := cmp.Diff(tt.want, diagsAt(diags), cmpEmptyNil); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s\n%s", diff, diags.Error())
			}
			var names []string
			for _, s := range res.Sandboxes {
				names = append(names, s.Name)
			}
			if diff := cmp.Diff(tt.wantSandboxes, names, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("sandboxes (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("the only-Nomad-files error names the skipped files", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "controller.nomad.hcl", jobspecSrc)
		_, diags := Load([]string{dir}, Options{})
		if len(diags) != 1 || !strings.Contains(diags[0].Detail, "controller.nomad.hcl") {
			t.Errorf("got %s, want one error naming controller.nomad.hcl", diags.Error())
		}
	})
}

func TestNomadFileNamedDirectlyIsLoaded(t *testing.T) {
	tests := []struct {
		name, file, src string
		want            []diagAt
		hint            string // in the warning's detail; "" for no warning
	}{
		{
			name: "jobspec fails with the normal error and a hint",
			file: "controller.nomad.hcl", src: jobspecSrc,
			want: []diagAt{
				{"warning", "File looks like a Nomad jobspec", ""},
				{"error", "Unsupported block type", "controller.nomad.hcl:1:1"},
			},
			hint: "(for nomad job run)",
		},
		{
			name: "policy fails with the normal error and a hint",
			file: "controller-policy.hcl", src: policySrc,
			want: []diagAt{
				{"warning", "File looks like a Nomad ACL policy", ""},
				{"error", "Unsupported block type", "controller-policy.hcl:1:1"},
			},
			hint: "(for nomad acl policy apply)",
		},
		{
			name: "a valid declaration named like a policy loads without a hint",
			file: "net-policy.hcl", src: boxSrc,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := write(t, dir, tt.file, tt.src)
			res, diags := Load([]string{p}, Options{})
			for i := range tt.want {
				if tt.want[i].Pos != "" {
					tt.want[i].Pos = filepath.Join(dir, tt.want[i].Pos)
				}
			}
			if diff := cmp.Diff(tt.want, diagsAt(diags), cmpEmptyNil); diff != "" {
				t.Fatalf("diagnostics (-want +got):\n%s\n%s", diff, diags.Error())
			}
			if tt.hint == "" {
				if len(res.Sandboxes) != 1 {
					t.Errorf("got %d sandboxes, want 1", len(res.Sandboxes))
				}
				return
			}
			if d := diags[0].Detail; !strings.Contains(d, p) || !strings.Contains(d, tt.hint) {
				t.Errorf("hint %q does not name the file %s and %s", d, p, tt.hint)
			}
		})
	}
}
