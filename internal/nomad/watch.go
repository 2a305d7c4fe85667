package nomad

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/nomad/api"
)

// WatchSink receives what the watcher learns. Calls come from the
// watcher's goroutine, one at a time, and should return quickly (enqueue).
type WatchSink interface {
	// Changed says the job of sandbox key ("namespace/name") may have
	// changed: look at it again.
	Changed(key string)
	// Relisted hands over every job this controller owns and the
	// allocations Nomad wants running for them. It comes after every
	// (re)connection, so anything the event stream may have missed is
	// covered, allocations that changed while it was away included, and
	// it is what garbage collection of jobs whose sandbox is gone is
	// decided on.
	Relisted(l Listing)
}

// Listing is one full list of what the controller owns in Nomad.
type Listing struct {
	// Jobs are every job stamped with the owner, listed at Index.
	Jobs  []*api.JobListStub
	Index uint64
	// Allocs are the allocations of those jobs whose desired status is
	// run, listed right after the jobs.
	Allocs []*api.AllocationListStub
}

// WatchOptions tune a Watcher. Zero values take the defaults.
type WatchOptions struct {
	Owner     string
	Namespace string // "*" (every namespace) by default
	// Cache, when set, is kept current from every relist and from the
	// events' payloads, and only changes that matter to it are reported
	// (Changed). Without it every Job or Allocation event is.
	Cache   *Cache
	Logger  *slog.Logger
	Backoff Backoff // between reconnections; DefaultBackoff
	// FirstLineTimeout bounds the wait for the stream's first line. Real
	// Nomad sends a `{}` heartbeat at once; with ACLs it answers a denied
	// stream with 200 and then silence, not even that heartbeat
	// (more/README.md), which this timeout detects (default 10 s).
	FirstLineTimeout time.Duration
	// IdleTimeout bounds the silence between lines once the stream is up.
	// Nomad sends a heartbeat every 30 s (facts 4.10); default 75 s.
	IdleTimeout time.Duration
	// FallbackAfter is how many stream attempts in a row may fail, for
	// whatever reason, before the watcher falls back to blocking queries
	// on the job list (3). A refused or silent stream falls back at once.
	// Either way only while Nomad answers the list: if it does not, Nomad
	// is down and the stream is retried with backoff.
	FallbackAfter int
	// BlockingWait is the wait of one blocking query (default 5 min);
	// after each cycle in fallback the stream is tried again, every
	// RetryStreamEvery (default 5 min).
	BlockingWait     time.Duration
	RetryStreamEvery time.Duration
}

