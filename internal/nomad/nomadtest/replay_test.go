package nomadtest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Replaying a recorded session in order needs more than comparing one
// response: the agent generated IDs, indexes and times this server
// generates differently. A binder learns, from each response, which value
// of this server stands for which recorded one, one to one, and checks
// that the relation holds wherever the recording repeats a value. Indexes
// and times must also keep their recorded order. Later requests are
// rewritten with the bound values, so a renew sends the lock ID this
// server handed out for the one the recording renewed.

type binder struct {
	fwd map[string]string // kind + recorded -> kind + got
	rev map[string]string
	// ordered holds the bound index and time pairs, for the order check.
	ordered map[string][][2]uint64
}

func newBinder() *binder {
	return &binder{fwd: map[string]string{}, rev: map[string]string{}, ordered: map[string][][2]uint64{}}
}

var anyUUID = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// bind records that got stands for rec, of a kind: "uuid", "index" or
// "time".
func (b *binder) bind(kind, rec, got string) error {
	if f, ok := b.fwd[kind+rec]; ok {
		if f != kind+got {
			return fmt.Errorf("recorded %s %s was %s before, now %s", kind, rec, strings.TrimPrefix(f, kind), got)
		}
		return nil
	}
	if r, ok := b.rev[kind+got]; ok {
		return fmt.Errorf("%s %s stands for recorded %s already, now for %s", kind, got, strings.TrimPrefix(r, kind), rec)
	}
	if kind == "index" || kind == "time" {
		rn, err1 := strconv.ParseUint(rec, 10, 64)
		gn, err2 := strconv.ParseUint(got, 10, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%s %q / %q is not a number", kind, rec, got)
		}
		for _, p := range b.ordered[kind] {
			if (rn < p[0]) != (gn < p[1]) {
				return fmt.Errorf("%s order: recorded %d vs %d, got %d vs %d", kind, rn, p[0], gn, p[1])
			}
		}
		b.ordered[kind] = append(b.ordered[kind], [2]uint64{rn, gn})
	}
	b.fwd[kind+rec], b.rev[kind+got] = kind+got, kind+rec
	return nil
}

// rewrite replaces the recorded UUIDs in s with the bound ones.
func (b *binder) rewrite(s string) string {
	return anyUUID.ReplaceAllStringFunc(s, func(u string) string {
		if g, ok := b.fwd["uuid"+u]; ok {
			return strings.TrimPrefix(g, "uuid")
		}
		return u
	})
}

// bindHeader binds X-Nomad-Index; 0 and absence must match exactly.
func (b *binder) bindHeader(rec, got string) error {
	if rec == "" || rec == "0" || got == "" || got == "0" {
		if rec != got {
			return fmt.Errorf("X-Nomad-Index = %q, recorded %q", got, rec)
		}
		return nil
	}
	return b.bind("index", rec, got)
}

// jnode is a JSON value with its object keys in order, since the wire
// order is part of what the agent answers.
type jnode struct {
	kind  byte // 'o', 'a', 's', 'n', 'b', 'z'
	keys  []string
	elems []*jnode
	text  string
}

func parseJSON(b []byte) (*jnode, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := parseNode(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return n, nil
}

func parseNode(dec *json.Decoder) (*jnode, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		n := &jnode{kind: 'a'}
		if t == '{' {
			n.kind = 'o'
		}
		for dec.More() {
			if n.kind == 'o' {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k.(string))
			}
			e, err := parseNode(dec)
			if err != nil {
				return nil, err
			}
			n.elems = append(n.elems, e)
		}
		_, err := dec.Token()
		return n, err
	case string:
		return &jnode{kind: 's', text: t}, nil
	case json.Number:
		return &jnode{kind: 'n', text: t.String()}, nil
	case bool:
		return &jnode{kind: 'b', text: strconv.FormatBool(t)}, nil
	default:
		return &jnode{kind: 'z'}, nil
	}
}

