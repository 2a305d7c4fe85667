package replica_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// chunks lists the chunk variables, by path, with their ModifyIndex.
func (e *env) chunks() map[string]uint64 {
	e.t.Helper()
	metas, _, err := e.client().Variables().PrefixList("agentkernel/blobs/", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, m := range metas {
		out[m.Path] = m.ModifyIndex
	}
	return out
}

// added returns the paths in after that before lacks.
func added(before, after map[string]uint64) []string {
	var out []string
	for p := range after {
		if _, ok := before[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func (in *instance) finalize(t *testing.T, key string) {
	t.Helper()
	rec, err := in.st.Delete(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.st.Finalize(t.Context(), key, rec.ResourceVersion); err != nil {
		t.Fatal(err)
	}
}

func TestSmallDeclarationsStayInlineAndLargeOnesGetAManifest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, sandbox("small", "img:1"), withFiles("big", 200<<10))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct{ key, has, lacks string }{
			{"default/small", replica.ItemDeclaration, replica.ItemManifest},
			{"default/big", replica.ItemManifest, replica.ItemDeclaration},
		} {
			v, _, err := e.client().Variables().Read(a.rep.Path(tt.key), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := v.Items[tt.has]; !ok {
				t.Errorf("%s: no item %q: %v", tt.key, tt.has, slices.Collect(func(yield func(string) bool) {
					for k := range v.Items {
						yield(k)
					}
				}))
			}
			if _, ok := v.Items[tt.lacks]; ok {
				t.Errorf("%s: item %q too", tt.key, tt.lacks)
			}
		}
		if n := len(e.chunks()); n != 4 {
			t.Errorf("%d chunks for a 200 KiB file, want 4", n)
		}
	})
}

// A copy written before large declarations were chunked is read as it is.
func TestCopyWrittenInTheFirstFormatIsRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		items := map[string]string{
			"agentkernel/meta":                  `{"owner":"owner-old","state":"ready","format":"1"}`,
			"agentkernel/sandboxes/default/old": `{"declaration":"{\"sandbox\":{\"namespace\":\"default\",\"name\":\"old\",\"labels\":{\"team\":\"ml\"},\"spec\":{\"driver\":\"docker\",\"image\":\"img:1\",\"command\":null,\"profile\":\"default\",\"vcpus\":1,\"memoryMB\":256,\"network\":\"bridge\",\"readOnly\":false,\"state\":\"running\",\"placement\":{}}},\"source\":{\"file\":\"a.hcl\",\"startLine\":1,\"startColumn\":1,\"endLine\":3,\"endColumn\":2},\"hash\":\"h1\",\"generation\":3,\"createdAt\":\"2025-01-02T03:04:05Z\",\"updatedAt\":\"2025-01-02T03:04:05Z\"}"}`,
		}
		for path, raw := range items {
			var it api.VariableItems
			if err := jsonUnmarshal(raw, &it); err != nil {
				t.Fatal(err)
			}
			if _, _, err := e.client().Variables().Create(&api.Variable{Namespace: "default", Path: path, Items: it}, nil); err != nil {
				t.Fatal(err)
			}
		}
		b := e.instance()
		term, err := b.rep.CatchUp(t.Context(), "owner-b")
		if err != nil || term.Owner != "owner-old" {
			t.Fatalf("catch-up = %+v, %v", term, err)
		}
		got := b.declarations(t)
		if len(got) != 1 || got[0].Key() != "default/old" || got[0].Generation != 3 || got[0].Sandbox.Labels["team"] != "ml" || got[0].Source.File != "a.hcl" {
			t.Errorf("declarations read = %+v", got)
		}
	})
}

func TestLongKeysAreReplicatedUnderAHashedPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		long := withFiles(strings.Repeat("s", spec.MaxNameLength), 100<<10)
		long.Namespace = strings.Repeat("n", 128)
		keys := a.apply(t, long, sandbox("short", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		path := a.rep.Path(keys[0])
		if !regexp.MustCompile(`^agentkernel/sandboxes/_/[0-9a-f]{64}$`).MatchString(path) {
			t.Fatalf("path of %s = %q, want agentkernel/sandboxes/_/<sha256>", keys[0], path)
		}
		if _, _, err := e.client().Variables().Read(path, nil); err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		b := e.instance()
		if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
			t.Errorf("(-leader +next):\n%s", diff)
		}

		a.finalize(t, keys[0])
		if err := a.rep.Push(t.Context(), keys[:1]); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.client().Variables().Read(path, nil); !errors.Is(err, api.ErrVariablePathNotFound) {
			t.Errorf("variable of the finalized sandbox: %v, want it deleted", err)
		}
		if _, err := b.rep.Pull(t.Context(), true); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
			t.Errorf("follower after the delete (-leader +follower):\n%s", diff)
		}
	})
}

func TestPrefixMustLeaveRoomForEveryPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		for _, tt := range []struct {
			prefix string
			ok     bool
		}{
			{strings.Repeat("p", replica.MaxPrefixLength), true},
			{strings.Repeat("p", replica.MaxPrefixLength+1), false},
		} {
			_, err := replica.New(replica.Config{Client: e.client(), Namespace: "default", Prefix: tt.prefix, Store: e.instance().st})
			if (err == nil) != tt.ok {
				t.Errorf("prefix of %d characters: New = %v, want ok %v", len(tt.prefix), err, tt.ok)
			}
		}
	})
}

// A declaration whose chunk is missing or corrupt is not imported, and
// nothing is removed for it: the reader keeps what it had.
func TestMissingOrCorruptChunkFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		damage func(c *api.Client, path string) error
	}{
		{"missing", func(c *api.Client, path string) error { _, err := c.Variables().Delete(path, nil); return err }},
		{"corrupt", func(c *api.Client, path string) error {
			_, _, err := c.Variables().Update(&api.Variable{Namespace: "default", Path: path, Items: api.VariableItems{"data": "not what the name says"}}, nil)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				a := e.instance()
				a.apply(t, withFiles("big", 300<<10), sandbox("small", "img:1"))
				if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
					t.Fatal(err)
				}
				b := e.instance()
				if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
					t.Fatal(err)
				}
				had := b.declarations(t)

				before := e.chunks()
				keys := a.apply(t, withFiles("big", 310<<10))
				if err := a.rep.Push(t.Context(), keys); err != nil {
					t.Fatal(err)
				}
				fresh := added(before, e.chunks())
				if len(fresh) == 0 {
					t.Fatal("the change wrote no chunk")
				}
				if err := tt.damage(e.client(), fresh[0]); err != nil {
					t.Fatal(err)
				}

				if _, err := b.rep.Pull(t.Context(), true); !errors.Is(err, replica.ErrIncomplete) || !strings.Contains(err.Error(), fresh[0]) {
					t.Errorf("follower's pull = %v, want ErrIncomplete naming %s", err, fresh[0])
				}
				if diff := cmp.Diff(had, b.declarations(t)); diff != "" {
					t.Errorf("the follower's store changed (-before +after):\n%s", diff)
				}
				c := e.instance()
				c.apply(t, sandbox("small", "img:1"))
				if _, err := c.rep.CatchUp(t.Context(), "owner-c"); !errors.Is(err, replica.ErrIncomplete) {
					t.Errorf("new leader's catch-up = %v, want ErrIncomplete", err)
				}
				if got := c.declarations(t); len(got) != 1 || got[0].Key() != "default/small" {
					t.Errorf("new leader's store = %v, want its one record, untouched", got)
				}
			})
		})
	}
}

// countChunkReads counts the chunk reads made through it.
type countChunkReads struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countChunkReads) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

func TestFollowerReadsChunksOnlyOfChangedDeclarations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, withFiles("one", 300<<10), withFiles("two", 300<<10), sandbox("small", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		var reads atomic.Int64
		b := e.instanceWith(instOpt{wrap: func(rt http.RoundTripper) http.RoundTripper { return countChunkReads{next: rt, n: &reads} }})
		if _, err := b.rep.Pull(t.Context(), true); err != nil {
			t.Fatal(err)
		}
		first := reads.Swap(0)
		if first == 0 {
			t.Fatal("the first pull read no chunk")
		}
		for _, tt := range []struct {
			name string
			sb   spec.Sandbox
			max  int64
		}{
			{"only the small one changed", sandbox("small", "img:2"), 0},
			{"one large one changed", withFiles("one", 301<<10), first / 2},
		} {
			keys := a.apply(t, tt.sb)
			if err := a.rep.Push(t.Context(), keys); err != nil {
				t.Fatal(err)
			}
			if _, err := b.rep.Pull(t.Context(), true); err != nil {
				t.Fatal(err)
			}
			if n := reads.Swap(0); n > tt.max {
				t.Errorf("%s: %d chunk reads, want at most %d", tt.name, n, tt.max)
			}
			if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
				t.Errorf("%s (-leader +follower):\n%s", tt.name, diff)
			}
		}
	})
}

