package nomadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

// openEventStream starts a raw event-stream request and returns its
// response and a channel of its lines.
func openEventStream(t *testing.T, f *fixture, target string) (*http.Response, <-chan string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.base+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatalf("open %s: %v", target, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return resp, lines
}

// drain returns the lines received so far once every goroutine is idle.
func drain(lines <-chan string) (out []string, closed bool) {
	synctest.Wait()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return out, true
			}
			out = append(out, l)
		default:
			return out, false
		}
	}
}

// evTuple is what the sequence tests compare: index, topic and type.
type evTuple struct {
	Index uint64
	Topic string
	Type  string
}

type wireLine struct {
	Index  uint64
	Events []struct {
		Topic      string
		Type       string
		Key        string
		Namespace  string
		FilterKeys []string
		Index      uint64
		Payload    map[string]json.RawMessage
	}
}

// tuples decodes stream lines into tuples of the events about job, skipping
// heartbeats; offset is subtracted from every index.
func tuples(t *testing.T, lines []string, job string, offset uint64) []evTuple {
	t.Helper()
	var out []evTuple
	for _, l := range lines {
		if l == "{}" {
			continue
		}
		var wl wireLine
		if err := json.Unmarshal([]byte(l), &wl); err != nil {
			t.Fatalf("decode line %q: %v", l, err)
		}
		for _, e := range wl.Events {
			if job != "" && e.Key != job && !slices.Contains(e.FilterKeys, job) {
				continue
			}
			out = append(out, evTuple{e.Index - offset, e.Topic, e.Type})
		}
	}
	return out
}

// TestEventStreamRegisterMatchesRecording registers the job of fact 01 on a
// fresh server and compares the stream with the recorded ones (43: Job and
// Allocation from index 1, 47: Job without index): same indexes, topics and
// types, the heartbeat first, and the recorded headers.
func TestEventStreamRegisterMatchesRecording(t *testing.T) {
	for _, fact := range []string{"43", "47"} {
		t.Run(fact, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := loadStream(t, fact)
				// The agent of 40-47 reported each raw_exec allocation
				// received and running in one client write, 350ms after
				// the plan (40 @14), where the lifecycle agent took two.
				f := newPipeFixture(t, Options{ClientDelay: 350 * time.Millisecond, SchedulingDelay: 350 * time.Millisecond})
				f.register(t, loadJob(t, "agentkernel-sleep-raw"))
				time.Sleep(time.Second)
				resp, lines := openEventStream(t, f, rec.target)
				got, _ := drain(lines)
				if resp.StatusCode != rec.status {
					t.Fatalf("status %d, recorded %d", resp.StatusCode, rec.status)
				}
				// Go's client turns Connection: close into resp.Close.
				if !resp.Close {
					t.Errorf("response not marked Connection: close")
				}
				for _, h := range []string{"Cache-Control", "Content-Type"} {
					if resp.Header.Get(h) != rec.headers.Get(h) {
						t.Errorf("header %s = %q, recorded %q", h, resp.Header.Get(h), rec.headers.Get(h))
					}
				}
				// No Content-Length and no chunked encoding (facts 4.10).
				if resp.ContentLength != -1 || len(resp.TransferEncoding) != 0 {
					t.Errorf("ContentLength %d, TransferEncoding %v; want neither", resp.ContentLength, resp.TransferEncoding)
				}
				if len(got) == 0 || got[0] != "{}" {
					t.Fatalf("first line %q, want the heartbeat", got)
				}
				want := tuples(t, rec.lines, "agentkernel-sleep-raw", 0)
				if diff := cmp.Diff(want, tuples(t, got, "agentkernel-sleep-raw", 0)); diff != "" {
					t.Errorf("events differ (-recorded +got):\n%s", diff)
				}
				// The event keys are the recorded ones.
				var recLine, gotLine map[string]any
				_ = json.Unmarshal([]byte(rec.lines[1]), &recLine)
				_ = json.Unmarshal([]byte(got[1]), &gotLine)
				recEv := recLine["Events"].([]any)[0].(map[string]any)
				gotEv := gotLine["Events"].([]any)[0].(map[string]any)
				if diff := cmp.Diff(sortedKeys(recEv), sortedKeys(gotEv)); diff != "" {
					t.Errorf("event keys differ (-recorded +got):\n%s", diff)
				}
			})
		})
	}
}

