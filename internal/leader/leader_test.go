package leader_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/leader"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
)

const (
	ttl   = 10 * time.Second
	delay = 5 * time.Second
	path  = "agentkernel/leader"
)

// env is a test server on an in-memory network, inside a synctest bubble.
type env struct {
	t   *testing.T
	mem *nomadtest.MemNet
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, mem: nomadtest.NewMemNet()}
	srv := nomadtest.New(nomadtest.Options{})
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(e.mem.Listener()) }()
	t.Cleanup(func() {
		_ = srv.Close()
		e.mem.Close()
		_ = hs.Close()
	})
	return e
}

// flaky fails every request while down is set, as a partitioned node.
type flaky struct {
	next http.RoundTripper
	down atomic.Bool
	// noRenew drops lock renewals only; releases counts lock releases.
	noRenew  atomic.Bool
	releases atomic.Int32
}

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.down.Load() || (f.noRenew.Load() && r.URL.Query().Has("lock-renew")) {
		return nil, errors.New("partitioned")
	}
	if r.URL.Query().Has("lock-release") {
		f.releases.Add(1)
	}
	return f.next.RoundTrip(r)
}

func (e *env) client(f *flaky) *api.Client {
	e.t.Helper()
	hc := e.mem.HTTPClient()
	if f != nil {
		f.next = hc.Transport
		hc = &http.Client{Transport: f}
	}
	c, err := api.NewClient(&api.Config{Address: e.mem.URL(), HttpClient: hc})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// candidate runs an elector whose work records its term.
type candidate struct {
	name   string
	el     *leader.Elector
	net    *flaky
	cancel context.CancelFunc
	done   chan struct{}
	// terms receives each term's context when it starts; ended receives
	// its cause and when it ended.
	terms chan context.Context
	fail  atomic.Bool // the work returns an error at once
	// stalled makes the elector's Healthy check fail.
	stalled atomic.Bool
}

func (e *env) candidate(name string) *candidate {
	e.t.Helper()
	c := &candidate{name: name, net: &flaky{}, done: make(chan struct{}), terms: make(chan context.Context, 10)}
	el, err := leader.New(leader.Config{
		Client: e.client(c.net), Namespace: "default", Path: path, TTL: ttl, Delay: delay,
		Self: leader.Instance{ID: name, Address: "http://" + name},
		Healthy: func() error {
			if c.stalled.Load() {
				return errors.New("the work is stuck")
			}
			return nil
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	c.el = el
	ctx, cancel := context.WithCancel(e.t.Context())
	c.cancel = cancel
	go func() {
		defer close(c.done)
		_ = el.Run(ctx, func(ctx context.Context) error {
			c.terms <- ctx
			if c.fail.Load() {
				return errors.New("work failed")
			}
			<-ctx.Done()
			return nil
		})
	}()
	e.t.Cleanup(c.stop)
	return c
}

func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

// term waits for c's next term to start.
func (c *candidate) term(t *testing.T, within time.Duration) (context.Context, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case ctx := <-c.terms:
		return ctx, time.Since(start)
	case <-time.After(within):
		t.Fatalf("%s did not lead within %s", c.name, within)
		return nil, 0
	}
}

// ended waits for a term to end and returns its cause and how long that took.
func ended(t *testing.T, ctx context.Context, within time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case <-ctx.Done():
		return context.Cause(ctx), time.Since(start)
	case <-time.After(within):
		t.Fatalf("term did not end within %s", within)
		return nil, 0
	}
}

func TestCleanStopHandsOverAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.candidate("a")
		a.term(t, time.Second)
		b := e.candidate("b")
		time.Sleep(time.Second)
		synctest.Wait()
		if st := b.el.State(); st.Self || st.Leader.ID != "a" || st.Leader.Address != "http://a" {
			t.Errorf("follower state %+v, want a leading at http://a", st)
		}
		a.stop()
		if _, took := b.term(t, ttl); took > time.Second {
			t.Errorf("b took over %s after a clean stop, want at once (the lock is released)", took)
		}
	})
}

func TestRefusedRenewalEndsTheTermAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.candidate("a")
		term, _ := a.term(t, time.Second)
		// Someone releases a's lock behind its back (as the stale delay
		// timer of fact 258 does): a's next renewal is refused.
		c := e.client(nil)
		v, _, err := c.Variables().Read(path, nil)
		if err != nil || v.Lock == nil {
			t.Fatalf("read the lock: %v %+v", err, v)
		}
		if _, _, err := c.Variables().ReleaseLock(&api.Variable{Path: path, Lock: &api.VariableLock{ID: v.Lock.ID}}, nil); err != nil {
			t.Fatal(err)
		}
		cause, took := ended(t, term, ttl)
		if !errors.Is(cause, leader.ErrLockLost) {
			t.Errorf("term ended with %v, want ErrLockLost", cause)
		}
		if took > ttl/3+time.Second {
			t.Errorf("term ended %s after the lock was lost, want by the next renewal (%s)", took, ttl/3)
		}
	})
}