func TestOldLeaderIsFencedOffALargeDeclaration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, withFiles("big", 200<<10))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		b := e.instance()
		if _, err := b.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		keys := b.apply(t, withFiles("big", 210<<10))
		if err := b.rep.Push(t.Context(), keys); err != nil {
			t.Fatal(err)
		}
		keys = a.apply(t, withFiles("big", 220<<10))
		if err := a.rep.Push(t.Context(), keys); !errors.Is(err, replica.ErrChangedUnderUs) {
			t.Fatalf("old leader's push = %v, want ErrChangedUnderUs", err)
		}
		c := e.instance()
		if _, err := c.rep.CatchUp(t.Context(), "owner-c"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(b.declarations(t), c.declarations(t)); diff != "" {
			t.Errorf("the new leader's write was overwritten (-new leader +copy):\n%s", diff)
		}
	})
}

// loseAnswersOf performs variable writes whose path contains part but
// loses their answers while on.
type loseAnswersOf struct {
	next http.RoundTripper
	part string
	on   *atomic.Bool
}

func (l loseAnswersOf) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err == nil && l.on.Load() && (r.Method == http.MethodPut || r.Method == http.MethodDelete) && strings.Contains(r.URL.Path, l.part) {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errors.New("connection reset")
	}
	return resp, err
}

func TestLostAnswersOfLargeDeclarationsAreRecognised(t *testing.T) {
	for _, part := range []string{"/sandboxes/", "/blobs/"} {
		t.Run(part, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				var lose atomic.Bool
				a := e.instanceWith(instOpt{wrap: func(rt http.RoundTripper) http.RoundTripper { return loseAnswersOf{next: rt, part: part, on: &lose} }})
				a.apply(t, withFiles("big", 200<<10))
				if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
					t.Fatal(err)
				}
				keys := a.apply(t, withFiles("big", 210<<10))
				lose.Store(true)
				if err := a.rep.Push(t.Context(), keys); err == nil {
					t.Fatal("push with a lost answer reported success")
				}
				lose.Store(false)
				a.apply(t, withFiles("big", 220<<10))
				if err := a.rep.Push(t.Context(), keys); err != nil {
					t.Fatalf("push after a lost answer: %v", err)
				}
				c := e.instance()
				if _, err := c.rep.CatchUp(t.Context(), "owner-c"); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(a.declarations(t), c.declarations(t)); diff != "" {
					t.Errorf("(-leader +copy):\n%s", diff)
				}

				a.finalize(t, "default/big")
				lose.Store(true)
				_ = a.rep.Push(t.Context(), keys)
				lose.Store(false)
				if err := a.rep.Push(t.Context(), keys); err != nil {
					t.Errorf("retried delete after a lost answer: %v", err)
				}
				if _, _, err := e.client().Variables().Read(a.rep.Path("default/big"), nil); !errors.Is(err, api.ErrVariablePathNotFound) {
					t.Errorf("default/big still replicated: %v", err)
				}
			})
		})
	}
}

