package nomadtest

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

// The conformance tests replay recorded requests against the test server
// and compare the answers with what real Nomad answered: status, the
// X-Nomad-* headers, Content-Type and, per case, the exact body, the body's
// keys, the listed IDs or selected fields.

// bodyCheck says how a case compares bodies.
type bodyCheck int

const (
	bodyNone      bodyCheck = iota
	bodyExact               // byte for byte (error texts, fixed JSON)
	bodyDigits              // byte for byte once digits are masked (texts with indexes)
	bodyJSON                // equal JSON values, key order aside
	bodyKeys                // same top-level keys (first element for arrays)
	bodyKeysSuper           // at least the recorded top-level keys
	bodyIDs                 // same list of "ID" values
)

type replayCase struct {
	fact  string
	setup func(t *testing.T, f *fixture)
	body  bodyCheck
	// index compares X-Nomad-Index exactly where the setup reproduces the
	// recorded history.
	index bool
	// fields are JSON paths (dot separated, numbers index arrays) whose
	// values must equal the recorded ones.
	fields []string
	// skipKeys are recorded keys this server leaves out on purpose.
	skipKeys []string
	// target replaces the recorded request target, for IDs the server
	// generates.
	target func(f *fixture) string
}

// The three jobs of the list facts (10-22), registered in recorded order.
func setupThreeJobs(t *testing.T, f *fixture) {
	for _, name := range []string{"agentkernel-sleep-raw", "agentkernel-sleep-exec", "other-unmanaged"} {
		f.register(t, loadJob(t, name))
	}
}

func setupSleepRaw(t *testing.T, f *fixture) {
	f.register(t, loadJob(t, "agentkernel-sleep-raw"))
}

// setupMetaChanged reproduces the state the plan facts (82-87) were
// recorded in: sleep-raw registered, then re-registered with changed Meta,
// so one stopped and one running alloc.
func setupMetaChanged(t *testing.T, f *fixture) {
	f.register(t, loadJob(t, "agentkernel-sleep-raw"))
	f.register(t, loadJob(t, "agentkernel-sleep-raw-meta-changed"))
}

func setupSvc(t *testing.T, f *fixture) { f.register(t, loadJob(t, "agentkernel-svc-raw")) }

func setupSvcStopped(t *testing.T, f *fixture) {
	setupSvc(t, f)
	f.srv.StopJob("default", "agentkernel-svc-raw", false)
}

func setupSvcPurged(t *testing.T, f *fixture) {
	setupSvcStopped(t, f)
	f.srv.StopJob("default", "agentkernel-svc-raw", true)
}

// setupWakeTest reproduces the history of 130 and 131: the wake-test job
// registered at index 25 with its allocation running at 28.
func setupWakeTest(t *testing.T, f *fixture) {
	setupThreeJobs(t, f)
	f.srv.mu.Lock()
	f.srv.index = 24
	f.srv.mu.Unlock()
	f.register(t, loadJob(t, "agentkernel-wake-test"))
}

func firstAllocID(f *fixture, job string) string {
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	return f.srv.jobs[nsKey{"default", job}].allocs[0].a.ID
}

// apiJobKeysMissing are keys of the server's Job struct that the api.Job
// struct, which this server encodes, does not have.
var apiJobKeysMissing = []string{"DispatchIdempotencyToken", "Dispatched", "NomadTokenID"}

