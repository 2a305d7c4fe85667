package nomadtest

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

func jobStatus(t *testing.T, f *fixture, id string) *api.Job {
	t.Helper()
	j, _, err := f.api.Jobs().Info(id, nil)
	if err != nil {
		t.Fatalf("get job %s: %v", id, err)
	}
	return j
}

func jobAllocs(t *testing.T, f *fixture, id string) []*api.AllocationListStub {
	t.Helper()
	al, _, err := f.api.Jobs().Allocations(id, true, nil)
	if err != nil {
		t.Fatalf("allocations of %s: %v", id, err)
	}
	return al
}

func summary(t *testing.T, f *fixture, id string) api.TaskGroupSummary {
	t.Helper()
	s, _, err := f.api.Jobs().Summary(id, nil)
	if err != nil {
		t.Fatalf("summary of %s: %v", id, err)
	}
	return s.Summary["main"]
}

// clientReport is how long a test waits for the client to report a task's
// end: a little more than the default ClientDelay.
const clientReport = 200 * time.Millisecond

func clientStatuses(al []*api.AllocationListStub) string {
	var s []string
	for _, a := range al {
		s = append(s, a.DesiredStatus+"/"+a.ClientStatus)
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}

// TestSchedulingDelay checks that the register answers before the plan
// (lifecycle README section 1), then pending -> running after the delay,
// and the job status and summary that go with it (facts 4.1, 4.3).
func TestSchedulingDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{SchedulingDelay: 2 * time.Second})
		f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		if got := clientStatuses(jobAllocs(t, f, "agentkernel-sleep-raw")); got != "" {
			t.Errorf("allocs right after register: %s, want none before the plan", got)
		}
		if j := jobStatus(t, f, "agentkernel-sleep-raw"); *j.Status != "pending" {
			t.Errorf("job status %s right after register, want pending", *j.Status)
		}
		time.Sleep(10 * time.Millisecond)
		if got := clientStatuses(jobAllocs(t, f, "agentkernel-sleep-raw")); got != "run/pending" {
			t.Errorf("allocs after the plan: %s, want run/pending", got)
		}
		if j := jobStatus(t, f, "agentkernel-sleep-raw"); *j.Status != "running" {
			t.Errorf("job status %s, want running once placed", *j.Status)
		}
		if s := summary(t, f, "agentkernel-sleep-raw"); s.Starting != 1 {
			t.Errorf("summary %+v, want Starting 1", s)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := clientStatuses(jobAllocs(t, f, "agentkernel-sleep-raw")); got != "run/running" {
			t.Errorf("allocs after the delay: %s, want run/running", got)
		}
		if s := summary(t, f, "agentkernel-sleep-raw"); s.Running != 1 || s.Starting != 0 {
			t.Errorf("summary %+v, want Running 1", s)
		}
	})
}

