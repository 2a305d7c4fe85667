package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/cluster"
	"github.com/agentkernel/agentkernel-controller/internal/leader"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// The lock of these tests: Nomad holds an unrenewed lock for 2×TTL, then
// the delay (facts more/ 2.3), so a killed leader's lock frees within
// 2×TTL+delay of its last renewal.
const (
	ttl   = 10 * time.Second
	delay = 5 * time.Second
)

// write is one Nomad job write an instance made.
type write struct {
	at       time.Time
	instance string
	method   string
	jobID    string
}

// world is a Nomad test server on an in-memory network and the record of
// every job write made to it, by instance.
type world struct {
	t   *testing.T
	srv *nomadtest.Server
	mem *nomadtest.MemNet

	// token is the instances' Nomad token and mgmt the management one
	// (both empty without ACLs).
	token, mgmt string

	mu     sync.Mutex
	writes []write
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, nomadtest.Options{})
}

// newACLWorld turns ACLs on, and gives the instances a token holding
// nothing but the example policy: the least privilege the controller
// needs, checked by using it.
func newACLWorld(t *testing.T) *world {
	t.Helper()
	w := newWorldWith(t, nomadtest.Options{ACLToken: "00000000-0000-0000-0000-00000000feed"})
	rules, err := os.ReadFile("../../examples/controller-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.srv.SetACLPolicy("agentkernel-controller", string(rules)); err != nil {
		t.Fatalf("the example policy: %v", err)
	}
	if w.token, err = w.srv.CreateACLToken("agentkernel-controller", "agentkernel-controller"); err != nil {
		t.Fatal(err)
	}
	w.mgmt = "00000000-0000-0000-0000-00000000feed"
	return w
}

func newWorldWith(t *testing.T, opts nomadtest.Options) *world {
	t.Helper()
	opts.SchedulingDelay = 200 * time.Millisecond
	opts.Drivers = []string{"docker", "exec"}
	w := &world{t: t, mem: nomadtest.NewMemNet(), srv: nomadtest.New(opts)}
	hs := &http.Server{Handler: w.srv}
	go func() { _ = hs.Serve(w.mem.Listener()) }()
	t.Cleanup(func() {
		_ = w.srv.Close()
		w.mem.Close()
		_ = hs.Close()
	})
	return w
}

// hasJob reports whether Nomad has the job, not stopped.
func (w *world) hasJob(id string) bool {
	c, err := api.NewClient(&api.Config{Address: w.mem.URL(), HttpClient: w.mem.HTTPClient(), SecretID: w.mgmt})
	if err != nil {
		w.t.Fatal(err)
	}
	job, _, err := c.Jobs().Info(id, nil)
	return err == nil && !(job.Stop != nil && *job.Stop)
}

// link is one instance's network path to Nomad: it can be cut, as when
// the instance's node dies, and it can refuse lock renewals alone.
type link struct {
	w    *world
	name string

	mu         sync.Mutex
	cut        bool
	conns      map[net.Conn]struct{}
	blockRenew bool
	// hangJobReads holds every read of one job until the request is
	// given up: a Nomad that stops answering the reconcile loop.
	hangJobReads bool
}

func (l *link) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	l.mu.Lock()
	cut := l.cut
	l.mu.Unlock()
	if cut {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("link %s is cut", l.name)}
	}
	c, err := l.w.mem.Dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		c.Close()
		return nil, fmt.Errorf("link %s is cut", l.name)
	}
	l.conns[c] = struct{}{}
	return c, nil
}

func (l *link) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for c := range l.conns {
			c.Close()
		}
		clear(l.conns)
	}
}

func (l *link) setBlockRenew(b bool) {
	l.mu.Lock()
	l.blockRenew = b
	l.mu.Unlock()
}

func (l *link) setHangJobReads(b bool) {
	l.mu.Lock()
	l.hangJobReads = b
	l.mu.Unlock()
}

