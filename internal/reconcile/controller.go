package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// FeedStore is what the controller reads of the store to feed the queue.
type FeedStore interface {
	List(ctx context.Context, opts store.ListOptions) ([]store.Record, uint64, error)
	Watch(ctx context.Context, since uint64) (*store.Watcher, error)
}

// NomadWatcher follows Nomad's changes (nomad.Watcher).
type NomadWatcher interface {
	Run(ctx context.Context, sink nomad.WatchSink) error
}

// GCHoldStore keeps a refusal to collect garbage across restarts, and
// what the store knows of Nomad to decide it on (store.Store).
type GCHoldStore interface {
	NomadIndex(ctx context.Context) (uint64, error)
	GCHeld(ctx context.Context) (store.GCHold, bool, error)
	HoldGC(ctx context.Context, h store.GCHold) (store.GCHold, error)
	ReleaseGC(ctx context.Context, atLeast uint64) error
}

// Options wire a Controller.
type Options struct {
	Reconciler *Reconciler
	Queue      *Queue
	Store      FeedStore
	Watcher    NomadWatcher
	Owner      string
	// Workers reconcile in parallel, one key each at a time (default 8).
	Workers int
	// ResyncPeriod re-queues every sandbox and owned job, give or take
	// 10 % jitter, to catch anything a missed event left behind (10 min).
	ResyncPeriod time.Duration
	// ShutdownTimeout bounds how long in-flight reconciles may finish
	// after the controller is asked to stop (10 s).
	ShutdownTimeout time.Duration
	Backoff         nomad.Backoff
	// DisableGC keeps garbage collection off for this run: the desired
	// state it holds is not known to be whole.
	DisableGC bool
	// GCHolds, when set, records a refusal to collect garbage in the
	// store, where it lasts until an operator confirms (ConfirmGC), and
	// checks at start whether the store is behind the jobs it owns. It is
	// for a controller that runs alone: with -ha the replicated copy
	// decides what is whole.
	GCHolds GCHoldStore
	Logger  *slog.Logger
	Metrics *Metrics
	// StallAfter is how long one reconcile may take before the loop
	// counts as stalled (Stalled): every Nomad call it makes is bounded,
	// so a reconcile that takes longer is stuck (5 min).
	StallAfter time.Duration
}

// Controller runs the loop: it feeds keys from the store's change feed,
// Nomad's watcher and a periodic resync into the queue, and N workers
// reconcile them.
type Controller struct {
	o           Options
	initialList atomic.Bool

	gcMu sync.Mutex
	gc   GCState
	// busy holds, per worker, when its current reconcile started, or got
	// its turn at the write limiter; nil while it waits for a key or that
	// turn. time.Time keeps the monotonic reading, so
	// a step of the wall clock is not taken for a stall.
	busy []atomic.Pointer[time.Time]

	// owned is the initial list of owned jobs, and ownedIndex the
	// highest Nomad index on it: what a confirmation covers.
	owned      []string
	ownedIndex uint64
}

// GCState says whether garbage collection is on, and if not, why.
type GCState struct {
	Enabled bool
	// Reason says why it is off ("" while on, or before the initial list).
	Reason string
	// Hold is the recorded refusal an operator may release with
	// ConfirmGC; nil when the refusal cannot be released that way (an
	// incomplete replicated copy) or there is none.
	Hold *store.GCHold
}

