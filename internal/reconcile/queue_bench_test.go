package reconcile_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
)

// BenchmarkQueueAddGetDone measures one Get, Done and Add of a key with 8
// workers contending for the queue. Each worker adds back the key it just
// finished, so the queue stays full of N distinct keys; with one key the
// workers hand it from one to the next.
func BenchmarkQueueAddGetDone(b *testing.B) {
	const workers = 8
	for _, n := range []int{1, 64, 4096} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			q := reconcile.NewQueue(reconcile.QueueOptions{})
			for i := range n {
				q.Add(fmt.Sprintf("ns/sandbox-%d", i))
			}
			var ops atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			for range workers {
				wg.Go(func() {
					for {
						key, ok := q.Get(context.Background())
						if !ok {
							return
						}
						q.Done(key)
						if ops.Add(1) >= int64(b.N) {
							q.ShutDown()
							return
						}
						q.Add(key)
					}
				})
			}
			wg.Wait()
		})
	}
}