// RoundTrip records job writes, and refuses lock renewals or holds job
// reads when told to.
func (l *link) RoundTrip(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	blockRenew, hang := l.blockRenew, l.hangJobReads
	l.mu.Unlock()
	if blockRenew && r.URL.Query().Has("lock-renew") {
		return nil, fmt.Errorf("link %s drops lock renewals", l.name)
	}
	if hang && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/job/") {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	var jobID string
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/v1/jobs":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req struct{ Job struct{ ID string } }
		_ = json.Unmarshal(body, &req)
		jobID = req.Job.ID
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v1/job/"):
		jobID = strings.TrimPrefix(r.URL.Path, "/v1/job/")
	}
	tr := &http.Transport{DialContext: l.dial, DisableKeepAlives: true}
	resp, err := tr.RoundTrip(r)
	if jobID != "" && err == nil && resp.StatusCode == http.StatusOK {
		l.w.mu.Lock()
		l.w.writes = append(l.w.writes, write{at: time.Now(), instance: l.name, method: r.Method, jobID: jobID})
		l.w.mu.Unlock()
	}
	return resp, err
}

// jobWrites returns the successful job writes, optionally only those
// made by instance at or after since.
func (w *world) jobWrites(instance string, since time.Time) []write {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []write
	for _, wr := range w.writes {
		if (instance == "" || wr.instance == instance) && !wr.at.Before(since) {
			out = append(out, wr)
		}
	}
	return out
}

// node is one controller instance: its own data dir, Nomad link, store,
// replica, elector and, while it leads, reconcile loop.
type node struct {
	name   string
	link   *link
	st     *store.Store
	el     *leader.Elector
	node   *cluster.Node
	cancel context.CancelFunc
	done   chan struct{}
	alive  atomic.Bool
}

func (w *world) start(name, dir string) *node {
	w.t.Helper()
	return w.startWith(name, dir, nodeOptions{})
}

// nodeOptions vary an instance from the defaults.
type nodeOptions struct {
	// requestTimeout is its Nomad client's bound on a request (-1: none).
	requestTimeout time.Duration
}

// stallAfter is the reconcile loops' StallAfter in these tests.
const stallAfter = 20 * time.Second

