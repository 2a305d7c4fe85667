package replica_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// benchSandboxes loads n sandboxes as akctl would send them.
func benchSandboxes(b *testing.B, n int, image string) []store.Object {
	var src strings.Builder
	for i := range n {
		fmt.Fprintf(&src, "sandbox \"s%05d\" {\n  image = %q\n  labels = { team = \"ml\" }\n  env = { MODE = \"bench\" }\n}\n", i, image)
	}
	res, diags := spec.LoadSources([]spec.SourceFile{{Name: "bench.hcl", Dir: ".", Src: []byte(src.String())}}, spec.Options{})
	if diags.HasErrors() {
		b.Fatal(diags.Error())
	}
	objs := make([]store.Object, len(res.Sandboxes))
	for i, sb := range res.Sandboxes {
		objs[i] = store.Object{Sandbox: sb}
	}
	return objs
}

// benchReplica is a store with fsync, as in production, and a replica
// on a Nomad test server over loopback.
func benchReplica(b *testing.B, srv *nomadtest.Server, prefix string) (*store.Store, *replica.Replica) {
	st, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	c, err := api.NewClient(&api.Config{Address: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	rep, err := replica.New(replica.Config{Client: c, Namespace: "default", Prefix: prefix, Store: st})
	if err != nil {
		b.Fatal(err)
	}
	return st, rep
}

func startServer(b *testing.B) *nomadtest.Server {
	srv := nomadtest.New(nomadtest.Options{Addr: "127.0.0.1:0"})
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return srv
}

// BenchmarkApply1000 is what -ha adds to an apply of 1,000 sandboxes:
// "local" commits to the store alone (the single-instance baseline),
// "replicated" commits and then writes each sandbox's variable, as the
// leader does before it answers.
func BenchmarkApply1000(b *testing.B) {
	for _, mode := range []string{"local", "replicated"} {
		b.Run(mode, func(b *testing.B) {
			srv := startServer(b)
			st, rep := benchReplica(b, srv, "bench")
			// Each round changes every sandbox, so every one is written.
			sets := [][]store.Object{benchSandboxes(b, 1000, "alpine:3.19"), benchSandboxes(b, 1000, "alpine:3.20")}
			var i int
			for b.Loop() {
				objs := sets[i%2]
				i++
				res, err := st.Apply(b.Context(), objs, store.ApplyOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if mode == "local" {
					continue
				}
				keys := make([]string, 0, len(res.Objects))
				for _, o := range res.Objects {
					keys = append(keys, o.Key)
				}
				if err := rep.Push(b.Context(), keys); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCatchUp1000 is a new leader with an empty data dir restoring
// 1,000 sandboxes from the copy, against importing the same declarations
// from memory (the store's share of the work).
func BenchmarkCatchUp1000(b *testing.B) {
	srv := startServer(b)
	seed, seedRep := benchReplica(b, srv, "catchup")
	if _, err := seed.Apply(b.Context(), benchSandboxes(b, 1000, "alpine:3.20"), store.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := seedRep.CatchUp(b.Context(), "owner"); err != nil {
		b.Fatal(err)
	}
	recs, _, err := seed.List(b.Context(), store.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	decls := make([]store.Declaration, len(recs))
	for i, r := range recs {
		decls[i] = r.Declaration()
	}
	b.Run("import", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			st, _ := benchReplica(b, srv, "catchup")
			b.StartTimer()
			if _, err := st.Import(b.Context(), decls, store.ImportOptions{RemoveMissing: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("from-nomad", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			st, rep := benchReplica(b, srv, "catchup")
			b.StartTimer()
			if _, err := rep.CatchUp(b.Context(), "other"); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if recs, _, _ := st.List(b.Context(), store.ListOptions{}); len(recs) != 1000 {
				b.Fatalf("caught up %d sandboxes, want 1000", len(recs))
			}
			b.StartTimer()
		}
	})
}

// BenchmarkLargeDeclaration is a sandbox holding a 1 MiB file: "push"
// writes a changed one (its chunks, then its manifest), "catch-up" is a
// new leader with an empty data dir reading it back.
func BenchmarkLargeDeclaration(b *testing.B) {
	srv := startServer(b)
	st, rep := benchReplica(b, srv, "large")
	if _, err := rep.CatchUp(b.Context(), "owner"); err != nil {
		b.Fatal(err)
	}
	large := func(i int) []store.Object {
		sb := sandbox("large", "alpine:3.20")
		sb.Spec.Files = []spec.File{{Path: "/data/large.txt", Content: text(fmt.Sprint("v", i), 1<<20), Mode: "0644"}}
		return []store.Object{{Sandbox: sb}}
	}
	var i int
	b.Run("push", func(b *testing.B) {
		b.SetBytes(1 << 20)
		for b.Loop() {
			b.StopTimer()
			i++
			res, err := st.Apply(b.Context(), large(i), store.ApplyOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := rep.Push(b.Context(), []string{res.Objects[0].Key}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("catch-up", func(b *testing.B) {
		b.SetBytes(1 << 20)
		for b.Loop() {
			b.StopTimer()
			st, rep := benchReplica(b, srv, "large")
			b.StartTimer()
			if _, err := rep.CatchUp(b.Context(), "other"); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if recs, _, _ := st.List(b.Context(), store.ListOptions{}); len(recs) != 1 {
				b.Fatalf("caught up %d sandboxes, want 1", len(recs))
			}
			b.StartTimer()
		}
	})
}
