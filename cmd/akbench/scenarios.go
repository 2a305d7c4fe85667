package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

var storeListAll = store.ListOptions{}

// drainQuiet is how long the queue must stay empty, with no key held,
// to count as drained.
const drainQuiet = 300 * time.Millisecond

// fleetUnderTest is the converged fleet the controller scenarios share.
type fleetUnderTest struct {
	n      int
	t      *target
	c      *controllerUnderTest
	sbs    []spec.Sandbox
	keys   []string
	bodies [][]byte
}

// controllerPhase converges a fleet on a fresh Nomad and runs the
// scenarios that need it: converge, reapply, idle, then drift, so that
// idle is measured before any out-of-band change.
func (b *bench) controllerPhase(ctx context.Context, n int, raw, imp *baselineResult) {
	t, c, ok := b.startPhase(ctx, scenConverge, n)
	if !ok {
		return
	}
	prefix := b.prefix("c", n)
	defer func() {
		// Stop the controller before purging, or it would repair.
		c.close()
		b.closeTarget(t, spec.JobIDPrefix+prefix+"-", c.nc.Namespace())
	}()
	f := &fleetUnderTest{n: n, t: t, c: c}
	var err error
	if f.sbs, err = fleet(n, prefix, b.cfg.driver, c.nc.Namespace()); err != nil {
		b.rep.fail(scenConverge, n, "%v", err)
		return
	}
	if f.bodies, err = applyBodies(f.sbs); err != nil {
		b.rep.fail(scenConverge, n, "%v", err)
		return
	}
	for _, sb := range f.sbs {
		f.keys = append(f.keys, sb.Key())
	}

	// The other scenarios need a converged fleet, so converge always runs;
	// it is reported only when asked for.
	b.logf("N=%d scenario converge", n)
	if err := b.converge(ctx, f, b.cfg.scenarios[scenConverge], raw, imp); err != nil {
		b.rep.fail(scenConverge, n, "%v", err)
		return
	}
	if b.cfg.scenarios[scenReapply] {
		b.logf("N=%d scenario reapply", n)
		if err := b.reapply(ctx, f); err != nil {
			b.rep.fail(scenReapply, n, "%v", err)
			return
		}
	}
	if b.cfg.scenarios[scenIdle] {
		b.logf("N=%d scenario idle (%s)", n, b.cfg.idle)
		if err := b.idleScenario(ctx, f); err != nil {
			b.rep.fail(scenIdle, n, "%v", err)
			return
		}
	}
	if b.cfg.scenarios[scenDrift] {
		b.logf("N=%d scenario drift (%d trials)", n, b.cfg.driftTrials)
		if err := b.drift(ctx, f); err != nil {
			b.rep.fail(scenDrift, n, "%v", err)
		}
	}
}

// startPhase starts a fresh Nomad (or names the real one) and the
// controller on it, reporting a failure under scenario and n.
func (b *bench) startPhase(ctx context.Context, scenario string, n int) (*target, *controllerUnderTest, bool) {
	t, err := b.newTarget(ctx)
	if err != nil {
		b.rep.fail(scenario, n, "%v", err)
		return nil, nil, false
	}
	c, err := startController(ctx, controllerOptions{
		nomadAddr: t.addr, workers: b.cfg.workers, resync: b.cfg.resync,
		writeRate: b.cfg.writeRate, writeBurst: b.cfg.writeBurst, driver: b.cfg.driver, log: b.log,
	})
	if err != nil {
		b.rep.fail(scenario, n, "start the controller: %v", err)
		b.closeTarget(t, "", "")
		return nil, nil, false
	}
	return t, c, true
}

