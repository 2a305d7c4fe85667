package nomad

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/render")

var testRenderOptions = RenderOptions{Owner: "0123456789abcdef0123456789abcdef", AllowRawExec: true}

func loadSandbox(t testing.TB, path string) spec.Sandbox {
	t.Helper()
	res, diags := spec.Load([]string{path}, spec.Options{})
	if diags.HasErrors() {
		t.Fatalf("load %s: %s", path, diags.Error())
	}
	if len(res.Sandboxes) != 1 {
		t.Fatalf("%s declares %d sandboxes, want 1", path, len(res.Sandboxes))
	}
	return res.Sandboxes[0]
}

// TestRenderGolden pins the job for each feature: one testdata/render
// *.hcl -> *.json pair per feature. The JSON is the body the controller
// registers, in the api.Job shape Nomad reads.
func TestRenderGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "render", "*.hcl"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".hcl"), func(t *testing.T) {
			sb := loadSandbox(t, in)
			job, err := Render(&sb, testRenderOptions)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(job, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := strings.TrimSuffix(in, ".hcl") + ".json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("rendered job changed (-golden +got); if intended, run go test ./internal/nomad -update:\n%s", diff)
			}
			again, _ := Render(&sb, testRenderOptions)
			if diff := cmp.Diff(job, again); diff != "" {
				t.Errorf("rendering is not deterministic:\n%s", diff)
			}
		})
	}
}

func TestRenderRefusesRawExecUnlessAllowed(t *testing.T) {
	sb := loadSandbox(t, filepath.Join("testdata", "render", "raw-exec.hcl"))
	opts := testRenderOptions
	opts.AllowRawExec = false
	if _, err := Render(&sb, opts); !errors.Is(err, ErrDriverNotAllowed) {
		t.Fatalf("err = %v, want ErrDriverNotAllowed", err)
	}
}

func TestRenderOwnershipAndHardening(t *testing.T) {
	sb := loadSandbox(t, filepath.Join("testdata", "render", "docker-restrictive.hcl"))
	job, err := Render(&sb, testRenderOptions)
	if err != nil {
		t.Fatal(err)
	}
	wantMeta := map[string]string{
		MetaManaged:  "true",
		MetaSandbox:  "locked",
		MetaOwner:    testRenderOptions.Owner,
		MetaSpecHash: sb.Spec.Hash(),
	}
	if diff := cmp.Diff(wantMeta, job.Meta); diff != "" {
		t.Errorf("meta (-want +got):\n%s", diff)
	}
	cfg := job.TaskGroups[0].Tasks[0].Config
	checks := map[string]any{
		"cap_drop":        []string{"ALL"},
		"privileged":      false,
		"security_opt":    []string{"no-new-privileges"},
		"readonly_rootfs": true,
		"network_mode":    "none",
		"pids_limit":      DefaultPidsLimit,
	}
	for k, want := range checks {
		if diff := cmp.Diff(want, cfg[k]); diff != "" {
			t.Errorf("docker config %s (-want +got):\n%s", k, diff)
		}
	}
	if *job.Type != "service" || !*job.TaskGroups[0].ReschedulePolicy.Unlimited {
		t.Errorf("a sandbox must be a service job rescheduled without limit, got type %s", *job.Type)
	}
}

func TestFileContentIsNeverEvaluated(t *testing.T) {
	contents := []string{
		"plain",
		"{{ env \"HOME\" }}",
		"[[ak0: :ak0]] [[ak1:",
		"{{ with nomadVar \"nomad/jobs\" }}{{ . }}{{ end }}",
		"",
	}
	for _, c := range contents {
		tmpl := fileTemplate(spec.File{Path: "/x", Content: c, Mode: "0644"}, spec.DriverDocker)
		if *tmpl.EmbeddedTmpl != c {
			t.Errorf("content changed: %q -> %q", c, *tmpl.EmbeddedTmpl)
		}
		if strings.Contains(c, *tmpl.LeftDelim) || strings.Contains(c, *tmpl.RightDelim) {
			t.Errorf("delimiters %q %q occur in content %q: Nomad would evaluate it", *tmpl.LeftDelim, *tmpl.RightDelim, c)
		}
	}
}