// Keys whose numbers are raft indexes or Unix-nanosecond times.
var (
	indexKeys = map[string]bool{"CreateIndex": true, "ModifyIndex": true, "JobModifyIndex": true, "EvalCreateIndex": true,
		"Index": true, "SnapshotIndex": true, "AllocModifyIndex": true}
	timeKeys = map[string]bool{"CreateTime": true, "ModifyTime": true, "SubmitTime": true}
	// maskedKeys differ by design: hashes of fields this server hashes
	// differently.
	maskedKeys = map[string]bool{"Hash": true}
	rfc3339RE  = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`)
)

// match compares got with rec, binding generated values on the way, and
// returns the differences. With learn set it only binds, where the shapes
// agree, and reports nothing.
func (b *binder) match(path, key string, rec, got *jnode, learn bool) []string {
	var diffs []string
	fail := func(format string, args ...any) {
		if !learn {
			diffs = append(diffs, path+": "+fmt.Sprintf(format, args...))
		}
	}
	if rec.kind != got.kind {
		fail("got a %c value, recorded a %c value", got.kind, rec.kind)
		return diffs
	}
	switch rec.kind {
	case 'o':
		// On different keys the common ones are still compared, and
		// bound.
		if strings.Join(rec.keys, ",") != strings.Join(got.keys, ",") {
			fail("keys %v, recorded %v", got.keys, rec.keys)
		}
		for i, k := range rec.keys {
			for j, gk := range got.keys {
				if gk == k {
					diffs = append(diffs, b.match(path+"."+k, k, rec.elems[i], got.elems[j], learn)...)
				}
			}
		}
	case 'a':
		if len(rec.elems) != len(got.elems) {
			fail("%d elements, recorded %d", len(got.elems), len(rec.elems))
		}
		for i := range min(len(rec.elems), len(got.elems)) {
			diffs = append(diffs, b.match(path+"."+strconv.Itoa(i), key, rec.elems[i], got.elems[i], learn)...)
		}
	case 's':
		switch {
		case maskedKeys[key]:
		case uuidRE.MatchString(rec.text) && uuidRE.MatchString(got.text):
			if err := b.bind("uuid", rec.text, got.text); err != nil {
				fail("%v", err)
			}
		case rfc3339RE.MatchString(rec.text) && rfc3339RE.MatchString(got.text):
			if err := b.bind("stamp", rec.text, got.text); err != nil {
				fail("%v", err)
			}
		case rec.text != got.text:
			fail("%q, recorded %q", got.text, rec.text)
		}
	case 'n':
		kind := ""
		switch {
		case indexKeys[key]:
			kind = "index"
		case timeKeys[key]:
			kind = "time"
		}
		if kind == "" || rec.text == "0" || got.text == "0" {
			if rec.text != got.text {
				fail("%s, recorded %s", got.text, rec.text)
			}
			return diffs
		}
		if err := b.bind(kind, rec.text, got.text); err != nil {
			fail("%v", err)
		}
	default:
		if rec.text != got.text {
			fail("%s, recorded %s", got.text, rec.text)
		}
	}
	return diffs
}

// matchBodies compares two JSON bodies through the binder; with learn it
// only binds what it can.
func (b *binder) matchBodies(rec, got []byte, learn bool) []string {
	rn, err1 := parseJSON(rec)
	gn, err2 := parseJSON(got)
	if err1 != nil || err2 != nil {
		if learn {
			return nil
		}
		if !bytes.Equal(rec, got) {
			return []string{fmt.Sprintf("body %q, recorded %q", got, rec)}
		}
		return nil
	}
	return b.match("$", "", rn, gn, learn)
}

// bodyBound compares bodies exactly through the binder.
const bodyBound bodyCheck = 100

// replayStep is one recorded exchange of a session replay: the
// replayCase checks, plus whether X-Nomad-Index goes through the binder.
type replayStep struct {
	replayCase
	bindIndex bool
}

// replay sends a recorded request, rewritten through the binder, and
// checks the answer against the recording.
func (b *binder) replay(t *testing.T, f *fixture, st replayStep, rec recording) {
	t.Helper()
	hdr := http.Header{}
	for k, vs := range rec.reqHeaders {
		for _, v := range vs {
			hdr.Add(k, b.rewrite(v))
		}
	}
	if rec.compressed {
		hdr.Set("Accept-Encoding", "gzip")
	}
	target := b.rewrite(rec.target)
	if st.target != nil {
		target = st.target(f)
	}
	resp, body := f.do(t, rec.method, target, []byte(b.rewrite(string(rec.reqBody))), hdr)
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: gunzip: %v", st.fact, err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: gunzip: %v", st.fact, err)
		}
	}
	if (resp.Header.Get("Content-Encoding") == "gzip") != (rec.headers.Get("Content-Encoding") == "gzip") {
		t.Errorf("%s: Content-Encoding %q, recorded %q", st.fact, resp.Header.Get("Content-Encoding"), rec.headers.Get("Content-Encoding"))
	}
	check := st.body
	st.check(stepT{t, st.fact}, rec, resp, body, check, b)
}

func (st replayStep) check(t testing.TB, rec recording, resp *http.Response, body []byte, check bodyCheck, b *binder) {
	t.Helper()
	tc := st.replayCase
	if check == bodyBound {
		tc.body = bodyNone
	}
	compareResponse(t, tc, rec, resp, body)
	if st.bindIndex {
		if err := b.bindHeader(rec.headers.Get("X-Nomad-Index"), resp.Header.Get("X-Nomad-Index")); err != nil {
			t.Error(err)
		}
	}
	for _, d := range b.matchBodies(rec.body, body, check != bodyBound) {
		t.Error(d)
	}
}

// stepT prefixes a replay step's failures with its recording, since
// synctest bubbles allow no subtests.
type stepT struct {
	testing.TB
	name string
}

func (s stepT) Errorf(format string, args ...any) {
	s.TB.Helper()
	s.TB.Errorf(s.name+": "+format, args...)
}

func (s stepT) Error(args ...any) {
	s.TB.Helper()
	s.TB.Error(append([]any{s.name + ":"}, args...)...)
}

func (s stepT) Fatalf(format string, args ...any) {
	s.TB.Helper()
	s.TB.Fatalf(s.name+": "+format, args...)
}

// timedStep is one step of a session replayed on the recorded clock: a
// recorded exchange, or a write the recording implies but did not keep.
type timedStep struct {
	at   time.Time
	rec  *recording
	name string
	do   func(t *testing.T, f *fixture)
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// replaySession replays the recordings matching glob, plus setup steps,
// in recorded order and at their recorded offsets, inside a synctest
// bubble: the lock timers run on the same clock as the recording. Every
// answer is compared exactly through the binder, unless checks has other
// checks for its recording's number.
func replaySession(t *testing.T, glob string, opts Options, setups []timedStep, checks map[string]replayStep) {
	paths, err := filepath.Glob(filepath.Join(factsDir, "more", glob))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no recordings %s: %v", glob, err)
	}
	steps := slices.Clone(setups)
	for _, p := range paths {
		rec := parseRecording(t, p)
		steps = append(steps, timedStep{at: rec.at, rec: &rec, name: strings.TrimSuffix(filepath.Base(p), ".http")})
	}
	slices.SortStableFunc(steps, func(a, b timedStep) int { return a.at.Compare(b.at) })
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, opts)
		b := newBinder()
		start, t0 := time.Now(), steps[0].at
		for _, st := range steps {
			time.Sleep(time.Until(start.Add(st.at.Sub(t0))))
			synctest.Wait()
			if st.do != nil {
				st.do(t, f)
				continue
			}
			step, ok := checks[st.name[:3]]
			if !ok {
				step = replayStep{replayCase: replayCase{body: bodyBound}, bindIndex: true}
			}
			step.fact = st.name
			b.replay(t, f, step, *st.rec)
		}
	})
}
