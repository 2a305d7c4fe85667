package reconcile

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Default backoff bounds of a Queue, the same as client-go's per-item
// limiter except for the cap: five minutes keeps a broken sandbox visible
// in the logs without hammering Nomad.
const (
	DefaultBaseDelay = 5 * time.Millisecond
	DefaultMaxDelay  = 5 * time.Minute
)

// QueueOptions tune a Queue. The zero value is usable.
type QueueOptions struct {
	// BaseDelay is the backoff before the first retry of a key; each
	// further AddRateLimited without a Forget doubles it. Zero means
	// DefaultBaseDelay.
	BaseDelay time.Duration
	// MaxDelay caps the backoff. Zero means DefaultMaxDelay.
	MaxDelay time.Duration
	// Now reads the clock for deadlines and measurements. Nil means
	// time.Now. Delays themselves run on time package timers, so tests
	// control both through testing/synctest.
	Now func() time.Time
	// Rand returns a uniform value in [0, n) for the backoff jitter; it is
	// only called with n >= 1. Nil means math/rand/v2's Int64N.
	Rand func(n int64) int64
	// Metrics receives the queue's measurements. Nil means none.
	Metrics QueueMetrics
}

// QueueMetrics receives a Queue's measurements, shaped so the controller
// can back each call with a Prometheus gauge, counter or histogram
// without this package importing a metrics library. Keys are not passed:
// they would make unbounded label sets.
//
// The queue calls these methods with its lock held, so that gauge updates
// arrive in order; they must be quick and must not call back into the
// queue.
type QueueMetrics interface {
	// Depth reports the number of keys ready for a worker after each
	// change; delayed keys are not counted until they are due.
	Depth(n int)
	// Added counts an Add (direct or from a due AddAfter) that marked a key
	// for processing. An Add of a key already waiting is not counted.
	Added()
	// Retried counts a call of AddRateLimited.
	Retried()
	// QueueLatency observes how long a key sat ready before Get handed it
	// to a worker.
	QueueLatency(d time.Duration)
	// WorkDuration observes the time between Get and Done for a key.
	WorkDuration(d time.Duration)
}

// NopQueueMetrics discards every measurement.
type NopQueueMetrics struct{}

func (NopQueueMetrics) Depth(int)                  {}
func (NopQueueMetrics) Added()                     {}
func (NopQueueMetrics) Retried()                   {}
func (NopQueueMetrics) QueueLatency(time.Duration) {}
func (NopQueueMetrics) WorkDuration(time.Duration) {}

// Queue is the controller's work queue. It holds keys ("namespace/name"),
// never objects: a worker re-reads the current state of whatever a key
// names, so adding a key twice before it is processed means one
// reconcile, not two.
//
// It follows client-go's rate-limited work queue:
//   - Add of a key that is already waiting is a no-op.
//   - A key is handed to one worker at a time. Added again while a worker
//     holds it, the key is marked dirty and queued again only when that
//     worker calls Done, so the later change is never lost and never
//     reconciled concurrently.
//   - Ready keys come out in the order they became ready.
//   - AddAfter holds a key back; a second AddAfter of the same key keeps
//     the earlier deadline. All delayed keys share one timer.
//   - AddRateLimited delays by the key's exponential backoff, which Forget
//     resets.
//
// After ShutDown, Get returns ok=false at once, even if keys are still
// queued, and Add, AddAfter and AddRateLimited do nothing. Workers finish
// the key they hold and call Done. Dropping the queued keys is safe
// because the controller is level-triggered: on the next start it lists
// every sandbox and queues them all again.
type Queue struct {
	baseDelay time.Duration
	maxDelay  time.Duration
	now       func() time.Time
	rand      func(n int64) int64
	metrics   QueueMetrics

	mu   sync.Mutex
	cond sync.Cond // signalled when ready gains a key or on shutdown

	ready      fifo
	dirty      map[string]struct{}  // keys in ready, or held and added again
	processing map[string]time.Time // keys held by a worker, with Get's time

	waiting  delayHeap
	waitSeq  uint64 // orders delayed keys with the same deadline
	timer    *time.Timer
	timerAt  time.Time // deadline the timer is armed for; zero when not armed
	failures map[string]int

	shuttingDown bool
}

type readyKey struct {
	key   string
	since time.Time
}