// TestReregister covers 80, 81, 96-97 and more/ 505-508: an identical job
// gets an evaluation but no write, a Meta change replaces the allocation.
func TestReregister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		time.Sleep(time.Second)
		before := jobStatus(t, f, "agentkernel-sleep-raw")

		resp := f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		after := jobStatus(t, f, "agentkernel-sleep-raw")
		if *after.Version != *before.Version || *after.JobModifyIndex != *before.JobModifyIndex || *after.ModifyIndex != *before.ModifyIndex {
			t.Errorf("identical register changed the job: %d/%d/%d -> %d/%d/%d", *before.Version, *before.JobModifyIndex, *before.ModifyIndex,
				*after.Version, *after.JobModifyIndex, *after.ModifyIndex)
		}
		// The quirk of 96: the response carries ModifyIndex, not JobModifyIndex.
		if resp.JobModifyIndex != *before.ModifyIndex || resp.EvalID == "" || resp.EvalCreateIndex <= *before.ModifyIndex {
			t.Errorf("identical register response %+v, want JobModifyIndex %d and a new eval", resp, *before.ModifyIndex)
		}
		evals, _, err := f.api.Jobs().Evaluations("agentkernel-sleep-raw", nil)
		if err != nil || len(evals) != 2 {
			t.Errorf("evaluations: %d (%v), want 2", len(evals), err)
		}
		if got := clientStatuses(jobAllocs(t, f, "agentkernel-sleep-raw")); got != "run/running" {
			t.Errorf("allocs after identical register: %s", got)
		}
		// Check-and-set with the returned index conflicts (97).
		_, _, err = f.api.Jobs().EnforceRegister(loadJob(t, "agentkernel-sleep-raw"), resp.JobModifyIndex, nil)
		if err == nil || !strings.Contains(err.Error(), "Enforcing job modify index") {
			t.Errorf("CAS with the returned index: %v, want a conflict", err)
		}

		resp = f.register(t, loadJob(t, "agentkernel-sleep-raw-meta-changed"))
		time.Sleep(10 * time.Millisecond) // planned
		changed := jobStatus(t, f, "agentkernel-sleep-raw")
		if *changed.Version != 1 || *changed.JobModifyIndex != resp.EvalCreateIndex || resp.JobModifyIndex != resp.EvalCreateIndex {
			t.Errorf("meta change: version %d, JobModifyIndex %d, response %+v", *changed.Version, *changed.JobModifyIndex, resp)
		}
		al := jobAllocs(t, f, "agentkernel-sleep-raw")
		if len(al) != 2 {
			t.Fatalf("%d allocs after a Meta change, want 2", len(al))
		}
		var old, cur *api.AllocationListStub
		for _, a := range al {
			if a.JobVersion == 0 {
				old = a
			} else {
				cur = a
			}
		}
		if old == nil || cur == nil || old.DesiredStatus != "stop" || old.DesiredDescription != "alloc is being updated due to job update" || old.NextAllocation != cur.ID {
			t.Fatalf("old alloc %+v, new %+v", old, cur)
		}
		time.Sleep(time.Second)
		if got := clientStatuses(jobAllocs(t, f, "agentkernel-sleep-raw")); !strings.Contains(got, "stop/complete") || !strings.Contains(got, "run/running") {
			t.Errorf("allocs settle as %s, want stop/complete and run/running (81.allocs)", got)
		}
	})
}

// TestStopStartPurge covers 120-125 and more/ 620-633, 660-663.
func TestStopStartPurge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-svc-raw"))
		time.Sleep(time.Second)
		if _, _, err := f.api.Jobs().Deregister("agentkernel-svc-raw", false, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // planned
		j := jobStatus(t, f, "agentkernel-svc-raw")
		if !*j.Stop || *j.Version != 1 || *j.Status != "dead" {
			t.Errorf("after stop: Stop %v Version %d Status %s, want true 1 dead", *j.Stop, *j.Version, *j.Status)
		}
		al := jobAllocs(t, f, "agentkernel-svc-raw")
		if len(al) != 1 || al[0].DesiredStatus != "stop" || al[0].DesiredDescription != "alloc not needed due to job update" {
			t.Errorf("allocs after stop: %s", clientStatuses(al))
		}
		if l, _, _ := f.api.Jobs().List(nil); len(l) != 1 || !l[0].Stop {
			t.Errorf("a stopped job stays listed (122): %+v", l)
		}
		time.Sleep(time.Second)

		// Registering the same spec starts it again as a new version.
		f.register(t, loadJob(t, "agentkernel-svc-raw"))
		j = jobStatus(t, f, "agentkernel-svc-raw")
		if *j.Stop || *j.Version != 2 {
			t.Errorf("restart: Stop %v Version %d, want false 2", *j.Stop, *j.Version)
		}
		time.Sleep(time.Second)
		if got := clientStatuses(jobAllocs(t, f, "agentkernel-svc-raw")); got != "run/running,stop/complete" {
			t.Errorf("allocs after restart: %s", got)
		}

		if _, _, err := f.api.Jobs().Deregister("agentkernel-svc-raw", true, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.api.Jobs().Info("agentkernel-svc-raw", nil); err == nil || !strings.Contains(err.Error(), "job not found") {
			t.Errorf("get after purge: %v, want job not found", err)
		}
		if al := jobAllocs(t, f, "agentkernel-svc-raw"); len(al) != 0 {
			t.Errorf("allocs after purge: %d, want none", len(al))
		}
		f.register(t, loadJob(t, "agentkernel-svc-raw"))
		if j := jobStatus(t, f, "agentkernel-svc-raw"); *j.Version != 0 {
			t.Errorf("register after purge: version %d, want a fresh job", *j.Version)
		}
	})
}

