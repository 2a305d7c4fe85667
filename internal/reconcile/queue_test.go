package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
)

// advance lets d pass on the bubble's fake clock: inside synctest it
// returns as soon as every goroutine in the bubble is blocked.
func advance(d time.Duration) { <-time.After(d) }

// drain takes keys until none arrives for a minute of fake time, calling
// Done on each, and returns them with the fake time they came out at.
func drain(t *testing.T, q *reconcile.Queue, start time.Time) []got {
	t.Helper()
	var out []got
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		key, ok := q.Get(ctx)
		cancel()
		if !ok {
			return out
		}
		out = append(out, got{Key: key, At: time.Since(start)})
		q.Done(key)
	}
}

type got struct {
	Key string
	At  time.Duration
}

func maxRand(n int64) int64 { return n - 1 }
func minRand(int64) int64   { return 0 }

func TestQueueAddDeduplicatesAndKeepsOrder(t *testing.T) {
	tests := []struct {
		name string
		adds []string
		want []string
	}{
		{
			name: "keys come out in the order they were added",
			adds: []string{"ns/c", "ns/a", "ns/b"},
			want: []string{"ns/c", "ns/a", "ns/b"},
		},
		{
			name: "a key already waiting is not added twice",
			adds: []string{"ns/a", "ns/b", "ns/a", "ns/c", "ns/b", "ns/a"},
			want: []string{"ns/a", "ns/b", "ns/c"},
		},
		{
			name: "nothing added gives nothing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := reconcile.NewQueue(reconcile.QueueOptions{})
				for _, k := range tt.adds {
					q.Add(k)
				}
				if got := q.Len(); got != len(tt.want) {
					t.Errorf("Len() = %d, want %d", got, len(tt.want))
				}
				var keys []string
				for _, g := range drain(t, q, time.Now()) {
					keys = append(keys, g.Key)
				}
				if diff := cmp.Diff(tt.want, keys); diff != "" {
					t.Errorf("keys (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestQueueKeepsOrderAcrossRefills interleaves adds and gets so the ready
// queue's array is reused and compacted, and checks order against a
// plain slice.
func TestQueueKeepsOrderAcrossRefills(t *testing.T) {
	q := reconcile.NewQueue(reconcile.QueueOptions{})
	var model []string
	next := 0
	for round, batch := range []struct{ adds, gets int }{
		{adds: 10, gets: 3}, {adds: 1, gets: 6}, {adds: 40, gets: 30},
		{adds: 5, gets: 17}, {adds: 100, gets: 1}, {adds: 3, gets: 102},
	} {
		for range batch.adds {
			k := fmt.Sprintf("ns/k%d", next)
			next++
			q.Add(k)
			model = append(model, k)
		}
		for i := range batch.gets {
			key, ok := q.Get(t.Context())
			if !ok || key != model[0] {
				t.Fatalf("round %d, get %d: Get() = %q, %v; want %q, true", round, i, key, ok, model[0])
			}
			model = model[1:]
			q.Done(key)
		}
		if n := q.Len(); n != len(model) {
			t.Fatalf("round %d: Len() = %d, want %d", round, n, len(model))
		}
	}
}

func TestQueueAddWhileHeldRequeuesOnDone(t *testing.T) {
	tests := []struct {
		name         string
		addsWhenHeld int
		wantAgain    bool
	}{
		{name: "not added while held is not seen again", addsWhenHeld: 0, wantAgain: false},
		{name: "added once while held is seen once more", addsWhenHeld: 1, wantAgain: true},
		{name: "added three times while held is seen once more", addsWhenHeld: 3, wantAgain: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := reconcile.NewQueue(reconcile.QueueOptions{})
				q.Add("ns/a")
				key, ok := q.Get(t.Context())
				if !ok || key != "ns/a" {
					t.Fatalf("Get() = %q, %v; want ns/a, true", key, ok)
				}
				for range tt.addsWhenHeld {
					q.Add("ns/a")
				}
				if n := q.Len(); n != 0 {
					t.Errorf("Len() while held = %d, want 0", n)
				}

				// A second worker must not get the key while the first holds it.
				second := make(chan string, 1)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				go func() {
					k, _ := q.Get(ctx)
					second <- k
				}()
				synctest.Wait()
				select {
				case k := <-second:
					t.Fatalf("second worker got %q while the first held it", k)
				default:
				}

				q.Done("ns/a")
				synctest.Wait()
				select {
				case k := <-second:
					if !tt.wantAgain {
						t.Fatalf("second worker got %q, want nothing", k)
					}
					if k != "ns/a" {
						t.Fatalf("second worker got %q, want ns/a", k)
					}
					q.Done(k)
				default:
					if tt.wantAgain {
						t.Fatal("key added while held was not queued again on Done")
					}
					cancel()
					<-second
				}
				if n := q.Len(); n != 0 {
					t.Errorf("Len() at end = %d, want 0", n)
				}
			})
		})
	}
}

// TestQueueOneWorkerPerKey runs many workers against many adds of a few
// keys, checks that no key is ever held by two workers, and that every
// key was processed after its last add (no change is lost).
func TestQueueOneWorkerPerKey(t *testing.T) {
	const (
		workers   = 8
		producers = 4
		keys      = 5
		addsEach  = 300
	)
	synctest.Test(t, func(t *testing.T) {
		q := reconcile.NewQueue(reconcile.QueueOptions{})
		var (
			held      [keys]atomic.Int32
			added     [keys]atomic.Int64 // generation bumped before each Add
			seen      [keys]atomic.Int64 // generation read at each Get
			processed atomic.Int64
		)
		index := func(key string) int {
			var i int
			fmt.Sscanf(key, "ns/k%d", &i)
			return i
		}

		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					key, ok := q.Get(ctx)
					if !ok {
						return
					}
					i := index(key)
					if n := held[i].Add(1); n != 1 {
						t.Errorf("%s held by %d workers at once", key, n)
					}
					seen[i].Store(added[i].Load())
					runtime.Gosched()
					processed.Add(1)
					held[i].Add(-1)
					q.Done(key)
				}
			})
		}
		var producersWG sync.WaitGroup
		for p := range producers {
			producersWG.Go(func() {
				for n := range addsEach {
					i := (p + n) % keys
					added[i].Add(1)
					q.Add(fmt.Sprintf("ns/k%d", i))
					if n%7 == 0 {
						runtime.Gosched()
					}
				}
			})
		}
		producersWG.Wait()
		synctest.Wait() // every worker is blocked in Get: the queue is idle
		cancel()
		wg.Wait()

		for i := range keys {
			if s, a := seen[i].Load(), added[i].Load(); s != a {
				t.Errorf("ns/k%d last processed at generation %d, last added at %d", i, s, a)
			}
		}
		if processed.Load() == 0 {
			t.Error("nothing was processed")
		}
	})
}

