package reconcile

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// harness is a reconciler on a real store and the Nomad test server,
// driven by calling Reconcile directly, with a clock the test moves.
type harness struct {
	t     *testing.T
	srv   *nomadtest.Server
	mem   *nomadtest.MemNet
	nc    *nomad.Client
	st    *store.Store
	rec   *Reconciler
	mu    sync.Mutex
	clock time.Time
}

// newHarness serves the test server on an in-memory network, so that
// the whole controller runs inside a testing/synctest bubble and every
// timer (resync, backoff, watcher timeouts, the scheduler's and the
// client's delays) runs on the bubble's fake clock. The server keeps a
// real agent's timing: a register answers before its allocation is
// placed, and the allocation runs about half a second later (settle).
// Call it inside synctest.Test.
func newHarness(t *testing.T, mut ...func(*Config)) *harness {
	t.Helper()
	return newHarnessOn(t, nomadtest.Options{Drivers: []string{"docker", "exec", "raw_exec"}}, mut...)
}

// newHarnessOn is newHarness with a test server of the given options.
func newHarnessOn(t *testing.T, opts nomadtest.Options, mut ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, mem: nomadtest.NewMemNet()}
	h.srv = nomadtest.New(opts)
	hs := &http.Server{Handler: h.srv}
	go func() { _ = hs.Serve(h.mem.Listener()) }()
	t.Cleanup(func() {
		_ = h.srv.Close()
		h.mem.Close()
		_ = hs.Close()
	})
	return h.finish(nomad.Config{Address: h.mem.URL(), HTTPClient: h.mem.HTTPClient()}, mut)
}

// settle lets Nomad catch up with the last write, on the bubble's clock:
// the plan, the client's reports, the allocation running.
func (h *harness) settle() {
	time.Sleep(time.Second)
	synctest.Wait()
}

func (h *harness) finish(nc nomad.Config, mut []func(*Config)) *harness {
	t := h.t
	t.Helper()
	h.clock = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var err error
	if h.nc, err = nomad.NewClient(nc); err != nil {
		t.Fatal(err)
	}
	if h.st, err = store.Open(t.TempDir(), store.Options{NoSync: true, Now: h.now}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.st.Close() }) // the store in use at the end; rounds may replace it
	cfg := Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}
	for _, m := range mut {
		m(&cfg)
	}
	h.rec = NewReconciler(h.st, h.nc, cfg, nil, h.now)
	h.rec.AllowGC()
	return h
}

func (h *harness) now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clock
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	h.clock = h.clock.Add(d)
	h.mu.Unlock()
}