// TestBatchTaskDeaths follows facts 4.11 for a batch job: three restarts
// 15s apart, the fourth death fails the alloc and the job goes pending, a
// reschedule 5s later, and after four more deaths the job is dead.
func TestBatchTaskDeaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		time.Sleep(time.Second)
		for i := 1; i <= 3; i++ {
			if err := f.srv.KillTask("default", "agentkernel-sleep-raw"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(clientReport)
			al := jobAllocs(t, f, "agentkernel-sleep-raw")
			if ts := al[0].TaskStates["sleep"]; al[0].ClientStatus != "pending" || ts.State != "pending" || ts.Restarts != uint64(i) {
				t.Fatalf("kill %d: alloc %s task %s restarts %d", i, al[0].ClientStatus, ts.State, ts.Restarts)
			}
			if j := jobStatus(t, f, "agentkernel-sleep-raw"); *j.Status != "running" {
				t.Errorf("kill %d: job %s, want running", i, *j.Status)
			}
			time.Sleep(15 * time.Second)
			synctest.Wait()
			if al := jobAllocs(t, f, "agentkernel-sleep-raw"); al[0].ClientStatus != "running" {
				t.Fatalf("15s after kill %d: alloc %s, want running", i, al[0].ClientStatus)
			}
		}
		if err := f.srv.KillTask("default", "agentkernel-sleep-raw"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(clientReport)
		al := jobAllocs(t, f, "agentkernel-sleep-raw")
		events := al[0].TaskStates["sleep"].Events
		if al[0].ClientStatus != "failed" || events[len(events)-1].DisplayMessage != `Exceeded allowed attempts 3 in interval 24h0m0s and mode is "fail"` {
			t.Errorf("4th kill: alloc %s, last event %q", al[0].ClientStatus, events[len(events)-1].DisplayMessage)
		}
		if j := jobStatus(t, f, "agentkernel-sleep-raw"); *j.Status != "pending" {
			t.Errorf("after the failure: job %s, want pending", *j.Status)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		al = jobAllocs(t, f, "agentkernel-sleep-raw")
		if len(al) != 2 {
			t.Fatalf("%d allocs 5s after the failure, want a replacement", len(al))
		}
		if j := jobStatus(t, f, "agentkernel-sleep-raw"); *j.Status != "running" {
			t.Errorf("after the reschedule: job %s, want running", *j.Status)
		}
		for range 4 {
			time.Sleep(time.Second)
			if err := f.srv.KillTask("default", "agentkernel-sleep-raw"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(15 * time.Second)
			synctest.Wait()
		}
		if j := jobStatus(t, f, "agentkernel-sleep-raw"); *j.Status != "dead" {
			t.Errorf("after the last attempt: job %s, want dead", *j.Status)
		}
		if s := summary(t, f, "agentkernel-sleep-raw"); s.Failed != 2 {
			t.Errorf("summary %+v, want Failed 2", s)
		}
	})
}

// TestServiceTaskDeaths: a service alloc fails on the third death and is
// rescheduled 30s later, then 60s after the next failure (facts 4.1, 4.11).
func TestServiceTaskDeaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-svc-raw"))
		time.Sleep(time.Second)
		failOnce := func() {
			for range 3 {
				if err := f.srv.KillTask("default", "agentkernel-svc-raw"); err != nil {
					t.Fatal(err)
				}
				time.Sleep(15*time.Second + clientReport)
				synctest.Wait()
			}
		}
		failOnce()
		if j := jobStatus(t, f, "agentkernel-svc-raw"); *j.Status != "pending" {
			t.Errorf("after the failure: job %s, want pending", *j.Status)
		}
		time.Sleep(15 * time.Second) // 30s after the failure
		synctest.Wait()
		al := jobAllocs(t, f, "agentkernel-svc-raw")
		if len(al) != 2 || *jobStatus(t, f, "agentkernel-svc-raw").Status != "running" {
			t.Fatalf("30s after the failure: allocs %s", clientStatuses(al))
		}
		time.Sleep(time.Second)
		failOnce()
		time.Sleep(44 * time.Second) // 59s after the second failure
		synctest.Wait()
		if al := jobAllocs(t, f, "agentkernel-svc-raw"); len(al) != 2 {
			t.Errorf("rescheduled before 60s: %s", clientStatuses(al))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if al := jobAllocs(t, f, "agentkernel-svc-raw"); len(al) != 3 {
			t.Errorf("60s after the second failure: %s, want a third alloc", clientStatuses(al))
		}
	})
}