func TestCollectDeletesChunksNoDeclarationNamesAfterTwoPasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, withFiles("big", 300<<10), withFiles("keep", 100<<10))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		keys := a.apply(t, withFiles("big", 310<<10))
		if err := a.rep.Push(t.Context(), keys); err != nil {
			t.Fatal(err)
		}
		v2 := e.chunks()
		orphans := len(v2) - len(e.chunksNamedNow(t))
		if orphans == 0 {
			t.Fatal("the change left no chunk unnamed; the test shows nothing")
		}

		pass := func(want int) {
			t.Helper()
			n, err := a.rep.Collect(t.Context())
			if err != nil || n != want {
				t.Fatalf("Collect = %d, %v; want %d deleted", n, err, want)
			}
		}
		pass(0) // a first pass only takes note
		time.Sleep(time.Minute)
		pass(0) // too soon after it
		time.Sleep(10 * time.Minute)
		pass(orphans)
		if got, want := len(e.chunks()), len(v2)-orphans; got != want {
			t.Errorf("%d chunks left, want %d", got, want)
		}
		b := e.instance()
		if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
			t.Fatalf("catch-up after collection: %v", err)
		}
		if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
			t.Errorf("(-leader +copy):\n%s", diff)
		}

		// Once the sandbox is gone, its chunks go too; the other's stay.
		a.finalize(t, "default/big")
		if err := a.rep.Push(t.Context(), keys); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		pass(0)
		time.Sleep(10 * time.Minute)
		pass(len(e.chunks()) - len(e.chunksNamedNow(t)))
		if _, err := b.rep.Pull(t.Context(), true); err != nil {
			t.Fatalf("pull after collection: %v", err)
		}
		if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
			t.Errorf("(-leader +copy):\n%s", diff)
		}
	})
}

// chunksNamedNow returns the chunks the copy's manifests name, as a new
// reader finds them: the chunks it reads.
func (e *env) chunksNamedNow(t *testing.T) map[string]bool {
	t.Helper()
	named := map[string]bool{}
	st, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := &recordChunkReads{next: e.mem.HTTPClient().Transport, seen: named}
	c, err := api.NewClient(&api.Config{Address: e.mem.URL(), HttpClient: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replica.New(replica.Config{Client: c, Namespace: "default", Prefix: "agentkernel", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rep.Pull(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	return named
}

type recordChunkReads struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[string]bool
}

func (r *recordChunkReads) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
		r.mu.Lock()
		r.seen[strings.TrimPrefix(req.URL.Path, "/v1/var/")] = true
		r.mu.Unlock()
	}
	return r.next.RoundTrip(req)
}

// gate holds variable writes whose path contains part until released.
type gate struct {
	next    http.RoundTripper
	part    string
	arrived chan struct{}
	release chan struct{}
}

func (g gate) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, g.part) {
		g.arrived <- struct{}{}
		select {
		case <-g.release:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return g.next.RoundTrip(r)
}

// A write that relies on a chunk no manifest names yet (it has written
// the chunk, and is about to write its manifest) keeps that chunk, even
// across the pass that would otherwise delete it.
func TestCollectSparesChunksAWriteIsAboutToName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		old := withFiles("big", 300<<10)
		a.apply(t, old)
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		v1 := e.chunks()
		keys := a.apply(t, withFiles("big", 310<<10))
		if err := a.rep.Push(t.Context(), keys); err != nil {
			t.Fatal(err)
		}
		if _, err := a.rep.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Minute)

		// Another sandbox with the old file: its write names the old
		// chunks, and stalls before its manifest.
		g := gate{part: "/sandboxes/default/other", arrived: make(chan struct{}), release: make(chan struct{})}
		w := e.instanceWith(instOpt{wrap: func(rt http.RoundTripper) http.RoundTripper { g.next = rt; return g }})
		other := old
		other.Name = "other"
		keys = w.apply(t, other)
		done := make(chan error, 1)
		go func() { done <- w.rep.Push(context.Background(), keys) }()
		<-g.arrived

		time.Sleep(time.Minute + time.Second)
		if n, err := a.rep.Collect(t.Context()); err != nil || n != 0 {
			t.Errorf("Collect during the write = %d, %v; want nothing deleted", n, err)
		}
		for p := range v1 {
			if _, ok := e.chunks()[p]; !ok {
				t.Errorf("chunk %s, about to be named, was deleted", p)
			}
		}
		close(g.release)
		if err := <-done; err != nil {
			t.Fatalf("the stalled write: %v", err)
		}
		c := e.instance()
		if _, err := c.rep.CatchUp(t.Context(), "owner-c"); err != nil {
			t.Fatalf("catch-up: %v", err)
		}
		got, err := c.st.Get(t.Context(), "default/other")
		if err != nil || got.Sandbox.Spec.Files[0].Content != old.Spec.Files[0].Content {
			t.Errorf("default/other read back whole: %v", err)
		}
	})
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