func (w *world) startWith(name, dir string, o nodeOptions) *node {
	t := w.t
	t.Helper()
	l := &link{w: w, name: name, conns: map[net.Conn]struct{}{}}
	hc := func() *http.Client { return &http.Client{Transport: l} }
	nc, err := nomad.NewClient(nomad.Config{Address: w.mem.URL(), HTTPClient: hc(), Token: w.token, RequestTimeout: o.requestTimeout})
	if err != nil {
		t.Fatal(err)
	}
	lockNC, err := nomad.NewClient(nomad.Config{Address: w.mem.URL(), HTTPClient: hc(), Token: w.token})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replica.New(replica.Config{Client: nc.API(), Namespace: "default", Prefix: "agentkernel", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	self := leader.Instance{ID: name, Address: "http://" + name + ".test:7474"}
	n := &node{name: name, link: l, st: st, done: make(chan struct{})}
	el, err := leader.New(leader.Config{Client: lockNC.API(), Namespace: "default", Path: rep.LockPath(), TTL: ttl, Delay: delay, Self: self,
		Healthy: func() error { return n.node.Healthy() }})
	if err != nil {
		t.Fatal(err)
	}
	n.el = el
	n.node = cluster.New(cluster.Config{
		Self: self, Elector: el, Replica: rep, Store: st, LocalOwner: st.StoreID(),
		NewController: func(owner string, allowGC bool) (cluster.Controller, error) {
			rec := reconcile.NewReconciler(st, nc, reconcile.Config{Render: nomad.RenderOptions{Owner: owner}}, nil, nil)
			return reconcile.New(reconcile.Options{
				Reconciler: rec,
				Queue:      reconcile.NewQueue(reconcile.QueueOptions{BaseDelay: 10 * time.Millisecond, MaxDelay: time.Second}),
				Store:      st,
				Watcher:    nomad.NewWatcher(nc, nomad.WatchOptions{Owner: owner, FirstLineTimeout: 5 * time.Second}),
				Owner:      owner,
				Backoff:    nomad.Backoff{Base: 10 * time.Millisecond, Max: time.Second},
				DisableGC:  !allowGC,
				StallAfter: stallAfter,
			}), nil
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	n.cancel = cancel
	n.alive.Store(true)
	go func() {
		defer close(n.done)
		_ = n.node.Run(ctx)
	}()
	t.Cleanup(n.stop)
	return n
}

// stop shuts the instance down cleanly (it releases the lock).
func (n *node) stop() {
	if !n.alive.Swap(false) {
		return
	}
	n.cancel()
	<-n.done
	_ = n.st.Close()
}

// kill is a dead node: its link is cut first, so nothing it does after
// reaches Nomad, and its lock is never released.
func (n *node) kill() {
	n.link.setCut(true)
	n.stop()
}

// leaders returns the instances that consider themselves leader.
func leaders(nodes []*node) []*node {
	var out []*node
	for _, n := range nodes {
		if n.alive.Load() && n.el.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

// monitor checks, every 100 ms of fake time until the test ends, that at
// most one instance leads.
func monitor(t *testing.T, nodes *[]*node, mu *sync.Mutex) {
	ctx := t.Context()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			ls := leaders(*nodes)
			mu.Unlock()
			if len(ls) > 1 {
				t.Errorf("%d leaders at once at %s", len(ls), time.Now().Format(time.TimeOnly))
			}
		}
	}()
}

// waitFor re-checks cond every 100 ms of fake time, failing after limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

func soleLeader(t *testing.T, nodes []*node) *node {
	t.Helper()
	var l *node
	waitFor(t, "a leader", 2*ttl+delay+5*time.Second, func() bool {
		ls := leaders(nodes)
		if len(ls) == 1 {
			if _, ok := ls[0].node.Leading(); ok {
				l = ls[0]
				return true
			}
		}
		return false
	})
	return l
}

func sandboxes(n int, image string) []store.Object {
	var src strings.Builder
	for i := range n {
		fmt.Fprintf(&src, "sandbox \"s%02d\" {\n  image = %q\n}\n", i, image)
	}
	res, diags := spec.LoadSources([]spec.SourceFile{{Name: "sandboxes.hcl", Dir: ".", Src: []byte(src.String())}}, spec.Options{})
	if diags.HasErrors() {
		panic(diags.Error())
	}
	objs := make([]store.Object, len(res.Sandboxes))
	for i, sb := range res.Sandboxes {
		objs[i] = store.Object{Sandbox: sb}
	}
	return objs
}

func (n *node) apply(t *testing.T, objs []store.Object) {
	t.Helper()
	if _, err := n.node.Store(n.st).Apply(t.Context(), objs, store.ApplyOptions{}); err != nil {
		t.Fatalf("apply on %s: %v", n.name, err)
	}
}

// converged reports whether n's store shows every one of want running at
// its generation.
func (n *node) converged(want int) func() bool {
	return func() bool {
		recs, _, err := n.st.List(context.Background(), store.ListOptions{})
		if err != nil || len(recs) != want {
			return false
		}
		for _, r := range recs {
			if r.Deleting() || r.Status.Phase != store.PhaseRunning || r.Status.ObservedGeneration != r.Generation {
				return false
			}
		}
		return true
	}
}

// registersPerJob counts successful registers by job ID.
func registersPerJob(ws []write) map[string]int {
	out := map[string]int{}
	for _, w := range ws {
		if w.method == http.MethodPut {
			out[w.jobID]++
		}
	}
	return out
}

func TestThreeInstancesHandOver(t *testing.T) {
	tests := []struct {
		name  string
		world func(t *testing.T) *world
	}{
		{"no ACLs", newWorld},
		{"ACLs, the example policy's token", newACLWorld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testThreeInstancesHandOver(t, tt.world) })
	}
}

func testThreeInstancesHandOver(t *testing.T, newWorld func(t *testing.T) *world) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		var mu sync.Mutex
		var nodes []*node
		for i := range 3 {
			nodes = append(nodes, w.start(fmt.Sprintf("i%d", i), t.TempDir()))
		}
		monitor(t, &nodes, &mu)

		first := soleLeader(t, nodes)
		const n = 10
		first.apply(t, sandboxes(n, "img:1"))
		waitFor(t, "convergence on the first leader", time.Minute, first.converged(n))
		if got := registersPerJob(w.jobWrites("", time.Time{})); len(got) != n {
			t.Fatalf("registered %d jobs, want %d: %v", len(got), n, got)
		}

		// Kill the leader: the lock frees 2×TTL+delay after its last
		// renewal, which came at most TTL/3 before the kill.
		mu.Lock()
		first.kill()
		mu.Unlock()
		killed := time.Now()
		second := soleLeader(t, nodes)
		handover := time.Since(killed)
		if handover > 2*ttl+delay+time.Second {
			t.Errorf("hand-over took %s, want at most 2×TTL+delay (%s) plus a second", handover, 2*ttl+delay)
		}
		t.Logf("hand-over after the kill: %s", handover)
		if second == first {
			t.Fatal("the killed instance still leads")
		}
		waitFor(t, "convergence on the second leader", time.Minute, second.converged(n))

		// Nothing was created twice or lost: one register per sandbox,
		// no deletes, and the new leader's store holds them all.
		all := w.jobWrites("", time.Time{})
		for job, c := range registersPerJob(all) {
			if c != 1 {
				t.Errorf("job %s registered %d times across the hand-over, want once", job, c)
			}
		}
		for _, wr := range all {
			if wr.method == http.MethodDelete {
				t.Errorf("job %s deleted by %s at %s", wr.jobID, wr.instance, wr.at.Format(time.TimeOnly))
			}
		}
		if got := w.jobWrites(first.name, killed); len(got) != 0 {
			t.Errorf("the killed leader wrote after its death: %v", got)
		}

		// The new leader carries on: a change is written once per sandbox.
		since := time.Now()
		second.apply(t, sandboxes(n, "img:2"))
		waitFor(t, "the change converged", time.Minute, second.converged(n))
		if got := w.jobWrites("", since); len(got) != n {
			t.Errorf("%d writes for a change of %d sandboxes, want %d", len(got), n, n)
		}
	})
}

func TestLeaderThatLosesItsLockStopsWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		var mu sync.Mutex
		var nodes []*node
		for i := range 2 {
			nodes = append(nodes, w.start(fmt.Sprintf("i%d", i), t.TempDir()))
		}
		monitor(t, &nodes, &mu)
		old := soleLeader(t, nodes)
		const n = 5
		old.apply(t, sandboxes(n, "img:1"))
		waitFor(t, "convergence", time.Minute, old.converged(n))

		// The old leader can still reach Nomad, but its renewals fail.
		old.link.setBlockRenew(true)
		stepDown := waitFor(t, "the old leader steps down", 2*ttl, func() bool { return !old.el.IsLeader() })
		if stepDown > ttl+time.Second {
			t.Errorf("stepped down %s after renewals stopped, want within the TTL (%s)", stepDown, ttl)
		}
		stoppedAt := time.Now()
		t.Logf("stepped down %s after renewals stopped", stepDown)

		// Drift while the old leader still watches Nomad: only the new
		// leader may repair it.
		w.srv.StopJob("default", "agentkernel-s01", true)
		var newLeader *node
		waitFor(t, "a new leader", 2*ttl+delay+5*time.Second, func() bool {
			for _, nd := range leaders(nodes) {
				if nd != old {
					newLeader = nd
					return true
				}
			}
			return false
		})
		waitFor(t, "the purged job repaired", time.Minute, func() bool { return newLeader.converged(n)() && w.hasJob("agentkernel-s01") })
		if got := w.jobWrites(old.name, stoppedAt); len(got) != 0 {
			t.Errorf("the old leader wrote to Nomad after losing its lock: %v", got)
		}
		if got := w.jobWrites(newLeader.name, time.Time{}); len(got) != 1 || got[0].jobID != "agentkernel-s01" {
			t.Errorf("new leader writes %v, want one register of agentkernel-s01", got)
		}
	})
}

