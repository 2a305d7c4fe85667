package nomadtest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// seqStep is one recorded exchange replayed in recorded order against one
// server, so that state and, where the history is the same, indexes line
// up with the recording.
type seqStep struct {
	fact  string
	index bool // X-Nomad-Index must equal the recorded one
	// put is a variable written between recorded steps without being
	// recorded; the recorded indexes show the writes.
	put string
	// body replaces a request body the recording generated and cut.
	body []byte
	// do stands for something that happened between recorded steps, such
	// as a task exiting on its own.
	do func(t *testing.T, f *fixture)
	// fields are JSON paths whose values must equal the recorded ones.
	fields []string
	// allocs compares an allocation list as a set of (name, desired and
	// client status, job version).
	allocs bool
}

// replaySequence replays steps in order and compares status, header
// presence and the body with numbers masked (timestamps differ).
func replaySequence(t *testing.T, f *fixture, steps []seqStep) {
	t.Helper()
	replaySequenceMode(t, f, steps, true)
}

// replaySequenceMode compares JSON bodies exactly (numbers masked) or, with
// exactJSON false, by listed IDs for lists and by keys for objects.
func replaySequenceMode(t *testing.T, f *fixture, steps []seqStep, exactJSON bool) {
	t.Helper()
	for _, st := range steps {
		if st.do != nil {
			st.do(t, f)
			continue
		}
		if st.put != "" {
			if resp, body := f.do(t, "PUT", "/v1/var/"+st.put, []byte(`{"Items":{"k":"v"}}`), nil); resp.StatusCode != 200 {
				t.Fatalf("put %s: %d %s", st.put, resp.StatusCode, body)
			}
			continue
		}
		rec := loadRecording(t, st.fact)
		if st.body != nil {
			rec.reqBody = st.body
		}
		resp, body := f.do(t, rec.method, rec.target, rec.reqBody, rec.reqHeaders)
		t.Run(st.fact, func(t *testing.T) {
			compareResponse(t, replayCase{fact: st.fact, index: st.index}, rec, resp, body)
			for _, path := range st.fields {
				if diff := cmp.Diff(jsonPath(t, rec.body, path), jsonPath(t, body, path)); diff != "" {
					t.Errorf("%s differs (-recorded +got):\n%s", path, diff)
				}
			}
			if st.allocs {
				if diff := cmp.Diff(allocTuples(t, rec.body), allocTuples(t, body)); diff != "" {
					t.Errorf("allocations differ (-recorded +got):\n%s", diff)
				}
			}
			if !exactJSON && json.Valid(rec.body) && len(rec.body) > 0 {
				compareJSONShape(t, rec.body, body)
				return
			}
			// Long bodies are cut in the recording.
			if !strings.Contains(string(rec.body), "truncated in this recording") && !sameMasked(body, rec.body) {
				t.Errorf("body differs (-recorded +got):\n%s", cmp.Diff(masked(rec.body), masked(body)))
			}
		})
	}
}

// masked normalises a body for comparison: JSON with every number set to
// 0 (maps compare regardless of key order), or text with digits masked.
func masked(b []byte) any {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return maskDigits(string(b))
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case float64:
			return 0
		case string:
			return maskDigits(x)
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
			// Namespace hashes are the agent's own digest.
			if _, ok := x["Hash"]; ok {
				x["Hash"] = ""
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
		}
		return v
	}
	return walk(v)
}

func sameMasked(a, b []byte) bool { return cmp.Equal(masked(a), masked(b)) }

func steps(indexed bool, facts ...string) []seqStep {
	out := make([]seqStep, len(facts))
	for i, f := range facts {
		out[i] = seqStep{fact: f, index: indexed}
	}
	return out
}

func moreRange(from, to int, skip ...int) []string {
	var out []string
	for i := from; i <= to; i++ {
		skipped := false
		for _, s := range skip {
			skipped = skipped || s == i
		}
		if !skipped {
			out = append(out, fmt.Sprintf("more/%d", i))
		}
	}
	return out
}

