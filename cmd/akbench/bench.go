package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// bench runs the scenarios and baselines and collects the report.
type bench struct {
	cfg      config
	log      *slog.Logger
	progress io.Writer
	// runID keeps this run's job names apart from any other's on a shared
	// cluster.
	runID string
	rnd   *rand.Rand
	rep   *report
	hc    *http.Client
}

func newBench(cfg config, stderr io.Writer) (*bench, error) {
	log := slog.New(slog.DiscardHandler)
	if cfg.verbose {
		log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	rc := machineContext()
	rc.Driver, rc.Workers, rc.WriteRate, rc.WriteBurst, rc.Seed = cfg.driver, cfg.workers, cfg.writeRate, cfg.writeBurst, cfg.seed
	rc.Resync = cfg.resync.String()
	if cfg.nomadAddr == "" {
		rc.Nomad = "test server in a child process, a fresh one per phase"
		rc.SchedDelay = cfg.schedDelay.String()
		switch {
		case cfg.instant:
			rc.SchedDelay = "instant"
		case cfg.schedDelay == 0:
			rc.SchedDelay = "a real agent's timing (450ms)"
		}
	} else {
		rc.Nomad = cfg.nomadAddr
	}
	rc.Notes = []string{
		"controller CPU and peak RSS are akbench's process: the controller, its API and store, and akbench's load generator (pre-encoded apply bodies, one store read per status write to observe progress); the test server runs in a child process and is not included",
		"Nomad requests are counted client-side (nomad.Config.OnRequest) for the controller and each baseline separately; 'test server requests' rows are the server's own count of every client's requests",
		"idle and reapply restart the controller loop first: a restart queues every sandbox (a full resync), and drops the one-off 30 s rechecks of sandboxes that were pending",
		"drift's CPU also includes akbench's own Nomad client making the changes and checking each repair; its repair times include the allocation's scheduling delay",
		"apply runs the API and a fresh store alone, without the reconciler or Nomad",
	}
	return &bench{
		cfg:      cfg,
		log:      log,
		progress: stderr,
		runID:    fmt.Sprintf("%06x", rand.Uint32()&0xffffff),
		rnd:      rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15)),
		rep:      &report{Context: rc},
		hc:       &http.Client{},
	}, nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "akbench: "+format+"\n", args...)
}

func (b *bench) run(ctx context.Context) *report {
	for _, n := range b.cfg.sizes {
		if ctx.Err() != nil {
			b.rep.fail("run", n, "interrupted: %v", ctx.Err())
			break
		}
		var raw, imp *baselineResult
		if b.cfg.scenarios[scenConverge] && b.cfg.baselines[baseRaw] {
			raw = b.baseline(ctx, n, baseRaw)
		}
		if b.cfg.scenarios[scenConverge] && b.cfg.baselines[baseImperative] {
			imp = b.baseline(ctx, n, baseImperative)
		}
		if b.cfg.scenarios[scenConverge] || b.cfg.scenarios[scenReapply] || b.cfg.scenarios[scenDrift] || b.cfg.scenarios[scenIdle] {
			b.controllerPhase(ctx, n, raw, imp)
		}
		if b.cfg.scenarios[scenApply] {
			b.applyPhase(ctx, n)
		}
	}
	if b.cfg.scenarios[scenClaim] && ctx.Err() == nil {
		b.logf("scenario claim (pool of %d)", b.cfg.poolSize)
		b.claimPhase(ctx, b.cfg.poolSize)
	}
	return b.rep
}

// prefix names one phase's sandboxes: unique per run, phase and size.
func (b *bench) prefix(phase string, n int) string {
	return fmt.Sprintf("akb-%s-%s%d", b.runID, phase, n)
}

// target is the Nomad one phase runs against.
type target struct {
	addr string
	ts   *testServer // nil for a real cluster
}

// newTarget starts a fresh test server, or names the real cluster.
func (b *bench) newTarget(ctx context.Context) (*target, error) {
	if b.cfg.nomadAddr != "" {
		return &target{addr: b.cfg.nomadAddr}, nil
	}
	ts, err := startTestServer(ctx, b.cfg.schedDelay, b.cfg.instant)
	if err != nil {
		return nil, err
	}
	return &target{addr: ts.url, ts: ts}, nil
}