// apply declares sandboxes from HCL, as akctl apply would.
func (h *harness) apply(src string) {
	h.t.Helper()
	res, diags := spec.LoadSources([]spec.SourceFile{{Name: "t.hcl", Dir: ".", Src: []byte(src)}}, spec.Options{})
	if diags.HasErrors() {
		h.t.Fatal(diags.Error())
	}
	objs := make([]store.Object, 0, len(res.Sandboxes))
	for _, s := range res.Sandboxes {
		objs = append(objs, store.Object{Sandbox: s})
	}
	for _, p := range res.Pools {
		st := p.Settings
		objs = append(objs, store.Object{Sandbox: p.Sandbox(), Pool: &st})
	}
	if _, err := h.st.Apply(h.t.Context(), objs, store.ApplyOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) reconcile(key string) Result {
	h.t.Helper()
	res, err := h.rec.Reconcile(h.t.Context(), key)
	if err != nil {
		h.t.Fatalf("reconcile %s: %v", key, err)
	}
	return res
}

// writes counts the Nomad writes the test server received.
func (h *harness) writes() int {
	r := h.srv.Requests()
	return r["PUT /v1/jobs"] + r["POST /v1/jobs"] + r["DELETE /v1/job/{id}"]
}

func (h *harness) job(id string) *api.Job {
	h.t.Helper()
	j, err := h.nc.Job(h.t.Context(), "default", id)
	if errors.Is(err, nomad.ErrNotFound) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return j
}

func (h *harness) record(key string) store.Record {
	h.t.Helper()
	rec, err := h.st.Get(h.t.Context(), key)
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

func (h *harness) lastEvent(key string) store.Event {
	h.t.Helper()
	evs, err := h.st.Events(h.t.Context(), key)
	if err != nil || len(evs) == 0 {
		h.t.Fatalf("events of %s: %v, %d", key, err, len(evs))
	}
	return evs[len(evs)-1]
}

func (h *harness) expectStatus(key string, phase store.Phase, ready store.ConditionStatus) store.Status {
	h.t.Helper()
	st := h.record(key).Status
	c, _ := st.Condition(CondReady)
	if st.Phase != phase || c.Status != ready {
		h.t.Fatalf("%s: phase %s, Ready %s (%s); want %s, %s; status %+v", key, st.Phase, c.Status, c.Message, phase, ready, st)
	}
	return st
}

const box = `sandbox "box" {
  image = "alpine:3"
}`

func TestCreateThenNoOp(t *testing.T) { synctest.Test(t, testCreateThenNoOp) }

func testCreateThenNoOp(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	job := h.job("agentkernel-box")
	if job == nil || job.Meta[nomad.MetaOwner] != h.st.StoreID() {
		t.Fatalf("job after create: %+v", job)
	}
	// Nomad answers the register before it places the allocation.
	h.expectStatus("default/box", store.PhasePending, store.ConditionFalse)
	h.settle()
	h.reconcile("default/box")
	st := h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)
	if st.ObservedGeneration != 1 || st.AllocID == "" || st.JobModifyIndex == 0 {
		t.Errorf("status %+v: want generation 1, an allocation and the job modify index", st)
	}
	if ev := h.lastEvent("default/box"); ev.Reason != store.ReasonCreated {
		t.Errorf("event %+v, want Created", ev)
	}
	if h.writes() != 1 {
		t.Errorf("create took %d Nomad writes, want 1", h.writes())
	}

	rev, _ := h.st.Revision(t.Context())
	for range 3 {
		h.reconcile("default/box")
	}
	if h.writes() != 1 {
		t.Errorf("reconciling an unchanged sandbox wrote to Nomad: %d writes", h.writes())
	}
	if rev2, _ := h.st.Revision(t.Context()); rev2 != rev {
		t.Errorf("reconciling an unchanged sandbox wrote to the store: revision %d -> %d", rev, rev2)
	}
}

func TestUpdateRegistersWithCheckAndSet(t *testing.T) {
	synctest.Test(t, testUpdateRegistersWithCheckAndSet)
}

func testUpdateRegistersWithCheckAndSet(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	before := h.job("agentkernel-box")
	h.apply(`sandbox "box" {
  image     = "alpine:3"
  memory_mb = 1024
}`)
	h.reconcile("default/box")
	after := h.job("agentkernel-box")
	if *after.TaskGroups[0].Tasks[0].Resources.MemoryMB != 1024 || *after.JobModifyIndex <= *before.JobModifyIndex {
		t.Fatalf("job not updated: memory %d", *after.TaskGroups[0].Tasks[0].Resources.MemoryMB)
	}
	if st := h.record("default/box").Status; st.ObservedGeneration != 2 {
		t.Errorf("observed generation %d, want 2", st.ObservedGeneration)
	}
	if ev := h.lastEvent("default/box"); ev.Reason != store.ReasonUpdated {
		t.Errorf("event %+v, want Updated", ev)
	}
	if h.writes() != 2 {
		t.Errorf("%d writes, want 2", h.writes())
	}
}

func TestStopAndResume(t *testing.T) { synctest.Test(t, testStopAndResume) }

func testStopAndResume(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.apply(`sandbox "box" {
  image = "alpine:3"
  state = "stopped"
}`)
	h.reconcile("default/box")
	if j := h.job("agentkernel-box"); j == nil || j.Stop == nil || !*j.Stop {
		t.Fatalf("job not stopped: %+v", j)
	}
	h.expectStatus("default/box", store.PhaseStopped, store.ConditionFalse)
	w := h.writes()
	h.reconcile("default/box")
	if h.writes() != w {
		t.Errorf("a stopped sandbox was written again")
	}
	h.apply(box)
	h.reconcile("default/box")
	if j := h.job("agentkernel-box"); j.Stop != nil && *j.Stop {
		t.Fatalf("job still stopped after resume")
	}
	h.settle()
	h.reconcile("default/box")
	h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)
}

