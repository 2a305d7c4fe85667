package replica_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/replica"
)

// failWrites makes variable writes (PUT) whose path contains any of
// parts fail before they reach Nomad.
type failWrites struct {
	next  http.RoundTripper
	parts []string
}

func (f failWrites) RoundTrip(r *http.Request) (*http.Response, error) {
	for _, p := range f.parts {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, p) {
			return nil, fmt.Errorf("write of %s refused by the test", r.URL.Path)
		}
	}
	return f.next.RoundTrip(r)
}

// Item 1: a seeding copies every declaration, large ones too, before it
// marks the copy ready; a store that then leads holds them all, and the
// seeder, as a follower, keeps its records.
func TestSeedingCopiesALargeDeclarationBeforeMarkingReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.instance()
		a.apply(t, withFiles("big", 300<<10), sandbox("small", "img:1"))
		want := a.declarations(t)

		term, err := a.rep.CatchUp(t.Context(), "owner-a")
		if err != nil || !term.Complete {
			t.Fatalf("seeding = %+v, %v; want a complete copy", term, err)
		}
		b := e.instance()
		if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
			t.Fatalf("next leader's catch-up: %v", err)
		}
		if diff := cmp.Diff(want, b.declarations(t)); diff != "" {
			t.Errorf("the next leader's store differs from the seeder's (-seeder +next):\n%s", diff)
		}
		if _, err := a.rep.Pull(t.Context(), true); err != nil {
			t.Fatalf("seeder's pull as a follower: %v", err)
		}
		if diff := cmp.Diff(want, a.declarations(t)); diff != "" {
			t.Errorf("the seeder lost records on its pull as a follower (-before +after):\n%s", diff)
		}
	})
}

// Item 1: while any declaration cannot be written, the copy stays
// "seeding" (incomplete, so no garbage collection), and the seeding
// finishes once the writes go through.
func TestSeedingStaysIncompleteWhileADeclarationCannotBeWritten(t *testing.T) {
	tests := []struct {
		name  string
		parts []string
	}{
		{"a chunk of a large declaration", []string{"/agentkernel/blobs/"}},
		{"a large declaration's variable", []string{"/sandboxes/default/big"}},
		{"a small declaration's variable", []string{"/sandboxes/default/small"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				a := e.instanceWith(instOpt{wrap: func(rt http.RoundTripper) http.RoundTripper { return failWrites{next: rt, parts: tt.parts} }})
				a.apply(t, withFiles("big", 300<<10), sandbox("small", "img:1"))
				want := a.declarations(t)
				if term, err := a.rep.CatchUp(t.Context(), "owner-a"); err == nil {
					t.Fatalf("seeding with a write that fails = %+v, nil; want an error", term)
				}
				if m, _, err := a.rep.ReadMeta(t.Context()); err != nil || m.State != replica.StateSeeding {
					t.Fatalf("meta = %+v, %v; want it still %q", m, err, replica.StateSeeding)
				}

				// The writes go through now: the seeder finishes.
				a2 := &instance{st: a.st, rep: newReplica(t, e, a.st)}
				if term, err := a2.rep.CatchUp(t.Context(), "owner-a"); err != nil || !term.Complete {
					t.Fatalf("seeding retried = %+v, %v; want a complete copy", term, err)
				}
				b := e.instance()
				if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, b.declarations(t)); diff != "" {
					t.Errorf("the next leader's store differs from the seeder's (-seeder +next):\n%s", diff)
				}
			})
		})
	}
}
