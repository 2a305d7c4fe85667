package nomadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

// The lifecycle recordings (testdata/facts/lifecycle, see its README): a
// sandbox job's whole life on a real Nomad 2.0.5 agent, in two variants,
// "default" (no update block: a deployment per version) and
// "maxparallel0" (update { max_parallel = 0 }: no deployment). These tests
// replay the recorded phases on the test server, at the recorded times on
// fake time, and compare what a client sees.

const lifecycleDir = factsDir + "/lifecycle"

var lifecycleVariants = []string{"default", "maxparallel0"}

// recLine is one recorded event-stream line and when it arrived, in
// seconds since the variant started.
type recLine struct {
	at     float64
	Index  uint64
	Events []struct {
		Topic      string
		Type       string
		Key        string
		FilterKeys []string
		Payload    map[string]json.RawMessage
	}
}

func loadLifecycleEvents(t *testing.T, variant string) []recLine {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(lifecycleDir, variant+".events.ndjson.ts"))
	if err != nil {
		t.Fatal(err)
	}
	var out []recLine
	for _, l := range strings.Split(string(raw), "\n") {
		at, body, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(l, "#") || body == "{}" {
			continue
		}
		var rl recLine
		if err := json.Unmarshal([]byte(body), &rl); err != nil {
			t.Fatalf("%s: decode %.60q: %v", variant, body, err)
		}
		if rl.at, err = strconv.ParseFloat(at, 64); err != nil {
			t.Fatalf("%s: time %q: %v", variant, at, err)
		}
		out = append(out, rl)
	}
	return out
}

// timelineEntry is one line of <variant>.timeline.jsonl.
type timelineEntry struct {
	T      float64
	Kind   string
	Name   string
	Label  string
	Body   string
	Allocs []struct {
		JobVersion uint64
		Desired    string
		Client     string
		Healthy    *bool
	}
}

func loadTimeline(t *testing.T, variant string) []timelineEntry {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(lifecycleDir, variant+".timeline.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []timelineEntry
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e timelineEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s timeline: %v", variant, err)
		}
		out = append(out, e)
	}
	return out
}

// phaseCounts is one row of table 2 of the lifecycle README: events per
// phase, all topics and Job+Allocation only.
type phaseCounts struct{ All, JobAlloc int }

// loadTable2 reads table 2 of the lifecycle README, by phase and variant.
func loadTable2(t *testing.T) map[string]map[string]phaseCounts {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(lifecycleDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(raw), "## 2. Events per phase")
	if !ok {
		t.Fatal("README has no table 2")
	}
	out := map[string]map[string]phaseCounts{"default": {}, "maxparallel0": {}}
	for _, l := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(l, "| "), "|")
		if len(cells) != 5 {
			continue
		}
		var n [4]int
		bad := false
		for i := range n {
			if n[i], err = strconv.Atoi(strings.TrimSpace(cells[i+1])); err != nil {
				bad = true
			}
		}
		if bad {
			continue
		}
		phase := tablePhase[strings.TrimSpace(cells[0])]
		if phase == "" {
			t.Fatalf("table 2: unknown phase %q", cells[0])
		}
		out["default"][phase] = phaseCounts{n[0], n[1]}
		out["maxparallel0"][phase] = phaseCounts{n[2], n[3]}
	}
	if len(out["default"]) != 8 {
		t.Fatalf("table 2 has %d phases, want 8", len(out["default"]))
	}
	return out
}

// tablePhase maps table 2's phase names to the timeline's.
var tablePhase = map[string]string{
	"create":                 "create",
	"identical re-register":  "identical-reregister",
	"destructive update":     "destructive-update",
	"CPU-only update":        "cpu-only-update",
	"task killed (restart)":  "task-killed",
	"stop":                   "stop",
	"re-register after stop": "reregister-after-stop",
	"purge":                  "purge",
}

// recordedJobs are the job versions the recorder registered, from the
// JobRegistered payloads, with the fields the server sets cleared.
func recordedJobs(t *testing.T, lines []recLine) map[uint64]*api.Job {
	t.Helper()
	out := make(map[uint64]*api.Job)
	for _, l := range lines {
		for _, e := range l.Events {
			if e.Topic != "Job" || e.Type != "JobRegistered" {
				continue
			}
			var j api.Job
			if err := json.Unmarshal(e.Payload["Job"], &j); err != nil {
				t.Fatal(err)
			}
			v := deref(j.Version)
			if _, seen := out[v]; seen || !strings.HasPrefix(deref(j.ID), "agentkernel-rec-") {
				continue
			}
			j.Status, j.StatusDescription, j.Stable, j.Version = nil, nil, nil, nil
			j.CreateIndex, j.ModifyIndex, j.JobModifyIndex, j.SubmitTime = nil, nil, nil, nil
			out[v] = &j
		}
	}
	return out
}

