package reconcile

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Tests that status and metrics claim no more than the controller saw,
// and that a decision taken on one version of a sandbox never acts on
// another.

const boxBigger = `sandbox "box" {
  image     = "alpine:3"
  memory_mb = 1024
}`

// A register that fails leaves the new generation unobserved: akctl
// apply --wait must not succeed for a spec that never reached Nomad.
func TestFailedRegisterDoesNotReportTheNewGenerationObservedOrReady(t *testing.T) {
	synctest.Test(t, testFailedRegisterDoesNotReportTheNewGenerationObservedOrReady)
}

func testFailedRegisterDoesNotReportTheNewGenerationObservedOrReady(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.settle()
	h.reconcile("default/box")
	h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)

	h.apply(boxBigger)
	h.srv.FailRequests(nomadtest.ErrorFault{Status: http.StatusInternalServerError, Body: nomadtest.NoLeaderText, Count: 1, PathPrefix: "/v1/jobs"})
	if _, err := h.rec.Reconcile(t.Context(), "default/box"); !errors.Is(err, nomad.ErrTransient) {
		t.Fatalf("reconcile with the register refused: %v, want a transient error to retry", err)
	}
	if mem := *h.job("agentkernel-box").TaskGroups[0].Tasks[0].Resources.MemoryMB; mem == 1024 {
		t.Fatal("the fault did not stop the register; the test proves nothing")
	}
	rec := h.record("default/box")
	ready, _ := rec.Status.Condition(CondReady)
	if rec.Status.ObservedGeneration != 1 || ready.Status == store.ConditionTrue {
		t.Errorf("after a failed register of generation %d: observed %d, Ready %s (%s); want observed 1 and Ready not True",
			rec.Generation, rec.Status.ObservedGeneration, ready.Status, ready.Message)
	}
	if rec.Status.LastError == "" {
		t.Error("the failure is not in status")
	}

	h.reconcile("default/box")
	if mem := *h.job("agentkernel-box").TaskGroups[0].Tasks[0].Resources.MemoryMB; mem != 1024 {
		t.Fatalf("the retry did not register generation 2: memory %d", mem)
	}
	h.settle()
	h.reconcile("default/box")
	if st := h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue); st.ObservedGeneration != 2 {
		t.Errorf("after the retry: observed %d, want 2", st.ObservedGeneration)
	}
}

// A failed read of a generation already in Nomad keeps what was seen of
// it: the status does not go backwards.
func TestFailedReadKeepsTheObservedGenerationAndJobIndex(t *testing.T) {
	synctest.Test(t, testFailedReadKeepsTheObservedGenerationAndJobIndex)
}

func testFailedReadKeepsTheObservedGenerationAndJobIndex(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.settle()
	h.reconcile("default/box")
	before := h.record("default/box").Status
	h.srv.FailRequests(nomadtest.ErrorFault{Status: http.StatusInternalServerError, Body: nomadtest.NoLeaderText, Count: 1, PathPrefix: "/v1/job/"})
	if _, err := h.rec.Reconcile(t.Context(), "default/box"); err == nil {
		t.Fatal("the fault did not fail the reconcile")
	}
	st := h.record("default/box").Status
	ready, _ := st.Condition(CondReady)
	if st.ObservedGeneration != 1 || st.JobModifyIndex != before.JobModifyIndex || ready.Status != store.ConditionTrue {
		t.Errorf("status after a failed read of an unchanged sandbox: %+v; want generation 1, job index %d and Ready kept", st, before.JobModifyIndex)
	}
}

// The drift metric counts repairs of changes made outside the
// controller, never a user's own update.
func TestDriftMetricCountsOnlyOutOfBandChanges(t *testing.T) {
	synctest.Test(t, testDriftMetricCountsOnlyOutOfBandChanges)
}