// New makes a controller.
func New(o Options) *Controller {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.ResyncPeriod <= 0 {
		o.ResyncPeriod = 10 * time.Minute
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.StallAfter <= 0 {
		o.StallAfter = 5 * time.Minute
	}
	if o.Backoff.Base == 0 {
		o.Backoff = nomad.DefaultBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{o: o, gc: GCState{Reason: "The initial list of owned Nomad jobs is not done yet."},
		busy: make([]atomic.Pointer[time.Time], o.Workers)}
}

// Stalled reports a worker that has been in one reconcile for longer
// than StallAfter: the loop no longer makes progress, and a leader should
// let another instance take over.
func (c *Controller) Stalled() error {
	for i := range c.busy {
		since := c.busy[i].Load()
		if since == nil {
			continue
		}
		if d := time.Since(*since); d > c.o.StallAfter {
			return fmt.Errorf("worker %d has been in one reconcile for %s, longer than %s", i, d.Round(time.Second), c.o.StallAfter)
		}
	}
	return nil
}

// InitialListDone reports whether the owned jobs have been listed once;
// until then the controller is not ready and collects no garbage.
func (c *Controller) InitialListDone() bool { return c.initialList.Load() }

// Run starts up as the controller must: list the jobs it owns (retrying
// while Nomad is unreachable, never giving up), and only then start the
// watchers and the workers. It returns when ctx ends, after in-flight
// reconciles have finished or ShutdownTimeout has passed.
func (c *Controller) Run(ctx context.Context) error {
	o := c.o
	// Workers get a context of their own, so that a stop lets in-flight
	// reconciles finish (bounded by ShutdownTimeout) instead of cutting
	// them mid-write.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// The feeds' context ends with ctx, or when a feed fails: either way
	// the queue shuts down so that the workers return.
	feeds, feedCtx := errgroup.WithContext(ctx)
	stopWork := context.AfterFunc(feedCtx, func() {
		o.Queue.ShutDown()
		if abortNow(feedCtx) {
			cancelWork()
			return
		}
		time.AfterFunc(o.ShutdownTimeout, cancelWork)
	})
	defer stopWork()

	// The watcher lists the owned jobs first (retrying while Nomad cannot
	// be reached, never giving up), and the first list decides garbage
	// collection and what to look at; nothing is reconciled before it,
	// so a worker never mistakes a job it has not listed yet for absent.
	first := make(chan error, 1)
	feeds.Go(func() error { return o.Watcher.Run(feedCtx, queueSink{c: c, first: first}) })
	select {
	case err := <-first:
		if err != nil {
			stopWork()
			cancelWork()
			_ = feeds.Wait()
			return err
		}
	case <-feedCtx.Done():
		stopWork()
		cancelWork()
		if err := feeds.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
	feeds.Go(func() error { return c.feedStore(feedCtx) })
	feeds.Go(func() error { return c.resync(feedCtx) })

	var workers sync.WaitGroup
	for i := range o.Workers {
		workers.Go(func() { c.work(workCtx, i) })
	}
	feedErr := feeds.Wait()
	workers.Wait()
	if feedErr != nil && !errors.Is(feedErr, context.Canceled) {
		return feedErr
	}
	return nil
}

// initialList takes the watcher's first list of the owned jobs: every
// owned job is looked at, and garbage collection decided.
func (c *Controller) initialListed(jobs []*api.JobListStub) error {
	o := c.o
	for _, s := range jobs {
		if key, ok := jobKey(s); ok {
			o.Queue.Add(key)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	declared, _, err := o.Store.List(ctx, store.ListOptions{})
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	if err := c.decideGC(ctx, jobs, declared); err != nil {
		return err
	}
	c.initialList.Store(true)
	o.Logger.Info("initial list done", "owned_jobs", len(jobs), "declared", len(declared))
	return nil
}

// Observed reports whether this run of the loop has looked at the
// sandbox's generation in Nomad: its status is this run's, not one left
// by an earlier run or leader.
func (c *Controller) Observed(key string, generation uint64) bool {
	return c.o.Reconciler.Observed(key, generation)
}

// Requeue asks for a look at key now, ahead of any scheduled recheck or
// backoff: an operator who fixed what made Nomad refuse a job need not
// wait for the next attempt.
func (c *Controller) Requeue(key string) {
	c.o.Queue.Forget(key)
	c.o.Queue.Add(key)
}

// abortNow reports whether ctx ended with a cause other than a plain
// cancel or deadline, lost leadership for instance: in-flight reconciles
// must then stop at once rather than finish.
func abortNow(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded)
}

// work takes keys until the queue shuts down.
func (c *Controller) work(ctx context.Context, worker int) {
	o := c.o
	for {
		key, ok := o.Queue.Get(ctx)
		if !ok {
			return
		}
		start := time.Now()
		c.busy[worker].Store(&start)
		res, err := o.Reconciler.Reconcile(withQueueNotice(ctx, func(waiting bool) {
			if waiting {
				c.busy[worker].Store(nil)
				return
			}
			now := time.Now()
			c.busy[worker].Store(&now)
		}), key)
		c.busy[worker].Store(nil)
		switch {
		case err != nil && errors.Is(err, ErrTerminal):
			o.Metrics.observeReconcile("error", time.Since(start))
			o.Logger.Error("reconcile failed permanently", "sandbox", key, "err", err)
			o.Queue.Forget(key)
		case err != nil:
			// Logged once here, by the worker that decides to retry;
			// deeper code only wraps and returns.
			o.Metrics.observeReconcile("error", time.Since(start))
			o.Logger.Warn("reconcile failed; retrying with backoff", "sandbox", key, "err", err, "requeues", o.Queue.NumRequeues(key))
			o.Queue.AddRateLimited(key)
		case res.RequeueAfter > 0:
			o.Metrics.observeReconcile("requeue_after", time.Since(start))
			o.Queue.Forget(key)
			o.Queue.AddAfter(key, res.RequeueAfter)
		default:
			o.Metrics.observeReconcile("success", time.Since(start))
			o.Queue.Forget(key)
		}
		o.Queue.Done(key)
	}
}

// feedStore queues every sandbox, then every spec change or deletion from
// the change feed. Status and event writes are the controller's own and
// are skipped. A watcher that falls behind the retained feed, or a feed
// compacted between the list and the watch, lists again.
func (c *Controller) feedStore(ctx context.Context) error {
	o := c.o
	for ctx.Err() == nil {
		recs, rev, err := o.Store.List(ctx, store.ListOptions{})
		if err != nil {
			return fmt.Errorf("list sandboxes: %w", err)
		}
		for _, r := range recs {
			o.Queue.Add(r.Key())
		}
		w, err := o.Store.Watch(ctx, rev)
		if errors.Is(err, store.ErrCompacted) {
			// Compacted between the list and the watch: the changes
			// since the list left the feed, and the next list covers them.
			o.Logger.Info("store change feed compacted right after the list; listing again")
			continue
		}
		if err != nil {
			return fmt.Errorf("watch sandboxes: %w", err)
		}
		for ch := range w.Changes() {
			switch ch.Kind {
			case store.ChangeSpec, store.ChangeDeleted:
				o.Queue.Add(ch.Key)
			}
			// A pool counts its sandboxes' states: any change of one,
			// its status included, is the pool's to look at.
			if ch.Kind != store.ChangeEvents {
				if pool, ok := o.Reconciler.PoolOf(ch.Key); ok {
					o.Queue.Add(pool)
				}
			}
		}
		if err := w.Err(); err != nil && !errors.Is(err, store.ErrCompacted) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch sandboxes: %w", err)
		}
		o.Logger.Info("store change feed compacted past this watcher; listing again")
	}
	return nil
}

// resync re-queues everything now and then, with jitter so that several
// controllers (or restarts) do not line up.
func (c *Controller) resync(ctx context.Context) error {
	o := c.o
	for {
		d := o.ResyncPeriod - o.ResyncPeriod/10 + time.Duration(rand.Int64N(int64(o.ResyncPeriod/5)+1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		recs, _, err := o.Store.List(ctx, store.ListOptions{})
		if err != nil {
			o.Logger.Warn("resync: list sandboxes", "err", err)
			continue
		}
		for _, r := range recs {
			o.Queue.Add(r.Key())
		}
	}
}

// queueSink turns what the Nomad watcher reports into queue keys. The
// first listing is handed to initialListed, and its outcome sent on first.
type queueSink struct {
	c     *Controller
	first chan error
}

func (s queueSink) Changed(key string) { s.c.o.Queue.Add(key) }

// Relisted compares a full list of the owned jobs and their allocations
// with the store and queues what differs: a declared sandbox whose job is
// missing (purged while the stream was away, or skipped by it), a job
// that is stopped, dead, or of another spec or version than last seen, a
// sandbox whose allocation is no longer the one its status reports, and
// an owned job with no sandbox (garbage). Unchanged sandboxes are not
// queued, so a reconnection costs two lists, not a reconcile per sandbox.
func (s queueSink) Relisted(l nomad.Listing) {
	o := s.c.o
	if !s.c.initialList.Load() {
		err := s.c.initialListed(l.Jobs)
		if s.first != nil {
			select {
			case s.first <- err:
			default:
			}
		}
		if err != nil {
			return
		}
	}
	live := make(map[string]*api.JobListStub, len(l.Jobs))
	for _, j := range l.Jobs {
		if key, ok := jobKey(j); ok {
			live[key] = j
		}
	}
	allocs := make(map[string][]*api.AllocationListStub, len(live))
	for _, a := range l.Allocs {
		key := cmp.Or(a.Namespace, "default") + "/" + strings.TrimPrefix(a.JobID, "agentkernel-")
		if j, ok := live[key]; ok && j.ID == a.JobID {
			allocs[key] = append(allocs[key], a)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, _, err := o.Store.List(ctx, store.ListOptions{})
	if err != nil {
		// Without the store to compare with, look at everything.
		o.Logger.Warn("relist: list sandboxes", "err", err)
		for key := range live {
			o.Queue.Add(key)
		}
		return
	}
	declared := make(map[string]bool, len(recs))
	for _, r := range recs {
		key := r.Key()
		declared[key] = true
		j, ok := live[key]
		if settledStopped(r) {
			// Stopped as declared (or expired): a stopped job, or none,
			// is what it should be; only a job running again or written
			// since the controller's stop is news.
			if r.Deleting() || ok && (!j.Stop || j.JobModifyIndex != r.Status.JobModifyIndex) {
				o.Queue.Add(key)
			}
			continue
		}
		switch {
		case !ok, r.Deleting(), j.Stop, nomad.Dead(j.Status, j.JobModifyIndex, j.ModifyIndex),
			j.Meta[nomad.MetaSpecHash] != r.Hash,
			j.JobModifyIndex != r.Status.JobModifyIndex,
			r.Status.ObservedGeneration != r.Generation,
			s.c.allocChanged(r, allocs[key]):
			o.Queue.Add(key)
		}
	}
	for key := range live {
		if !declared[key] {
			o.Queue.Add(key)
		}
	}
}

// settledStopped reports a sandbox whose current generation the
// controller has stopped, as declared or at its expiry.
func settledStopped(r store.Record) bool {
	return r.Status.ObservedGeneration == r.Generation &&
		(r.Status.Phase == store.PhaseStopped || r.Status.Phase == store.PhaseExpired)
}

// allocChanged reports whether a sandbox's status no longer says what its
// allocations do: the allocation it reports died, was replaced or went
// away, or one appeared where there was none. Only a status read from the
// allocations is compared; a stopped, refused or conflicting sandbox has
// nothing to say about them.
func (c *Controller) allocChanged(r store.Record, allocs []*api.AllocationListStub) bool {
	ready, ok := r.Status.Condition(CondReady)
	if !ok {
		return false
	}
	switch ready.Reason {
	case ReasonAllocRunning, ReasonAllocPending, ReasonAllocFailed, ReasonNoAlloc, ReasonVersionPending:
	default:
		return false
	}
	// What a reconcile would write now, from the same rule.
	var now store.Status
	// The list's job stubs carry no version; a job whose index moved is
	// queued anyway, so the recorded version is the job's.
	cond := c.o.Reconciler.observeAlloc(&now, allocs, deref(r.Status.JobVersion))
	return now.Phase != r.Status.Phase || now.AllocID != r.Status.AllocID || cond.Reason != ready.Reason
}

// jobKey is the sandbox key of an owned job.
func jobKey(s *api.JobListStub) (string, bool) {
	name := s.Meta[nomad.MetaSandbox]
	if name == "" || s.ID != "agentkernel-"+name {
		return "", false
	}
	ns := s.Namespace
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + name, true
}
