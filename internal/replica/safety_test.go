package replica_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// failKeys makes variable writes of the given paths fail, as a seeding
// cut short by the seeder's death.
type failKeys struct {
	next  http.RoundTripper
	paths []string
}

func (f failKeys) RoundTrip(r *http.Request) (*http.Response, error) {
	for _, p := range f.paths {
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, p) {
			return nil, errors.New("the seeder died")
		}
	}
	return f.next.RoundTrip(r)
}

func TestInterruptedSeedingIsNotFinishedByAnotherStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instanceWith(instOpt{wrap: func(rt http.RoundTripper) http.RoundTripper {
			return failKeys{next: rt, paths: []string{"/default/two", "/default/three"}}
		}})
		a.apply(t, sandbox("one", "img:1"), sandbox("two", "img:1"), sandbox("three", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err == nil {
			t.Fatal("seeding with failing writes succeeded")
		}

		// b, with an empty store, leads next: it merges but must not
		// declare the copy whole.
		b := e.instance()
		term, err := b.rep.CatchUp(t.Context(), "owner-b")
		if err != nil {
			t.Fatal(err)
		}
		if term.Complete || term.Owner != "owner-a" {
			t.Errorf("term %+v, want owner-a and an incomplete copy", term)
		}
		if m, _, _ := b.rep.ReadMeta(t.Context()); m.State != replica.StateSeeding {
			t.Errorf("meta state %q after another store's merge, want still seeding", m.State)
		}

		// a comes back (its network fine now) and finishes.
		a2 := &instance{st: a.st, rep: newReplica(t, e, a.st)}
		term, err = a2.rep.CatchUp(t.Context(), "owner-a")
		if err != nil {
			t.Fatal(err)
		}
		if !term.Complete {
			t.Errorf("the seeder's own catch-up left the copy incomplete: %+v", term)
		}
		if _, err := b.rep.Pull(t.Context(), true); err != nil {
			t.Fatal(err)
		}
		if got := len(b.declarations(t)); got != 3 {
			t.Errorf("b holds %d sandboxes after the seeder finished, want 3", got)
		}
	})
}

func newReplica(t *testing.T, e *env, st *store.Store) *replica.Replica {
	rep, err := replica.New(replica.Config{Client: e.client(), Namespace: "default", Prefix: "agentkernel", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestEmptyStoreDoesNotSeedBesideJobs(t *testing.T) {
	tests := []struct {
		name      string
		jobs      int
		seedEmpty bool
		wantAside bool
	}{
		{"jobs in Nomad", 3, false, true},
		{"jobs in Nomad, seed_empty", 3, true, false},
		{"a fresh cluster", 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				in := e.instanceWith(instOpt{cfg: func(c *replica.Config) {
					c.ManagedJobs = func(context.Context) (int, error) { return tt.jobs, nil }
					c.SeedEmpty = tt.seedEmpty
				}})
				_, err := in.rep.CatchUp(t.Context(), "owner")
				if got := errors.Is(err, replica.ErrStepAside); got != tt.wantAside {
					t.Fatalf("CatchUp = %v; want step-aside %v", err, tt.wantAside)
				}
				_, found, _ := in.rep.ReadMeta(t.Context())
				if found == tt.wantAside {
					t.Errorf("meta found = %v, want a copy only when seeding was allowed", found)
				}
			})
		})
	}
}

func TestFilteredListNeverEmptiesTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const mgmt = "00000000-0000-0000-0000-0000000000aa"
		e := newEnvWith(t, nomadtest.Options{ACLToken: mgmt})
		// No read (which implies list in Nomad): the list comes back 200 [].
		if err := e.srv.SetACLPolicy("nolist", `namespace "default" {
  variables {
    path "agentkernel/*" { capabilities = ["write", "destroy"] }
  }
}`); err != nil {
			t.Fatal(err)
		}
		tok, err := e.srv.CreateACLToken("nolist", "nolist")
		if err != nil {
			t.Fatal(err)
		}
		a := e.instanceWith(instOpt{token: mgmt})
		a.apply(t, sandbox("one", "img:1"), sandbox("two", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}
		b := e.instanceWith(instOpt{token: tok})
		b.apply(t, sandbox("one", "img:1"), sandbox("two", "img:1"))
		if _, err := b.rep.Pull(t.Context(), true); err == nil || !strings.Contains(err.Error(), "before removing sandbox") {
			t.Errorf("pull with a list the token filters = %v, want a refusal", err)
		}
		if got := len(b.declarations(t)); got != 2 {
			t.Errorf("b holds %d sandboxes, want its 2 kept", got)
		}
	})
}

// loseAnswers performs variable writes but loses their answers while on.
type loseAnswers struct {
	next http.RoundTripper
	on   *atomic.Bool
}

func (l loseAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err == nil && l.on.Load() && (r.Method == http.MethodPut || r.Method == http.MethodDelete) && strings.HasPrefix(r.URL.Path, "/v1/var/") {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errors.New("connection reset")
	}
	return resp, err
}

func TestLostAnswersAreRecognisedAsOurOwnWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		var lose atomic.Bool
		a := e.instanceWith(instOpt{wrap: func(rt http.RoundTripper) http.RoundTripper { return loseAnswers{next: rt, on: &lose} }})
		a.apply(t, sandbox("one", "img:1"), sandbox("two", "img:1"))
		if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
			t.Fatal(err)
		}

		// v2's write lands but its answer is lost; v3 must still go.
		keys := a.apply(t, sandbox("one", "img:2"))
		lose.Store(true)
		if err := a.rep.Push(t.Context(), keys); err == nil {
			t.Fatal("push with a lost answer reported success")
		}
		lose.Store(false)
		a.apply(t, sandbox("one", "img:3"))
		if err := a.rep.Push(t.Context(), keys); err != nil {
			t.Fatalf("push after a lost answer: %v", err)
		}
		v, _, err := e.client().Variables().Read(a.rep.Path("default/one"), nil)
		if err != nil || !strings.Contains(v.Items[replica.ItemDeclaration], "img:3") {
			t.Errorf("copy of default/one = %v, %v; want img:3", v, err)
		}

		// A delete whose answer is lost, retried.
		rec, err := a.st.Delete(t.Context(), "default/two")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.st.Finalize(t.Context(), "default/two", rec.ResourceVersion); err != nil {
			t.Fatal(err)
		}
		lose.Store(true)
		_ = a.rep.Push(t.Context(), []string{"default/two"})
		lose.Store(false)
		if err := a.rep.Push(t.Context(), []string{"default/two"}); err != nil {
			t.Errorf("retried delete after a lost answer: %v", err)
		}
		if _, _, err := e.client().Variables().Read(a.rep.Path("default/two"), nil); !errors.Is(err, api.ErrVariablePathNotFound) {
			t.Errorf("default/two still replicated: %v", err)
		}
	})
}