// gotLine is an event-stream line the replay received, and when.
type gotLine struct {
	at   time.Duration
	line wireLine
}

// lifecycleRun is one replay of a variant's phases on a fresh server.
type lifecycleRun struct {
	t        *testing.T
	f        *fixture
	job      string
	jobs     map[uint64]*api.Job
	timeline []timelineEntry
	start    time.Time

	mu    sync.Mutex
	lines []gotLine
}

// phaseStarts are the recorded phases and their start times.
func (r *lifecycleRun) phaseStarts() []timelineEntry {
	var out []timelineEntry
	for _, e := range r.timeline {
		if e.Kind == "phase" {
			out = append(out, e)
		}
	}
	return out
}

// phaseAt is the recorded phase going on at offset at of the replay,
// which starts with the first phase.
func (r *lifecycleRun) phaseAt(at time.Duration) string {
	name := ""
	phases := r.phaseStarts()
	for _, p := range phases {
		if secs(p.T-phases[0].T) <= at {
			name = p.Name
		}
	}
	return name
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// sleepUntil waits on fake time until offset at of the replay.
func (r *lifecycleRun) sleepUntil(at time.Duration) {
	if d := time.Until(r.start.Add(at)); d > 0 {
		time.Sleep(d)
	}
}

// follow reads the whole event stream, every topic, into r.lines.
func (r *lifecycleRun) follow() {
	_, lines := openEventStream(r.t, r.f, "/v1/event/stream")
	go func() {
		for l := range lines {
			if l == "{}" {
				continue
			}
			var wl wireLine
			if err := json.Unmarshal([]byte(l), &wl); err != nil {
				r.t.Errorf("decode line %.80q: %v", l, err)
				continue
			}
			r.mu.Lock()
			r.lines = append(r.lines, gotLine{at: time.Since(r.start), line: wl})
			r.mu.Unlock()
		}
	}()
}

// register registers a recorded version with check-and-set, as the
// recorder did, taking the index from the job itself.
func (r *lifecycleRun) register(version uint64) {
	job := cloneJob(r.jobs[version])
	var index uint64
	if cur, _, err := r.f.api.Jobs().Info(r.job, nil); err == nil {
		index = deref(cur.JobModifyIndex)
	}
	if _, _, err := r.f.api.Jobs().EnforceRegister(job, index, nil); err != nil {
		r.t.Fatalf("register version %d: %v", version, err)
	}
}

// act does what the recorder did at the start of a phase.
func (r *lifecycleRun) act(phase string) {
	switch phase {
	case "create", "identical-reregister":
		r.register(0)
	case "destructive-update":
		r.register(1)
	case "cpu-only-update":
		r.register(2)
	case "task-killed":
		if err := r.f.srv.KillTask("default", r.job); err != nil {
			r.t.Fatal(err)
		}
	case "stop", "purge":
		if _, _, err := r.f.api.Jobs().Deregister(r.job, phase == "purge", nil); err != nil {
			r.t.Fatal(err)
		}
	case "reregister-after-stop":
		r.register(4)
	}
}

// replay runs every phase at its recorded time, with before and probe, when
// set, called right before and right after each action, and waits 2s after
// the last one.
func (r *lifecycleRun) replay(before func(phase string), probe func(phase string, next time.Duration)) {
	phases := r.phaseStarts()
	for i, p := range phases {
		at := secs(p.T)
		// The kill came a little after its phase began.
		for _, e := range r.timeline {
			if p.Name == "task-killed" && e.Kind == "kill" {
				at = secs(e.T)
			}
		}
		r.sleepUntil(at - secs(phases[0].T))
		if before != nil {
			before(p.Name)
		}
		r.act(p.Name)
		next := at + 2*time.Second
		if i+1 < len(phases) {
			next = secs(phases[i+1].T)
		}
		if probe != nil {
			probe(p.Name, next-secs(phases[0].T))
		}
	}
	r.sleepUntil(secs(phases[len(phases)-1].T-phases[0].T) + 2*time.Second)
	synctest.Wait()
}

func newLifecycleRun(t *testing.T, variant string) *lifecycleRun {
	recorded := loadLifecycleEvents(t, variant)
	r := &lifecycleRun{
		t:        t,
		f:        newPipeFixture(t, Options{}),
		job:      "agentkernel-rec-" + variant,
		jobs:     recordedJobs(t, recorded),
		timeline: loadTimeline(t, variant),
	}
	for _, v := range []uint64{0, 1, 2, 4} {
		if r.jobs[v] == nil {
			t.Fatalf("%s: no recorded job version %d", variant, v)
		}
	}
	r.start = time.Now()
	return r
}

// countPhases counts the events of lines by phase, Job+Allocation apart.
// The recorder received each line only once the next one arrived (its
// reader waited for a full buffer: the line already in the agent's buffer
// when it subscribed came with the first write, half a second later), so
// table 2 counts the last line of every phase in the next phase. With
// delayed set, a line counts in the phase its successor arrived in, as
// the recorder saw it.
func countPhases(lines []gotLine, phaseAt func(time.Duration) string, delayed bool) map[string]phaseCounts {
	out := make(map[string]phaseCounts)
	for i, l := range lines {
		at := l.at
		if delayed && i+1 < len(lines) {
			at = lines[i+1].at
		}
		p := phaseAt(at)
		c := out[p]
		for _, e := range l.line.Events {
			c.All++
			if e.Topic == "Job" || e.Topic == "Allocation" {
				c.JobAlloc++
			}
		}
		out[p] = c
	}
	return out
}

// TestLifecycleEventCountsMatchRecording replays the recorded phases of
// both variants and compares the events each phase produces with table 2
// of the lifecycle README, within one event, counted as the recorder
// counted them.
func TestLifecycleEventCountsMatchRecording(t *testing.T) {
	table := loadTable2(t)
	for _, variant := range lifecycleVariants {
		t.Run(variant, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newLifecycleRun(t, variant)
				r.follow()
				r.replay(nil, nil)
				r.mu.Lock()
				lines := slices.Clone(r.lines)
				r.mu.Unlock()
				got := countPhases(lines, r.phaseAt, true)
				own := countPhases(lines, r.phaseAt, false)
				for _, p := range r.phaseStarts() {
					want, ok := table[variant][p.Name]
					if !ok {
						continue // idle-60s is not in the table
					}
					t.Logf("%-22s recorded %2d/%2d, here %2d/%2d (%2d/%2d as they happened)", p.Name,
						want.All, want.JobAlloc, got[p.Name].All, got[p.Name].JobAlloc, own[p.Name].All, own[p.Name].JobAlloc)
					if d := got[p.Name].JobAlloc - want.JobAlloc; d < -1 || d > 1 {
						t.Errorf("%s: %d Job+Allocation events, recorded %d", p.Name, got[p.Name].JobAlloc, want.JobAlloc)
					}
					if d := got[p.Name].All - want.All; d < -1 || d > 1 {
						t.Errorf("%s: %d events of all topics, recorded %d", p.Name, got[p.Name].All, want.All)
					}
				}
			})
		})
	}
}

