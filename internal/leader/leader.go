// Package leader owns leader election among the controller's instances: a
// lock on one Nomad Variable, taken and renewed through the nomad/api
// client's api.Locks, decides which instance reconciles.
//
// Nomad holds a lock that is not renewed for twice its TTL, then keeps it
// for the lock delay before anyone else may take it (facts more/ 2.3). The
// elector renews every TTL/3, and it gives up leading on its own once TTL
// has passed since the last renewal it sent was answered, so a leader that
// cannot reach Nomad stops writing at least TTL plus the lock delay before
// another instance can take the lock. A renewal that Nomad refuses (the
// lock is gone or held by someone else) ends leadership at once.
//
// api.LockLeaser is not used: when a renewal is refused it keeps the
// protected function running until its own Start returns, and it has no
// local lease deadline, so an old leader could go on writing.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Errors a leader's context is cancelled with (context.Cause).
var (
	// ErrLockLost: Nomad refused a renewal; someone else may hold the lock.
	ErrLockLost = errors.New("leadership lost: Nomad refused to renew the lock")
	// ErrLeaseExpired: no renewal got through for a whole TTL.
	ErrLeaseExpired = errors.New("leadership given up: the lock could not be renewed within its TTL")
)

var errTermOver = errors.New("leadership term over")

// Item keys of the lock variable that say who holds it. Anyone allowed to
// read the variable sees them; Nomad shows the lock itself only to
// management tokens.
const (
	ItemLeaderID      = "leader-id"
	ItemLeaderAddress = "leader-address"
)

// Instance names a controller instance.
type Instance struct {
	ID string
	// Address is the base URL other instances forward writes to.
	Address string
}

// State is what an instance knows of the leadership.
type State struct {
	Leader Instance
	// Self is true while this instance leads.
	Self bool
}

// Config configures an Elector.
type Config struct {
	// Client must be the elector's own: api.Locks sets retry options on
	// the client it is given.
	Client    *api.Client
	Namespace string
	Path      string
	// TTL (default 15s; Nomad accepts 10s to 24h) and Delay (default 15s)
	// are the lock's.
	TTL    time.Duration
	Delay  time.Duration
	Self   Instance
	Logger *slog.Logger
	// Healthy, when set, is asked before every renewal: while it returns
	// an error the lock is not renewed, so a leader whose work has
	// stalled lets the lock expire and another instance take over,
	// rather than holding it while doing nothing.
	Healthy func() error
}

// Elector campaigns for the lock and runs the leader's work while it
// holds it.
type Elector struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	state State
}

// New checks cfg and makes an Elector.
func New(cfg Config) (*Elector, error) {
	if cfg.Client == nil {
		return nil, errors.New("leader: no Nomad client")
	}
	if cfg.Path == "" {
		return nil, errors.New("leader: no lock variable path")
	}
	if cfg.Self.ID == "" {
		return nil, errors.New("leader: no instance ID")
	}
	if cfg.TTL == 0 {
		cfg.TTL = api.DefaultLockTTL
	}
	if cfg.Delay == 0 {
		cfg.Delay = api.DefaultLockDelay
	}
	if cfg.TTL < 10*time.Second || cfg.TTL > 24*time.Hour {
		return nil, fmt.Errorf("leader: lock TTL %s must be between 10s and 24h, as Nomad requires", cfg.TTL)
	}
	if cfg.Delay < 0 {
		return nil, fmt.Errorf("leader: lock delay %s must not be negative", cfg.Delay)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{cfg: cfg, log: log.With("lock", cfg.Path)}, nil
}

// State returns what the instance knows of the leadership now.
func (e *Elector) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

// IsLeader reports whether this instance leads now.
func (e *Elector) IsLeader() bool { return e.State().Self }

func (e *Elector) set(leader Instance, self bool) {
	e.mu.Lock()
	changed := e.state != State{Leader: leader, Self: self}
	e.state = State{Leader: leader, Self: self}
	e.mu.Unlock()
	if changed {
		e.log.Info("leadership changed", "leader", leader.ID, "leader_address", leader.Address, "self", self)
	}
}

func (e *Elector) writeOptions(ctx context.Context) api.WriteOptions {
	return *(&api.WriteOptions{Namespace: e.cfg.Namespace}).WithContext(ctx)
}

func (e *Elector) newLocks() (*api.Locks, error) {
	v := api.Variable{
		Namespace: e.cfg.Namespace,
		Path:      e.cfg.Path,
		Items: api.VariableItems{
			ItemLeaderID:      e.cfg.Self.ID,
			ItemLeaderAddress: e.cfg.Self.Address,
		},
		Lock: &api.VariableLock{TTL: e.cfg.TTL.String(), LockDelay: e.cfg.Delay.String()},
	}
	return e.cfg.Client.Locks(api.WriteOptions{Namespace: e.cfg.Namespace}, v)
}

// Run campaigns until ctx ends. Each time the instance takes the lock it
// runs lead with a context that is cancelled, with ErrLockLost or
// ErrLeaseExpired as its cause, the moment leadership ends; Run waits for
// lead to return before it campaigns again. If lead returns by itself the
// lock is released and the campaign goes on. When ctx ends, lead's context
// is cancelled with ctx's cause, and once lead has returned the lock is
// released so that another instance takes over without waiting for the TTL.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	var lockIndex uint64
	for ctx.Err() == nil {
		locks, err := e.newLocks()
		if err != nil {
			return fmt.Errorf("leader: %w", err)
		}
		locks.WriteOptions = e.writeOptions(ctx)
		sent := time.Now()
		_, err = locks.Acquire(ctx)
		switch {
		case err == nil:
			// The work gave up, or the lock could not be renewed: give
			// another instance the first chance before campaigning again.
			wait(ctx, e.lead(ctx, locks, sent, lead))
			continue
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, api.ErrLockConflict):
		default:
			e.log.Warn("cannot reach the lock; retrying", "err", err)
			e.set(e.State().Leader, false)
		}
		lockIndex = e.follow(ctx, lockIndex)
	}
	return nil
}