func TestTTLExpiry(t *testing.T) {
	t.Run("delete", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			h.apply(`sandbox "box" {
  image = "alpine:3"
  ttl   = "1h"
}`)
			h.reconcile("default/box")
			h.settle()
			res := h.reconcile("default/box")
			if res.RequeueAfter != time.Hour {
				t.Errorf("requeue after %v, want the remaining hour", res.RequeueAfter)
			}
			h.advance(time.Hour)
			h.reconcile("default/box") // marks for deletion
			if !h.record("default/box").Deleting() {
				t.Fatal("expired sandbox not marked for deletion")
			}
			h.reconcile("default/box") // purges
			h.reconcile("default/box") // finalizes
			if _, err := h.st.Get(t.Context(), "default/box"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("record still there: %v", err)
			}
			if h.job("agentkernel-box") != nil {
				t.Errorf("job still there")
			}
		})
	})
	t.Run("stop", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			h.apply(`sandbox "box" {
  image     = "alpine:3"
  ttl       = "1h"
  on_expiry = "stop"
}`)
			h.reconcile("default/box")
			h.advance(2 * time.Hour)
			h.reconcile("default/box")
			if j := h.job("agentkernel-box"); j == nil || !*j.Stop {
				t.Fatalf("expired job not stopped: %+v", j)
			}
			h.expectStatus("default/box", store.PhaseExpired, store.ConditionFalse)
		})
	})
}

func TestDeleteFinalizesAfterPurge(t *testing.T) { synctest.Test(t, testDeleteFinalizesAfterPurge) }

func testDeleteFinalizesAfterPurge(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	if _, err := h.st.Delete(t.Context(), "default/box"); err != nil {
		t.Fatal(err)
	}
	res := h.reconcile("default/box")
	if res.RequeueAfter == 0 {
		t.Error("purge did not schedule a check")
	}
	if h.job("agentkernel-box") != nil {
		t.Fatal("job not purged")
	}
	if !h.record("default/box").Deleting() {
		t.Fatal("record finalized before Nomad confirmed the purge")
	}
	h.reconcile("default/box")
	if _, err := h.st.Get(t.Context(), "default/box"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record not finalized: %v", err)
	}
}

func TestGarbageCollection(t *testing.T) { synctest.Test(t, testGarbageCollection) }

func testGarbageCollection(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	// The store forgets the sandbox without the controller seeing the
	// deletion (a restored backup, say): the owned job is garbage.
	if _, err := h.st.Delete(t.Context(), "default/box"); err != nil {
		t.Fatal(err)
	}
	if err := h.st.Finalize(t.Context(), "default/box", h.record("default/box").ResourceVersion); err != nil {
		t.Fatal(err)
	}
	other := renderFor(t, "other", "another-store")
	if _, _, err := h.srv.RunJob(other); err != nil {
		t.Fatal(err)
	}

	h.rec.gcAllowed.Store(false)
	h.reconcile("default/box")
	if h.job("agentkernel-box") == nil {
		t.Fatal("purged before the initial list completed")
	}
	h.rec.AllowGC()
	h.reconcile("default/box")
	if h.job("agentkernel-box") != nil {
		t.Error("owned job of an undeclared sandbox not purged")
	}
	h.reconcile("default/other")
	if h.job("agentkernel-other") == nil {
		t.Error("a job of another store was purged")
	}
}

