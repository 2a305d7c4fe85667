package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// controllerUnderTest is the controller assembled as cmd/controller
// assembles it, in this process, with its API on a loopback listener.
type controllerUnderTest struct {
	dir  string
	st   *store.Store
	nc   *nomad.Client
	rcfg reconcile.Config
	// rec is the current loop's reconciler, each loop with a cache of
	// its own as a restarted process has; wrote counts the Nomad writes
	// of the loops before it.
	rec      atomic.Pointer[reconcile.Reconciler]
	wrote    atomic.Int64
	metrics  *reconcile.Metrics
	reg      *prometheus.Registry
	log      *slog.Logger
	workers  int
	resync   time.Duration
	requests *requestCounter // the controller's own Nomad requests
	reach    atomic.Bool

	apiURL string
	apiSrv *http.Server
	api    *apiserver.Server

	loop atomic.Pointer[loop]
}

// loop is one run of the controller's loop with its own queue; a restart
// replaces it, as restarting the controller process would.
type loop struct {
	ctrl    *reconcile.Controller
	watcher *nomad.Watcher
	queue   *reconcile.Queue
	stats   *queueStats
	cancel  context.CancelFunc
	done    chan error
}

type controllerOptions struct {
	// nomadAddr is Nomad's address; empty falls back to NOMAD_ADDR. The
	// token, namespace and TLS settings come from the NOMAD_* environment,
	// as for the nomad CLI.
	nomadAddr  string
	workers    int
	resync     time.Duration
	writeRate  float64
	writeBurst int
	driver     string
	log        *slog.Logger
	// withoutNomad starts only the store and the API: no Nomad client use,
	// no loop.
	withoutNomad bool
}