// fifo is a slice queue that reuses its array: popping advances head, and
// a push that would grow the array first slides the live items down if
// at least half of it is spent.
type fifo struct {
	items []readyKey
	head  int
}

func (f *fifo) len() int { return len(f.items) - f.head }

func (f *fifo) push(k readyKey) {
	if len(f.items) == cap(f.items) && f.head > 0 && f.head >= len(f.items)/2 {
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items = f.items[:n]
		f.head = 0
	}
	f.items = append(f.items, k)
}

func (f *fifo) pop() readyKey {
	k := f.items[f.head]
	f.items[f.head] = readyKey{}
	f.head++
	if f.head == len(f.items) {
		f.items = f.items[:0]
		f.head = 0
	}
	return k
}

// NewQueue returns an empty Queue.
func NewQueue(opts QueueOptions) *Queue {
	q := &Queue{
		baseDelay:  opts.BaseDelay,
		maxDelay:   opts.MaxDelay,
		now:        opts.Now,
		rand:       opts.Rand,
		metrics:    opts.Metrics,
		dirty:      make(map[string]struct{}),
		processing: make(map[string]time.Time),
		failures:   make(map[string]int),
		waiting:    delayHeap{index: make(map[string]*delayedKey)},
	}
	if q.baseDelay <= 0 {
		q.baseDelay = DefaultBaseDelay
	}
	if q.maxDelay <= 0 {
		q.maxDelay = DefaultMaxDelay
	}
	if q.now == nil {
		q.now = time.Now
	}
	if q.rand == nil {
		q.rand = rand.Int64N
	}
	if q.metrics == nil {
		q.metrics = NopQueueMetrics{}
	}
	q.cond.L = &q.mu
	return q
}

// Add queues key for processing unless it is already waiting.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue) addLocked(key string) {
	if q.shuttingDown {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	q.dirty[key] = struct{}{}
	q.metrics.Added()
	if _, ok := q.processing[key]; ok {
		return // Done queues it again
	}
	q.pushReadyLocked(key)
}

func (q *Queue) pushReadyLocked(key string) {
	q.ready.push(readyKey{key: key, since: q.now()})
	q.metrics.Depth(q.ready.len())
	q.cond.Signal()
}

// Get blocks until a key is ready and hands it to the caller, who must
// call Done with it when finished. ok is false once ctx is done or the
// queue is shut down.
func (q *Queue) Get(ctx context.Context) (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ready.len() == 0 && !q.shuttingDown && ctx.Err() == nil {
		if ctx.Done() != nil {
			// sync.Cond cannot select on a channel; wake every waiter when
			// ctx ends and let each one check its own ctx.
			stop := context.AfterFunc(ctx, func() {
				q.mu.Lock()
				defer q.mu.Unlock()
				q.cond.Broadcast()
			})
			defer stop()
		}
		for q.ready.len() == 0 && !q.shuttingDown && ctx.Err() == nil {
			q.cond.Wait()
		}
	}
	if q.shuttingDown {
		return "", false
	}
	if ctx.Err() != nil {
		if q.ready.len() > 0 {
			// The Signal that woke us may have been meant for a key; pass
			// it on to a worker that can take it.
			q.cond.Signal()
		}
		return "", false
	}

	item := q.ready.pop()
	now := q.now()
	q.processing[item.key] = now
	delete(q.dirty, item.key)
	q.metrics.Depth(q.ready.len())
	q.metrics.QueueLatency(now.Sub(item.since))
	return item.key, true
}

// Done tells the queue that the worker holding key has finished with it.
// If key was added while held, it is queued again now. Done of a key
// that is not held does nothing.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	start, ok := q.processing[key]
	if !ok {
		return
	}
	delete(q.processing, key)
	q.metrics.WorkDuration(q.now().Sub(start))
	if _, ok := q.dirty[key]; ok && !q.shuttingDown {
		q.pushReadyLocked(key)
	}
}

// AddAfter adds key once d has passed, or at once if d <= 0. If key is
// already delayed, the earlier of the two deadlines is kept.
func (q *Queue) AddAfter(key string, d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addAfterLocked(key, d)
}

