package replica

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// BenchmarkFollowerPull1000 is a follower taking in one changed sandbox
// among 1,000: "incremental" as its pulls after the first do, "full" as
// every pull did before (import everything the copy holds), the baseline.
func BenchmarkFollowerPull1000(b *testing.B) {
	srv := nomadtest.New(nomadtest.Options{Addr: "127.0.0.1:0"})
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	open := func() (*store.Store, *Replica) {
		st, err := store.Open(b.TempDir(), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = st.Close() })
		c, err := api.NewClient(&api.Config{Address: srv.URL()})
		if err != nil {
			b.Fatal(err)
		}
		rep, err := New(Config{Client: c, Namespace: "default", Prefix: "pull", Store: st})
		if err != nil {
			b.Fatal(err)
		}
		return st, rep
	}
	load := func(n int, image string) []store.Object {
		var src strings.Builder
		for i := range n {
			fmt.Fprintf(&src, "sandbox \"s%05d\" {\n  image = %q\n}\n", i, image)
		}
		res, diags := spec.LoadSources([]spec.SourceFile{{Name: "b.hcl", Dir: ".", Src: []byte(src.String())}}, spec.Options{})
		if diags.HasErrors() {
			b.Fatal(diags.Error())
		}
		objs := make([]store.Object, len(res.Sandboxes))
		for i, sb := range res.Sandboxes {
			objs[i] = store.Object{Sandbox: sb}
		}
		return objs
	}
	leaderSt, leader := open()
	if _, err := leaderSt.Apply(b.Context(), load(1000, "alpine:3.20"), store.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := leader.CatchUp(b.Context(), "owner"); err != nil {
		b.Fatal(err)
	}
	one := [][]store.Object{load(1, "alpine:3.19"), load(1, "alpine:3.20")}
	for _, mode := range []string{"incremental", "full"} {
		b.Run(mode, func(b *testing.B) {
			_, follower := open()
			if _, err := follower.Pull(b.Context(), true); err != nil {
				b.Fatal(err)
			}
			var i int
			for b.Loop() {
				b.StopTimer()
				res, err := leaderSt.Apply(b.Context(), one[i%2], store.ApplyOptions{})
				i++
				if err != nil {
					b.Fatal(err)
				}
				if err := leader.Push(b.Context(), []string{res.Objects[0].Key}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				listed, idx, err := follower.list(b.Context(), 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				if err := follower.pullListed(b.Context(), listed, idx, mode == "full", true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
