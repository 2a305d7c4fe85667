package nomadtest

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

// lifecycleJob is a version of a recorded lifecycle job, ready to
// register: the sandbox job as the controller renders it.
func lifecycleJob(t *testing.T, variant string, version uint64) *api.Job {
	t.Helper()
	j := recordedJobs(t, loadLifecycleEvents(t, variant))[version]
	if j == nil {
		t.Fatalf("%s: no recorded version %d", variant, version)
	}
	return cloneJob(j)
}

// allocStates lists "version desired/client" of a job's allocations,
// sorted.
func allocStates(t *testing.T, f *fixture, id string) []string {
	t.Helper()
	var out []string
	for _, v := range viewsOf(t, jobAllocs(t, f, id)) {
		out = append(out, itoa(v.JobVersion)+" "+v.Desired+"/"+v.Client)
	}
	return out
}

// TestPlacementWindowThroughAPI shows, through nomad/api, what a client
// reading right after a destructive update sees (lifecycle README
// section 1): the register answers before the scheduler plans, so for
// EvalDelay the previous version is still desired run and running; then
// it is stopped and the new one placed, pending; ClientDelay after the
// plan the old one is complete; SchedulingDelay after it the new one runs.
// With max_parallel 0 the window is the same: only the deployment is
// missing.
func TestPlacementWindowThroughAPI(t *testing.T) {
	for _, variant := range lifecycleVariants {
		t.Run(variant, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newPipeFixture(t, Options{})
				id := "agentkernel-rec-" + variant
				f.register(t, lifecycleJob(t, variant, 0))
				time.Sleep(time.Second)
				steps := []struct {
					after time.Duration // since the register answered
					want  []string
				}{
					{0, []string{"0 run/running"}},
					{defaultEvalDelay + time.Millisecond, []string{"0 stop/running", "1 run/pending"}},
					{defaultEvalDelay + defaultClientDelay + time.Millisecond, []string{"0 stop/complete", "1 run/pending"}},
					{defaultEvalDelay + defaultSchedulingDelay + time.Millisecond, []string{"0 stop/complete", "1 run/running"}},
				}
				j := jobStatus(t, f, id)
				if _, _, err := f.api.Jobs().EnforceRegister(lifecycleJob(t, variant, 1), *j.JobModifyIndex, nil); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				for _, st := range steps {
					time.Sleep(time.Until(start.Add(st.after)))
					got := allocStates(t, f, id)
					if !slices.Equal(got, st.want) {
						t.Errorf("%v after the register: %v, want %v", st.after, got, st.want)
					}
				}
				if j := jobStatus(t, f, id); *j.Version != 1 {
					t.Errorf("job version %d, want 1", *j.Version)
				}
			})
		})
	}
}

