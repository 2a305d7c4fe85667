package replica_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// env is a Nomad test server on an in-memory network; call it inside a
// synctest bubble.
type env struct {
	t   *testing.T
	srv *nomadtest.Server
	mem *nomadtest.MemNet
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nomadtest.Options{})
}

func newEnvWith(t *testing.T, opts nomadtest.Options) *env {
	t.Helper()
	e := &env{t: t, mem: nomadtest.NewMemNet(), srv: nomadtest.New(opts)}
	hs := &http.Server{Handler: e.srv}
	go func() { _ = hs.Serve(e.mem.Listener()) }()
	t.Cleanup(func() {
		_ = e.srv.Close()
		e.mem.Close()
		_ = hs.Close()
	})
	return e
}

func (e *env) client() *api.Client { return e.clientWith(instOpt{}) }

// instOpt varies an instance: its Nomad token, a wrapper of its
// transport, and its replica's configuration.
type instOpt struct {
	token string
	wrap  func(http.RoundTripper) http.RoundTripper
	cfg   func(*replica.Config)
}

func (e *env) clientWith(o instOpt) *api.Client {
	e.t.Helper()
	hc := e.mem.HTTPClient()
	if o.wrap != nil {
		hc = &http.Client{Transport: o.wrap(hc.Transport)}
	}
	c, err := api.NewClient(&api.Config{Address: e.mem.URL(), HttpClient: hc, SecretID: o.token})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// instance is one controller's store and replica.
type instance struct {
	st  *store.Store
	rep *replica.Replica
}

func (e *env) instance() *instance { return e.instanceWith(instOpt{}) }

func (e *env) instanceWith(o instOpt) *instance {
	e.t.Helper()
	st, err := store.Open(e.t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = st.Close() })
	cfg := replica.Config{Client: e.clientWith(o), Namespace: "default", Prefix: "agentkernel", Store: st}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	rep, err := replica.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return &instance{st: st, rep: rep}
}

func sandbox(name, image string) spec.Sandbox {
	return spec.Sandbox{
		Namespace: "default", Name: name,
		Spec: spec.Spec{Driver: "docker", Image: image, Profile: "default", VCPUs: 1, MemoryMB: 256, Network: "bridge", State: "running"},
	}
}

func (in *instance) apply(t *testing.T, sbs ...spec.Sandbox) []string {
	t.Helper()
	objs := make([]store.Object, len(sbs))
	for i, sb := range sbs {
		objs[i] = store.Object{Sandbox: sb}
	}
	res, err := in.st.Apply(t.Context(), objs, store.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range res.Objects {
		keys = append(keys, o.Key)
	}
	return keys
}

func (in *instance) declarations(t *testing.T) []store.Declaration {
	t.Helper()
	recs, _, err := in.st.List(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]store.Declaration, len(recs))
	for i, r := range recs {
		out[i] = r.Declaration()
	}
	return out
}

func TestSeedThenCatchUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, sandbox("one", "img:1"), sandbox("two", "img:1"), sandbox("three", "img:1"))
		a.apply(t, sandbox("two", "img:2"))

		term, err := a.rep.CatchUp(t.Context(), "owner-a")
		if err != nil {
			t.Fatalf("seeding CatchUp: %v", err)
		}
		if term.Owner != "owner-a" || !term.Complete {
			t.Errorf("term %+v, want the seeding store's owner-a and a complete copy", term)
		}
		m, found, err := a.rep.ReadMeta(t.Context())
		if err != nil || !found || m.State != replica.StateReady {
			t.Fatalf("meta after seeding = %+v found=%v err=%v; want ready", m, found, err)
		}

		// A second instance with an empty data dir gets everything, with
		// the same generations, and the same owner.
		b := e.instance()
		term, err = b.rep.CatchUp(t.Context(), "owner-b")
		if err != nil {
			t.Fatal(err)
		}
		if term.Owner != "owner-a" || !term.Complete {
			t.Errorf("second instance term %+v, want owner-a from a complete copy", term)
		}
		if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
			t.Errorf("empty store not restored from the copy (-leader +new):\n%s", diff)
		}
	})
}

func TestStaleStoreCatchesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, sandbox("one", "img:1"), sandbox("two", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		b := e.instance()
		if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
			t.Fatal(err)
		}
		// b falls behind: a changes one, deletes-and-finalizes nothing but
		// marks two for deletion, and adds three; b meanwhile holds a
		// sandbox the copy never had.
		keys := a.apply(t, sandbox("one", "img:2"), sandbox("three", "img:1"))
		if _, err := a.st.Delete(t.Context(), "default/two"); err != nil {
			t.Fatal(err)
		}
		if err := a.rep.Push(t.Context(), append(keys, "default/two")); err != nil {
			t.Fatal(err)
		}
		b.apply(t, sandbox("never-replicated", "img:1"))

		if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
			t.Errorf("stale store not caught up (-leader +stale):\n%s", diff)
		}
		rec, err := b.st.Get(t.Context(), "default/two")
		if err != nil || !rec.Deleting() {
			t.Errorf("default/two = %+v, %v; want it marked for deletion", rec, err)
		}
	})
}