func testDriftMetricCountsOnlyOutOfBandChanges(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newHarness(t, func(c *Config) { c.Metrics = m })
	total := func() float64 {
		var n float64
		for _, r := range nomad.DriftReasons {
			n += testutil.ToFloat64(m.driftRepairs.WithLabelValues(r))
		}
		return n
	}
	h.apply(box)
	h.reconcile("default/box")
	h.apply(boxBigger)
	h.reconcile("default/box")
	h.apply(`sandbox "box" {
  image = "alpine:3"
  state = "stopped"
}`)
	h.reconcile("default/box")
	h.apply(box)
	h.reconcile("default/box")
	if n := total(); n != 0 {
		t.Fatalf("create, update, stop and resume by the user counted %v drift repairs, want 0", n)
	}

	h.srv.StopJob("default", "agentkernel-box", false)
	h.reconcile("default/box")
	if got := testutil.ToFloat64(m.driftRepairs.WithLabelValues(nomad.DriftStopped)); got != 1 {
		t.Errorf("a job stopped out of band and repaired counted %v under %q, want 1", got, nomad.DriftStopped)
	}
	h.srv.StopJob("default", "agentkernel-box", true)
	h.reconcile("default/box")
	if got := testutil.ToFloat64(m.driftRepairs.WithLabelValues(nomad.DriftMissing)); got != 1 {
		t.Errorf("a job purged out of band and re-created counted %v under %q, want 1", got, nomad.DriftMissing)
	}
	if ev := h.lastEvent("default/box"); ev.Reason != store.ReasonRepaired {
		t.Errorf("re-creating a job purged out of band recorded %+v, want Repaired", ev)
	}
	if n := total(); n != 2 {
		t.Errorf("%v repairs counted in all, want 2", n)
	}
}

// outOfBandChange is a change made to a sandbox's job outside the
// controller, as `nomad job run` would make it.
type outOfBandChange struct {
	name   string
	change func(j *api.Job)
	// byIndexOnly: only the job's modify index tells this change apart,
	// so a controller with no index recorded cannot see it.
	byIndexOnly bool
}

// outOfBandChanges are the fields that widen what a sandbox may do, and
// one more that nothing but the index shows.
var outOfBandChanges = []outOfBandChange{
	{name: "user root", change: func(j *api.Job) { j.TaskGroups[0].Tasks[0].User = "root" }},
	{name: "host volume mount", change: func(j *api.Job) {
		j.TaskGroups[0].Volumes = map[string]*api.VolumeRequest{"hostfs": {Name: "hostfs", Type: "host", Source: "hostfs"}}
		j.TaskGroups[0].Tasks[0].VolumeMounts = []*api.VolumeMount{{Volume: ptrTo("hostfs"), Destination: ptrTo("/host")}}
	}},
	{name: "artifact", change: func(j *api.Job) {
		j.TaskGroups[0].Tasks[0].Artifacts = []*api.TaskArtifact{{GetterSource: ptrTo("https://example.invalid/payload.tgz"), RelativeDest: ptrTo("local/")}}
	}},
	{name: "reserved port 22", change: func(j *api.Job) {
		j.TaskGroups[0].Networks[0].ReservedPorts = []api.Port{{Label: "ssh", Value: 22}}
	}},
	// A real agent refuses a kill timeout longer than the group's
	// progress deadline (10m).
	{name: "kill timeout", byIndexOnly: true, change: func(j *api.Job) {
		j.TaskGroups[0].Tasks[0].KillTimeout = ptrTo(2 * time.Minute)
	}},
}

// leftOver names what of outOfBandChanges the job still carries.
func leftOver(j *api.Job) []string {
	tg := j.TaskGroups[0]
	var out []string
	for _, c := range []struct {
		what string
		left bool
	}{
		{"user", tg.Tasks[0].User != ""},
		{"volumes", len(tg.Volumes) > 0 || len(tg.Tasks[0].VolumeMounts) > 0},
		{"artifacts", len(tg.Tasks[0].Artifacts) > 0},
		{"reserved ports", len(tg.Networks[0].ReservedPorts) > 0},
		{"kill timeout", deref(tg.Tasks[0].KillTimeout) == 2*time.Minute},
	} {
		if c.left {
			out = append(out, c.what)
		}
	}
	return out
}