// eventSeq is the (Topic, Type) sequence of the lines about job, one
// string per line: the job's own events, its allocations', evaluations'
// and deployments', and the node's, which every client write carries.
func eventSeq(job string, lines []wireLine) []string {
	var out []string
	started := false
	for _, l := range lines {
		var evs []string
		for _, e := range l.Events {
			if e.Topic == "Job" && e.Type == "JobRegistered" && e.Key == job {
				started = true
			}
			if e.Key == job || slices.Contains(e.FilterKeys, job) || e.Topic == "Node" {
				evs = append(evs, e.Topic+"/"+e.Type)
			}
		}
		if started && len(evs) > 0 {
			out = append(out, strings.Join(evs, " "))
		}
	}
	return out
}

// TestLifecycleEventSequenceMatchesRecording compares the whole event
// stream of a replay with the recording's, line by line: the same topics
// and types in the same order.
func TestLifecycleEventSequenceMatchesRecording(t *testing.T) {
	for _, variant := range lifecycleVariants {
		t.Run(variant, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				recorded := loadLifecycleEvents(t, variant)
				r := newLifecycleRun(t, variant)
				r.follow()
				r.replay(nil, nil)
				var want, got []wireLine
				for _, l := range recorded {
					want = append(want, toWire(t, l))
				}
				r.mu.Lock()
				for _, l := range r.lines {
					got = append(got, l.line)
				}
				r.mu.Unlock()
				got = dropReceipts(t, got, receipts(t, want))
				if diff := cmp.Diff(eventSeq(r.job, want), eventSeq(r.job, got)); diff != "" {
					t.Errorf("event lines differ (-recorded +replayed):\n%s", diff)
				}
			})
		})
	}
}