func TestPartitionedLeaderStepsDownBeforeAnotherCanLead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.candidate("a")
		term, _ := a.term(t, time.Second)
		b := e.candidate("b")
		time.Sleep(ttl / 2) // a renewed meanwhile
		a.net.down.Store(true)
		cut := time.Now()
		cause, took := ended(t, term, 2*ttl)
		if !errors.Is(cause, leader.ErrLeaseExpired) {
			t.Errorf("term ended with %v, want ErrLeaseExpired", cause)
		}
		if took > ttl {
			t.Errorf("partitioned leader stepped down %s after the cut, want within the TTL", took)
		}
		_, _ = b.term(t, 2*ttl+delay+time.Second)
		gap := time.Since(cut) - took
		t.Logf("a stepped down %s after the cut; b led %s after that", took, gap)
		// a stops at its last renewal + TTL; Nomad frees the lock at that
		// renewal + 2×TTL + delay: TTL + delay of margin.
		if gap < ttl+delay-time.Second {
			t.Errorf("b led %s after a stepped down, want about TTL + delay (%s) between them", gap, ttl+delay)
		}
	})
}

func TestFailingWorkReleasesAndWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.candidate("a")
		a.fail.Store(true)
		a.term(t, time.Second)
		b := e.candidate("b")
		// a's work fails: a releases and waits a TTL before campaigning
		// again, so b leads first.
		if _, took := b.term(t, ttl); took > ttl {
			t.Errorf("b led %s after a's work failed", took)
		}
	})
}

func TestNewChecksTheLock(t *testing.T) {
	c, err := api.NewClient(&api.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cfg  leader.Config
		want string
	}{
		{leader.Config{Path: path, Self: leader.Instance{ID: "a"}}, "no Nomad client"},
		{leader.Config{Client: c, Self: leader.Instance{ID: "a"}}, "no lock variable path"},
		{leader.Config{Client: c, Path: path}, "no instance ID"},
		{leader.Config{Client: c, Path: path, Self: leader.Instance{ID: "a"}, TTL: 5 * time.Second}, "between 10s and 24h"},
	}
	for _, tt := range tests {
		_, err := leader.New(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want an error saying %q", tt.cfg, err, tt.want)
		}
	}
}

// A leader that cannot renew gives up without releasing: a release in
// Nomad's lock-delay window would leave the delay timer armed to remove
// the next holder's lock (fact 258). The other instance leads once Nomad
// frees the lock, and the old one does not take it straight back.
func TestLeaderThatCannotRenewDoesNotRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.candidate("a")
		term, _ := a.term(t, time.Second)
		b := e.candidate("b")
		a.net.noRenew.Store(true)
		if cause, _ := ended(t, term, 2*ttl); !errors.Is(cause, leader.ErrLeaseExpired) {
			t.Errorf("term ended with %v, want ErrLeaseExpired", cause)
		}
		b.term(t, 2*ttl+delay+time.Second)
		if n := a.net.releases.Load(); n != 0 {
			t.Errorf("a sent %d lock releases after failing to renew, want none", n)
		}
		time.Sleep(2 * ttl)
		if a.el.IsLeader() || !b.el.IsLeader() {
			t.Errorf("a leads %v, b leads %v; want b to keep the lock", a.el.IsLeader(), b.el.IsLeader())
		}
	})
}

// A leader whose work reports that it stalled stops renewing: the term
// ends by the lease's expiry, and Nomad frees the lock for another
// instance even though the work may never return.
func TestStalledWorkStopsTheRenewals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		a := e.candidate("a")
		term, _ := a.term(t, time.Second)
		b := e.candidate("b")
		time.Sleep(2 * ttl) // healthy: a keeps the lock well past a TTL
		synctest.Wait()
		if !a.el.IsLeader() {
			t.Fatal("a healthy leader lost its lock")
		}
		a.stalled.Store(true)
		cause, took := ended(t, term, 2*ttl)
		if !errors.Is(cause, leader.ErrLeaseExpired) {
			t.Errorf("term ended with %v, want ErrLeaseExpired", cause)
		}
		if took > ttl {
			t.Errorf("term ended %s after the work stalled, want within the TTL (%s)", took, ttl)
		}
		b.term(t, 2*ttl+delay+time.Second)
	})
}

// Work that is truly wedged (it ignores its context) does not keep the
// instance claiming leadership once its lease has expired and another
// instance holds the lock.
func TestWedgedWorkDoesNotKeepClaimingLeadership(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		wedge := make(chan struct{})
		var stalled atomic.Bool
		mkEl := func(name string, h func() error) *leader.Elector {
			el, err := leader.New(leader.Config{Client: e.client(nil), Namespace: "default", Path: path, TTL: ttl, Delay: delay,
				Self: leader.Instance{ID: name, Address: "http://" + name}, Healthy: h})
			if err != nil {
				t.Fatal(err)
			}
			return el
		}
		a := mkEl("a", func() error {
			if stalled.Load() {
				return errors.New("the work is stuck")
			}
			return nil
		})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		started := make(chan struct{}, 1)
		go func() { _ = a.Run(ctx, func(ctx context.Context) error { started <- struct{}{}; <-wedge; return nil }) }()
		<-started
		b := mkEl("b", nil)
		bLead := make(chan struct{}, 1)
		go func() {
			_ = b.Run(ctx, func(ctx context.Context) error { bLead <- struct{}{}; <-ctx.Done(); return nil })
		}()
		time.Sleep(ttl)
		stalled.Store(true)
		select {
		case <-bLead:
		case <-time.After(5 * ttl):
			t.Fatal("b never led")
		}
		if a.IsLeader() && b.IsLeader() {
			t.Errorf("a (wedged, lease expired) and b both report IsLeader: a=%+v b=%+v", a.State(), b.State())
		}
		close(wedge)
		cancel()
		synctest.Wait()
	})
}