// A leader whose reconcile loop is stuck (here: job reads that never
// answer, on a client with no time bound) stops renewing its lock rather
// than holding it while doing nothing, and another instance takes over.
func TestLeaderWhoseLoopStallsHandsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		var mu sync.Mutex
		nodes := []*node{w.startWith("i0", t.TempDir(), nodeOptions{requestTimeout: -1})}
		monitor(t, &nodes, &mu)
		old := soleLeader(t, nodes)
		mu.Lock()
		nodes = append(nodes, w.start("i1", t.TempDir()))
		mu.Unlock()
		const n = 3
		old.apply(t, sandboxes(n, "img:1"))
		waitFor(t, "convergence", time.Minute, old.converged(n))

		old.link.setHangJobReads(true)
		w.srv.StopJob("default", "agentkernel-s01", true) // work for the stuck loop
		took := waitFor(t, "the stalled leader steps down", stallAfter+2*ttl, func() bool { return !old.el.IsLeader() })
		if took > stallAfter+ttl+time.Second {
			t.Errorf("stepped down %s after its loop got stuck, want within StallAfter + TTL (%s)", took, stallAfter+ttl)
		}
		var next *node
		waitFor(t, "a new leader", 2*ttl+delay+5*time.Second, func() bool {
			for _, nd := range leaders(nodes) {
				if nd != old {
					next = nd
					return true
				}
			}
			return false
		})
		waitFor(t, "the purged job repaired by the new leader", time.Minute, func() bool { return w.hasJob("agentkernel-s01") })
		if got := w.jobWrites(next.name, time.Time{}); len(got) != 1 {
			t.Errorf("new leader writes %v, want the one repair", got)
		}
	})
}