// TestConformanceVariables replays the variable facts (more/ 100-165) in
// order against a fresh server; it starts at the same raft index as the
// recorded agent, so indexes match too. 138-139 come from another agent.
func TestConformanceVariables(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	seq := steps(true, moreRange(100, 114)...)
	seq = append(seq, seqStep{put: "sandboxes/beta"}, seqStep{fact: "more/115", index: true}, seqStep{put: "sandboxes/beta"})
	seq = append(seq, steps(true, moreRange(116, 117)...)...)
	seq = append(seq, steps(true, moreRange(120, 153, 138, 139)...)...)
	// Unrecorded writes come before 160, so its indexes differ.
	seq = append(seq,
		seqStep{fact: "more/160", body: bigVar(1, 65536)},
		seqStep{fact: "more/161", body: bigVar(1, 65537)},
		seqStep{fact: "more/162", body: bigVar(1, 70*1024)},
		seqStep{fact: "more/163", body: bigVar(1, 1024*1024)},
		seqStep{fact: "more/164", body: bigVar(64, 65536)},
		// The size limit holds for a lock acquire too.
		seqStep{fact: "more/165", body: bigVar(1, 1024*1024+1)},
	)
	replaySequence(t, f, seq)
}

func TestConformanceVariablePrecedence(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	replaySequence(t, f, steps(false, "more/138", "more/139"))
}

// bigVar generates the size-test bodies of more/ 160-164: keys "k" (or
// "k00".."k63") whose key and value lengths add up to size.
func bigVar(keys, size int) []byte {
	items := make(map[string]string)
	if keys == 1 {
		items["k"] = strings.Repeat("a", size-1)
	} else {
		per := size / keys
		for i := range keys {
			items[fmt.Sprintf("k%02d", i)] = strings.Repeat("a", per-3)
		}
	}
	b, _ := json.Marshal(map[string]any{"Path": "sandboxes/big", "Items": items})
	return b
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func compareJSONShape(t *testing.T, recorded, got []byte) {
	t.Helper()
	if strings.HasPrefix(string(recorded), "[") {
		// Generated IDs differ and lists of allocations and evaluations
		// are sorted by them, so compare the other names as a set.
		type item struct{ ID, Name, Namespace, JobID string }
		var r, g []item
		_ = json.Unmarshal(recorded, &r)
		_ = json.Unmarshal(got, &g)
		norm := func(l []item) []item {
			for i := range l {
				if uuidRE.MatchString(l[i].ID) {
					l[i].ID = ""
				}
			}
			slices.SortFunc(l, func(a, b item) int {
				return strings.Compare(a.Namespace+"/"+a.Name+"/"+a.JobID+"/"+a.ID, b.Namespace+"/"+b.Name+"/"+b.JobID+"/"+b.ID)
			})
			return l
		}
		if diff := cmp.Diff(norm(r), norm(g)); diff != "" {
			t.Errorf("listed objects differ (-recorded +got):\n%s", diff)
		}
		return
	}
	want, have := topKeys(t, recorded), topKeys(t, got)
	for _, k := range want {
		if !slices.Contains(have, k) && !slices.Contains(apiJobKeysMissing, k) {
			t.Errorf("recorded key %s missing", k)
		}
	}
}

// TestConformanceNamespaces replays more/ 400-452: namespace CRUD, the
// register namespace precedence, lists across namespaces with pagination
// tokens, single-job endpoints defaulting to "default", and deleting a
// namespace with and without jobs.
func TestConformanceNamespaces(t *testing.T) {
	// instant mode: the recorded allocation lists were read once the
	// registers before them had settled; this compares namespaces.
	f := newLoopbackFixture(t, Options{Instant: true})
	// 420-428 were recorded before 417 and 418.
	seq := steps(false, moreRange(400, 404)...)
	seq = append(seq, steps(false, moreRange(410, 416)...)...)
	seq = append(seq, steps(false, moreRange(420, 428)...)...)
	seq = append(seq, steps(false, "more/417", "more/418")...)
	seq = append(seq, steps(false, moreRange(440, 449)...)...)
	replaySequenceMode(t, f, seq, false)
	// The recorder purged the jobs before 450 without recording it.
	for _, id := range []string{"ns-sleep", "ns-body-only", "ns-conflict-b", "ns-sandbox-only", "ns-toplevel"} {
		f.srv.StopJob("sandboxes", id, true)
	}
	replaySequenceMode(t, f, steps(false, "more/450", "more/451", "more/452"), false)
}

// TestConformanceEvaluations replays more/ 500-517: one evaluation per
// register, identical or not, versions only for changes, evaluations
// sorted by ID, the filter over evaluations, and a plan that creates none.
// The server starts where the recorded history did (index 54), so indexes
// match.
func TestConformanceEvaluations(t *testing.T) {
	// instant mode: the recorded requests followed each other once the
	// previous one had settled, and their indexes are compared.
	f := newLoopbackFixture(t, Options{Instant: true})
	f.srv.mu.Lock()
	f.srv.index = 54
	f.srv.mu.Unlock()
	// 509 asks for diffs, which are not rendered; 511 names a generated ID.
	replaySequenceMode(t, f, steps(true, moreRange(500, 517, 509, 511)...), false)
}

func allocTuples(t *testing.T, b []byte) []string {
	t.Helper()
	var l []struct {
		Name, DesiredStatus, ClientStatus string
		JobVersion                        uint64
	}
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("decode allocations: %v", err)
	}
	var out []string
	for _, a := range l {
		out = append(out, fmt.Sprintf("%s %s/%s v%d", a.Name, a.DesiredStatus, a.ClientStatus, a.JobVersion))
	}
	slices.Sort(out)
	return out
}