var replayCases = []replayCase{
	{fact: "01", body: bodyKeys, index: true},
	{fact: "10", setup: setupThreeJobs, body: bodyKeys},
	{fact: "11", setup: setupThreeJobs, body: bodyIDs},
	{fact: "12", setup: setupThreeJobs, body: bodyExact},
	{fact: "13", setup: setupThreeJobs, body: bodyIDs},
	{fact: "14", setup: setupThreeJobs, body: bodyIDs},
	{fact: "15", setup: setupThreeJobs, body: bodyIDs},
	{fact: "16", setup: setupThreeJobs, body: bodyIDs},
	{fact: "17", setup: setupThreeJobs, body: bodyIDs},
	{fact: "18", setup: setupThreeJobs, body: bodyExact},
	{fact: "19", setup: setupThreeJobs, body: bodyExact},
	{fact: "20", setup: setupThreeJobs, body: bodyIDs},
	{fact: "21", setup: setupThreeJobs, body: bodyIDs},
	{fact: "22", setup: setupThreeJobs, body: bodyIDs},
	{fact: "30", setup: setupSleepRaw, body: bodyKeysSuper, index: true, skipKeys: apiJobKeysMissing, fields: []string{
		"Datacenters", "Priority", "Namespace", "NodePool", "Region", "Status", "Version", "Type", "Stop",
		"CreateIndex", "JobModifyIndex", "ModifyIndex",
		"TaskGroups.0.RestartPolicy", "TaskGroups.0.ReschedulePolicy", "TaskGroups.0.EphemeralDisk",
		"TaskGroups.0.Tasks.0.KillTimeout", "TaskGroups.0.Tasks.0.LogConfig.MaxFiles", "TaskGroups.0.Tasks.0.LogConfig.MaxFileSizeMB", "TaskGroups.0.Tasks.0.RestartPolicy",
	}},
	{fact: "31", setup: setupSleepRaw, body: bodyKeysSuper, fields: []string{
		"0.ClientStatus", "0.DesiredStatus", "0.JobVersion", "0.Name", "0.TaskGroup", "0.CreateIndex", "0.ModifyIndex",
		"0.TaskStates.sleep.State", "0.TaskStates.sleep.Restarts",
	}},
	{fact: "60", setup: setupSleepRaw, body: bodyExact},
	{fact: "61", body: bodyExact},
	{fact: "62", body: bodyExact, index: true},
	{fact: "65", body: bodyExact},
	{fact: "66", body: bodyExact},
	{fact: "67", body: bodyExact},
	{fact: "69", body: bodyExact},
	{fact: "69b", setup: setupSleepRaw, body: bodyExact},
	{fact: "70", body: bodyExact},
	{fact: "71", body: bodyExact},
	{fact: "72", body: bodyKeys},
	{fact: "73", body: bodyExact},
	{fact: "74", body: bodyExact},
	{fact: "75", body: bodyExact},
	{fact: "76", body: bodyKeys},
	{fact: "82", setup: setupMetaChanged, body: bodyKeys, fields: []string{
		"Diff.Type", "Diff.Fields", "Diff.TaskGroups.0.Type", "Diff.TaskGroups.0.Updates", "Diff.TaskGroups.0.Tasks.0.Type",
		"Annotations.DesiredTGUpdates", "CreatedEvals", "FailedTGAllocs", "NextPeriodicLaunch", "Warnings",
	}},
	{fact: "83", setup: setupMetaChanged, body: bodyKeys, fields: []string{
		"Diff.Type", "Diff.Fields", "Diff.TaskGroups.0.Type", "Diff.TaskGroups.0.Updates",
		"Diff.TaskGroups.0.Tasks.0.Type", "Diff.TaskGroups.0.Tasks.0.Annotations", "Diff.TaskGroups.0.Tasks.0.Objects",
		"Annotations.DesiredTGUpdates",
	}},
	{fact: "84", setup: setupMetaChanged, body: bodyKeys, fields: []string{
		"Diff.Type", "Diff.TaskGroups.0.Type", "Diff.TaskGroups.0.Updates", "Diff.TaskGroups.0.Tasks.0.Type",
		"Diff.TaskGroups.0.Tasks.0.Annotations", "Annotations.DesiredTGUpdates", "JobModifyIndex", "Index",
	}},
	{fact: "85", setup: setupMetaChanged, body: bodyKeys, fields: []string{
		"Diff.Type", "Diff.Fields", "Diff.TaskGroups.0.Type", "Diff.TaskGroups.0.Updates", "Annotations.DesiredTGUpdates",
	}},
	{fact: "86", setup: setupMetaChanged, body: bodyKeys, fields: []string{
		"Diff.Type", "Diff.TaskGroups.0.Type", "Annotations.DesiredTGUpdates",
	}},
	{fact: "87", setup: setupMetaChanged, body: bodyKeys, fields: []string{
		"Diff.Type", "Diff.Fields", "Diff.TaskGroups.0.Type", "Diff.TaskGroups.0.Updates", "Annotations.DesiredTGUpdates",
	}},
	{fact: "92", setup: setupSleepRaw, body: bodyExact},
	{fact: "93", body: bodyKeys},
	{fact: "94", body: bodyExact},
	{fact: "132", body: bodyExact},
	{fact: "133", body: bodyExact},
	{fact: "134", body: bodyKeys},
	{fact: "120", setup: setupSvc, body: bodyKeys},
	{fact: "121", setup: setupSvcStopped, body: bodyKeysSuper, skipKeys: apiJobKeysMissing, fields: []string{"Stop", "Version", "Status"}},
	{fact: "122", setup: setupSvcStopped, body: bodyKeys, fields: []string{"0.Stop", "0.Status", "0.ID"}},
	{fact: "123", setup: setupSvcStopped, body: bodyKeys},
	{fact: "124", setup: setupSvcPurged, body: bodyExact},
	{fact: "125", setup: setupSvcPurged, body: bodyExact},
	{fact: "126", setup: func(t *testing.T, f *fixture) { f.register(t, loadJob(t, "agentkernel-sleep-exec")) }, body: bodyKeys},
	{fact: "130", setup: setupWakeTest, body: bodyKeysSuper, skipKeys: []string{"SharedResources", "SigningKeyID",
		// Resources are not simulated.
		"AllocatedResources", "Metrics", "NetworkStatus", "Resources", "TaskResources"},
		target: func(f *fixture) string { return "/v1/allocation/" + firstAllocID(f, "agentkernel-wake-test") },
		fields: []string{"ClientStatus", "DesiredStatus", "JobVersion", "DesiredDescription", "Name", "TaskGroup", "Job.ID", "Job.Version"}},
	{fact: "131", setup: setupWakeTest, body: bodyJSON, index: true},
	{fact: "135", target: func(f *fixture) string { return "/v1/node/" + f.srv.nodeID }, body: bodyKeysSuper, skipKeys: []string{
		"CSIControllerPlugins", "CSINodePlugins", "CgroupParent", "ComputedClass", "DrainStrategy", "GCVolumesOnNodeGC",
		"HostNetworks", "IdentitySigningKeyID", "LastAllocUpdateIndex", "LastMissedHeartbeatIndex", "Links",
		"NodeMaxAllocs", "NodeResources", "ReservedResources", "SecretID", "StatusUpdatedAt", "TLSEnabled",
	}},
}