func TestEmptyAndStaleStoresCatchUpBeforeReconciling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		var mu sync.Mutex
		var nodes []*node
		a := w.start("a", t.TempDir())
		nodes = append(nodes, a)
		monitor(t, &nodes, &mu)
		soleLeader(t, nodes)

		// b follows, then is cut off from Nomad while a goes on: b's
		// store falls behind.
		b := w.start("b", t.TempDir())
		mu.Lock()
		nodes = append(nodes, b)
		mu.Unlock()
		a.apply(t, sandboxes(6, "img:1"))
		waitFor(t, "convergence", time.Minute, a.converged(6))
		waitFor(t, "b in sync", time.Minute, func() bool { r, _, _ := b.st.List(t.Context(), store.ListOptions{}); return len(r) == 6 })
		b.link.setCut(true)
		a.apply(t, sandboxes(8, "img:1")) // two more
		if _, err := a.node.Store(a.st).Delete(t.Context(), "default/s00"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "s00 purged and finalized", time.Minute, func() bool {
			_, err := a.st.Get(t.Context(), "default/s00")
			return err != nil && !w.hasJob("agentkernel-s00")
		})
		waitFor(t, "convergence after the change", time.Minute, a.converged(7))

		// A brand-new instance with an empty data dir joins; a dies; b
		// comes back. Whichever leads must hold all 7 and purge none.
		c := w.start("c", t.TempDir())
		mu.Lock()
		nodes = append(nodes, c)
		a.kill()
		mu.Unlock()
		b.link.setCut(false)
		since := time.Now()
		next := soleLeader(t, nodes)
		waitFor(t, "convergence on the new leader", time.Minute, next.converged(7))
		for _, wr := range w.jobWrites("", since) {
			t.Errorf("new leader %s wrote %s %s, want no write: every declared job already runs", wr.instance, wr.method, wr.jobID)
		}
		// Hand over once more, to the other one.
		mu.Lock()
		next.kill()
		mu.Unlock()
		last := soleLeader(t, nodes)
		waitFor(t, "convergence on the last leader", time.Minute, last.converged(7))
		for _, wr := range w.jobWrites("", since) {
			t.Errorf("a new leader (%s) wrote %s %s, want no write", wr.instance, wr.method, wr.jobID)
		}
	})
}