// Changes to fields the controller does not render are drift: caught by
// value for the fields that widen what a sandbox may do, and for any
// other field by the job's modify index having moved since the
// controller's own write.
func TestDriftOutsideRenderedFieldsIsRepaired(t *testing.T) {
	tests := outOfBandChanges
	for _, tt := range tests {
		for _, fresh := range []bool{false, true} {
			name := tt.name + "/index recorded"
			if fresh {
				name = tt.name + "/no index recorded"
			}
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					h := newHarness(t)
					h.apply(box)
					h.reconcile("default/box")
					j := h.job("agentkernel-box")
					tt.change(j)
					if _, _, err := h.srv.RunJob(j); err != nil {
						t.Fatal(err)
					}
					if fresh {
						// As a store that never saw the job's index would be.
						st := h.record("default/box").Status
						st.JobModifyIndex = 0
						if err := h.st.UpdateStatus(t.Context(), "default/box", st); err != nil {
							t.Fatal(err)
						}
					}
					w := h.writes()
					h.reconcile("default/box")
					got := h.job("agentkernel-box")
					if fresh && tt.byIndexOnly {
						if h.writes() != w {
							t.Errorf("with no index recorded a change outside every compared field was still written over")
						}
						return
					}
					if h.writes() != w+1 {
						t.Fatalf("%d writes after the change, want 1 repair", h.writes()-w)
					}
					if left := leftOver(got); len(left) > 0 {
						t.Errorf("not put back after the repair: %v", left)
					}
					if ev := h.lastEvent("default/box"); ev.Reason != store.ReasonRepaired {
						t.Errorf("event %+v, want Repaired", ev)
					}
					w = h.writes()
					h.reconcile("default/box")
					if h.writes() != w {
						t.Errorf("the repaired job was written again")
					}
				})
			})
		}
	}
}

// Stopping a job is a write: the status records the job's index after
// it, so that neither drift detection nor a relist takes the controller's
// own stop for someone else's change.
func TestStopRecordsTheJobIndexAfterTheStop(t *testing.T) {
	synctest.Test(t, testStopRecordsTheJobIndexAfterTheStop)
}

func testStopRecordsTheJobIndexAfterTheStop(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.apply(`sandbox "box" {
  image = "alpine:3"
  state = "stopped"
}`)
	h.reconcile("default/box")
	live := h.job("agentkernel-box")
	if st := h.record("default/box").Status; st.JobModifyIndex != deref(live.JobModifyIndex) {
		t.Errorf("status job index %d after the stop, live job's %d", st.JobModifyIndex, deref(live.JobModifyIndex))
	}
}

// expiryRacingStore re-applies the sandbox between the reconciler's read
// and its delete, as a user extending the ttl at that moment would.
type expiryRacingStore struct {
	*store.Store
	race func()
}

func (s *expiryRacingStore) DeleteAt(ctx context.Context, key string, rv uint64) (store.Record, error) {
	if s.race != nil {
		s.race()
		s.race = nil
	}
	return s.Store.DeleteAt(ctx, key, rv)
}

func TestTTLExpiryDoesNotDeleteASandboxAppliedAgainMeanwhile(t *testing.T) {
	synctest.Test(t, testTTLExpiryDoesNotDeleteASandboxAppliedAgainMeanwhile)
}

func testTTLExpiryDoesNotDeleteASandboxAppliedAgainMeanwhile(t *testing.T) {
	h := newHarness(t)
	h.apply(`sandbox "box" {
  image = "alpine:3"
  ttl   = "1h"
}`)
	h.reconcile("default/box")
	h.settle()
	h.advance(time.Hour)
	rs := &expiryRacingStore{Store: h.st, race: func() {
		h.apply(`sandbox "box" {
  image = "alpine:3"
  ttl   = "3h"
}`)
	}}
	rec := NewReconciler(rs, h.nc, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}}, nil, h.now)
	if _, err := rec.Reconcile(t.Context(), "default/box"); err != nil {
		t.Fatal(err)
	}
	got := h.record("default/box")
	if got.Deleting() || !strings.Contains(got.Sandbox.Spec.TTL, "3h") {
		t.Fatalf("the sandbox re-applied with ttl 3h was deleted by the expiry of its 1h version: deleting %t, ttl %q", got.Deleting(), got.Sandbox.Spec.TTL)
	}
	// Once the new version runs, a look sees the new ttl: two hours left.
	h.reconcile("default/box")
	h.settle()
	if res := h.reconcile("default/box"); res.RequeueAfter != 2*time.Hour {
		t.Errorf("requeue after %v, want the 2h left of the new ttl", res.RequeueAfter)
	}
}