func TestQueueAddAfter(t *testing.T) {
	type add struct {
		key   string
		after time.Duration
	}
	tests := []struct {
		name string
		adds []add
		want []got
	}{
		{
			name: "keys come out in deadline order",
			adds: []add{{"ns/a", 3 * time.Second}, {"ns/b", time.Second}, {"ns/c", 2 * time.Second}},
			want: []got{{"ns/b", time.Second}, {"ns/c", 2 * time.Second}, {"ns/a", 3 * time.Second}},
		},
		{
			name: "a later second deadline is ignored",
			adds: []add{{"ns/a", time.Second}, {"ns/a", 5 * time.Second}},
			want: []got{{"ns/a", time.Second}},
		},
		{
			name: "an earlier second deadline wins",
			adds: []add{{"ns/a", 5 * time.Second}, {"ns/a", time.Second}},
			want: []got{{"ns/a", time.Second}},
		},
		{
			name: "equal deadlines keep add order",
			adds: []add{{"ns/x", time.Second}, {"ns/y", time.Second}, {"ns/z", time.Second}},
			want: []got{{"ns/x", time.Second}, {"ns/y", time.Second}, {"ns/z", time.Second}},
		},
		{
			name: "zero or negative delay adds at once",
			adds: []add{{"ns/b", time.Second}, {"ns/a", 0}, {"ns/c", -time.Second}},
			want: []got{{"ns/a", 0}, {"ns/c", 0}, {"ns/b", time.Second}},
		},
		{
			name: "a pending delay still fires after an immediate add",
			adds: []add{{"ns/a", time.Second}, {"ns/a", 0}},
			want: []got{{"ns/a", 0}, {"ns/a", time.Second}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := reconcile.NewQueue(reconcile.QueueOptions{})
				start := time.Now()
				for _, a := range tt.adds {
					q.AddAfter(a.key, a.after)
				}
				if diff := cmp.Diff(tt.want, drain(t, q, start)); diff != "" {
					t.Errorf("keys (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestQueueAddAfterEarlierDeadlineWhileTimerArmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := reconcile.NewQueue(reconcile.QueueOptions{})
		start := time.Now()
		q.AddAfter("ns/late", 10*time.Second)
		advance(2 * time.Second)
		q.AddAfter("ns/early", time.Second) // due at 3s, before the armed 10s
		want := []got{{"ns/early", 3 * time.Second}, {"ns/late", 10 * time.Second}}
		if diff := cmp.Diff(want, drain(t, q, start)); diff != "" {
			t.Errorf("keys (-want +got):\n%s", diff)
		}
	})
}

// retryDelays calls AddRateLimited n times on one key and returns how long
// each took to come out, checking NumRequeues along the way.
func retryDelays(t *testing.T, q *reconcile.Queue, key string, n int) []time.Duration {
	t.Helper()
	var out []time.Duration
	for i := range n {
		start := time.Now()
		q.AddRateLimited(key)
		if got := q.NumRequeues(key); got != i+1 {
			t.Errorf("NumRequeues after %d retries = %d", i+1, got)
		}
		k, ok := q.Get(t.Context())
		if !ok || k != key {
			t.Fatalf("Get() = %q, %v; want %q, true", k, ok, key)
		}
		out = append(out, time.Since(start))
		q.Done(k)
	}
	return out
}

func TestQueueRateLimitedBackoff(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		opts reconcile.QueueOptions
		n    int
		want []time.Duration
	}{
		{
			name: "doubles up to the cap at the top of the jitter",
			opts: reconcile.QueueOptions{BaseDelay: 10 * ms, MaxDelay: 100 * ms, Rand: maxRand},
			n:    6,
			want: []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 100 * ms, 100 * ms},
		},
		{
			name: "halves at the bottom of the jitter",
			opts: reconcile.QueueOptions{BaseDelay: 10 * ms, MaxDelay: 100 * ms, Rand: minRand},
			n:    6,
			want: []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms},
		},
		{
			name: "defaults start at 5ms",
			opts: reconcile.QueueOptions{Rand: maxRand},
			n:    3,
			want: []time.Duration{5 * ms, 10 * ms, 20 * ms},
		},
		{
			name: "defaults cap at 5m",
			opts: reconcile.QueueOptions{Rand: maxRand},
			n:    19,
			want: []time.Duration{
				5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms,
				1280 * ms, 2560 * ms, 5120 * ms, 10240 * ms, 20480 * ms, 40960 * ms,
				81920 * ms, 163840 * ms, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute,
			},
		},
		{
			name: "a base above the cap is capped",
			opts: reconcile.QueueOptions{BaseDelay: time.Second, MaxDelay: 100 * ms, Rand: maxRand},
			n:    2,
			want: []time.Duration{100 * ms, 100 * ms},
		},
		{
			name: "many retries do not overflow",
			opts: reconcile.QueueOptions{BaseDelay: time.Nanosecond, MaxDelay: time.Hour, Rand: maxRand},
			n:    70,
			want: func() []time.Duration {
				var d []time.Duration
				for i := range 70 {
					d = append(d, min(time.Duration(1)<<min(i, 62), time.Hour))
				}
				return d
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := reconcile.NewQueue(tt.opts)
				if diff := cmp.Diff(tt.want, retryDelays(t, q, "ns/a", tt.n)); diff != "" {
					t.Errorf("delays (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestQueueJitterStaysWithinHalfAndFullDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var asked []int64
		q := reconcile.NewQueue(reconcile.QueueOptions{
			BaseDelay: time.Millisecond,
			MaxDelay:  time.Second,
			Rand: func(n int64) int64 {
				asked = append(asked, n)
				return int64(len(asked)*7919) % n // deterministic, spread over [0, n)
			},
		})
		delays := retryDelays(t, q, "ns/a", 40)
		for i, d := range delays {
			full := min(time.Millisecond<<min(i, 20), time.Second)
			if d < full/2 || d > full {
				t.Errorf("retry %d waited %v, want within [%v, %v]", i+1, d, full/2, full)
			}
			if want := int64(full/2) + 1; asked[i] != want {
				t.Errorf("retry %d asked Rand for n=%d, want %d", i+1, asked[i], want)
			}
		}
	})
}

func TestQueueDefaultRandStaysInBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := reconcile.NewQueue(reconcile.QueueOptions{BaseDelay: time.Second, MaxDelay: time.Second})
		for i, d := range retryDelays(t, q, "ns/a", 200) {
			if d < 500*time.Millisecond || d > time.Second {
				t.Fatalf("retry %d waited %v, want within [500ms, 1s]", i+1, d)
			}
		}
	})
}

