package nomad

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

func TestNoDriftAfterRegister(t *testing.T) {
	c := startTestServer(t)
	ctx := t.Context()
	if _, err := c.API().Namespaces().Register(&api.Namespace{Name: "agents"}, nil); err != nil {
		t.Fatal(err)
	}
	inputs, _ := filepath.Glob(filepath.Join("testdata", "render", "*.hcl"))
	for _, in := range inputs {
		sb := loadSandbox(t, in)
		job, err := Render(&sb, testRenderOptions)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Register(ctx, job, 0); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		live, err := c.Job(ctx, sb.Namespace, sb.JobID())
		if err != nil {
			t.Fatal(err)
		}
		if got := Drift(job, live); len(got) != 0 {
			t.Errorf("%s: drift %v right after register; fields %v", filepath.Base(in), got, FieldDiffs(job, live))
		}
		if OwnerOf(live, testRenderOptions.Owner) != Owned {
			t.Errorf("%s: not owned after register", in)
		}
	}
}

func TestDriftKinds(t *testing.T) {
	sb := loadSandbox(t, filepath.Join("testdata", "render", "docker-restrictive.hcl"))
	desired, err := Render(&sb, testRenderOptions)
	if err != nil {
		t.Fatal(err)
	}
	// live is what Nomad would return: the job with server defaults.
	live := func(mut func(j *api.Job)) *api.Job {
		var j api.Job
		b, _ := jsonRoundTrip(desired)
		j = *b
		j.Priority = ptr(50)
		j.NodePool = ptr("default")
		j.Status = ptr("running")
		j.JobModifyIndex = ptr(uint64(12))
		j.ModifyIndex = ptr(uint64(14))
		j.TaskGroups[0].Networks[0].DynamicPorts = nil
		mut(&j)
		return &j
	}
	tests := []struct {
		name string
		live *api.Job
		want []string
	}{
		{"server defaults are not drift", live(func(*api.Job) {}), nil},
		{"missing", nil, []string{DriftMissing}},
		{"stopped out of band", live(func(j *api.Job) { j.Stop = ptr(true); j.Status = ptr("dead") }), []string{DriftStopped}},
		{"dead", live(func(j *api.Job) { j.Status = ptr("dead") }), []string{DriftDead}},
		{"another spec", live(func(j *api.Job) { j.Meta[MetaSpecHash] = "sha256:other" }), []string{DriftSpecHash, DriftFields}},
		{"env added out of band", live(func(j *api.Job) { j.TaskGroups[0].Tasks[0].Env["EXTRA"] = "1" }), []string{DriftFields}},
		{"driver option changed", live(func(j *api.Job) { j.TaskGroups[0].Tasks[0].Config["privileged"] = true }), []string{DriftFields}},
		{"memory changed", live(func(j *api.Job) { j.TaskGroups[0].Tasks[0].Resources.MemoryMB = ptr(4096) }), []string{DriftFields}},
		{"image changed", live(func(j *api.Job) { j.TaskGroups[0].Tasks[0].Config["image"] = "evil:latest" }), []string{DriftFields}},
		{"template removed", live(func(j *api.Job) { j.TaskGroups[0].Tasks[0].Templates = nil }), []string{DriftFields}},
		// Fields the controller never sets, which widen what the sandbox
		// may do: set out of band, they are drift even though the
		// rendering leaves them empty.
		{"user root set out of band", live(func(j *api.Job) { j.TaskGroups[0].Tasks[0].User = "root" }), []string{DriftFields}},
		{"host volume mounted out of band", live(func(j *api.Job) {
			j.TaskGroups[0].Volumes = map[string]*api.VolumeRequest{"host": {Name: "host", Type: "host", Source: "root-fs"}}
			j.TaskGroups[0].Tasks[0].VolumeMounts = []*api.VolumeMount{{Volume: ptr("host"), Destination: ptr("/host")}}
		}), []string{DriftFields}},
		{"artifact added out of band", live(func(j *api.Job) {
			j.TaskGroups[0].Tasks[0].Artifacts = []*api.TaskArtifact{{GetterSource: ptr("https://example.com/payload.tgz")}}
		}), []string{DriftFields}},
		{"reserved port 22 added out of band", live(func(j *api.Job) {
			j.TaskGroups[0].Networks[0].ReservedPorts = []api.Port{{Label: "ssh", Value: 22}}
		}), []string{DriftFields}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Drift(desired, tt.live)); diff != "" {
				t.Errorf("drift (-want +got):\n%s", diff)
			}
		})
	}
	stopped := *desired
	stopped.Stop = ptr(true)
	if got := Drift(&stopped, live(func(*api.Job) {})); !cmp.Equal(got, []string{DriftRunning}) {
		t.Errorf("declared stopped but running: drift %v, want [running]", got)
	}
}