// exits stands for a batch task ending on its own with code 0.
func exits(job string) seqStep {
	return seqStep{do: func(t *testing.T, f *fixture) {
		if err := f.srv.ExitTask("default", job, 0); err != nil {
			t.Fatalf("exit %s: %v", job, err)
		}
	}}
}

// TestConformanceDeadAndStoppedJobs replays more/ 600-663: finished batch
// jobs re-registered identical (not run again) or changed (run again),
// stop and start of service and batch jobs through register, Stop:true in
// the body, and register after purge.
func TestConformanceDeadAndStoppedJobs(t *testing.T) {
	// instant mode: the recorded requests followed each other once the
	// previous one had settled; what is compared is the jobs' states.
	f := newLoopbackFixture(t, Options{Instant: true})
	job := []string{"Status", "Version", "Stop"}
	seq := []seqStep{
		{fact: "more/600"}, exits("batch-ok"),
		{fact: "more/601", fields: job}, {fact: "more/602", allocs: true}, {fact: "more/603", fields: []string{"Summary"}},
		{fact: "more/604"}, {fact: "more/605", fields: job}, {fact: "more/606", allocs: true}, {fact: "more/607"},
		{fact: "more/608"}, exits("batch-ok"),
		{fact: "more/609", fields: job}, {fact: "more/610", allocs: true}, {fact: "more/611"}, {fact: "more/612", fields: []string{"Summary"}},
		{fact: "more/620"}, {fact: "more/621", fields: job}, {fact: "more/622"}, {fact: "more/623", fields: job}, {fact: "more/624", allocs: true},
		{fact: "more/625"}, {fact: "more/626", fields: job}, {fact: "more/627", allocs: true}, {fact: "more/628"},
		{fact: "more/629"}, {fact: "more/630", fields: job}, {fact: "more/631"}, {fact: "more/632", fields: job}, {fact: "more/633", allocs: true},
		{fact: "more/640"}, {fact: "more/641"}, {fact: "more/642", fields: job}, {fact: "more/643"},
		{fact: "more/644", fields: job}, {fact: "more/645", allocs: true},
		{fact: "more/650"}, exits("batch-ok2"),
		{fact: "more/651"}, {fact: "more/652", fields: job}, {fact: "more/653"}, exits("batch-ok2"),
		{fact: "more/654", fields: job}, {fact: "more/655", allocs: true},
		{fact: "more/660"}, {fact: "more/661"}, exits("batch-ok2"),
		{fact: "more/662", fields: job}, {fact: "more/663", allocs: true},
	}
	replaySequenceMode(t, f, seq, false)
}
