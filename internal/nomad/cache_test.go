package nomad

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// fullPayload is an event's payload decoded whole, as the tests read it.
type fullPayload struct {
	Job        *api.Job
	Allocation *api.Allocation
}

// recordedEvent is one Job or Allocation event of a recording, with the
// second it arrived at.
type recordedEvent struct {
	at      float64
	event   eventHeader
	payload json.RawMessage // the event's payload, whole
}

// readRecording reads the lifecycle recording <variant>, kept with the
// test server's facts: the event stream as a real agent sent it, and the
// phases the recorder went through.
func readRecording(t *testing.T, variant string) (events []recordedEvent, phases map[string]float64, order []string) {
	t.Helper()
	f, err := os.Open(filepath.Join("nomadtest", "testdata", "facts", "lifecycle", variant+".events.ndjson.ts"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		at, raw, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(at, "#") {
			continue
		}
		var l streamLine
		var whole struct {
			Events []struct{ Payload json.RawMessage }
		}
		if json.Unmarshal([]byte(raw), &l) != nil || json.Unmarshal([]byte(raw), &whole) != nil {
			continue
		}
		sec, _ := strconv.ParseFloat(at, 64)
		for i, e := range l.Events {
			if e.Topic == "Job" || e.Topic == "Allocation" {
				events = append(events, recordedEvent{at: sec, event: e, payload: whole.Events[i].Payload})
			}
		}
	}
	tl, err := os.ReadFile(filepath.Join("nomadtest", "testdata", "facts", "lifecycle", variant+".timeline.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	phases = map[string]float64{}
	for _, line := range strings.Split(string(tl), "\n") {
		var p struct {
			T    float64 `json:"t"`
			Kind string  `json:"kind"`
			Name string  `json:"name"`
		}
		if json.Unmarshal([]byte(line), &p) == nil && p.Kind == "phase" {
			phases[p.Name] = p.T
			order = append(order, p.Name)
		}
	}
	return events, phases, order
}

// The cache follows a sandbox's whole recorded life on a real agent from
// the events alone: which allocation runs the current version, what a
// stop and a purge look like, and which events matter. Deployment health
// and the version marked stable never do.
func TestCacheFollowsARecordedLife(t *testing.T) {
	for _, variant := range []string{"default", "maxparallel0"} {
		t.Run(variant, func(t *testing.T) {
			events, phases, order := readRecording(t, variant)
			var owner, key string
			for _, re := range events {
				var p fullPayload
				if re.event.Topic == "Job" && json.Unmarshal(re.payload, &p) == nil {
					owner, key = p.Job.Meta[MetaOwner], "default/"+p.Job.Meta[MetaSandbox]
					break
				}
			}
			c := NewCache(owner)
			c.replace(Listing{Index: events[0].event.Index - 1})
			w := &Watcher{opts: WatchOptions{Cache: c}.withDefaults()}

			phaseOf := func(at float64) string {
				name := ""
				for _, p := range order {
					if at >= phases[p] {
						name = p
					}
				}
				return name
			}
			mattered := map[string]int{}
			current := uint64(0)         // the job's version, from the stream
			truth := map[string]uint64{} // the version each allocation was placed at
			for _, re := range events {
				e := re.event
				var p fullPayload
				if err := json.Unmarshal(re.payload, &p); err != nil {
					t.Fatal(err)
				}
				if p.Job != nil && *p.Job.JobModifyIndex == e.Index {
					current = *p.Job.Version
				}
				if a := p.Allocation; a != nil {
					if _, seen := truth[a.ID]; !seen {
						truth[a.ID] = current
					}
				}
				before, _ := c.Get(key)
				_, matters := w.apply(e)
				if matters {
					mattered[phaseOf(re.at)]++
				}
				// A deployment's health report, and the version marked
				// stable, are no news on their own.
				if a := p.Allocation; a != nil && before != nil && matters {
					for _, b := range before.Allocs {
						if b.ID == a.ID && b.ClientStatus == a.ClientStatus && b.DesiredStatus == a.DesiredStatus {
							t.Errorf("%s, %s at %d: an allocation update that changed no status mattered", variant, phaseOf(re.at), e.Index)
						}
					}
				}
				purge := e.Type == "JobDeregistered" && *p.Job.JobModifyIndex < e.Index
				if j := p.Job; j != nil && before != nil && matters && !purge && *j.JobModifyIndex == before.Job.JobModifyIndex &&
					deref(j.Stop) == before.Job.Stop && (deref(j.Status) == "dead") == (before.Job.Status == "dead") {
					t.Errorf("%s, %s at %d: a %s event that changed no version, stop or liveness mattered", variant, phaseOf(re.at), e.Index, e.Type)
				}

				cj, ok := c.Get(key)
				if !ok {
					t.Fatalf("%s: the cache cannot answer after event %s %s at %d", variant, e.Topic, e.Type, e.Index)
				}
				if cj == nil {
					continue
				}
				for _, a := range cj.Allocs {
					isCurrent := a.JobVersion == cj.Job.Version
					if want := truth[a.ID] == current; isCurrent != want {
						t.Errorf("%s, %s at %d: allocation %.8s counted as of version %d, job at %d; placed at version %d",
							variant, phaseOf(re.at), e.Index, a.ID, a.JobVersion, cj.Job.Version, truth[a.ID])
					}
				}
			}
			if cj, ok := c.Get(key); !ok || cj != nil {
				t.Errorf("%s: after the purge the cache holds %+v", variant, cj)
			}
			t.Logf("%s: events that mattered per phase: %v (of %d Job and Allocation events)", variant, mattered, len(events))
		})
	}
}

// A stop is a new version, at the event's own index; a purge leaves the
// job's indexes where they were (recorded at 62.37 s and 136.25 s).
func TestCacheTellsAStopFromAPurge(t *testing.T) {
	c := NewCache("me")
	c.replace(Listing{Index: 10})
	job := &api.Job{ID: ptr("agentkernel-x"), Namespace: ptr("default"), Version: ptr(uint64(0)), Stop: ptr(false),
		CreateIndex: ptr(uint64(11)), JobModifyIndex: ptr(uint64(11)), ModifyIndex: ptr(uint64(11)),
		Meta: map[string]string{MetaOwner: "me", MetaSandbox: "x"}}
	if _, matters := c.applyJob("JobRegistered", 11, job); !matters {
		t.Fatal("a new owned job did not matter")
	}
	stopped := *job
	stopped.Stop, stopped.Version, stopped.JobModifyIndex, stopped.ModifyIndex = ptr(true), ptr(uint64(1)), ptr(uint64(20)), ptr(uint64(20))
	c.applyJob("JobDeregistered", 20, &stopped)
	if cj, _ := c.Get("default/x"); cj == nil || !cj.Job.Stop || cj.Job.Version != 1 {
		t.Fatalf("after a stop: %+v, want the job, stopped, at version 1", cj)
	}
	c.applyJob("JobDeregistered", 30, &stopped)
	if cj, ok := c.Get("default/x"); !ok || cj != nil {
		t.Fatalf("after a purge: %+v, %t; want no job", cj, ok)
	}
	// An event older than what the cache holds changes nothing.
	c.applyJob("JobRegistered", 21, job)
	if cj, _ := c.Get("default/x"); cj != nil {
		t.Errorf("an event from before the purge brought the job back: %+v", cj)
	}
}

// A job known only from a list has no version; once the version is
// learnt (from the controller's own record, or a read), the allocations
// the scheduler placed after that version's register run it.
func TestCacheLearnsTheVersionOfAListedJob(t *testing.T) {
	for _, learn := range []string{"SetVersion", "Refresh"} {
		t.Run(learn, func(t *testing.T) {
			c := NewCache("me")
			c.replace(Listing{Index: 50, Jobs: []*api.JobListStub{{ID: "agentkernel-x", Namespace: "default", JobModifyIndex: 40, ModifyIndex: 45,
				Meta: map[string]string{MetaOwner: "me", MetaSandbox: "x"}}}})
			// The controller's own register of a new version, of a job whose
			// version it does not know.
			st := JobState{Namespace: "default", ID: "agentkernel-x", JobModifyIndex: 60, Meta: map[string]string{MetaOwner: "me"}}
			c.Wrote("default/x", st)
			key, matters := c.applyAlloc(&api.Allocation{ID: "a1", Namespace: "default", JobID: "agentkernel-x", DesiredStatus: "run",
				ClientStatus: "running", CreateIndex: 61, ModifyIndex: 62, AllocModifyIndex: 61})
			if key != "default/x" || !matters {
				t.Fatalf("a new allocation: %s, %t", key, matters)
			}
			if cj, _ := c.Get("default/x"); cj.Allocs[0].JobVersion != UnknownVersion {
				t.Fatalf("before the version is known, the allocation's is %d", cj.Allocs[0].JobVersion)
			}
			switch learn {
			case "SetVersion":
				c.SetVersion("default/x", 60, 3)
			case "Refresh":
				c.Refresh("default/x", &api.Job{ID: ptr("agentkernel-x"), Namespace: ptr("default"), Version: ptr(uint64(3)),
					JobModifyIndex: ptr(uint64(60)), ModifyIndex: ptr(uint64(62)), Meta: map[string]string{MetaOwner: "me"}})
			}
			cj, _ := c.Get("default/x")
			if !cj.Job.VersionKnown || cj.Job.Version != 3 || cj.Allocs[0].JobVersion != 3 {
				t.Errorf("after %s: job version %d (known %t), allocation version %d; want 3, 3", learn, cj.Job.Version, cj.Job.VersionKnown, cj.Allocs[0].JobVersion)
			}
		})
	}
}

// The event of the controller's own write may come before the write's
// answer: what it told (the version) is kept.
func TestCacheKeepsWhatTheWritesOwnEventToldFirst(t *testing.T) {
	c := NewCache("me")
	c.replace(Listing{Index: 50, Jobs: []*api.JobListStub{{ID: "agentkernel-x", Namespace: "default", JobModifyIndex: 40, ModifyIndex: 45,
		Meta: map[string]string{MetaOwner: "me", MetaSandbox: "x"}}}})
	c.applyJob("JobRegistered", 60, &api.Job{ID: ptr("agentkernel-x"), Namespace: ptr("default"), Version: ptr(uint64(3)),
		JobModifyIndex: ptr(uint64(60)), ModifyIndex: ptr(uint64(60)), Meta: map[string]string{MetaOwner: "me"}})
	c.Wrote("default/x", JobState{Namespace: "default", ID: "agentkernel-x", JobModifyIndex: 60, Meta: map[string]string{MetaOwner: "me"}})
	if cj, _ := c.Get("default/x"); !cj.Job.VersionKnown || cj.Job.Version != 3 {
		t.Errorf("the write's answer, without a version, replaced its event's: version %d, known %t", cj.Job.Version, cj.Job.VersionKnown)
	}
}