func TestOwnerOf(t *testing.T) {
	tests := []struct {
		meta map[string]string
		want Ownership
	}{
		{map[string]string{MetaOwner: "me"}, Owned},
		{map[string]string{MetaOwner: "someone-else"}, OtherOwner},
		{map[string]string{MetaManaged: "true"}, Foreign}, // agentkernel's own job
		{nil, Foreign},
	}
	for _, tt := range tests {
		if got := OwnerOf(&api.Job{Meta: tt.meta}, "me"); got != tt.want {
			t.Errorf("meta %v: %v, want %v", tt.meta, got, tt.want)
		}
	}
}

// jsonRoundTrip copies a job the way it travels: through JSON, so that
// driver config values come back as Nomad's decoder gives them.
func jsonRoundTrip(j *api.Job) (*api.Job, error) {
	var out api.Job
	b, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	return &out, json.Unmarshal(b, &out)
}

// Jobs registered before the update strategy was rendered carry Nomad's
// default (max_parallel 1): that is not drift, so they are not all
// registered again at once; they pick it up at their next real change.
func TestUpdateStrategyRenderedLaterIsNotDrift(t *testing.T) {
	sb := loadSandbox(t, filepath.Join("testdata", "render", "exec.hcl"))
	desired, err := Render(&sb, testRenderOptions)
	if err != nil {
		t.Fatal(err)
	}
	if mp := desired.TaskGroups[0].Update; mp == nil || mp.MaxParallel == nil || *mp.MaxParallel != 0 {
		t.Fatalf("group update %+v, want max_parallel 0: no deployment for a sandbox", mp)
	}
	old, err := jsonRoundTrip(desired)
	if err != nil {
		t.Fatal(err)
	}
	old.Update = &api.UpdateStrategy{Stagger: ptr(30 * time.Second), MaxParallel: ptr(1)}
	old.TaskGroups[0].Update = &api.UpdateStrategy{MaxParallel: ptr(1), HealthCheck: ptr("checks"), MinHealthyTime: ptr(10 * time.Second)}
	if got := Drift(desired, old); len(got) != 0 {
		t.Errorf("a job rendered before with Nomad's default update strategy drifts: %v (%v)", got, FieldDiffs(desired, old))
	}
}

// TestDriftIgnoresTheDeadStatusAJobIsRegisteredWith: registering a job
// that is dead (stopped, its allocations complete) writes the new version
// with the old status, and Nomad's first event of it says "dead"; the
// status becomes pending at the same index, with the register's
// evaluation (recorded: lifecycle maxparallel0, index 4178). A status not
// computed since the version was written (ModifyIndex equal to
// JobModifyIndex) is not the version's own: taking it for a job that died
// again registered it a second time (2 of 100 drift repairs on a real
// agent). Once Nomad has evaluated the version, dead is drift.
func TestDriftIgnoresTheDeadStatusAJobIsRegisteredWith(t *testing.T) {
	sb := loadSandbox(t, filepath.Join("testdata", "render", "docker-restrictive.hcl"))
	desired, err := Render(&sb, testRenderOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name                string
		jobModify, modified uint64
		want                []string
	}{
		{"dead in the register's own event", 4178, 4178, nil},
		{"dead after the version was evaluated", 4178, 4190, []string{DriftDead}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			live, err := jsonRoundTrip(desired)
			if err != nil {
				t.Fatal(err)
			}
			live.Status = ptr("dead")
			live.JobModifyIndex, live.ModifyIndex = ptr(tt.jobModify), ptr(tt.modified)
			if diff := cmp.Diff(tt.want, Drift(desired, live)); diff != "" {
				t.Errorf("drift (-want +got):\n%s", diff)
			}
		})
	}
}