func TestQueueForget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := reconcile.NewQueue(reconcile.QueueOptions{BaseDelay: 10 * time.Millisecond, Rand: maxRand})
		retryDelays(t, q, "ns/a", 3)
		retryDelays(t, q, "ns/b", 1)

		q.Forget("ns/a")
		if n := q.NumRequeues("ns/a"); n != 0 {
			t.Errorf("NumRequeues after Forget = %d, want 0", n)
		}
		if n := q.NumRequeues("ns/b"); n != 1 {
			t.Errorf("NumRequeues of another key after Forget = %d, want 1", n)
		}
		delays := retryDelays(t, q, "ns/a", 1)
		if diff := cmp.Diff([]time.Duration{10 * time.Millisecond}, delays); diff != "" {
			t.Errorf("delay after Forget (-want +got):\n%s", diff)
		}

		// Forget resets the count, not a retry that is already pending.
		start := time.Now()
		q.AddRateLimited("ns/c")
		q.Forget("ns/c")
		want := []got{{"ns/c", 10 * time.Millisecond}}
		if diff := cmp.Diff(want, drain(t, q, start)); diff != "" {
			t.Errorf("pending retry after Forget (-want +got):\n%s", diff)
		}
	})
}

func TestQueueShutDown(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, q *reconcile.Queue)
	}{
		{
			name: "unblocks a waiting Get",
			run: func(t *testing.T, q *reconcile.Queue) {
				done := make(chan bool)
				go func() {
					_, ok := q.Get(context.Background())
					done <- ok
				}()
				synctest.Wait()
				q.ShutDown()
				if ok := <-done; ok {
					t.Error("Get after ShutDown returned ok=true")
				}
			},
		},
		{
			name: "drops queued keys",
			run: func(t *testing.T, q *reconcile.Queue) {
				q.Add("ns/a")
				q.Add("ns/b")
				q.ShutDown()
				if key, ok := q.Get(t.Context()); ok {
					t.Errorf("Get after ShutDown = %q, true; want false", key)
				}
				if n := q.Len(); n != 0 {
					t.Errorf("Len() = %d, want 0", n)
				}
			},
		},
		{
			name: "ignores later adds",
			run: func(t *testing.T, q *reconcile.Queue) {
				q.ShutDown()
				q.Add("ns/a")
				q.AddAfter("ns/b", time.Second)
				q.AddRateLimited("ns/c")
				advance(time.Minute)
				if n := q.Len(); n != 0 {
					t.Errorf("Len() = %d, want 0", n)
				}
				if n := q.NumRequeues("ns/c"); n != 0 {
					t.Errorf("NumRequeues = %d, want 0", n)
				}
			},
		},
		{
			name: "drops delayed keys",
			run: func(t *testing.T, q *reconcile.Queue) {
				q.AddAfter("ns/a", time.Second)
				q.AddRateLimited("ns/b")
				q.ShutDown()
				advance(time.Minute)
				if n := q.Len(); n != 0 {
					t.Errorf("Len() = %d, want 0", n)
				}
			},
		},
		{
			name: "lets a held key finish without queueing it again",
			run: func(t *testing.T, q *reconcile.Queue) {
				q.Add("ns/a")
				key, _ := q.Get(t.Context())
				q.Add(key)
				q.ShutDown()
				q.Done(key)
				if n := q.Len(); n != 0 {
					t.Errorf("Len() = %d, want 0", n)
				}
			},
		},
		{
			name: "is safe to call twice",
			run: func(t *testing.T, q *reconcile.Queue) {
				q.ShutDown()
				q.ShutDown()
				if _, ok := q.Get(t.Context()); ok {
					t.Error("Get returned ok=true")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tt.run(t, reconcile.NewQueue(reconcile.QueueOptions{}))
			})
		})
	}
}

func TestQueueGetStopsWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := reconcile.NewQueue(reconcile.QueueOptions{})

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		if key, ok := q.Get(ctx); ok {
			t.Fatalf("Get() = %q, true; want false", key)
		}
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("Get waited %v, want 1s", waited)
		}

		// A done context wins over a ready key, and the key stays queued.
		q.Add("ns/a")
		if key, ok := q.Get(ctx); ok {
			t.Errorf("Get(done ctx) = %q, true; want false", key)
		}
		if key, ok := q.Get(t.Context()); !ok || key != "ns/a" {
			t.Errorf("Get() = %q, %v; want ns/a, true", key, ok)
		}
	})
}

// TestQueueWakesAnotherWorkerWhenOneLeaves checks that a key added as a
// waiting worker's context ends is not stranded while another worker waits.
func TestQueueWakesAnotherWorkerWhenOneLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := reconcile.NewQueue(reconcile.QueueOptions{})
		leaving, leave := context.WithCancel(t.Context())
		left := make(chan string, 1)
		go func() {
			k, _ := q.Get(leaving)
			left <- k
		}()
		synctest.Wait()
		staying, stop := context.WithCancel(t.Context())
		stayed := make(chan string, 1)
		go func() {
			k, _ := q.Get(staying)
			stayed <- k
		}()
		synctest.Wait()

		// The key's wake-up may reach the leaving worker, which must pass
		// it on rather than strand the key.
		q.Add("ns/a")
		leave()
		synctest.Wait()
		got := []string{<-left}
		select {
		case k := <-stayed:
			got = append(got, k)
		default:
			stop()
			got = append(got, <-stayed)
		}
		stop()
		want := [][]string{{"ns/a", ""}, {"", "ns/a"}}
		if !cmp.Equal(got, want[0]) && !cmp.Equal(got, want[1]) {
			t.Errorf("leaving and staying workers got %q, want exactly one ns/a", got)
		}
		if n := q.Len(); n != 0 {
			t.Errorf("Len() = %d, want 0", n)
		}
	})
}

