package nomad

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

func startTestServer(t *testing.T) *Client {
	t.Helper()
	srv := nomadtest.New(nomadtest.Options{Drivers: []string{"docker", "exec", "raw_exec"}})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	c, err := NewClient(Config{Address: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func renderFile(t *testing.T, name string) *spec.Sandbox {
	t.Helper()
	sb := loadSandbox(t, filepath.Join("testdata", "render", name))
	return &sb
}

func TestRegisterIsCheckAndSetOnly(t *testing.T) {
	c := startTestServer(t)
	ctx := t.Context()
	sb := renderFile(t, "docker-minimal.hcl")
	job, err := Render(sb, testRenderOptions)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.Register(ctx, job, 0); err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := c.Register(ctx, job, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create-only register: err = %v, want ErrConflict", err)
	}
	live, err := c.Job(ctx, "default", sb.JobID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, job, *live.JobModifyIndex+7); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale index: err = %v, want ErrConflict", err)
	}
	job.TaskGroups[0].Tasks[0].Env = map[string]string{"CHANGED": "1"}
	if _, err := c.Register(ctx, job, *live.JobModifyIndex); err != nil {
		t.Fatalf("update with the live JobModifyIndex: %v", err)
	}
	after, err := c.Job(ctx, "default", sb.JobID())
	if err != nil {
		t.Fatal(err)
	}
	if *after.JobModifyIndex <= *live.JobModifyIndex || after.TaskGroups[0].Tasks[0].Env["CHANGED"] != "1" {
		t.Errorf("update not applied: JobModifyIndex %d -> %d", *live.JobModifyIndex, *after.JobModifyIndex)
	}
	if _, err := c.Job(ctx, "default", "agentkernel-nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: err = %v, want ErrNotFound", err)
	}
}

func TestListOwnedFiltersByOwnerAndPages(t *testing.T) {
	c := startTestServer(t)
	ctx := t.Context()
	mine, theirs := "owner-a", "owner-b"
	for i := range listPageSize + 3 {
		sb := renderFile(t, "docker-minimal.hcl")
		sb.Name = fmt.Sprintf("mine-%03d", i)
		job, _ := Render(sb, RenderOptions{Owner: mine})
		if _, err := c.Register(ctx, job, 0); err != nil {
			t.Fatal(err)
		}
	}
	sb := renderFile(t, "docker-minimal.hcl")
	sb.Name = "theirs"
	job, _ := Render(sb, RenderOptions{Owner: theirs})
	if _, err := c.Register(ctx, job, 0); err != nil {
		t.Fatal(err)
	}

	stubs, index, err := c.ListOwned(ctx, "*", mine)
	if err != nil {
		t.Fatal(err)
	}
	if len(stubs) != listPageSize+3 || index == 0 {
		t.Fatalf("got %d jobs at index %d, want %d and a non-zero index", len(stubs), index, listPageSize+3)
	}
	for _, s := range stubs {
		if s.Meta[MetaOwner] != mine {
			t.Fatalf("job %s has owner %q in its listed Meta, want %q", s.ID, s.Meta[MetaOwner], mine)
		}
	}
	if _, _, err := c.ListOwned(ctx, "*", `x" or "1" == "1`); err == nil {
		t.Error("an owner that would change the filter expression was accepted")
	}
}

func TestStopPurgeAllocationsPlan(t *testing.T) {
	synctest.Test(t, testStopPurgeAllocationsPlan)
}

func testStopPurgeAllocationsPlan(t *testing.T) {
	c, _, _ := memClient(t, 0, "docker")
	ctx := t.Context()
	sb := renderFile(t, "docker-minimal.hcl")
	job, _ := Render(sb, testRenderOptions)

	plan, err := c.Plan(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Diff == nil || plan.Diff.Type != "Added" || plan.JobModifyIndex != 0 {
		t.Errorf("plan of a new job: diff %+v, JobModifyIndex %d; want Added and 0", plan.Diff, plan.JobModifyIndex)
	}
	if _, err := c.Job(ctx, "default", sb.JobID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("planning created the job: %v", err)
	}
	if _, err := c.Register(ctx, job, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // planned and running
	allocs, err := c.Allocations(ctx, "default", sb.JobID())
	if err != nil || len(allocs) != 1 {
		t.Fatalf("allocations: %d, %v; want 1", len(allocs), err)
	}
	live, _ := c.Job(ctx, "default", sb.JobID())
	plan, err = c.Plan(ctx, job)
	if err != nil || plan.Diff.Type != "None" || plan.JobModifyIndex != *live.JobModifyIndex {
		t.Errorf("plan of the same job: %+v, %v; want None and the live JobModifyIndex %d", plan.Diff, err, *live.JobModifyIndex)
	}

	if _, err := c.Stop(ctx, "default", sb.JobID()); err != nil {
		t.Fatal(err)
	}
	stopped, err := c.Job(ctx, "default", sb.JobID())
	if err != nil || stopped.Stop == nil || !*stopped.Stop {
		t.Fatalf("after stop: %+v, %v; want the job kept with Stop=true", stopped, err)
	}
	if err := c.Purge(ctx, "default", sb.JobID()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Job(ctx, "default", sb.JobID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("after purge: err = %v, want ErrNotFound", err)
	}
	if err := c.Purge(ctx, "default", sb.JobID()); err != nil {
		t.Errorf("purging a missing job: %v, want success as on real Nomad", err)
	}
}

func TestOnRequestReportsEveryCall(t *testing.T) {
	srv := nomadtest.New(nomadtest.Options{})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	type call struct {
		method, endpoint string
		code             int
	}
	var calls []call
	c, err := NewClient(Config{Address: srv.URL(), OnRequest: func(m, e string, code int, _ time.Duration) {
		calls = append(calls, call{m, e, code})
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Job(t.Context(), "default", "agentkernel-x")
	_, _ = c.Allocations(t.Context(), "default", "agentkernel-x")
	want := []call{{"GET", "/v1/job/:id", 404}, {"GET", "/v1/job/:id/allocations", 200}}
	if diff := cmp.Diff(want, calls, cmp.AllowUnexported(call{})); diff != "" {
		t.Errorf("reported calls (-want +got):\n%s", diff)
	}
	srv.StopListening()
	_, _ = c.Job(t.Context(), "default", "agentkernel-x")
	if last := calls[len(calls)-1]; last.code != 0 {
		t.Errorf("a refused connection reported code %d, want 0", last.code)
	}
}

// A unix-socket address, such as a Nomad task's workload-API socket, is
// reported too: readiness hangs off the reports.
func TestOnRequestReportsOverAUnixSocket(t *testing.T) {
	srv := nomadtest.New(nomadtest.Options{})
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close(); _ = srv.Close() })
	var codes []int
	c, err := NewClient(Config{Address: "unix://" + sock, OnRequest: func(_, _ string, code int, _ time.Duration) {
		codes = append(codes, code)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Allocations(t.Context(), "default", "agentkernel-x"); err != nil {
		t.Fatalf("request over the socket: %v", err)
	}
	if len(codes) != 1 || codes[0] != 200 {
		t.Errorf("reported codes %v, want one 200", codes)
	}
}

// TestPreflightSaysWhatRegisteringWouldMeet: a job by the sandbox's ID
// that this controller does not own, or a namespace Nomad lacks, is what
// a diff must report instead of "create".
func TestPreflightSaysWhatRegisteringWouldMeet(t *testing.T) {
	const adopted = "fedcba9876543210fedcba9876543210"
	tests := []struct {
		name      string
		namespace string
		owner     string // the live job's owner Meta; "-" for no job
		planOwner string // "-": the planner knows no owner of its own
		want      string // the obstacle's reason
	}{
		{name: "no job", owner: "-", want: ""},
		{name: "a job of this controller", owner: testRenderOptions.Owner, want: ""},
		{name: "a job nobody owns", owner: "", want: ObstacleForeignJob},
		{name: "another controller's job", owner: "another", want: ObstacleOtherOwner},
		{name: "an adopted owner's job", owner: adopted, want: ""},
		{name: "a namespace Nomad lacks", namespace: "team-a", owner: "-", want: ObstacleNamespaceMissing},
		{name: "another controller's job, owner unknown", planOwner: "-", owner: "another", want: ""},
		{name: "a job nobody owns, owner unknown", planOwner: "-", owner: "", want: ObstacleForeignJob},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startTestServer(t)
			sb := renderFile(t, "docker-minimal.hcl")
			if tt.namespace != "" {
				sb.Namespace = tt.namespace
			}
			if tt.owner != "-" {
				ro := testRenderOptions
				ro.Owner = "placeholder"
				job, err := Render(sb, ro)
				if err != nil {
					t.Fatal(err)
				}
				job.Meta[MetaOwner] = tt.owner
				if tt.owner == "" {
					delete(job.Meta, MetaOwner)
				}
				if _, err := c.Register(t.Context(), job, 0); err != nil {
					t.Fatal(err)
				}
			}
			p := Planner{Client: c, Render: testRenderOptions, AdoptOwners: []string{adopted}}
			if tt.planOwner == "-" {
				p.Render.Owner = ""
			}
			got, err := p.Preflight(t.Context(), sb)
			if err != nil {
				t.Fatal(err)
			}
			if got.Reason != tt.want {
				t.Errorf("obstacle %+v, want reason %q", got, tt.want)
			}
			if (got.Reason == "") != (got.Message == "") {
				t.Errorf("obstacle %+v: a reason goes with a message", got)
			}
		})
	}
}