// receivedOnly reports whether an allocation event is the client's report
// of a placed allocation received: still pending, its tasks set up and not
// started (default.events 4108).
func receivedOnly(t *testing.T, payload json.RawMessage) bool {
	var a struct {
		ClientStatus string
		TaskStates   map[string]struct{ Events []struct{ Type string } }
	}
	if err := json.Unmarshal(payload, &a); err != nil {
		t.Fatal(err)
	}
	if a.ClientStatus != clientPending || len(a.TaskStates) == 0 {
		return false
	}
	for _, ts := range a.TaskStates {
		var types []string
		for _, e := range ts.Events {
			types = append(types, e.Type)
		}
		if !slices.Equal(types, []string{"Received", "Task Setup"}) {
			return false
		}
	}
	return true
}

// receipts says, for the allocations in the order they were placed,
// whether the client reported each received before it ran.
func receipts(t *testing.T, lines []wireLine) []bool {
	var order []string
	got := make(map[string]bool)
	for _, l := range lines {
		for _, e := range l.Events {
			if e.Topic != "Allocation" {
				continue
			}
			switch {
			case e.Type == "PlanResult" && !slices.Contains(order, e.Key):
				order = append(order, e.Key)
			case e.Type == "AllocationUpdated" && receivedOnly(t, e.Payload["Allocation"]):
				got[e.Key] = true
			}
		}
	}
	out := make([]bool, len(order))
	for i, id := range order {
		out[i] = got[id]
	}
	return out
}

// dropReceipts leaves out of lines the client writes that only report an
// allocation received, where the recorded client reported the same
// allocation received and running in one write: it did so once, for the
// first allocation of maxparallel0, after 0.93s instead of the usual two
// writes 0.1-0.3s and 0.4-0.7s after the plan.
func dropReceipts(t *testing.T, lines []wireLine, recorded []bool) []wireLine {
	ours := receipts(t, lines)
	var order []string
	var out []wireLine
	for _, l := range lines {
		drop := false
		for _, e := range l.Events {
			if e.Topic != "Allocation" {
				continue
			}
			if e.Type == "PlanResult" && !slices.Contains(order, e.Key) {
				order = append(order, e.Key)
			}
			n := slices.Index(order, e.Key)
			if e.Type == "AllocationUpdated" && n >= 0 && n < len(recorded) && !recorded[n] && ours[n] &&
				len(l.Events) == 2 && receivedOnly(t, e.Payload["Allocation"]) {
				drop = true
			}
		}
		if !drop {
			out = append(out, l)
		}
	}
	return out
}

func toWire(t *testing.T, l recLine) wireLine {
	t.Helper()
	var wl wireLine
	b, err := json.Marshal(map[string]any{"Index": l.Index, "Events": l.Events})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &wl); err != nil {
		t.Fatal(err)
	}
	return wl
}

// allocView is what the allocation timeline compares of an allocation.
type allocView struct {
	JobVersion uint64
	Desired    string
	Client     string
	Healthy    string
}

func viewsOf(t *testing.T, al []*api.AllocationListStub) []allocView {
	var out []allocView
	for _, a := range al {
		h := "unset"
		if a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil {
			h = strconv.FormatBool(*a.DeploymentStatus.Healthy)
		}
		out = append(out, allocView{a.JobVersion, a.DesiredStatus, a.ClientStatus, h})
	}
	sortViews(out)
	return out
}