func startController(ctx context.Context, o controllerOptions) (*controllerUnderTest, error) {
	dir, err := os.MkdirTemp("", "akbench-store-")
	if err != nil {
		return nil, err
	}
	c := &controllerUnderTest{dir: dir, log: o.log, workers: o.workers, resync: o.resync, requests: newRequestCounter()}
	// The production configuration: fsync on every commit.
	c.st, err = store.Open(dir, store.Options{Logger: o.log})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	reg := prometheus.NewRegistry()
	c.reg = reg
	c.metrics = reconcile.NewMetrics(reg)
	c.nc, err = nomad.NewClient(nomad.Config{
		Address: o.nomadAddr,
		OnRequest: func(method, endpoint string, code int, d time.Duration) {
			c.reach.Store(code != 0)
			c.requests.observe(method, endpoint, code, d)
			c.metrics.NomadRequest(method, endpoint, code, d)
		},
	})
	if err != nil {
		c.close()
		return nil, err
	}
	allowed := []string{spec.DriverDocker, spec.DriverExec}
	if o.driver == spec.DriverRawExec {
		allowed = append(allowed, spec.DriverRawExec)
	}
	var limiter *reconcile.WriteLimiter
	if o.writeRate > 0 {
		limiter = reconcile.NewWriteLimiter(o.writeRate, o.writeBurst)
	}
	c.rcfg = reconcile.Config{
		Render:         nomad.RenderOptions{Owner: c.st.StoreID(), AllowRawExec: o.driver == spec.DriverRawExec},
		AllowedDrivers: allowed,
		Metrics:        c.metrics,
		WriteLimiter:   limiter,
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.close()
		return nil, fmt.Errorf("listen for the API: %w", err)
	}
	c.apiURL = "http://" + ln.Addr().String()
	c.api = apiserver.NewServer(apiserver.Options{
		Store:   c.st,
		Policy:  c.rcfg,
		Planner: nomad.Planner{Client: c.nc, Render: c.rcfg.Render},
		Ready: func() (bool, string) {
			if l := c.loop.Load(); l == nil || !l.ctrl.InitialListDone() {
				return false, "waiting for the initial list of owned Nomad jobs"
			}
			return true, ""
		},
		Logger:     o.log,
		Registerer: reg,
		Gatherer:   reg,
		Version:    "akbench",
	})
	c.apiSrv = &http.Server{Handler: c.api, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = c.apiSrv.Serve(ln) }()

	if !o.withoutNomad {
		if err := c.startLoop(ctx); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// startLoop starts a fresh loop (queue, watcher, controller) and waits
// for its initial list of owned jobs.
func (c *controllerUnderTest) startLoop(ctx context.Context) error {
	stats := &queueStats{inner: c.metrics.Queue()}
	q := reconcile.NewQueue(reconcile.QueueOptions{Metrics: stats})
	cache := nomad.NewCache(c.st.StoreID())
	rcfg := c.rcfg
	rcfg.Cache = cache
	rec := reconcile.NewReconciler(c.st, c.nc, rcfg, c.log, nil)
	if old := c.rec.Swap(rec); old != nil {
		c.wrote.Add(old.Writes())
	}
	watcher := nomad.NewWatcher(c.nc, nomad.WatchOptions{Owner: c.st.StoreID(), Logger: c.log, Cache: cache})
	ctrl := reconcile.New(reconcile.Options{
		Reconciler:   rec,
		Queue:        q,
		Store:        c.st,
		Watcher:      watcher,
		Owner:        c.st.StoreID(),
		Workers:      c.workers,
		ResyncPeriod: c.resync,
		Logger:       c.log,
		Metrics:      c.metrics,
	})
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &loop{ctrl: ctrl, watcher: watcher, queue: q, stats: stats, cancel: cancel, done: make(chan error, 1)}
	go func() { l.done <- ctrl.Run(lctx) }()
	c.loop.Store(l)
	for !ctrl.InitialListDone() {
		select {
		case err := <-l.done:
			return fmt.Errorf("controller loop stopped at start: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// stopLoop stops the running loop, letting in-flight reconciles finish.
func (c *controllerUnderTest) stopLoop() error {
	l := c.loop.Swap(nil)
	if l == nil {
		return nil
	}
	l.cancel()
	if err := <-l.done; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("controller loop: %w", err)
	}
	return nil
}

// restartLoop is a controller restart on the same store: every sandbox
// and every owned job is queued again, a full resync.
func (c *controllerUnderTest) restartLoop(ctx context.Context) error {
	if err := c.stopLoop(); err != nil {
		return err
	}
	return c.startLoop(ctx)
}

func (c *controllerUnderTest) close() {
	_ = c.stopLoop()
	if c.api != nil {
		c.api.Close()
	}
	if c.apiSrv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.apiSrv.Shutdown(shutdownCtx)
		cancel()
	}
	if c.st != nil {
		_ = c.st.Close()
	}
	_ = os.RemoveAll(c.dir)
}

// queueStats passes the queue's measurements on to the controller's
// metrics and keeps what akbench needs to tell when the queue is drained:
// keys ready, keys held by workers, and when a worker last finished.
type queueStats struct {
	inner reconcile.QueueMetrics

	mu       sync.Mutex
	depth    int
	gets     int
	dones    int
	lastDone time.Time
}

func (s *queueStats) Depth(n int) {
	s.mu.Lock()
	s.depth = n
	s.mu.Unlock()
	s.inner.Depth(n)
}

func (s *queueStats) Added()   { s.inner.Added() }
func (s *queueStats) Retried() { s.inner.Retried() }

func (s *queueStats) QueueLatency(d time.Duration) {
	s.mu.Lock()
	s.gets++
	s.mu.Unlock()
	s.inner.QueueLatency(d)
}

func (s *queueStats) WorkDuration(d time.Duration) {
	s.mu.Lock()
	s.dones++
	s.lastDone = time.Now()
	s.mu.Unlock()
	s.inner.WorkDuration(d)
}

// drained reports whether at least minReconciles keys were handled and
// the queue has been empty, with no key held, for quiet; and when the
// last key was done.
func (s *queueStats) drained(minReconciles int, quiet time.Duration) (bool, time.Time, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := s.dones >= minReconciles && s.depth == 0 && s.gets == s.dones && time.Since(s.lastDone) >= quiet
	return ok, s.lastDone, s.dones
}

// waitDrained waits until the current loop's queue is drained (see
// drained) and returns when the last key was done and how many reconciles
// there were.
func (c *controllerUnderTest) waitDrained(ctx context.Context, minReconciles int, quiet time.Duration) (time.Time, int, error) {
	l := c.loop.Load()
	if l == nil {
		return time.Time{}, 0, errors.New("the controller loop is not running")
	}
	for {
		if ok, last, n := l.stats.drained(minReconciles, quiet); ok {
			return last, n, nil
		}
		select {
		case <-ctx.Done():
			_, _, n := l.stats.drained(minReconciles, quiet)
			return time.Time{}, n, fmt.Errorf("wait for the queue to drain (%d of at least %d reconciles done): %w", n, minReconciles, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// writes is the Nomad writes of every loop so far.
func (c *controllerUnderTest) writes() int64 {
	n := c.wrote.Load()
	if r := c.rec.Load(); r != nil {
		n += r.Writes()
	}
	return n
}