func (o WatchOptions) withDefaults() WatchOptions {
	if o.Namespace == "" {
		o.Namespace = "*"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Backoff.Base == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.FirstLineTimeout == 0 {
		o.FirstLineTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 75 * time.Second
	}
	if o.FallbackAfter == 0 {
		o.FallbackAfter = 3
	}
	if o.BlockingWait == 0 {
		o.BlockingWait = 5 * time.Minute
	}
	if o.RetryStreamEvery == 0 {
		o.RetryStreamEvery = 5 * time.Minute
	}
	return o
}

// WatchStats are counters for metrics and tests.
type WatchStats struct {
	Connects, Reconnects, Relists, Gaps, Heartbeats, Events, Fallbacks int64
	// Blocking is true while the watcher uses blocking queries.
	Blocking bool
}

// Watcher turns Nomad's changes into sandbox keys to look at: the event
// stream first, blocking queries on the job list when the stream is
// refused or keeps failing.
type Watcher struct {
	c    *Client
	opts WatchOptions
	last uint64 // highest index handled; the stream resumes at last+1

	connects, reconnects, relists, gaps, heartbeats, events, fallbacks atomic.Int64
	blocking                                                           atomic.Bool
}

// NewWatcher makes a watcher of the jobs owned by opts.Owner.
func NewWatcher(c *Client, opts WatchOptions) *Watcher {
	return &Watcher{c: c, opts: opts.withDefaults()}
}

// Stats reads the counters.
func (w *Watcher) Stats() WatchStats {
	return WatchStats{
		Connects: w.connects.Load(), Reconnects: w.reconnects.Load(), Relists: w.relists.Load(),
		Gaps: w.gaps.Load(), Heartbeats: w.heartbeats.Load(), Events: w.events.Load(),
		Fallbacks: w.fallbacks.Load(), Blocking: w.blocking.Load(),
	}
}

// Run watches until ctx ends, reconnecting with backoff. It returns only
// the context's error.
func (w *Watcher) Run(ctx context.Context, sink WatchSink) error {
	// failures counts the attempts in a row that did not get as far as the
	// relist, whatever the reason: a stream that cannot be had is not worth
	// waiting for once Nomad's other endpoints answer, which the fallback
	// checks with its first list before it takes over.
	failures := 0
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			w.reconnects.Add(1)
		}
		healthy, err := w.streamOnce(ctx, sink)
		if ctx.Err() != nil {
			break
		}
		if healthy {
			failures = 0
		} else {
			failures++
		}
		w.opts.Logger.Warn("nomad event stream ended", "err", err, "stream_failures", failures)
		denied := errors.Is(err, ErrPermissionDenied) || errors.Is(err, errSilentStream)
		if !healthy && (denied || failures >= w.opts.FallbackAfter) && w.fallback(ctx, sink) {
			failures = 0
			continue
		}
		if !sleep(ctx, w.opts.Backoff, failures) {
			break
		}
	}
	return ctx.Err()
}

var errSilentStream = errors.New("event stream sent nothing, not even a heartbeat, before it went silent or closed (denied by ACL?)")

// streamLine is one NDJSON line, decoded in one pass as it is read: only
// what routes a change and what the cache keeps is decoded, and a Job
// event's job is kept as bytes for a reconcile that compares it. A line
// with neither Index nor Events is a heartbeat ({}).
type streamLine struct {
	Index  *uint64         `json:"Index"`
	Events []eventHeader   `json:"Events"`
	Error  json.RawMessage `json:"Error"`
	// untrusted is why some of the line could not be decoded.
	untrusted error
}

func (l *streamLine) heartbeat() bool {
	return l.Index == nil && l.Events == nil && !l.failed() && l.untrusted == nil
}

// failed reports an Error field in the line ("Error": null is none).
func (l *streamLine) failed() bool { return l.Error != nil && string(l.Error) != "null" }

type eventHeader struct {
	Topic      string       `json:"Topic"`
	Type       string       `json:"Type"`
	Key        string       `json:"Key"`
	Namespace  string       `json:"Namespace"`
	FilterKeys []string     `json:"FilterKeys"`
	Index      uint64       `json:"Index"`
	Payload    eventPayload `json:"Payload"`
}

// sandbox is the key of the sandbox whose job the event is about: a Job
// event's key is the job's ID, an Allocation event names it first among
// its filter keys.
func (e *eventHeader) sandbox() (string, bool) {
	jobID := e.Key
	if e.Topic == "Allocation" && len(e.FilterKeys) > 0 {
		jobID = e.FilterKeys[0]
	}
	return sandboxKey(e.Namespace, jobID)
}

// eventPayload is what a Job or Allocation event carries: the whole job,
// or the allocation without its job. Only what the cache keeps is
// decoded; the job's bytes are kept for a reconcile that compares it.
type eventPayload struct {
	Job        json.RawMessage `json:"Job"`
	Allocation *allocEvent     `json:"Allocation"`
}

// jobEvent is the part of an event's job the cache keeps as its state.
type jobEvent struct {
	ID, Namespace, Status                    *string
	Version                                  *uint64
	Stop                                     *bool
	CreateIndex, JobModifyIndex, ModifyIndex *uint64
	Meta                                     map[string]string
}

type decoded struct {
	line streamLine
	err  error
}