func TestConformanceReplay(t *testing.T) {
	for _, tc := range replayCases {
		t.Run(tc.fact, func(t *testing.T) {
			rec := loadRecording(t, tc.fact)
			// instant mode: each case reads what the recorder read once
			// its jobs had settled, and compares the response's shape;
			// the lifecycle tests compare the timing.
			f := newLoopbackFixture(t, Options{Instant: true})
			if tc.setup != nil {
				tc.setup(t, f)
			}
			target := rec.target
			if tc.target != nil {
				target = tc.target(f)
			}
			resp, body := f.do(t, rec.method, target, rec.reqBody, rec.reqHeaders)
			compareResponse(t, tc, rec, resp, body)
		})
	}
}

// comparedHeaders are the headers whose presence must match the recording;
// their values too where listed in exactHeaders.
var comparedHeaders = []string{"X-Nomad-Index", "X-Nomad-Knownleader", "X-Nomad-Lastcontact", "X-Nomad-Nexttoken", "Content-Type", "Vary"}

var exactHeaders = map[string]bool{"X-Nomad-Knownleader": true, "X-Nomad-Lastcontact": true, "Content-Type": true, "X-Nomad-Nexttoken": true}

func compareResponse(t testing.TB, tc replayCase, rec recording, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != rec.status {
		t.Fatalf("status = %d, recorded %d; body %q", resp.StatusCode, rec.status, body)
	}
	for _, h := range comparedHeaders {
		got, want := resp.Header.Values(h), rec.headers.Values(h)
		if (len(got) > 0) != (len(want) > 0) {
			t.Errorf("header %s = %q, recorded %q", h, got, want)
			continue
		}
		if exactHeaders[h] && !slices.Equal(got, want) {
			t.Errorf("header %s = %q, recorded %q", h, got, want)
		}
	}
	if tc.index && resp.Header.Get("X-Nomad-Index") != rec.headers.Get("X-Nomad-Index") {
		t.Errorf("X-Nomad-Index = %s, recorded %s", resp.Header.Get("X-Nomad-Index"), rec.headers.Get("X-Nomad-Index"))
	}
	switch tc.body {
	case bodyExact:
		if string(body) != string(rec.body) {
			t.Errorf("body differs from the recording (-recorded +got):\n%s", cmp.Diff(string(rec.body), string(body)))
		}
	case bodyJSON:
		var g, w any
		_ = json.Unmarshal(body, &g)
		_ = json.Unmarshal(rec.body, &w)
		if diff := cmp.Diff(w, g); diff != "" {
			t.Errorf("body differs from the recording (-recorded +got):\n%s", diff)
		}
	case bodyDigits:
		if maskDigits(string(body)) != maskDigits(string(rec.body)) {
			t.Errorf("body = %q, recorded %q", body, rec.body)
		}
	case bodyKeys, bodyKeysSuper:
		got, want := topKeys(t, body), topKeys(t, rec.body)
		want = slices.DeleteFunc(want, func(k string) bool { return slices.Contains(tc.skipKeys, k) })
		if tc.body == bodyKeys && !slices.Equal(got, want) {
			t.Errorf("keys differ (-recorded +got):\n%s", cmp.Diff(want, got))
		}
		for _, k := range want {
			if !slices.Contains(got, k) {
				t.Errorf("recorded key %s missing", k)
			}
		}
	case bodyIDs:
		if got, want := listIDs(t, body), listIDs(t, rec.body); !slices.Equal(got, want) {
			t.Errorf("IDs = %q, recorded %q", got, want)
		}
	}
	for _, path := range tc.fields {
		got, want := jsonPath(t, body, path), jsonPath(t, rec.body, path)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s differs (-recorded +got):\n%s", path, diff)
		}
	}
}