// converge applies the fleet through the API to an empty store and
// waits until every sandbox is Running.
func (b *bench) converge(ctx context.Context, f *fleetUnderTest, report bool, raw, imp *baselineResult) error {
	c, n := f.c, f.n
	wctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	rev, err := c.st.Revision(ctx)
	if err != nil {
		return err
	}
	if err := b.resetServerRequests(ctx, f.t); err != nil {
		return err
	}
	c.requests.take()
	writes0 := c.writes()
	_, _, reconciles0 := c.loop.Load().stats.drained(0, 0)
	events0 := c.loop.Load().watcher.Stats().Events

	m := startMeter()
	type waited struct {
		at  time.Time
		err error
	}
	done := make(chan waited, 1)
	go func() {
		at, err := waitRecords(wctx, c.st, rev, f.keys, running)
		done <- waited{at, err}
	}()
	changed, err := postApply(wctx, b.hc, c.apiURL, f.bodies)
	applied := time.Since(m.start)
	if err != nil {
		return err
	}
	if !changed {
		return errors.New("the first apply changed nothing")
	}
	w := <-done
	u := m.stop()
	reqs := c.requests.take()
	_, _, reconciles := c.loop.Load().stats.drained(0, 0)
	if w.err != nil {
		return fmt.Errorf("wait for every sandbox to run: %w", w.err)
	}
	elapsed := w.at.Sub(m.start)
	if !report {
		return nil
	}
	r := b.rep
	writes := float64(reqs.writes()) / float64(n)
	if raw != nil {
		r.addVs(scenConverge, n, "time to all Running (s), baseline raw", elapsed.Seconds(), raw.elapsed.Seconds())
		r.addVs(scenConverge, n, "Nomad writes per sandbox (ideal 1), baseline raw", writes, float64(raw.requests.writes())/float64(raw.n))
	} else {
		r.add(scenConverge, n, "time to all Running (s)", elapsed.Seconds())
		r.add(scenConverge, n, "Nomad writes per sandbox (ideal 1)", writes)
	}
	if imp != nil {
		r.addVs(scenConverge, n, "time to all Running (s), baseline imperative", elapsed.Seconds(), imp.elapsed.Seconds())
		r.addVs(scenConverge, n, "Nomad requests per sandbox, baseline imperative", float64(reqs.total())/float64(n), imp.requestsPerSandbox())
	} else {
		r.add(scenConverge, n, "Nomad requests per sandbox", float64(reqs.total())/float64(n))
	}
	if got := c.writes() - writes0; got != int64(reqs.writes()) {
		r.fail(scenConverge, n, "the reconciler counted %d Nomad writes, the client %d", got, reqs.writes())
	}
	r.add(scenConverge, n, fmt.Sprintf("time to accept %d apply request(s) (s)", len(f.bodies)), applied.Seconds())
	r.add(scenConverge, n, "sandboxes Running per second", float64(n)/elapsed.Seconds())
	r.add(scenConverge, n, "reconciles per sandbox", float64(reconciles-reconciles0)/float64(n))
	r.add(scenConverge, n, "Nomad Job and Allocation events per sandbox", float64(c.loop.Load().watcher.Stats().Events-events0)/float64(n))
	r.add(scenConverge, n, "Nomad requests, controller", float64(reqs.total()))
	r.addRequests(scenConverge, n, "Nomad requests", reqs, 1)
	b.serverRequests(ctx, f.t, scenConverge, n, 1)
	r.add(scenConverge, n, "controller CPU per sandbox (ms)", float64(u.cpu.Microseconds())/1000/float64(n))
	r.addUsage(scenConverge, n, u)
	return nil
}

// reapply applies the same fleet again, then restarts the controller loop
// on the same store: every key is queued and reconciled, and not one may
// write to Nomad.
func (b *bench) reapply(ctx context.Context, f *fleetUnderTest) error {
	c, n := f.c, f.n
	wctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	if err := b.resetServerRequests(ctx, f.t); err != nil {
		return err
	}
	c.requests.take()
	writes0 := c.writes()
	m := startMeter()
	changed, err := postApply(wctx, b.hc, c.apiURL, f.bodies)
	if err != nil {
		return err
	}
	applied := time.Since(m.start)
	if changed {
		b.rep.fail(scenReapply, n, "applying the same sandboxes again changed the store")
	}
	restart := time.Now()
	if err := c.restartLoop(wctx); err != nil {
		return err
	}
	last, reconciles, err := c.waitDrained(wctx, n, drainQuiet)
	if err != nil {
		return err
	}
	u := m.stop()
	reqs := c.requests.take()
	writes := reqs.writes()
	r := b.rep
	r.add(scenReapply, n, "Nomad writes (must be 0)", float64(writes))
	if writes != 0 || c.writes() != writes0 {
		r.fail(scenReapply, n, "a no-op resync wrote to Nomad: %d write requests (reconciler: %d writes)", writes, c.writes()-writes0)
	}
	r.add(scenReapply, n, "Nomad reads", float64(reqs.reads()))
	r.add(scenReapply, n, "Nomad reads per sandbox", float64(reqs.reads())/float64(n))
	r.add(scenReapply, n, fmt.Sprintf("time to accept %d unchanged apply request(s) (s)", len(f.bodies)), applied.Seconds())
	r.add(scenReapply, n, "time from restart to drained queue (s)", last.Sub(restart).Seconds())
	r.add(scenReapply, n, "reconciles", float64(reconciles))
	r.addRequests(scenReapply, n, "Nomad requests", reqs, 1)
	b.serverRequests(ctx, f.t, scenReapply, n, 1)
	r.addUsage(scenReapply, n, u)
	return nil
}