// streamOnce runs one connection: open, wait for the first line, relist,
// then handle lines until the stream ends. healthy reports whether it
// got as far as the relist, which resets the failure count.
func (w *Watcher) streamOnce(ctx context.Context, sink WatchSink) (healthy bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A watcher that never listed lists first, and streams from the
	// list's index on: Nomad then sends what came after the list rather
	// than its whole event buffer.
	prelisted := false
	if w.last == 0 {
		if err := w.relist(ctx, sink); err != nil {
			return false, err
		}
		prelisted = true
	}
	asked := w.last + 1
	q := (&api.QueryOptions{Namespace: w.opts.Namespace, Params: map[string]string{"index": fmt.Sprint(asked)}}).WithContext(ctx)
	body, err := w.c.api.Raw().Response("/v1/event/stream?topic=Job&topic=Allocation", q)
	if err != nil {
		return false, classify("open nomad event stream", err)
	}
	defer body.Close()
	w.connects.Add(1)

	lines := make(chan decoded)
	go decodeLines(ctx, body, lines)

	timer := time.NewTimer(w.opts.FirstLineTimeout)
	defer timer.Stop()
	first, firstBatch := true, true
	for {
		select {
		case <-ctx.Done():
			return healthy, ctx.Err()
		case <-timer.C:
			if first {
				return false, errSilentStream
			}
			return healthy, fmt.Errorf("event stream silent for %s, longer than Nomad's heartbeat interval", w.opts.IdleTimeout)
		case d := <-lines:
			if d.err != nil {
				if first && errors.Is(d.err, io.EOF) {
					// Closed before the heartbeat a real agent sends at
					// once: how a denied stream ends (more/ 3).
					return false, errSilentStream
				}
				// An error is never a heartbeat: EOF, a cut connection or a
				// line that is not JSON all end this connection.
				return healthy, &Error{Op: "read nomad event stream", Kind: ErrTransient, Err: d.err}
			}
			timer.Reset(w.opts.IdleTimeout)
			if d.line.heartbeat() {
				w.heartbeats.Add(1)
			} else {
				if err := w.handleLine(&d.line, asked, firstBatch && !prelisted, sink); err != nil {
					return healthy, err
				}
				firstBatch = false
			}
			if first {
				first = false
				// The stream is open: a list taken now covers everything
				// before it, including whatever the stream skipped. One
				// taken just before the stream was asked from its index
				// already does.
				if !prelisted {
					if err := w.relist(ctx, sink); err != nil {
						return false, err
					}
				}
				healthy = true
			}
		}
	}
}