func renderFor(t *testing.T, name, owner string) *api.Job {
	t.Helper()
	res, diags := spec.LoadSources([]spec.SourceFile{{Name: "t.hcl", Dir: ".", Src: []byte(strings.ReplaceAll(box, `"box"`, `"`+name+`"`))}}, spec.Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	job, err := nomad.Render(&res.Sandboxes[0], nomad.RenderOptions{Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	return job
}

func TestDriftRepaired(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(h *harness)
		reason string
	}{
		{"stopped out of band", func(h *harness) { h.srv.StopJob("default", "agentkernel-box", false) }, nomad.DriftStopped},
		{"purged out of band", func(h *harness) { h.srv.StopJob("default", "agentkernel-box", true) }, ""},
		{"spec changed out of band", func(h *harness) {
			j := h.job("agentkernel-box")
			j.TaskGroups[0].Tasks[0].Config["image"] = "evil:latest"
			if _, _, err := h.srv.RunJob(j); err != nil {
				h.t.Fatal(err)
			}
		}, nomad.DriftFields},
		{"dead after its task failed for good", func(h *harness) {
			// Someone re-ran the job with no restarts or reschedules left,
			// as agentkernel's batch jobs end: the task fails and the job
			// is dead.
			j := h.job("agentkernel-box")
			j.TaskGroups[0].RestartPolicy = &api.RestartPolicy{Attempts: ptrTo(0), Mode: ptrTo("fail")}
			j.TaskGroups[0].ReschedulePolicy = &api.ReschedulePolicy{Attempts: ptrTo(0), Unlimited: ptrTo(false)}
			if _, _, err := h.srv.RunJob(j); err != nil {
				h.t.Fatal(err)
			}
			h.settle()
			if err := h.srv.FailTask("default", "agentkernel-box"); err != nil {
				h.t.Fatal(err)
			}
			h.settle()
			if j := h.job("agentkernel-box"); deref(j.Status) != "dead" {
				h.t.Fatalf("job status %q, want dead", deref(j.Status))
			}
		}, nomad.DriftDead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				h.apply(box)
				h.reconcile("default/box")
				h.settle()
				tt.break_(h)
				h.reconcile("default/box")
				j := h.job("agentkernel-box")
				if j == nil || (j.Stop != nil && *j.Stop) || j.TaskGroups[0].Tasks[0].Config["image"] != "alpine:3" {
					t.Fatalf("not repaired: %+v", j)
				}
				ev := h.lastEvent("default/box")
				h.settle()
				h.reconcile("default/box")
				h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)
				if tt.reason != "" && (ev.Reason != store.ReasonRepaired || !strings.Contains(ev.Message, tt.reason)) {
					t.Errorf("event %+v, want Repaired naming %s", ev, tt.reason)
				}
				w := h.writes()
				h.reconcile("default/box")
				if h.writes() != w {
					t.Errorf("repaired sandbox written again")
				}
			})
		})
	}
}

func TestFailedAllocationIsReported(t *testing.T) { synctest.Test(t, testFailedAllocationIsReported) }

func testFailedAllocationIsReported(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.settle()
	if err := h.srv.FailTask("default", "agentkernel-box"); err != nil {
		t.Fatal(err)
	}
	h.settle()
	w := h.writes()
	h.reconcile("default/box")
	st := h.record("default/box").Status
	ready, _ := st.Condition(CondReady)
	if ready.Status == store.ConditionTrue && st.Phase == store.PhaseRunning {
		// The simulated scheduler may already have replaced it.
		t.Logf("allocation already replaced: %+v", st)
	} else if st.Phase != store.PhaseFailed && st.Phase != store.PhasePending {
		t.Errorf("phase %s after a failed allocation, want Failed or Pending", st.Phase)
	}
	if h.writes() != w {
		t.Errorf("the controller wrote to Nomad for a failed allocation; Nomad's reschedule policy owns that")
	}
}