// A relist queues what differs from the store, and a sandbox stopped as
// declared differs in nothing: neither when the controller stopped its
// job nor when it was declared stopped from the start and has none.
func TestRelistDoesNotRequeueStoppedSandboxes(t *testing.T) {
	synctest.Test(t, testRelistDoesNotRequeueStoppedSandboxes)
}

func testRelistDoesNotRequeueStoppedSandboxes(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.apply(`sandbox "box" {
  image = "alpine:3"
  state = "stopped"
}
sandbox "never" {
  image = "alpine:3"
  state = "stopped"
}`)
	h.reconcile("default/box")
	h.reconcile("default/never")
	q := NewQueue(QueueOptions{})
	c := New(Options{Reconciler: h.rec, Queue: q, Store: h.st, Owner: h.st.StoreID()})
	c.initialList.Store(true) // as after the first list
	listing := func() nomad.Listing {
		jobs, idx, err := h.nc.ListOwned(t.Context(), "*", h.st.StoreID())
		if err != nil {
			t.Fatal(err)
		}
		allocs, err := h.nc.ListWantedAllocs(t.Context(), "*", jobs)
		if err != nil {
			t.Fatal(err)
		}
		return nomad.Listing{Jobs: jobs, Index: idx, Allocs: allocs}
	}
	queueSink{c: c}.Relisted(listing())
	if n := q.Len(); n != 0 {
		t.Errorf("a relist queued %d stopped sandboxes, want none", n)
	}
	// Started again behind the controller's back: that is news.
	j := h.job("agentkernel-box")
	j.Stop = ptrTo(false)
	if _, _, err := h.srv.RunJob(j); err != nil {
		t.Fatal(err)
	}
	queueSink{c: c}.Relisted(listing())
	if n := q.Len(); n != 1 {
		t.Errorf("a relist queued %d sandboxes after a stopped job was started out of band, want 1", n)
	}
}

// failingAllocReads fails the allocation reads a test names (1 is the
// first).
type failingAllocReads struct {
	*nomad.Client
	n    int
	fail map[int]bool
}

func (f *failingAllocReads) Allocations(ctx context.Context, ns, id string) ([]*api.AllocationListStub, error) {
	f.n++
	if f.fail[f.n] {
		return nil, &nomad.Error{Op: "list allocations", Kind: nomad.ErrTransient, Err: errors.New("connection reset")}
	}
	return f.Client.Allocations(ctx, ns, id)
}

// The controller's own register, whose pass then failed before its end,
// is not taken for someone else's change on the next pass: no second
// write, and no drift counted.
func TestOwnWriteWithAFailedPassIsNotDrift(t *testing.T) {
	synctest.Test(t, testOwnWriteWithAFailedPassIsNotDrift)
}

func testOwnWriteWithAFailedPassIsNotDrift(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.settle()
	h.apply(boxBigger)
	fr := &failingAllocReads{Client: h.nc, fail: map[int]bool{1: true}} // the read after the register
	rec := NewReconciler(h.st, fr, Config{Render: nomad.RenderOptions{Owner: h.st.StoreID()}, Metrics: m}, nil, h.now)
	if _, err := rec.Reconcile(t.Context(), "default/box"); err == nil {
		t.Fatal("the failed read did not fail the reconcile")
	}
	if ev := h.lastEvent("default/box"); ev.Reason != store.ReasonUpdated {
		t.Errorf("last event %+v, want the update recorded though its pass failed", ev)
	}
	if c, _ := h.record("default/box").Status.Condition(CondReady); c.Status == store.ConditionTrue {
		t.Errorf("Ready %s right after a register whose allocation was not seen", c.Status)
	}
	w := h.writes()
	if _, err := rec.Reconcile(t.Context(), "default/box"); err != nil {
		t.Fatal(err)
	}
	if h.writes() != w {
		t.Errorf("%d more writes: the controller's own register was taken for an out-of-band change", h.writes()-w)
	}
	for _, r := range nomad.DriftReasons {
		if n := testutil.ToFloat64(m.driftRepairs.WithLabelValues(r)); n != 0 {
			t.Errorf("drift %q counted %v", r, n)
		}
	}
	h.settle()
	if _, err := rec.Reconcile(t.Context(), "default/box"); err != nil {
		t.Fatal(err)
	}
	h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)
}