func decodeLines(ctx context.Context, r io.Reader, out chan<- decoded) {
	dec := json.NewDecoder(r)
	for {
		var l streamLine
		err := dec.Decode(&l)
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			// A field of a type the watcher does not expect: the decoder
			// read the whole line and decoded the rest of it, so the
			// stream goes on; the line's events are looked at without
			// trusting what was decoded of them.
			l.untrusted, err = err, nil
		}
		select {
		case out <- decoded{l, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (w *Watcher) handleLine(l *streamLine, asked uint64, firstBatch bool, sink WatchSink) error {
	if l.failed() || l.Index == nil || *l.Index == 0 {
		return &Error{Op: "read nomad event stream", Kind: ErrTransient, Err: fmt.Errorf("unexpected line: index %v, %d events, error %.200s", l.Index, len(l.Events), l.Error)}
	}
	index := *l.Index
	if firstBatch && asked > 1 && index > asked {
		// Nomad starts silently at its oldest buffered index when the
		// one asked for has left the buffer (facts 4.10); indexes that
		// carried no Job or Allocation event look the same. Either way
		// the relist taken once the stream was open covers them.
		w.gaps.Add(1)
		w.opts.Logger.Info("nomad event stream skipped indexes; relisting", "asked", asked, "first", index)
	}
	if l.untrusted != nil {
		// What was decoded of the line cannot be trusted, not even which
		// sandboxes its events are about: those it names are looked at
		// again, and the connection ends past the line, so that the
		// relist that follows every reconnection covers the rest.
		for _, e := range l.Events {
			w.events.Add(1)
			w.untrusted(e, l.untrusted, sink)
		}
		w.last = max(w.last, index)
		return &Error{Op: "read nomad event stream", Kind: ErrTransient, Err: fmt.Errorf("line at index %d did not decode as expected; relisting: %w", index, l.untrusted)}
	}
	for _, e := range l.Events {
		w.events.Add(1)
		if key, ok := w.apply(e); ok {
			sink.Changed(key)
		}
	}
	if index > w.last {
		w.last = index
	}
	return nil
}

// untrusted takes an event whose line did not decode as expected: the
// cache cannot follow it, so its sandbox, if it names one, is looked at
// again, reading Nomad where the cache cannot answer.
func (w *Watcher) untrusted(e eventHeader, why error, sink WatchSink) {
	key, ok := e.sandbox()
	if !ok {
		return
	}
	w.opts.Logger.Warn("cannot decode an event's payload", "topic", e.Topic, "type", e.Type, "index", e.Index, "err", why)
	if w.opts.Cache != nil {
		w.opts.Cache.Invalidate(key)
	}
	sink.Changed(key)
}

// apply hands an event to the cache, and reports the sandbox to look at
// again, if any: every one an event names when there is no cache, only
// those whose cached state changed in a way that matters when there is.
func (w *Watcher) apply(e eventHeader) (string, bool) {
	key, ok := e.sandbox()
	if !ok || w.opts.Cache == nil {
		return key, ok
	}
	p := e.Payload
	switch {
	case e.Topic == "Job" && len(p.Job) > 0:
		var j jobEvent
		if err := json.Unmarshal(p.Job, &j); err != nil {
			w.opts.Logger.Warn("cannot decode an event's job", "type", e.Type, "index", e.Index, "err", err)
			w.opts.Cache.Invalidate(key)
			return key, true
		}
		st := &JobState{
			Namespace: cmp.Or(deref(j.Namespace), "default"), ID: deref(j.ID),
			Version: deref(j.Version), VersionKnown: j.Version != nil,
			Stop: deref(j.Stop), Status: deref(j.Status),
			CreateIndex: deref(j.CreateIndex), JobModifyIndex: deref(j.JobModifyIndex), ModifyIndex: deref(j.ModifyIndex),
			Meta: ownMeta(j.Meta),
		}
		// The decoder gave the job's bytes a buffer of their own.
		return w.opts.Cache.applyJobState(e.Type, e.Index, st, wholeJob{raw: p.Job})
	case e.Topic == "Allocation" && p.Allocation != nil:
		return w.opts.Cache.applyAllocState(*p.Allocation)
	}
	return key, false
}

// sandboxKey maps a job to the sandbox it runs, for jobs named as the
// controller names them.
func sandboxKey(ns, jobID string) (string, bool) {
	name, ok := strings.CutPrefix(jobID, "agentkernel-")
	if !ok || name == "" {
		return "", false
	}
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + name, true
}

func (w *Watcher) relist(ctx context.Context, sink WatchSink) error {
	l, err := w.list(ctx)
	if err != nil {
		return err
	}
	w.relists.Add(1)
	if l.Index > w.last {
		w.last = l.Index
	}
	w.listed(l, sink)
	return nil
}

// listed hands a full listing to the cache, reporting what changed in it,
// and to the sink.
func (w *Watcher) listed(l Listing, sink WatchSink) {
	if w.opts.Cache != nil {
		for _, key := range w.opts.Cache.replace(l) {
			sink.Changed(key)
		}
	}
	sink.Relisted(l)
}

// list lists every owned job, then their allocations: two paged requests
// whatever the number of sandboxes.
func (w *Watcher) list(ctx context.Context) (Listing, error) {
	jobs, index, err := w.c.ListOwned(ctx, w.opts.Namespace, w.opts.Owner)
	if err != nil {
		return Listing{}, err
	}
	allocs, err := w.c.ListWantedAllocs(ctx, w.opts.Namespace, jobs)
	if err != nil {
		return Listing{}, err
	}
	return Listing{Jobs: jobs, Index: index, Allocs: allocs}, nil
}

// fallback follows the owned-job list with blocking queries for a while,
// then returns so that the stream is tried again. Each change of the list
// index relists; keys are reported for jobs whose stub changed.
//
// It lists once before it takes over: when Nomad does not answer that
// either, Nomad is down rather than its stream, and fallback returns false
// at once so that the caller keeps retrying the stream with backoff.
func (w *Watcher) fallback(ctx context.Context, sink WatchSink) bool {
	l, err := w.blockingList(ctx, 0)
	if err != nil {
		w.opts.Logger.Warn("nomad does not answer a list either; retrying the event stream", "err", err)
		return false
	}
	w.fallbacks.Add(1)
	w.blocking.Store(true)
	defer w.blocking.Store(false)
	w.opts.Logger.Warn("falling back to blocking queries on the job list")

	deadline := time.NewTimer(w.opts.RetryStreamEvery)
	defer deadline.Stop()
	seen := map[string]string{}
	for listed, failures := true, 0; ctx.Err() == nil; {
		if listed {
			w.relists.Add(1)
			w.listed(l, sink)
			seen = reportChanged(sink, l.Jobs, seen)
		}
		select {
		case <-deadline.C:
			return true
		default:
		}
		next, err := w.blockingList(ctx, l.Index)
		if err != nil {
			listed, failures = false, failures+1
			w.opts.Logger.Warn("blocking list of owned jobs failed", "err", err)
			if !sleep(ctx, w.opts.Backoff, failures) {
				return true
			}
			continue
		}
		// An unchanged index is a wait that timed out without a change.
		listed, failures = next.Index != l.Index, 0
		if listed {
			l = next
		}
	}
	return true
}

// reportChanged reports the keys of the jobs whose stub differs from the
// one seen before, gone ones included, and returns what it saw.
func reportChanged(sink WatchSink, stubs []*api.JobListStub, seen map[string]string) map[string]string {
	now := map[string]string{}
	for _, s := range stubs {
		key, ok := sandboxKey(s.Namespace, s.ID)
		if !ok {
			continue
		}
		now[key] = stubVersion(s)
		if seen[key] != now[key] {
			sink.Changed(key)
		}
	}
	for key := range seen {
		if _, still := now[key]; !still {
			sink.Changed(key)
		}
	}
	return now
}

// blockingList waits until the job list index passes index (or the wait
// ends), then lists every owned job and their allocations at the new
// index. A wait that ends without a change returns a listing at index
// with nothing in it.
func (w *Watcher) blockingList(ctx context.Context, index uint64) (Listing, error) {
	if index != 0 {
		q := (&api.QueryOptions{Namespace: w.opts.Namespace, WaitIndex: index, WaitTime: w.opts.BlockingWait, PerPage: 1,
			Filter: fmt.Sprintf("Meta[%q] == %q", MetaOwner, w.opts.Owner)}).WithContext(ctx)
		_, meta, err := w.c.api.Jobs().List(q)
		if err != nil {
			return Listing{}, classify("wait for owned jobs to change", err)
		}
		if meta.LastIndex == index {
			return Listing{Index: index}, nil
		}
	}
	return w.list(ctx)
}

// stubVersion changes whenever the job, its status or its allocations'
// summary change.
func stubVersion(s *api.JobListStub) string {
	v := fmt.Sprintf("%d/%d/%s/%t", s.ModifyIndex, s.JobModifyIndex, s.Status, s.Stop)
	if s.JobSummary != nil {
		v += fmt.Sprintf("/%d", s.JobSummary.ModifyIndex)
	}
	return v
}

// sleep waits out the backoff delay for a number of failures, or until
// ctx ends (false).
func sleep(ctx context.Context, b Backoff, failures int) bool {
	after := b.After
	if after == nil {
		after = time.After
	}
	select {
	case <-ctx.Done():
		return false
	case <-after(b.Delay(max(failures-1, 0))):
		return true
	}
}