var digits = regexp.MustCompile(`[0-9]+`)

func maskDigits(s string) string { return digits.ReplaceAllString(s, "N") }

func topKeys(t testing.TB, b []byte) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	if arr, ok := v.([]any); ok {
		if len(arr) == 0 {
			return nil
		}
		v = arr[0]
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func listIDs(t testing.TB, b []byte) []string {
	t.Helper()
	var v []struct{ ID string }
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	ids := []string{}
	for _, e := range v {
		ids = append(ids, e.ID)
	}
	return ids
}

func jsonPath(t testing.TB, b []byte, path string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	for _, part := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[part]
		case []any:
			i := 0
			for _, c := range part {
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// TestConformanceACL replays the ACL facts (more/ 300-342) against a server
// whose management token, Options.ACLToken, is the secret 337 sends as a
// bearer token. TestConformanceACLReplay replays the whole session.
func TestConformanceACL(t *testing.T) {
	const secret = "131f3c34-8569-5e90-c2b8-25a452f8d390"
	cases := []replayCase{
		{fact: "more/300", body: bodyExact},
		{fact: "more/301", body: bodyExact},
		{fact: "more/302", body: bodyDigits}, // the ACL agent used other ports
		{fact: "more/334", body: bodyExact},
		{fact: "more/335", body: bodyExact},
		{fact: "more/336", body: bodyExact},
		{fact: "more/337", body: bodyKeysSuper, skipKeys: apiJobKeysMissing},
		{fact: "more/339", body: bodyExact},
		{fact: "more/340", body: bodyExact},
		{fact: "more/342", body: bodyExact},
	}
	for _, tc := range cases {
		t.Run(tc.fact, func(t *testing.T) {
			rec := loadRecording(t, tc.fact)
			f := newLoopbackFixture(t, Options{ACLToken: secret})
			if _, _, err := f.srv.RunJob(loadJob(t, "agentkernel-sleep-raw")); err != nil {
				t.Fatal(err)
			}
			if tc.fact == "more/337" {
				job := loadJob(t, "agentkernel-sleep-raw")
				job.ID, job.Name = ptr("acl-sleep"), ptr("acl-sleep")
				if _, _, err := f.srv.RunJob(job); err != nil {
					t.Fatal(err)
				}
			}
			resp, body := f.do(t, rec.method, rec.target, rec.reqBody, rec.reqHeaders)
			compareResponse(t, tc, rec, resp, body)
		})
	}
}

// TestConformanceGzip: with Accept-Encoding: gzip every answer is
// compressed, and a 409 then has no Content-Type (facts 4.13, more/ 242).
func TestConformanceGzip(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	gz := http.Header{"Accept-Encoding": {"gzip"}}
	resp, _ := f.do(t, http.MethodGet, "/v1/jobs", nil, gz)
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("list: headers %v", resp.Header)
	}
	putVar(t, f, "sandboxes/a")
	resp, _ = f.do(t, http.MethodPut, "/v1/var/sandboxes/a?cas=0", []byte(`{"Items":{"k":"v"}}`), gz)
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Content-Encoding") != "gzip" || len(resp.Header.Values("Content-Type")) != 0 {
		t.Errorf("gzipped 409: %d %v", resp.StatusCode, resp.Header)
	}
	// Through the api client, which asks for gzip itself.
	_, _, err := f.api.Variables().Create(&api.Variable{Path: "sandboxes/a", Items: api.VariableItems{"k": "v"}}, nil)
	if err != nil {
		t.Errorf("api create over gzip: %v", err)
	}
	v, _, err := f.api.Variables().CheckedUpdate(&api.Variable{Path: "sandboxes/a", Items: api.VariableItems{"k": "w"}, ModifyIndex: 1}, nil)
	var conflict api.ErrCASConflict
	if !errors.As(err, &conflict) || conflict.Conflict == nil || conflict.Conflict.Items["k"] != "v" {
		t.Errorf("api CAS conflict over gzip: %v %v", v, err)
	}
}