type metricsEvent struct {
	Name string
	N    int
	D    time.Duration
}

type recordedMetrics struct {
	mu     sync.Mutex
	events []metricsEvent
}

func (m *recordedMetrics) record(e metricsEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, e)
}

func (m *recordedMetrics) take() []metricsEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.events
	m.events = nil
	return e
}

func (m *recordedMetrics) Depth(n int) { m.record(metricsEvent{Name: "depth", N: n}) }
func (m *recordedMetrics) Added()      { m.record(metricsEvent{Name: "added"}) }
func (m *recordedMetrics) Retried()    { m.record(metricsEvent{Name: "retried"}) }
func (m *recordedMetrics) QueueLatency(d time.Duration) {
	m.record(metricsEvent{Name: "latency", D: d})
}
func (m *recordedMetrics) WorkDuration(d time.Duration) { m.record(metricsEvent{Name: "work", D: d}) }

func TestQueueMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &recordedMetrics{}
		q := reconcile.NewQueue(reconcile.QueueOptions{
			BaseDelay: 10 * time.Millisecond,
			Rand:      maxRand,
			Metrics:   m,
		})
		get := func(want string) {
			t.Helper()
			if key, ok := q.Get(t.Context()); !ok || key != want {
				t.Fatalf("Get() = %q, %v; want %q, true", key, ok, want)
			}
		}
		depth := func(n int) metricsEvent { return metricsEvent{Name: "depth", N: n} }
		added := metricsEvent{Name: "added"}
		retried := metricsEvent{Name: "retried"}
		latency := func(d time.Duration) metricsEvent { return metricsEvent{Name: "latency", D: d} }
		work := func(d time.Duration) metricsEvent { return metricsEvent{Name: "work", D: d} }

		steps := []struct {
			name string
			do   func()
			want []metricsEvent
		}{
			{
				name: "add counts and raises depth",
				do:   func() { q.Add("ns/a") },
				want: []metricsEvent{added, depth(1)},
			},
			{
				name: "deduplicated add records nothing",
				do:   func() { q.Add("ns/a") },
			},
			{
				name: "second key",
				do:   func() { q.Add("ns/b") },
				want: []metricsEvent{added, depth(2)},
			},
			{
				name: "get lowers depth and observes time in queue",
				do:   func() { advance(2 * time.Second); get("ns/a") },
				want: []metricsEvent{depth(1), latency(2 * time.Second)},
			},
			{
				name: "add while held counts without changing depth",
				do:   func() { q.Add("ns/a") },
				want: []metricsEvent{added},
			},
			{
				name: "done observes work time and requeues the dirty key",
				do:   func() { advance(3 * time.Second); q.Done("ns/a") },
				want: []metricsEvent{work(3 * time.Second), depth(2)},
			},
			{
				name: "time in queue runs from when the key became ready",
				do:   func() { advance(time.Second); get("ns/b"); get("ns/a") },
				want: []metricsEvent{depth(1), latency(6 * time.Second), depth(0), latency(time.Second)},
			},
			{
				name: "done of a clean key does not requeue",
				do:   func() { q.Done("ns/a"); advance(time.Second); q.Done("ns/b") },
				want: []metricsEvent{work(0), work(time.Second)},
			},
			{
				name: "done of a key not held records nothing",
				do:   func() { q.Done("ns/a") },
			},
			{
				name: "rate-limited add counts a retry, then an add when due",
				do:   func() { q.AddRateLimited("ns/c"); get("ns/c") },
				want: []metricsEvent{retried, added, depth(1), depth(0), latency(0)},
			},
			{
				name: "shut down empties the queue",
				do:   func() { q.Add("ns/d"); q.ShutDown() },
				want: []metricsEvent{added, depth(1), depth(0)},
			},
		}
		for _, s := range steps {
			s.do()
			if diff := cmp.Diff(s.want, m.take()); diff != "" {
				t.Errorf("%s: metrics (-want +got):\n%s", s.name, diff)
			}
		}
	})
}

