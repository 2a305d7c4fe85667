package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// claimRates are the claim scenario's rates, claims per second; each
// round makes as many claims as the pool holds, at that rate.
var claimRates = []int{1, 10, 100}

// coldRuns is how many cold sandboxes the claim scenario's baseline
// applies, one after the other; the median is the baseline.
const coldRuns = 5

// claimPhase measures claims from a warm pool against the cold path, on a
// fresh Nomad: the baseline applies one sandbox at a time through the API
// and waits until it runs; then a pool of poolSize fills from empty, and
// at each rate as many claims as the pool holds are made, each timed from
// request to answer, the pool refilled between rounds.
func (b *bench) claimPhase(ctx context.Context, poolSize int) {
	t, c, ok := b.startPhase(ctx, scenClaim, poolSize)
	if !ok {
		return
	}
	prefix := b.prefix("p", poolSize)
	defer func() {
		c.close()
		b.closeTarget(t, spec.JobIDPrefix+prefix, c.nc.Namespace())
	}()
	if err := b.claimScenario(ctx, c, prefix, poolSize); err != nil {
		b.rep.fail(scenClaim, poolSize, "%v", err)
	}
}

func (b *bench) claimScenario(ctx context.Context, c *controllerUnderTest, prefix string, poolSize int) error {
	wctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	r := b.rep

	// The cold path: apply one sandbox, wait until it runs.
	sbs, err := fleet(coldRuns, prefix+"-cold", b.cfg.driver, c.nc.Namespace())
	if err != nil {
		return err
	}
	var cold []time.Duration
	for _, sb := range sbs {
		body, err := applyBodies([]spec.Sandbox{sb})
		if err != nil {
			return err
		}
		rev, err := c.st.Revision(wctx)
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := postApply(wctx, b.hc, c.apiURL, body); err != nil {
			return err
		}
		at, err := waitRecords(wctx, c.st, rev, []string{sb.Key()}, func(rec store.Record) bool { return rec.Ready() })
		if err != nil {
			return fmt.Errorf("cold sandbox: %w", err)
		}
		cold = append(cold, at.Sub(start))
	}
	coldP50 := percentile(cold, 50)

	// The pool, filled from empty.
	pool := prefix + "-pool"
	poolKey := c.nc.Namespace() + "/" + pool
	tmpl := sbs[0]
	tmpl.Name = pool
	body, err := json.Marshal(apiserver.ApplyRequest{ApplySet: "akbench", Objects: []apiserver.ApplyObject{
		{Sandbox: tmpl, Source: tmpl.Source, Pool: &spec.PoolSettings{Size: poolSize}},
	}})
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := postApply(wctx, b.hc, c.apiURL, [][]byte{body}); err != nil {
		return err
	}
	if err := waitPoolReady(wctx, c.st, poolKey, poolSize); err != nil {
		return fmt.Errorf("fill the pool: %w", err)
	}
	r.add(scenClaim, poolSize, "pool fill from empty after apply (s)", time.Since(start).Seconds())

	claimURL := c.apiURL + "/v1/pools/" + c.nc.Namespace() + "/" + pool + "/claim"
	claimBody := []byte(`{"wait":"30s"}`)
	for _, rate := range claimRates {
		b.logf("claim: %d claims at %d/s from a pool of %d", poolSize, rate, poolSize)
		waited0 := claimsWaited(c.reg)
		lat, err := b.claimRound(wctx, claimURL, claimBody, rate, poolSize)
		waited := claimsWaited(c.reg) - waited0
		if err != nil {
			return fmt.Errorf("claims at %d/s: %w", rate, err)
		}
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		r.addVs(scenClaim, poolSize, fmt.Sprintf("claim latency p50 at %d/s (ms), baseline cold apply until Ready", rate), ms(p50), ms(coldP50))
		r.addVs(scenClaim, poolSize, fmt.Sprintf("claim latency p99 at %d/s (ms), baseline cold apply until Ready", rate), ms(p99), ms(coldP50))
		r.add(scenClaim, poolSize, fmt.Sprintf("claims that waited for the refill at %d/s", rate), float64(waited))
		// The pool, emptied by the round, refills before the next.
		start := time.Now()
		if err := waitPoolReady(wctx, c.st, poolKey, poolSize); err != nil {
			return fmt.Errorf("refill after %d/s: %w", rate, err)
		}
		r.add(scenClaim, poolSize, fmt.Sprintf("pool refill to %d after the %d/s round (s)", poolSize, rate), time.Since(start).Seconds())
	}
	r.add(scenClaim, poolSize, "cold apply until Ready, median of 5 (ms)", ms(coldP50))
	return nil
}

// claimRound makes n claims at rate per second, each in its own
// goroutine, and returns their latencies.
func (b *bench) claimRound(ctx context.Context, url string, body []byte, rate, n int) ([]time.Duration, error) {
	type result struct {
		d   time.Duration
		err error
	}
	results := make(chan result, n)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := range n {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		go func() {
			start := time.Now()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				results <- result{err: err}
				return
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := b.hc.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			d := time.Since(start)
			if resp.StatusCode != http.StatusOK {
				results <- result{err: fmt.Errorf("status %s: %s", resp.Status, bytes.TrimSpace(out))}
				return
			}
			results <- result{d: d}
		}()
	}
	var lat []time.Duration
	var firstErr error
	for range n {
		res := <-results
		if res.err != nil && firstErr == nil {
			firstErr = res.err
		}
		lat = append(lat, res.d)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	slices.Sort(lat)
	return lat, nil
}

// claimsWaited reads the controller's count of claims served after a wait.
func claimsWaited(g prometheus.Gatherer) int {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != "agentkernel_claims_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "waited" {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// waitPoolReady waits until the pool's status counts ready sandboxes: at
// once when it does already, else on the change feed.
func waitPoolReady(ctx context.Context, st *store.Store, key string, ready int) error {
	filled := func(rec store.Record) bool {
		return rec.Status.Pool != nil && rec.Status.Pool.Ready >= ready && rec.Status.ObservedGeneration == rec.Generation
	}
	rev, err := st.Revision(ctx)
	if err != nil {
		return err
	}
	if rec, err := st.Get(ctx, key); err == nil && filled(rec) {
		return nil
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	_, err = waitRecords(ctx, st, rev, []string{key}, filled)
	return err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