// TestDeploymentMarksVersionStable follows a version's deployment through
// nomad/api (lifecycle README section 3): made in the plan, the
// allocation healthy 10.09s after it runs, the deployment successful
// 1.3s later with a deployment-watcher evaluation, and the version marked
// stable, which moves the job's ModifyIndex but neither its
// JobModifyIndex nor its Version.
func TestDeploymentMarksVersionStable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		id := "agentkernel-rec-default"
		resp := f.register(t, lifecycleJob(t, "default", 0))
		if d, _, err := f.api.Jobs().LatestDeployment(id, nil); err != nil || d != nil {
			t.Errorf("deployment before the plan: %+v %v, want none", d, err)
		}
		time.Sleep(10 * time.Millisecond)
		d, _, err := f.api.Jobs().LatestDeployment(id, nil)
		if err != nil || d == nil {
			t.Fatalf("deployment after the plan: %+v %v", d, err)
		}
		st := d.TaskGroups["sandbox"]
		if d.Status != "running" || d.StatusDescription != "Deployment is running" || d.JobVersion != 0 ||
			d.JobSpecModifyIndex != resp.JobModifyIndex || st == nil || st.DesiredTotal != 1 || st.PlacedAllocs != 1 || st.HealthyAllocs != 0 {
			t.Errorf("new deployment %+v, group %+v", d, st)
		}
		if al := jobAllocs(t, f, id); len(al) != 1 {
			t.Fatalf("allocations %d, want 1", len(al))
		} else if a, _, err := f.api.Allocations().Info(al[0].ID, nil); err != nil || a.DeploymentID != d.ID {
			t.Errorf("allocation deployment %q (%v), want %s", a.DeploymentID, err, d.ID)
		}
		before := jobStatus(t, f, id)

		// Running 0.455s after the register, healthy 10.09s later.
		time.Sleep(10*time.Second + 600*time.Millisecond)
		al := jobAllocs(t, f, id)
		if ds := al[0].DeploymentStatus; ds == nil || ds.Healthy == nil || !*ds.Healthy {
			t.Errorf("allocation deployment status %+v, want healthy", ds)
		}
		if d, _, _ := f.api.Deployments().Info(d.ID, nil); d.Status != "running" || d.TaskGroups["sandbox"].HealthyAllocs != 1 {
			t.Errorf("deployment once the allocation is healthy: %s, %+v", d.Status, d.TaskGroups["sandbox"])
		}

		time.Sleep(2 * time.Second)
		d, _, err = f.api.Deployments().Info(d.ID, nil)
		if err != nil || d.Status != "successful" || d.StatusDescription != "Deployment completed successfully" {
			t.Fatalf("deployment 12.5s after the register: %+v %v", d, err)
		}
		after := jobStatus(t, f, id)
		if !*after.Stable || *after.JobModifyIndex != *before.JobModifyIndex || *after.Version != *before.Version || *after.ModifyIndex <= *before.ModifyIndex {
			t.Errorf("job after the deployment: Stable %v, JobModifyIndex %d -> %d, Version %d -> %d, ModifyIndex %d -> %d; want stable, only ModifyIndex moved",
				*after.Stable, *before.JobModifyIndex, *after.JobModifyIndex, *before.Version, *after.Version, *before.ModifyIndex, *after.ModifyIndex)
		}
		versions, _, _, err := f.api.Jobs().Versions(id, false, nil)
		if err != nil || len(versions) != 1 || !*versions[0].Stable {
			t.Errorf("versions %v (%v), want version 0 stable", versions, err)
		}
		evals, _, err := f.api.Jobs().Evaluations(id, nil)
		watcher := 0
		for _, e := range evals {
			if e.TriggeredBy == "deployment-watcher" && e.Status == "complete" && e.DeploymentID == d.ID {
				watcher++
			}
		}
		if err != nil || watcher != 1 {
			t.Errorf("%d complete deployment-watcher evaluations (%v), want 1", watcher, err)
		}
		list, _, err := f.api.Jobs().Deployments(id, false, nil)
		if err != nil || len(list) != 1 || list[0].ID != d.ID {
			t.Errorf("job deployments %v (%v), want the one", list, err)
		}
	})
}

// TestNewVersionCancelsRunningDeployment: a version registered while the
// previous one's deployment runs cancels it in its plan, and a stop
// cancels the running one too, with the agent's descriptions.
func TestNewVersionCancelsRunningDeployment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		id := "agentkernel-rec-default"
		f.register(t, lifecycleJob(t, "default", 0))
		time.Sleep(time.Second)
		first, _, err := f.api.Jobs().LatestDeployment(id, nil)
		if err != nil || first == nil {
			t.Fatalf("first deployment: %v", err)
		}
		j := jobStatus(t, f, id)
		if _, _, err := f.api.Jobs().EnforceRegister(lifecycleJob(t, "default", 1), *j.JobModifyIndex, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if d, _, _ := f.api.Deployments().Info(first.ID, nil); d.Status != "cancelled" || d.StatusDescription != "Cancelled due to newer version of job" {
			t.Errorf("first deployment after a new version: %s %q", d.Status, d.StatusDescription)
		}
		second, _, _ := f.api.Jobs().LatestDeployment(id, nil)
		if second == nil || second.ID == first.ID || second.JobVersion != 1 || second.Status != "running" {
			t.Fatalf("second deployment %+v", second)
		}
		if _, _, err := f.api.Jobs().Deregister(id, false, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if d, _, _ := f.api.Deployments().Info(second.ID, nil); d.Status != "cancelled" || d.StatusDescription != "Cancelled because job is stopped" {
			t.Errorf("second deployment after a stop: %s %q", d.Status, d.StatusDescription)
		}
		time.Sleep(time.Minute)
		if j := jobStatus(t, f, id); *j.Stable {
			t.Error("a cancelled deployment marked its version stable")
		}
	})
}