func TestQueueNopMetricsIsAQueueMetrics(t *testing.T) {
	var _ reconcile.QueueMetrics = reconcile.NopQueueMetrics{}
}

func TestQueueWriteLimiter(t *testing.T) {
	tests := []struct {
		name      string
		perSecond float64
		burst     int
		writes    int
		want      time.Duration
	}{
		{name: "spaces writes after the burst", perSecond: 10, burst: 1, writes: 3, want: 200 * time.Millisecond},
		{name: "a burst goes at once", perSecond: 10, burst: 3, writes: 4, want: 100 * time.Millisecond},
		{name: "zero burst means one", perSecond: 5, burst: 0, writes: 2, want: 200 * time.Millisecond},
		{name: "zero rate is unlimited", perSecond: 0, burst: 0, writes: 1000, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := reconcile.NewWriteLimiter(tt.perSecond, tt.burst)
				start := time.Now()
				for range tt.writes {
					if err := w.Wait(t.Context()); err != nil {
						t.Fatalf("Wait: %v", err)
					}
				}
				if got := time.Since(start); got != tt.want {
					t.Errorf("%d writes took %v, want %v", tt.writes, got, tt.want)
				}
			})
		})
	}
}

func TestQueueWriteLimiterStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := reconcile.NewWriteLimiter(1, 1)
		if err := w.Wait(t.Context()); err != nil {
			t.Fatalf("first Wait: %v", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := w.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait(cancelled) = %v, want context.Canceled", err)
		}
	})
}