// close stops the test server, or purges from the real cluster every job
// of the phase (IDs starting with jobPrefix).
func (b *bench) closeTarget(t *target, jobPrefix, namespace string) {
	if t.ts != nil {
		t.ts.close()
		return
	}
	if jobPrefix == "" {
		return // nothing was created; an empty prefix would match every job
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nomad.NewClient(nomad.Config{Address: t.addr})
	if err == nil {
		var n int
		n, err = purgePrefix(ctx, nc.API(), jobPrefix, namespace)
		b.logf("purged %d jobs %s* from namespace %s", n, jobPrefix, namespace)
	}
	if err != nil {
		b.rep.fail("cleanup", 0, "purge jobs %s* in namespace %s: %v", jobPrefix, namespace, err)
	}
}

// serverRequests adds the test server's own count of every client's
// requests since its last reset, as a cross-check of the client-side
// counts.
func (b *bench) serverRequests(ctx context.Context, t *target, scenario string, n int, scale float64) {
	if t.ts == nil {
		return
	}
	counts, err := t.ts.requests(ctx)
	if err != nil {
		b.rep.fail(scenario, n, "%v", err)
		return
	}
	b.rep.add(scenario, n, "test server requests, all clients", float64(requestCounts(counts).total())*scale)
}

func (b *bench) resetServerRequests(ctx context.Context, t *target) error {
	if t.ts == nil {
		return nil
	}
	return t.ts.resetRequests(ctx)
}

// baseline measures the raw or imperative way on a Nomad of its own.
func (b *bench) baseline(ctx context.Context, n int, name string) *baselineResult {
	b.logf("N=%d baseline %s", n, name)
	t, err := b.newTarget(ctx)
	if err != nil {
		b.rep.fail(name, n, "%v", err)
		return nil
	}
	counter := newRequestCounter()
	nc, err := nomad.NewClient(nomad.Config{Address: t.addr, OnRequest: counter.observe})
	if err != nil {
		b.rep.fail(name, n, "%v", err)
		b.closeTarget(t, "", "")
		return nil
	}
	prefix := b.prefix(name[:1], n)
	jobPrefix := spec.JobIDPrefix + prefix + "-"
	defer b.closeTarget(t, jobPrefix, nc.Namespace())
	sbs, err := fleet(n, prefix, b.cfg.driver, nc.Namespace())
	if err != nil {
		b.rep.fail(name, n, "%v", err)
		return nil
	}
	jobs, err := renderJobs(sbs, b.cfg.driver)
	if err != nil {
		b.rep.fail(name, n, "%v", err)
		return nil
	}
	if err := b.resetServerRequests(ctx, t); err != nil {
		b.rep.fail(name, n, "%v", err)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	var res baselineResult
	if name == baseRaw {
		res, err = rawBaseline(wctx, nc.API(), jobs, jobPrefix, nc.Namespace(), counter)
	} else {
		res, err = imperativeBaseline(wctx, nc.API(), jobs, counter)
	}
	if err != nil {
		b.rep.fail(name, n, "%v", err)
		return nil
	}
	b.rep.add(name, n, "time to all running (s)", res.elapsed.Seconds())
	b.rep.add(name, n, "Nomad requests per sandbox", res.requestsPerSandbox())
	b.rep.add(name, n, "Nomad writes per sandbox", float64(res.requests.writes())/float64(n))
	b.rep.addRequests(name, n, "Nomad requests", res.requests, 1)
	b.serverRequests(ctx, t, name, n, 1)
	return &res
}

// applyPhase measures the API and a fresh store alone.
func (b *bench) applyPhase(ctx context.Context, n int) {
	b.logf("N=%d scenario apply", n)
	c, err := startController(ctx, controllerOptions{workers: b.cfg.workers, driver: b.cfg.driver, log: b.log, withoutNomad: true})
	if err != nil {
		b.rep.fail(scenApply, n, "%v", err)
		return
	}
	defer c.close()
	sbs, err := fleet(n, b.prefix("a", n), b.cfg.driver, c.nc.Namespace())
	if err != nil {
		b.rep.fail(scenApply, n, "%v", err)
		return
	}
	bodies, err := applyBodies(sbs)
	if err != nil {
		b.rep.fail(scenApply, n, "%v", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	m := startMeter()
	changed, err := postApply(wctx, b.hc, c.apiURL, bodies)
	u := m.stop()
	if err != nil {
		b.rep.fail(scenApply, n, "%v", err)
		return
	}
	recs, _, err := c.st.List(ctx, storeListAll)
	switch {
	case err != nil:
		b.rep.fail(scenApply, n, "%v", err)
	case !changed || len(recs) != n:
		b.rep.fail(scenApply, n, "the store holds %d sandboxes after applying %d", len(recs), n)
	}
	b.rep.add(scenApply, n, "sandboxes accepted and stored per second", float64(n)/u.wall.Seconds())
	b.rep.add(scenApply, n, fmt.Sprintf("time, %d request(s) of up to %d (s)", len(bodies), applyBatch), u.wall.Seconds())
	b.rep.add(scenApply, n, "controller CPU per sandbox (ms)", float64(u.cpu.Microseconds())/1000/float64(n))
	b.rep.addUsage(scenApply, n, u)
}