// As on a real agent, Nomad plans after the register returns: for a
// moment the previous version's allocation is still wanted and running.
// The sandbox is not Ready until an allocation of the job's current
// version runs.
func TestReadyOnlyWhenTheCurrentVersionRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessOn(t, nomadtest.Options{EvalDelay: 30 * time.Millisecond, SchedulingDelay: 500 * time.Millisecond, Drivers: []string{"docker"}})
		h.apply(box)
		h.reconcile("default/box")
		time.Sleep(time.Second)
		h.reconcile("default/box")
		h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)

		h.apply(boxBigger)
		h.reconcile("default/box") // registers version 1; version 0 still runs
		st := h.record("default/box").Status
		ready, _ := st.Condition(CondReady)
		if ready.Status == store.ConditionTrue || st.Phase == store.PhaseRunning {
			t.Fatalf("right after the register: phase %s, Ready %s (%s); want Pending until version %d runs", st.Phase, ready.Status, ready.Message, st.JobVersion)
		}
		if ready.Reason != ReasonVersionPending && ready.Reason != ReasonAllocPending && ready.Reason != ReasonNoAlloc {
			t.Errorf("Ready reason %s, want the new version being placed", ready.Reason)
		}
		time.Sleep(time.Second)
		h.reconcile("default/box")
		st = h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)
		if deref(st.JobVersion) != 1 || st.AllocJobVersion != 1 {
			t.Errorf("status says job version %d, allocation version %d; want 1 and 1", deref(st.JobVersion), st.AllocJobVersion)
		}
	})
}

// A register that went through, followed by a failed read of the
// allocations, does not claim Ready for the new generation from the old
// one's allocation, and keeps the register's event.
func TestAllocationReadFailureAfterARegisterDoesNotClaimReady(t *testing.T) {
	synctest.Test(t, testAllocationReadFailureAfterARegisterDoesNotClaimReady)
}

func testAllocationReadFailureAfterARegisterDoesNotClaimReady(t *testing.T) {
	h := newHarness(t)
	h.apply(box)
	h.reconcile("default/box")
	h.settle()
	h.reconcile("default/box")
	h.expectStatus("default/box", store.PhaseRunning, store.ConditionTrue)
	h.apply(boxBigger)
	h.srv.FailRequests(nomadtest.ErrorFault{Status: http.StatusInternalServerError, Body: nomadtest.NoLeaderText, Count: 1, PathPrefix: "/v1/job/agentkernel-box/allocations"})
	if _, err := h.rec.Reconcile(t.Context(), "default/box"); err == nil {
		t.Fatal("fault did not fail")
	}
	if mem := *h.job("agentkernel-box").TaskGroups[0].Tasks[0].Resources.MemoryMB; mem != 1024 {
		t.Fatalf("register did not happen")
	}
	rec := h.record("default/box")
	ready, _ := rec.Status.Condition(CondReady)
	if rec.Status.ObservedGeneration == rec.Generation && ready.Status == store.ConditionTrue {
		t.Errorf("generation %d claimed observed and Ready from the previous generation's allocation: %s", rec.Generation, ready.Message)
	}
	if ev := h.lastEvent("default/box"); ev.Reason != store.ReasonUpdated {
		t.Errorf("last event %+v, want the update", ev)
	}
}

// A user's update that Nomad refused once and that goes through on the
// scheduled retry is an update, not a drift repair.
func TestUpdateRegisteredOnTheRetryAfterARejectionIsNotDrift(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newHarness(t, func(c *Config) { c.Metrics = m })
	h.apply(box)
	h.reconcile("default/box")
	h.apply(boxBigger)
	h.srv.FailRequests(nomadtest.ErrorFault{Status: http.StatusForbidden, Body: "Permission denied", Count: 1, PathPrefix: "/v1/jobs"})
	h.reconcile("default/box") // rejected, retried later
	h.reconcile("default/box") // the retry after RejectedRecheck
	var n float64
	for _, r := range nomad.DriftReasons {
		n += testutil.ToFloat64(m.driftRepairs.WithLabelValues(r))
	}
	ev := h.lastEvent("default/box")
	if n != 0 || ev.Reason == store.ReasonRepaired {
		t.Errorf("a user's update registered on the retry after a rejection counted as drift repair")
	}
}