func (q *Queue) addAfterLocked(key string, d time.Duration) {
	if q.shuttingDown {
		return
	}
	if d <= 0 {
		q.addLocked(key)
		return
	}
	at := q.now().Add(d)
	if dk, ok := q.waiting.index[key]; ok {
		if at.Before(dk.at) {
			dk.at = at
			heap.Fix(&q.waiting, dk.pos)
		}
	} else {
		q.waitSeq++
		heap.Push(&q.waiting, &delayedKey{key: key, at: at, seq: q.waitSeq})
	}
	q.armLocked()
}

// AddRateLimited adds key after its backoff and counts a retry of it.
//
// The backoff before the n-th retry since the last Forget (n from 1) is
// d = min(MaxDelay, BaseDelay * 2^(n-1)) with equal jitter: a uniform
// value in [d/2, d]. Equal rather than full jitter keeps a floor of d/2,
// so a key that keeps failing cannot come back almost at once; spreading
// the load on Nomad across keys is the WriteLimiter's job.
func (q *Queue) AddRateLimited(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shuttingDown {
		return
	}
	n := q.failures[key]
	q.failures[key] = n + 1
	q.metrics.Retried()
	q.addAfterLocked(key, q.backoff(n))
}

// backoff returns the jittered delay after n earlier retries.
func (q *Queue) backoff(n int) time.Duration {
	d := min(q.baseDelay, q.maxDelay)
	for range n {
		if d > q.maxDelay/2 {
			d = q.maxDelay
			break
		}
		d *= 2
	}
	half := d / 2
	return d - half + time.Duration(q.rand(int64(half)+1))
}

// Forget clears key's retry count, so its next AddRateLimited waits
// BaseDelay again. Call it when a reconcile succeeds. A delayed add that
// is already pending still happens.
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// NumRequeues returns the number of AddRateLimited calls for key since
// its last Forget.
func (q *Queue) NumRequeues(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Len returns the number of keys ready for a worker. Delayed keys and
// keys held by workers are not counted.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ready.len()
}

// ShutDown stops the queue: blocked and later Gets return ok=false, the
// queued and delayed keys are dropped and adds are ignored. Workers still
// call Done for the key they hold. It is safe to call more than once.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shuttingDown {
		return
	}
	q.shuttingDown = true
	if q.timer != nil {
		q.timer.Stop()
		q.timerAt = time.Time{}
	}
	clear(q.waiting.index)
	q.waiting.items = nil
	q.ready = fifo{}
	q.metrics.Depth(0)
	q.cond.Broadcast()
}

// armLocked points the shared timer at the earliest delayed key.
func (q *Queue) armLocked() {
	if len(q.waiting.items) == 0 {
		if q.timer != nil && !q.timerAt.IsZero() {
			q.timer.Stop()
			q.timerAt = time.Time{}
		}
		return
	}
	next := q.waiting.items[0].at
	if next.Equal(q.timerAt) {
		return
	}
	d := next.Sub(q.now())
	if q.timer == nil {
		q.timer = time.AfterFunc(d, q.fire)
	} else {
		q.timer.Reset(d)
	}
	q.timerAt = next
}

// fire moves every due key from the delay heap to the ready queue. A
// stale firing after a Reset finds nothing due and only re-arms.
func (q *Queue) fire() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shuttingDown {
		return
	}
	q.timerAt = time.Time{}
	now := q.now()
	for len(q.waiting.items) > 0 && !q.waiting.items[0].at.After(now) {
		dk := heap.Pop(&q.waiting).(*delayedKey)
		q.addLocked(dk.key)
	}
	q.armLocked()
}

type delayedKey struct {
	key string
	at  time.Time
	seq uint64
	pos int
}

// delayHeap orders delayed keys by deadline, then by when they were
// delayed, and indexes them by key so a second AddAfter finds the first.
type delayHeap struct {
	items []*delayedKey
	index map[string]*delayedKey
}

func (h *delayHeap) Len() int { return len(h.items) }

func (h *delayHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if !a.at.Equal(b.at) {
		return a.at.Before(b.at)
	}
	return a.seq < b.seq
}

func (h *delayHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].pos = i
	h.items[j].pos = j
}

func (h *delayHeap) Push(x any) {
	dk := x.(*delayedKey)
	dk.pos = len(h.items)
	h.items = append(h.items, dk)
	h.index[dk.key] = dk
}

func (h *delayHeap) Pop() any {
	n := len(h.items) - 1
	dk := h.items[n]
	h.items[n] = nil
	h.items = h.items[:n]
	delete(h.index, dk.key)
	return dk
}