// idleScenario watches the converged fleet with nothing changing.
func (b *bench) idleScenario(ctx context.Context, f *fleetUnderTest) error {
	c, n := f.c, f.n
	wctx, cancel := context.WithTimeout(ctx, b.cfg.timeout+b.cfg.idle)
	defer cancel()
	// Start from the steady state: a fresh loop that has reconciled
	// everything once, with no recheck left over from convergence.
	if err := c.restartLoop(wctx); err != nil {
		return err
	}
	if _, _, err := c.waitDrained(wctx, n, drainQuiet); err != nil {
		return err
	}
	if err := b.resetServerRequests(ctx, f.t); err != nil {
		return err
	}
	c.requests.take()
	_, _, before := c.loop.Load().stats.drained(0, 0)
	m := startMeter()
	select {
	case <-time.After(b.cfg.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	u := m.stop()
	reqs := c.requests.take()
	_, _, after := c.loop.Load().stats.drained(0, 0)
	perMin := time.Minute.Seconds() / u.wall.Seconds()
	r := b.rep
	r.add(scenIdle, n, "Nomad requests per minute", float64(reqs.total())*perMin)
	r.add(scenIdle, n, "controller CPU seconds per minute", u.cpu.Seconds()*perMin)
	r.add(scenIdle, n, "reconciles per minute", float64(after-before)*perMin)
	r.addRequests(scenIdle, n, "Nomad requests per minute", reqs, perMin)
	b.serverRequests(ctx, f.t, scenIdle, n, perMin)
	r.addUsage(scenIdle, n, u)
	return nil
}

// Out-of-band changes the drift scenario makes, in turn.
const (
	driftStop   = "stop"
	driftPurge  = "purge"
	driftChange = "change"
)

var driftKinds = []string{driftStop, driftPurge, driftChange}

// drift changes one random sandbox's job behind the controller's back,
// through Nomad's own API, and times until the controller has repaired it:
// its status reports a job written after the change and a running
// allocation. Each repair is then checked against Nomad itself.
func (b *bench) drift(ctx context.Context, f *fleetUnderTest) error {
	c, n := f.c, f.n
	own := newRequestCounter()
	bc, err := nomad.NewClient(nomad.Config{Address: f.t.addr, OnRequest: own.observe})
	if err != nil {
		return err
	}
	cl := bc.API()
	c.requests.take()
	writes0 := c.writes()
	byKind := map[string][]time.Duration{}
	var all []time.Duration
	m := startMeter()
	for i := range b.cfg.driftTrials {
		sb := f.sbs[b.rnd.IntN(n)]
		kind := driftKinds[i%len(driftKinds)]
		jobID, ns := sb.JobID(), sb.Namespace
		tctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
		rev, err := c.st.Revision(tctx)
		if err != nil {
			cancel()
			return err
		}
		index, err := tamper(tctx, cl, kind, ns, jobID, i)
		if err != nil {
			cancel()
			return fmt.Errorf("trial %d: %s %s: %w", i, kind, jobID, err)
		}
		changedAt := time.Now()
		repairedAt, err := waitRecords(tctx, c.st, rev, []string{sb.Key()}, func(rec store.Record) bool {
			return running(rec) && rec.Status.JobModifyIndex > index
		})
		if err != nil {
			cancel()
			return fmt.Errorf("trial %d: wait for the controller to repair %s of %s: %w", i, kind, jobID, err)
		}
		d := repairedAt.Sub(changedAt)
		byKind[kind] = append(byKind[kind], d)
		all = append(all, d)
		if err := verifyRepaired(tctx, cl, &sb, c.rcfg.Render); err != nil {
			b.rep.fail(scenDrift, n, "trial %d (%s %s): %v", i, kind, jobID, err)
		}
		cancel()
	}
	u := m.stop()
	reqs := c.requests.take()
	trials := float64(len(all))
	r := b.rep
	r.add(scenDrift, n, "time to repair p50 (s)", percentile(all, 50).Seconds())
	r.add(scenDrift, n, "time to repair p99 (s)", percentile(all, 99).Seconds())
	r.add(scenDrift, n, "time to repair max (s)", percentile(all, 100).Seconds())
	for _, k := range driftKinds {
		if ds := byKind[k]; len(ds) > 0 {
			r.add(scenDrift, n, fmt.Sprintf("time to repair %s p50 (s)", k), percentile(ds, 50).Seconds())
		}
	}
	r.add(scenDrift, n, "trials", trials)
	r.add(scenDrift, n, "controller Nomad writes per repair (ideal 1)", float64(reqs.writes())/trials)
	r.add(scenDrift, n, "controller Nomad requests per repair", float64(reqs.total())/trials)
	if got := c.writes() - writes0; got != int64(reqs.writes()) {
		r.fail(scenDrift, n, "the reconciler counted %d Nomad writes, the client %d", got, reqs.writes())
	}
	r.addRequests(scenDrift, n, "Nomad requests", reqs, 1)
	r.add(scenDrift, n, "akbench's own Nomad requests (changes and checks)", float64(own.take().total()))
	r.add(scenDrift, n, "controller CPU per repair (ms)", float64(u.cpu.Microseconds())/1000/trials)
	r.addUsage(scenDrift, n, u)
	return nil
}

// tamper makes one out-of-band change and returns the Nomad index it was
// written at: a repair writes the job at a later index.
func tamper(ctx context.Context, cl *api.Client, kind, ns, jobID string, trial int) (uint64, error) {
	wo := (&api.WriteOptions{Namespace: ns}).WithContext(ctx)
	switch kind {
	case driftStop, driftPurge:
		_, meta, err := cl.Jobs().Deregister(jobID, kind == driftPurge, wo)
		if err != nil {
			return 0, err
		}
		return meta.LastIndex, nil
	default:
		job, _, err := cl.Jobs().Info(jobID, (&api.QueryOptions{Namespace: ns}).WithContext(ctx))
		if err != nil {
			return 0, err
		}
		task := job.TaskGroups[0].Tasks[0]
		if task.Env == nil {
			task.Env = map[string]string{}
		}
		task.Env["AKBENCH_DRIFT"] = strconv.Itoa(trial)
		if task.Resources != nil && task.Resources.CPU != nil {
			task.Resources.CPU = new(*task.Resources.CPU * 2)
		}
		resp, _, err := cl.Jobs().Register(job, wo)
		if err != nil {
			return 0, err
		}
		return resp.JobModifyIndex, nil
	}
}

// verifyRepaired checks in Nomad that the sandbox's job is back as the
// controller renders it, not stopped, with a running allocation.
func verifyRepaired(ctx context.Context, cl *api.Client, sb *spec.Sandbox, render nomad.RenderOptions) error {
	q := (&api.QueryOptions{Namespace: sb.Namespace}).WithContext(ctx)
	live, _, err := cl.Jobs().Info(sb.JobID(), q)
	if err != nil {
		return fmt.Errorf("read the repaired job: %w", err)
	}
	desired, err := nomad.Render(sb, render)
	if err != nil {
		return err
	}
	if reasons := nomad.Drift(desired, live); len(reasons) > 0 {
		return fmt.Errorf("the job still differs from its spec: %v %v", reasons, nomad.FieldDiffs(desired, live))
	}
	allocs, _, err := cl.Jobs().Allocations(sb.JobID(), false, q)
	if err != nil {
		return fmt.Errorf("read the repaired job's allocations: %w", err)
	}
	for _, a := range allocs {
		if a.ClientStatus == api.AllocClientStatusRunning && a.DesiredStatus == api.AllocDesiredStatusRun && a.JobVersion == *live.Version {
			return nil
		}
	}
	return errors.New("the repaired job has no running allocation of its current version")
}

// percentile is the nearest-rank p-th percentile (p in (0, 100]).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}
