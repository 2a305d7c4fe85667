package nomad

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// BenchmarkCacheMemoryPerSandbox fills a cache as a converged fleet leaves
// it, each job decoded from its register event as the watcher decodes it,
// with one running allocation carrying a port, and reports the heap taken
// per sandbox: as the controller keeps it (the whole job released once a
// reconcile has looked at it), and, as the baseline, keeping whole jobs.
//
//	go test ./internal/nomad -run '^$' -bench CacheMemory -benchtime 3x -count 3
func BenchmarkCacheMemoryPerSandbox(b *testing.B) {
	const n = 10000
	sb := loadSandbox(b, "testdata/render/ports-bridge.hcl")
	job, err := Render(&sb, testRenderOptions)
	if err != nil {
		b.Fatal(err)
	}
	for _, keep := range []bool{false, true} {
		name := "as kept"
		if keep {
			name = "whole jobs kept"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				c := NewCache(testRenderOptions.Owner)
				c.replace(Listing{Index: 1})
				for i := range n {
					sandbox := fmt.Sprintf("s%05d", i)
					idx := uint64(10 + 3*i)
					j := *job
					j.ID, j.Name = ptr("agentkernel-"+sandbox), ptr("agentkernel-"+sandbox)
					j.Meta = map[string]string{MetaOwner: testRenderOptions.Owner, MetaSandbox: sandbox, MetaSpecHash: job.Meta[MetaSpecHash], MetaManaged: "true"}
					j.Version, j.CreateIndex, j.JobModifyIndex, j.ModifyIndex = ptr(uint64(0)), ptr(idx), ptr(idx), ptr(idx)
					j.Status, j.Stop = ptr("running"), ptr(false)
					raw, err := json.Marshal(&j)
					if err != nil {
						b.Fatal(err)
					}
					var decoded api.Job
					if err := json.Unmarshal(raw, &decoded); err != nil {
						b.Fatal(err)
					}
					c.applyJob("JobRegistered", idx, &decoded)
					c.applyAlloc(&api.Allocation{
						ID: fmt.Sprintf("%08d-0000-0000-0000-000000000000", i), Namespace: "default", JobID: *j.ID, NodeID: "node-1", NodeName: "node-1",
						DesiredStatus: "run", ClientStatus: "running", CreateIndex: idx + 1, ModifyIndex: idx + 2, AllocModifyIndex: idx + 1,
						AllocatedResources: &api.AllocatedResources{Shared: api.AllocatedSharedResources{Networks: []*api.NetworkResource{{
							IP: "10.0.0.1", DynamicPorts: []api.Port{{Label: "http", Value: 20000 + i%1000, To: 8080}},
						}}}},
					})
					if !keep {
						c.Release("default/"+sandbox, idx)
					}
				}
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/sandbox")
				runtime.KeepAlive(c)
			}
		})
	}
}