// TestMaxParallelZeroMakesNoDeployment: with update { max_parallel = 0 }
// the agent makes no deployment, answers null for the job's latest one,
// never marks the job stable, and the client still reports the
// allocation healthy (lifecycle README section 3, maxparallel0 4183).
func TestMaxParallelZeroMakesNoDeployment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		id := "agentkernel-rec-maxparallel0"
		f.register(t, lifecycleJob(t, "maxparallel0", 0))
		time.Sleep(15 * time.Second)
		resp, body := f.do(t, "GET", "/v1/job/"+id+"/deployment", nil, nil)
		if resp.StatusCode != 200 || string(body) != "null" {
			t.Errorf("latest deployment: %d %s, want 200 null", resp.StatusCode, body)
		}
		if list, _, err := f.api.Jobs().Deployments(id, true, nil); err != nil || len(list) != 0 {
			t.Errorf("deployments %v (%v), want none", list, err)
		}
		if j := jobStatus(t, f, id); *j.Stable {
			t.Error("job marked stable without a deployment")
		}
		al := jobAllocs(t, f, id)
		if ds := al[0].DeploymentStatus; len(al) != 1 || ds == nil || ds.Healthy == nil || !*ds.Healthy {
			t.Errorf("allocation deployment status %+v, want healthy", al[0].DeploymentStatus)
		}
		evals, _, _ := f.api.Jobs().Evaluations(id, nil)
		for _, e := range evals {
			if e.TriggeredBy == "deployment-watcher" {
				t.Errorf("deployment-watcher evaluation %s without a deployment", e.ID)
			}
		}
	})
}

// TestFailedAllocationFailsDeployment: an allocation that fails before it
// is healthy is reported unhealthy and fails its deployment; the version
// is not marked stable.
func TestFailedAllocationFailsDeployment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		id := "agentkernel-rec-default"
		f.register(t, lifecycleJob(t, "default", 0))
		time.Sleep(time.Second)
		if err := f.srv.FailTask("default", id); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		d, _, err := f.api.Jobs().LatestDeployment(id, nil)
		if err != nil || d == nil || d.Status != "failed" || d.StatusDescription != "Failed due to unhealthy allocations" || d.TaskGroups["sandbox"].UnhealthyAllocs != 1 {
			t.Fatalf("deployment after a failure: %+v %v", d, err)
		}
		if j := jobStatus(t, f, id); *j.Stable {
			t.Error("a failed deployment marked its version stable")
		}
	})
}

// TestInstantModeSettlesInTheRequest: in instant mode the register
// answers with everything done: the allocation running, the deployment
// successful and the version stable.
func TestInstantModeSettlesInTheRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{Instant: true})
		id := "agentkernel-rec-default"
		f.register(t, lifecycleJob(t, "default", 0))
		if got := allocStates(t, f, id); !slices.Equal(got, []string{"0 run/running"}) {
			t.Errorf("allocations right after the register: %v", got)
		}
		if d, _, err := f.api.Jobs().LatestDeployment(id, nil); err != nil || d == nil || d.Status != "successful" {
			t.Errorf("deployment right after the register: %+v %v", d, err)
		}
		if j := jobStatus(t, f, id); !*j.Stable {
			t.Error("version not stable right after the register")
		}
	})
}

// TestStopDuringTheWatchersEvaluationEndsDead: a stop that cancels the
// deployment between the watcher's evaluation and its decision leaves no
// evaluation pending, so the stopped job ends dead.
func TestStopDuringTheWatchersEvaluationEndsDead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		id := "agentkernel-rec-default"
		f.register(t, lifecycleJob(t, "default", 0))
		// Running at 0.455s, healthy at 10.545s, the watcher's evaluation
		// at 11.599s, its decision due at 11.851s.
		time.Sleep(11700 * time.Millisecond)
		if _, _, err := f.api.Jobs().Deregister(id, false, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if j := jobStatus(t, f, id); *j.Status != "dead" || *j.Stable {
			t.Errorf("stopped job: status %s, stable %v; want dead and not stable", *j.Status, *j.Stable)
		}
		evals, _, _ := f.api.Jobs().Evaluations(id, nil)
		for _, e := range evals {
			if e.Status != "complete" {
				t.Errorf("evaluation %s (%s) is %s", e.ID, e.TriggeredBy, e.Status)
			}
		}
	})
}