func TestPushDeletesFinalizedAndRefusesToOverwriteAnotherLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, sandbox("one", "img:1"), sandbox("two", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		// b takes over and changes one; a, which has not noticed, tries
		// to write its own change of one.
		b := e.instance()
		if _, err := b.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		keys := b.apply(t, sandbox("one", "img:from-b"))
		if err := b.rep.Push(t.Context(), keys); err != nil {
			t.Fatal(err)
		}
		keys = a.apply(t, sandbox("one", "img:from-a"))
		err := a.rep.Push(t.Context(), keys)
		if !errors.Is(err, replica.ErrChangedUnderUs) {
			t.Fatalf("old leader's push = %v, want ErrChangedUnderUs", err)
		}
		v, _, err := e.client().Variables().Read(a.rep.Path("default/one"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(v.Items[replica.ItemDeclaration], "img:from-b") {
			t.Errorf("the new leader's write was overwritten: %s", v.Items[replica.ItemDeclaration])
		}

		// Finalizing on the leader removes the variable.
		rec, err := b.st.Delete(t.Context(), "default/two")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.st.Finalize(t.Context(), "default/two", rec.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		if err := b.rep.Push(t.Context(), []string{"default/two"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.client().Variables().Read(b.rep.Path("default/two"), nil); !errors.Is(err, api.ErrVariablePathNotFound) {
			t.Errorf("variable of a finalized sandbox: %v, want it deleted", err)
		}
	})
}

func TestFollowerPullsChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, sandbox("one", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		rev, err := a.st.Revision(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = a.rep.RunPush(ctx, rev) }()

		b := e.instance()
		go func() { _ = b.rep.RunPull(ctx) }()
		synctest.Wait()
		if at, _ := b.rep.Freshness(); at.IsZero() {
			t.Fatal("follower never synced")
		}
		a.apply(t, sandbox("one", "img:2"), sandbox("two", "img:1"))
		time.Sleep(time.Second)
		synctest.Wait()
		if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
			t.Errorf("follower did not follow the leader's pushes (-leader +follower):\n%s", diff)
		}
		rec, err := a.st.Delete(t.Context(), "default/one")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.st.Finalize(t.Context(), "default/one", rec.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if _, err := b.st.Get(t.Context(), "default/one"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("finalized sandbox still on the follower: %v", err)
		}
	})
}

// Large declarations and long keys are replicated
// (TestEveryValidDeclarationReplicatesWhole); what JSON cannot carry
// byte for byte is still refused at apply time.
func TestCheckPolicyRefusesOnlyWhatTheCopyCannotCarry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := newEnv(t).instance()
		big := sandbox("big", "img:1")
		big.Spec.Files = []spec.File{{Path: "/big", Content: strings.Repeat("x", 2*replica.MaxVariableBytes), Mode: "0644"}}
		long := sandbox(strings.Repeat("s", spec.MaxNameLength), "img:1")
		long.Namespace = strings.Repeat("n", 128)
		binary := sandbox("binary", "img:1")
		binary.Spec.Files = []spec.File{{Path: "/bin/blob", Content: "\xff\xfe", Mode: "0755"}}
		tests := []struct {
			name string
			sb   spec.Sandbox
			want string
		}{
			{"fits", sandbox("fits", "img:1"), ""},
			{"larger than a variable", big, ""},
			{"a key too long for a path", long, ""},
			{"a file that is not UTF-8", binary, "not UTF-8"},
		}
		for _, tt := range tests {
			err := in.rep.CheckPolicy(&tt.sb)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("%s: refused: %v", tt.name, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, replica.ErrUnreplicable)):
				t.Errorf("%s: error %v, want ErrUnreplicable saying %q", tt.name, err, tt.want)
			}
		}
	})
}

// A leader's push loop that starts from a revision the store's feed no
// longer holds (compacted between the catch-up and the watch) lists the
// store and pushes it all, instead of ending the term.
func TestRunPushFromACompactedRevisionListsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		st, err := store.Open(t.TempDir(), store.Options{NoSync: true, RetainRevisions: 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		rep, err := replica.New(replica.Config{Client: e.client(), Namespace: "default", Prefix: "agentkernel", Store: st})
		if err != nil {
			t.Fatal(err)
		}
		in := &instance{st: st, rep: rep}
		for i := range 40 {
			in.apply(t, sandbox(fmt.Sprintf("s%02d", i), "img:1"))
		}
		if _, err := st.Watch(t.Context(), 1); !errors.Is(err, store.ErrCompacted) {
			t.Fatalf("watch from revision 1 = %v; the test needs it compacted", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- rep.RunPush(ctx, 1) }()
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("RunPush ended: %v", err)
		default:
		}
		metas, _, err := e.client().Variables().PrefixList("agentkernel/sandboxes/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(metas) != 40 {
			t.Errorf("the copy holds %d sandboxes, want all 40", len(metas))
		}
		// And it follows the store from there.
		in.apply(t, sandbox("late", "img:1"))
		time.Sleep(time.Second)
		synctest.Wait()
		if _, _, err := e.client().Variables().Read("agentkernel/sandboxes/default/late", nil); err != nil {
			t.Errorf("a sandbox applied after the relist was not pushed: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunPush = %v on cancel", err)
		}
	})
}