// TestEventStreamStopAndPurge compares a stop and a purge with 120: the
// stop's deregistration, plan, evaluation and client updates, then a purge
// that carries only Job/JobDeregistered and no Allocation events.
func TestEventStreamStopAndPurge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := loadStream(t, "120")
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-svc-raw"))
		time.Sleep(time.Second)
		start := f.srv.Index() + 1
		_, lines := openEventStream(t, f, "/v1/event/stream?topic=Job&topic=Allocation&index="+itoa(start))
		if _, _, err := f.api.Jobs().Deregister("agentkernel-svc-raw", false, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if _, _, err := f.api.Jobs().Deregister("agentkernel-svc-raw", true, nil); err != nil {
			t.Fatal(err)
		}
		got, _ := drain(lines)
		// The recording starts at the stop (index 119) and has a second,
		// failed alloc of the same job; compare distinct consecutive tuples.
		// Asking for a future index first replays the newest line (44),
		// which is older than the stop: leave those out on both sides.
		before := func(e evTuple) bool { return e.Index > 1<<32 }
		recT := dedupe(slices.DeleteFunc(tuples(t, rec.lines, "agentkernel-svc-raw", 119), before))
		gotT := dedupe(slices.DeleteFunc(tuples(t, got, "agentkernel-svc-raw", start), before))
		if diff := cmp.Diff(recT, gotT); diff != "" {
			t.Errorf("events differ (-recorded +got):\n%s", diff)
		}
	})
}

func dedupe(in []evTuple) []evTuple {
	return slices.Compact(in)
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestEventStreamIndexSemantics covers where a stream starts (42-47) and
// the silent skip when the index left the buffer (facts 4.10, measurement E).
func TestEventStreamIndexSemantics(t *testing.T) {
	cases := []struct {
		name   string
		fact   string
		target func(first, last uint64) string
		// want is the index of the first event line, from the first and
		// last buffered indexes.
		want func(first, last uint64) uint64
	}{
		{"no index replays the whole buffer", "47", func(_, _ uint64) string { return "/v1/event/stream" },
			func(first, _ uint64) uint64 { return first }},
		{"index N starts at and includes N", "42", func(first, _ uint64) string { return "/v1/event/stream?index=" + itoa(first+2) },
			func(first, _ uint64) uint64 { return first + 2 }},
		{"index older than the buffer starts at its oldest line", "43", func(_, _ uint64) string { return "/v1/event/stream?index=1" },
			func(first, _ uint64) uint64 { return first }},
		{"future index replays the newest line", "44", func(_, _ uint64) string { return "/v1/event/stream?index=100000" },
			func(_, last uint64) uint64 { return last }},
	}
	for _, tc := range cases {
		t.Run(tc.fact+" "+tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// A small buffer so that index 1 has left it.
				f := newPipeFixture(t, Options{EventBufferSize: 8})
				for _, name := range []string{"agentkernel-sleep-raw", "other-unmanaged", "agentkernel-wake-test"} {
					f.register(t, loadJob(t, name))
				}
				time.Sleep(time.Second)
				f.srv.mu.Lock()
				first, last := f.srv.events.lines[0].index, f.srv.events.lines[len(f.srv.events.lines)-1].index
				f.srv.mu.Unlock()
				if first <= 11 {
					t.Fatalf("buffer still holds index %d", first)
				}
				_, lines := openEventStream(t, f, tc.target(first, last))
				got, _ := drain(lines)
				if len(got) < 2 || got[0] != "{}" {
					t.Fatalf("lines %q, want the heartbeat and events", got)
				}
				var wl wireLine
				if err := json.Unmarshal([]byte(got[1]), &wl); err != nil {
					t.Fatal(err)
				}
				if want := tc.want(first, last); wl.Index != want {
					t.Errorf("first event index %d, want %d", wl.Index, want)
				}
			})
		})
	}
}

// TestEventStreamFiltersAndHeartbeats checks topic filters (45, 46), the
// namespace default (more/ 430) and a heartbeat every 30s (40).
func TestEventStreamFiltersAndHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		f.register(t, loadJob(t, "other-unmanaged"))
		time.Sleep(time.Second)

		_, keyed := openEventStream(t, f, "/v1/event/stream?topic=Job:agentkernel-sleep-raw&topic=Allocation:agentkernel-sleep-raw&index=1")
		got, _ := drain(keyed)
		if n := len(tuples(t, got, "", 0)); n == 0 || n != len(tuples(t, got, "agentkernel-sleep-raw", 0)) {
			t.Errorf("keyed stream carries events of other jobs: %q", got)
		}

		_, bogus := openEventStream(t, f, "/v1/event/stream?topic=Bogus&index=1")
		got, _ = drain(bogus)
		if !slices.Equal(got, []string{"{}"}) {
			t.Errorf("unknown topic: %q, want only the heartbeat", got)
		}
		time.Sleep(29 * time.Second)
		if got, _ = drain(bogus); len(got) != 0 {
			t.Errorf("heartbeat before 30s: %q", got)
		}
		time.Sleep(time.Second)
		if got, _ = drain(bogus); !slices.Equal(got, []string{"{}"}) {
			t.Errorf("at 30s: %q, want one heartbeat", got)
		}

		// Node events belong to no namespace and reach every stream.
		_, otherNS := openEventStream(t, f, "/v1/event/stream?namespace=sandboxes&index=1")
		got, _ = drain(otherNS)
		if len(got) == 0 || got[0] != "{}" {
			t.Errorf("namespace sandboxes: %q, want the heartbeat first", got)
		}
		for _, l := range got[1:] {
			var wl wireLine
			if err := json.Unmarshal([]byte(l), &wl); err != nil {
				t.Fatal(err)
			}
			for _, e := range wl.Events {
				if e.Namespace != "" {
					t.Errorf("namespace sandboxes sees an event of namespace %q: %s/%s", e.Namespace, e.Topic, e.Type)
				}
			}
		}
	})
}