// TestBatchExit covers 140-143: exit 0 completes the alloc and the job ends
// dead; exit 3 with no restarts or reschedules fails it and the job is dead
// too; the summary tells them apart.
func TestBatchExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-short-ok"))
		f.register(t, loadJob(t, "agentkernel-short-fail"))
		time.Sleep(time.Second)
		if err := f.srv.ExitTask("default", "agentkernel-short-ok", 0); err != nil {
			t.Fatal(err)
		}
		if err := f.srv.ExitTask("default", "agentkernel-short-fail", 3); err != nil {
			t.Fatal(err)
		}
		time.Sleep(clientReport)
		for id, want := range map[string]string{"agentkernel-short-ok": "complete", "agentkernel-short-fail": "failed"} {
			if j := jobStatus(t, f, id); *j.Status != "dead" {
				t.Errorf("%s: job %s, want dead", id, *j.Status)
			}
			if al := jobAllocs(t, f, id); len(al) != 1 || al[0].ClientStatus != want {
				t.Errorf("%s: allocs %s, want one %s", id, clientStatuses(al), want)
			}
		}
		// Re-registering a finished batch job does not run it again and
		// flips it dead -> pending -> dead (more/ 604-607).
		f.register(t, loadJob(t, "agentkernel-short-ok"))
		time.Sleep(10 * time.Millisecond) // planned
		if al := jobAllocs(t, f, "agentkernel-short-ok"); len(al) != 1 || *jobStatus(t, f, "agentkernel-short-ok").Status != "dead" {
			t.Errorf("identical re-register of a dead batch job ran it again: %s", clientStatuses(al))
		}
	})
}

// TestAcceptedButFailing covers 63/64 (no driver config: the task fails
// validation on the client, is rescheduled once, and the job ends dead) and
// 68 (unknown driver: the job stays pending with a blocked evaluation).
func TestAcceptedButFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "invalid-no-config"))
		f.register(t, loadJob(t, "unknown-driver"))
		time.Sleep(10 * time.Second)
		bad := *loadJob(t, "invalid-no-config").ID
		al := jobAllocs(t, f, bad)
		if len(al) != 2 || *jobStatus(t, f, bad).Status != "dead" {
			t.Errorf("%s: allocs %s, job %s; want two failed allocs and dead", bad, clientStatuses(al), *jobStatus(t, f, bad).Status)
		}
		ev := al[0].TaskStates["t"]
		if ev == nil {
			for _, ts := range al[0].TaskStates {
				ev = ts
			}
		}
		if ev == nil || ev.Events[2].Type != "Failed Validation" || ev.Events[3].DisplayMessage != "Error was unrecoverable" {
			t.Errorf("task events %+v, want Failed Validation then Not Restarting", ev)
		}

		unknown := *loadJob(t, "unknown-driver").ID
		if j := jobStatus(t, f, unknown); *j.Status != "pending" {
			t.Errorf("%s: job %s, want pending", unknown, *j.Status)
		}
		if s := summary(t, f, unknown); s.Queued != 1 {
			t.Errorf("%s: summary %+v, want Queued 1", unknown, s)
		}
		evals, _, _ := f.api.Jobs().Evaluations(unknown, nil)
		blocked := 0
		job := jobStatus(t, f, unknown)
		for _, e := range evals {
			if e.Status == "blocked" && e.FailedTGAllocs["main"].ConstraintFiltered["missing drivers"] == 1 {
				blocked++
				// Nomad's CreateBlockedEval copies the job version.
				if e.JobModifyIndex != *job.JobModifyIndex {
					t.Errorf("%s: the blocked eval's JobModifyIndex %d, want the job's %d", unknown, e.JobModifyIndex, *job.JobModifyIndex)
				}
			}
		}
		if blocked != 1 {
			t.Errorf("%s: %d blocked evals with missing drivers, want 1", unknown, blocked)
		}
	})
}
