package store_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestChurnKeepsTheFileBounded(t *testing.T) {
	cycles := 100_000
	if raceEnabled {
		// One goroutine: the race detector has nothing to find here and
		// makes each cycle about six times slower. The file reaches its
		// steady size within the first few thousand cycles.
		cycles = 10_000
	}
	const live = 100
	// NoSync: this test is about page reuse, not durability, and 300,000
	// fsyncs would take minutes.
	s := openStore(t, store.Options{})
	ctx := t.Context()
	size := func() int64 {
		info, err := os.Stat(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		return info.Size()
	}
	var sizes []int64
	for i := range cycles {
		sb := sandbox("churn", fmt.Sprint("s", i), "img:1", labels("cycle", fmt.Sprint(i)))
		if _, err := s.Apply(ctx, objects(sb), store.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if i >= live {
			key := fmt.Sprint("churn/s", i-live)
			rec, err := s.Delete(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Finalize(ctx, key, rec.ResourceVersion); err != nil {
				t.Fatal(err)
			}
		}
		if (i+1)%(cycles/10) == 0 {
			sizes = append(sizes, size())
		}
	}
	t.Logf("file size every %d cycles: %v", cycles/10, sizes)

	// Measured: the file reaches 4 MiB (bbolt grows it by doubling) while
	// the change feed fills its 10,000-revision window, then stays there
	// because freed pages are reused. Without reuse each cycle's three
	// commits would add some 20 pages, gigabytes in all. The bound allows
	// one more doubling; the second half of the run must not grow it.
	const bound = 8 << 20
	if last := sizes[len(sizes)-1]; last > bound {
		t.Errorf("file is %d bytes after %d cycles, bound %d", last, cycles, bound)
	}
	if mid, last := sizes[len(sizes)/2-1], sizes[len(sizes)-1]; last > mid {
		t.Errorf("file grew from %d to %d bytes over the second half of the run", mid, last)
	}
}