// TestEventStreamThroughAPI reads the stream with api.EventStream, resumes
// after a cut, and sees the index gap after JumpIndex.
func TestEventStreamThroughAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch, err := f.api.EventStream().Stream(ctx, map[api.Topic][]string{api.TopicJob: {"*"}}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.register(t, loadJob(t, "agentkernel-sleep-raw"))
		var last uint64
		for range 2 {
			evs := <-ch
			if evs.Err != nil {
				t.Fatal(evs.Err)
			}
			for _, e := range evs.Events {
				if e.Topic != api.TopicJob || e.Key != "agentkernel-sleep-raw" {
					t.Errorf("unexpected event %s/%s %s", e.Topic, e.Type, e.Key)
				}
				if _, err := e.Job(); err != nil {
					t.Errorf("decode Job payload: %v", err)
				}
			}
			last = evs.Index
		}

		f.srv.CutEventStreams()
		if evs, ok := <-ch; ok && evs.Err == nil {
			t.Errorf("stream still open after the cut: %+v", evs)
		}

		f.srv.JumpIndex(500)
		f.register(t, loadJob(t, "other-unmanaged"))
		ch, err = f.api.EventStream().Stream(ctx, map[api.Topic][]string{api.TopicJob: {"*"}}, last+1, nil)
		if err != nil {
			t.Fatal(err)
		}
		evs := <-ch
		if evs.Err != nil {
			t.Fatal(evs.Err)
		}
		if evs.Index <= last+500 {
			t.Errorf("resumed at %d after a jump past %d, want a silent gap", evs.Index, last+500)
		}
	})
}

// TestEventStreamEndsWhenItsReaderFallsBehind: Nomad keeps a bounded
// buffer of events, and a subscriber whose next event was dropped from it
// gets "event dropped from buffer" and its stream ends (nomad/stream
// event_buffer.go), so that the client reconnects and lists again. The
// server skipped the dropped lines and went on, and a slow reader lost
// events without knowing (an allocation left Pending at N = 10,000).
func TestEventStreamEndsWhenItsReaderFallsBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{EventBufferSize: 5})
		req, err := http.NewRequest(http.MethodGet, f.base+"/v1/event/stream?topic=Job", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := f.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		if l, err := r.ReadString('\n'); err != nil || l != "{}\n" {
			t.Fatalf("first line %q, %v; want the heartbeat", l, err)
		}
		// The reader stops reading; the server's write blocks on the
		// in-memory connection while more than the buffer is published.
		base := loadJob(t, "agentkernel-sleep-raw")
		const n = 20
		for i := range n {
			j := *base
			id := fmt.Sprintf("agentkernel-behind-%02d", i)
			j.ID, j.Name = &id, &id
			f.register(t, &j)
		}
		synctest.Wait()
		var jobs []string
		ended := false
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			l, err := r.ReadString('\n')
			if err != nil {
				ended = true
				break
			}
			var wl wireLine
			if json.Unmarshal([]byte(l), &wl) != nil {
				continue
			}
			for _, e := range wl.Events {
				if e.Type == "JobRegistered" && !slices.Contains(jobs, e.Key) {
					jobs = append(jobs, e.Key)
				}
			}
			if len(jobs) == n {
				break
			}
		}
		// Every job the reader saw, it saw in order from the first: what
		// it missed, it missed at the end, with the stream closed.
		for i, id := range jobs {
			if want := fmt.Sprintf("agentkernel-behind-%02d", i); id != want {
				t.Fatalf("jobs seen %v: %s where %s was due, with the stream still open", jobs, id, want)
			}
		}
		if !ended {
			t.Fatalf("the stream still open after a reader fell behind, %d of %d jobs seen: %v", len(jobs), n, jobs)
		}
	})
}

// A stream line built from its events' bytes is what json.Marshal writes.
func TestStreamLineEncodesAsMarshal(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.mu.Lock()
	s.publish(7,
		event{FilterKeys: []string{"agentkernel-a", ""}, Index: 7, Key: "a1", Namespace: "default", Payload: json.RawMessage(`{"Allocation": {"ID": "a1", "Note": "<&>"}}`), Topic: "Allocation", Type: "AllocationUpdated"},
		event{Index: 7, Key: "agentkernel-a", Namespace: "default", Payload: json.RawMessage(`{"Job":{"ID":"agentkernel-a"}}`), Topic: "Job", Type: "JobRegistered"})
	l := s.events.lines[len(s.events.lines)-1]
	s.mu.Unlock()
	sl := streamLine{Events: l.events, Index: l.index}
	want, err := json.Marshal(sl)
	if err != nil {
		t.Fatal(err)
	}
	if got := sl.encode(); string(got) != string(want)+"\n" {
		t.Errorf("encoded line\n%s\nwant\n%s", got, want)
	}
}