// follow reads the lock variable to learn the leader, waiting (a blocking
// query of at most one TTL) for the variable to change, which it does when
// the lock is released or removed. It returns the index to wait from next.
func (e *Elector) follow(ctx context.Context, index uint64) uint64 {
	q := (&api.QueryOptions{Namespace: e.cfg.Namespace, WaitIndex: index, WaitTime: e.cfg.TTL}).WithContext(ctx)
	v, meta, err := e.cfg.Client.Variables().Read(e.cfg.Path, q)
	switch {
	case ctx.Err() != nil:
		return index
	case errors.Is(err, api.ErrVariablePathNotFound):
		e.set(Instance{}, false)
		if meta != nil {
			return meta.LastIndex
		}
		return 0
	case err != nil:
		e.log.Warn("cannot read the lock variable", "err", err)
		wait(ctx, e.cfg.TTL/3)
		return index
	}
	if v.Lock != nil && v.Lock.ID == "" {
		// Shown to management tokens only: an unlocked variable.
		e.set(Instance{}, false)
	} else {
		e.set(Instance{ID: v.Items[ItemLeaderID], Address: v.Items[ItemLeaderAddress]}, false)
	}
	if meta.LastIndex == index {
		// Woken by the wait time, not by a change: nothing to learn.
		return index
	}
	return meta.LastIndex
}

// lead holds the lock, taken by a request sent at acquired: it runs fn
// and renews until leadership ends. It returns how long the instance
// should stand back before campaigning again: a TTL when fn returned by
// itself; when renewals kept failing, until well after Nomad frees the
// unreleased lock (2 × TTL + delay), so that an instance that can keep
// it takes it rather than this one.
func (e *Elector) lead(ctx context.Context, locks *api.Locks, acquired time.Time, fn func(ctx context.Context) error) (standBack time.Duration) {
	e.set(e.cfg.Self, true)
	leaderCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- fn(leaderCtx) }()

	ttl := e.cfg.TTL
	lastRenewed := acquired
	renew := time.NewTicker(ttl / 3)
	defer renew.Stop()
	expiry := time.NewTimer(time.Until(acquired.Add(ttl)))
	defer expiry.Stop()

	release := true
	stepDown := func(cause error) {
		cancel(cause)
		// No longer the leader from this moment, whether or not the work
		// returns: another instance may take the lock.
		e.set(Instance{}, false)
		<-done
	}
loop:
	for {
		select {
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				e.log.Error("leader work failed; releasing the lock", "err", err)
			}
			if ctx.Err() == nil {
				standBack = e.cfg.TTL
			}
			break loop
		case <-ctx.Done():
			stepDown(context.Cause(ctx))
			break loop
		case <-expiry.C:
			e.log.Error("lock not renewed within its TTL; no longer leading", "ttl", ttl, "last_renewed", lastRenewed)
			stepDown(ErrLeaseExpired)
			standBack = 2*ttl + e.cfg.Delay
			// No release: it could land in Nomad's lock-delay window,
			// where a release leaves the delay timer armed to remove the
			// next holder's lock (fact 258). The lock expires by itself.
			release = false
			break loop
		case <-renew.C:
			if e.cfg.Healthy != nil {
				if err := e.cfg.Healthy(); err != nil {
					// Not renewing lets Nomad free the lock even if the
					// work never returns; expiry ends the term here.
					e.log.Error("not renewing the lock: the leader's work has stalled", "err", err, "expires_in", time.Until(lastRenewed.Add(ttl)).Round(time.Millisecond))
					continue
				}
			}
			sent := time.Now()
			deadline := lastRenewed.Add(ttl)
			rctx, rcancel := context.WithDeadline(ctx, deadline)
			locks.WriteOptions = e.writeOptions(rctx)
			err := locks.Renew(rctx)
			rcancel()
			switch {
			case err == nil:
				lastRenewed = sent
				expiry.Reset(time.Until(sent.Add(ttl)))
			case ctx.Err() != nil:
				// Handled by the ctx.Done case.
			case errors.Is(err, api.ErrLockConflict):
				e.log.Error("Nomad refused to renew the lock; no longer leading", "err", err)
				stepDown(ErrLockLost)
				release = false
				break loop
			default:
				e.log.Warn("cannot renew the lock; retrying", "err", err, "expires_in", time.Until(deadline).Round(time.Millisecond))
			}
		}
	}
	// The work has returned, or was told to stop and has; make sure
	// nothing it started outlives the term.
	cancel(errTermOver)
	e.set(Instance{}, false)
	if release {
		// The work has stopped, so the lock may go, even on shutdown.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
		locks.WriteOptions = e.writeOptions(rctx)
		if err := locks.Release(rctx); err != nil {
			e.log.Warn("cannot release the lock; it expires after its TTL and lock delay", "err", err)
		} else {
			e.log.Info("lock released", "held_for", time.Since(acquired).Round(time.Millisecond))
		}
		rcancel()
	}
	return standBack
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