func TestForeignJobsAreNeverTouched(t *testing.T) {
	tests := []struct {
		name   string
		owner  string
		reason string
	}{
		{"no owner (agentkernel's own job)", "", ReasonForeignJob},
		{"another controller's job", "another-store", ReasonOtherOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				job := renderFor(t, "box", tt.owner)
				if tt.owner == "" {
					delete(job.Meta, nomad.MetaOwner)
				}
				job.TaskGroups[0].Tasks[0].Config["image"] = "theirs:1"
				if _, _, err := h.srv.RunJob(job); err != nil {
					t.Fatal(err)
				}
				before := h.job("agentkernel-box")
				h.srv.ResetRequests()
				h.apply(box)
				h.reconcile("default/box")
				if _, err := h.st.Delete(t.Context(), "default/box"); err != nil {
					t.Fatal(err)
				}
				h.reconcile("default/box")
				if h.writes() != 0 {
					t.Errorf("%d writes to a job that is not ours", h.writes())
				}
				after := h.job("agentkernel-box")
				if after == nil || *after.JobModifyIndex != *before.JobModifyIndex {
					t.Errorf("foreign job changed or removed")
				}
				if _, err := h.st.Get(t.Context(), "default/box"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("deleted sandbox not finalized: %v", err)
				}
			})
		})
	}
	t.Run("status says conflict", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			job := renderFor(t, "box", "")
			delete(job.Meta, nomad.MetaOwner)
			if _, _, err := h.srv.RunJob(job); err != nil {
				t.Fatal(err)
			}
			h.apply(box)
			h.reconcile("default/box")
			st := h.expectStatus("default/box", store.PhaseConflict, store.ConditionFalse)
			if c, _ := st.Condition(CondSynced); c.Reason != ReasonForeignJob {
				t.Errorf("synced %+v, want reason %s", c, ReasonForeignJob)
			}
		})
	})
}

func TestPolicyRefusalIsTerminal(t *testing.T) { synctest.Test(t, testPolicyRefusalIsTerminal) }

func testPolicyRefusalIsTerminal(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxMemoryMB = 256 })
	h.apply(`sandbox "raw" {
  driver  = "raw_exec"
  network = "host"
  command = ["/bin/sleep", "infinity"]
}
sandbox "big" {
  image     = "alpine:3"
  memory_mb = 4096
}`)
	for _, key := range []string{"default/raw", "default/big"} {
		res, err := h.rec.Reconcile(t.Context(), key)
		if err != nil || res.RequeueAfter != 0 {
			t.Errorf("%s: %v, %+v; want no error and no requeue (terminal)", key, err, res)
		}
		st := h.expectStatus(key, store.PhaseFailed, store.ConditionFalse)
		if st.LastError == "" {
			t.Errorf("%s: no error recorded", key)
		}
	}
	if h.writes() != 0 {
		t.Errorf("%d Nomad writes for refused sandboxes", h.writes())
	}
}

func TestNomadDownIsRetried(t *testing.T) { synctest.Test(t, testNomadDownIsRetried) }

func testNomadDownIsRetried(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.mem.SetDown(true)
	_, err := h.rec.Reconcile(t.Context(), "default/box")
	if !errors.Is(err, nomad.ErrTransient) {
		t.Fatalf("err = %v, want transient so the worker retries", err)
	}
	if st := h.record("default/box").Status; st.LastError == "" {
		t.Errorf("status does not carry the error: %+v", st)
	}
	h.mem.SetDown(false)
	h.reconcile("default/box")
	h.settle()
	h.reconcile("default/box")
	h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)
}

func ptrTo[T any](v T) *T { return &v }

// racingNomad lets another writer change the job between the
// reconciler's read and its register, once.
type racingNomad struct {
	*nomad.Client
	race func()
}

func (r *racingNomad) Register(ctx context.Context, job *api.Job, index uint64) (nomad.RegisterResult, error) {
	if r.race != nil {
		r.race()
		r.race = nil
	}
	return r.Client.Register(ctx, job, index)
}

func TestCheckAndSetConflictIsRetried(t *testing.T) {
	synctest.Test(t, testCheckAndSetConflictIsRetried)
}