func sortViews(v []allocView) {
	slices.SortFunc(v, func(a, b allocView) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
}

// TestLifecycleAllocationTimelineMatchesRecording polls the job's
// allocations every 25ms after each recorded write, as the recorder did,
// and compares the distinct answers with the recorded ones: a register
// answers before its plan, so right after a destructive update the
// previous version is still desired run and running; then the old
// allocation is stopped and the new one pending, then the old one
// complete, then the new one running. The recorder's first poll came
// 4-8ms after the write, by which time some max_parallel 0 plans were
// already visible; there the recorded answers start one later.
func TestLifecycleAllocationTimelineMatchesRecording(t *testing.T) {
	for _, variant := range lifecycleVariants {
		t.Run(variant, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newLifecycleRun(t, variant)
				recorded := make(map[string][][]allocView)
				for _, e := range r.timeline {
					if e.Kind != "allocs" {
						continue
					}
					var v []allocView
					for _, a := range e.Allocs {
						h := "unset"
						if a.Healthy != nil {
							h = strconv.FormatBool(*a.Healthy)
						}
						v = append(v, allocView{a.JobVersion, a.Desired, a.Client, h})
					}
					sortViews(v)
					// Answers the recorder told apart by ModifyIndex alone
					// look the same here.
					if prev := recorded[e.Label]; len(prev) == 0 || !slices.Equal(prev[len(prev)-1], v) {
						recorded[e.Label] = append(recorded[e.Label], v)
					}
				}
				label := map[string]string{
					"create": "after-create", "identical-reregister": "after-identical", "destructive-update": "after-update",
					"cpu-only-update": "after-cpu-update", "task-killed": "after-kill", "stop": "after-stop",
					"reregister-after-stop": "after-restart",
				}
				var before []allocView
				r.replay(func(string) {
					al, _, err := r.f.api.Jobs().Allocations(r.job, true, nil)
					if err != nil {
						t.Fatal(err)
					}
					before = viewsOf(t, al)
				}, func(phase string, next time.Duration) {
					want := recorded[label[phase]]
					if len(want) == 0 {
						return
					}
					wrote := time.Now()
					time.Sleep(time.Millisecond)
					var got [][]allocView
					for {
						al, _, err := r.f.api.Jobs().Allocations(r.job, true, nil)
						if err != nil {
							t.Fatalf("%s: allocations: %v", phase, err)
						}
						v := viewsOf(t, al)
						if len(got) == 0 || !cmp.Equal(got[len(got)-1], v) {
							got = append(got, v)
						}
						done := len(got) >= len(want) && cmp.Equal(v, want[len(want)-1], cmp.Comparer(emptyViews))
						if done || time.Since(r.start)+25*time.Millisecond >= next {
							break
						}
						// Every 25ms as the recorder did while the plan and
						// the client's first reports come; the later changes
						// (a restart 15s on) last far longer than a poll.
						if time.Since(wrote) < 2*time.Second {
							time.Sleep(25 * time.Millisecond)
						} else {
							time.Sleep(250 * time.Millisecond)
						}
					}
					if !cmp.Equal(want[0], before, cmp.Comparer(emptyViews)) {
						// The recorder's first poll already saw the plan.
						if len(got) > 0 && cmp.Equal(got[0], before, cmp.Comparer(emptyViews)) {
							got = got[1:]
						} else {
							t.Errorf("%s: first answer %v, want the allocations as before the write, %v", phase, got, before)
						}
					}
					if diff := cmp.Diff(want, got, cmp.Comparer(emptyViews)); diff != "" {
						t.Errorf("%s: distinct answers differ (-recorded +replayed):\n%s", phase, diff)
					}
				})
			})
		})
	}
}

func emptyViews(a, b []allocView) bool {
	return len(a) == 0 && len(b) == 0 || slices.Equal(a, b)
}

// payloadKeys collects, by topic and type, the top-level keys of the
// objects the events carry, and of their nested objects one level down
// (an allocation's TaskStates, a deployment's TaskGroups), for lines about
// job.
func payloadKeys(t *testing.T, job string, lines []wireLine) map[string][]string {
	out := make(map[string][]string)
	add := func(k string, keys ...string) {
		for _, key := range keys {
			if !slices.Contains(out[k], key) {
				out[k] = append(out[k], key)
			}
		}
	}
	for _, l := range lines {
		for _, e := range l.Events {
			if e.Key != job && !slices.Contains(e.FilterKeys, job) && e.Topic != "Node" {
				continue
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(e.Payload[e.Topic], &obj); err != nil {
				t.Fatalf("%s/%s payload: %v", e.Topic, e.Type, err)
			}
			for k, v := range obj {
				name := e.Topic + "/" + e.Type
				add(name, k)
				var inner map[string]json.RawMessage
				if json.Unmarshal(v, &inner) == nil {
					for ik := range inner {
						if k == "TaskStates" || k == "TaskGroups" || k == "Drivers" || k == "Attributes" || k == "Meta" {
							break // keyed by name, not by field
						}
						add(name+" "+k, ik)
					}
				}
			}
		}
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}

// TestLifecyclePayloadsMatchRecording compares the fields of every
// object the replayed events carry with the recorded ones, topic by
// topic and type by type: the full job, allocation, evaluation,
// deployment and node.
func TestLifecyclePayloadsMatchRecording(t *testing.T) {
	for _, variant := range lifecycleVariants {
		t.Run(variant, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				recorded := loadLifecycleEvents(t, variant)
				r := newLifecycleRun(t, variant)
				r.follow()
				r.replay(nil, nil)
				var want, got []wireLine
				for _, l := range recorded {
					want = append(want, toWire(t, l))
				}
				r.mu.Lock()
				for _, l := range r.lines {
					got = append(got, l.line)
				}
				r.mu.Unlock()
				if diff := cmp.Diff(payloadKeys(t, r.job, want), payloadKeys(t, r.job, got)); diff != "" {
					t.Errorf("payload keys differ (-recorded +replayed):\n%s", diff)
				}
			})
		})
	}
}