func testCheckAndSetConflictIsRetried(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.apply(`sandbox "box" {
  image     = "alpine:3"
  memory_mb = 1024
}`)
	rn := &racingNomad{Client: h.nc, race: func() {
		j := h.job("agentkernel-box")
		j.TaskGroups[0].Tasks[0].Env = map[string]string{"OTHER": "writer"}
		if _, _, err := h.srv.RunJob(j); err != nil {
			t.Fatal(err)
		}
	}}
	rec := NewReconciler(h.st, rn, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}, nil, h.now)
	if _, err := rec.Reconcile(t.Context(), "default/box"); !errors.Is(err, nomad.ErrConflict) {
		t.Fatalf("err = %v, want a check-and-set conflict returned for a retry", err)
	}
	if _, err := rec.Reconcile(t.Context(), "default/box"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	j := h.job("agentkernel-box")
	if *j.TaskGroups[0].Tasks[0].Resources.MemoryMB != 1024 || len(j.TaskGroups[0].Tasks[0].Env) != 0 {
		t.Errorf("after the retry the job is not the declared one: memory %d, env %v", *j.TaskGroups[0].Tasks[0].Resources.MemoryMB, j.TaskGroups[0].Tasks[0].Env)
	}
}

func TestNomadRejectionIsRecordedAndRetriedLater(t *testing.T) {
	synctest.Test(t, testNomadRejectionIsRecordedAndRetriedLater)
}

func testNomadRejectionIsRecordedAndRetriedLater(t *testing.T) {
	h := newHarness(t)
	h.apply(`sandbox "box" {
  namespace = "not-created-yet"
  image     = "alpine:3"
}`)
	res, err := h.rec.Reconcile(t.Context(), "not-created-yet/box")
	if err != nil || res.RequeueAfter != 5*time.Minute {
		t.Fatalf("%+v, %v; want no error and a look again in 5 minutes", res, err)
	}
	st := h.record("not-created-yet/box").Status
	if c, _ := st.Condition(CondSynced); st.Phase != store.PhaseFailed || c.Reason != ReasonNomadRejected || !strings.Contains(st.LastError, "nonexistent namespace") {
		t.Errorf("status %+v", st)
	}
	if _, err := h.nc.API().Namespaces().Register(&api.Namespace{Name: "not-created-yet"}, nil); err != nil {
		t.Fatal(err)
	}
	h.reconcile("not-created-yet/box")
	h.settle()
	h.reconcile("not-created-yet/box")
	if st := h.record("not-created-yet/box").Status; st.Phase != store.PhaseRunning {
		t.Errorf("after the namespace was created: phase %s", st.Phase)
	}
}

func TestPolicyErrorReadsAsOneSentence(t *testing.T) {
	cfg := Config{MaxMemoryMB: 256}
	sb := spec.Sandbox{Spec: spec.Spec{Driver: "raw_exec", MemoryMB: 128}}
	err := cfg.CheckPolicy(&sb)
	if !errors.Is(err, ErrPolicy) || !errors.Is(err, nomad.ErrDriverNotAllowed) {
		t.Fatalf("err %v does not match its kinds", err)
	}
	if want := `driver "raw_exec" is not allowed by this controller (allowed: docker, exec)`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestAdoptOwnersTakesOverListedOwnersOnly(t *testing.T) {
	tests := []struct {
		name      string
		owner     string
		wantAdopt bool
	}{
		{"listed owner is adopted", "old-controller", true},
		{"unlisted owner is left alone", "someone-else", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, func(c *Config) { c.AdoptOwners = []string{"old-controller"} })
				job := renderFor(t, "box", tt.owner)
				if _, _, err := h.srv.RunJob(job); err != nil {
					t.Fatal(err)
				}
				h.srv.ResetRequests()
				h.apply(box)
				h.reconcile("default/box")
				live := h.job("agentkernel-box")
				gotOwner := live.Meta[nomad.MetaOwner]
				if tt.wantAdopt {
					if gotOwner != h.st.StoreID() || h.writes() != 1 {
						t.Errorf("owner %q after %d writes, want the job re-stamped with %q in one write", gotOwner, h.writes(), h.st.StoreID())
					}
					return
				}
				if gotOwner != tt.owner || h.writes() != 0 {
					t.Errorf("owner %q after %d writes, want %q untouched", gotOwner, h.writes(), tt.owner)
				}
				h.expectStatus("default/box", store.PhaseConflict, store.ConditionFalse)
			})
		})
	}
}
