package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// baselineParallelism is how many sandboxes the baselines handle at once.
const baselineParallelism = 8

// baselineOwner is stamped on the baselines' jobs, so that no controller
// takes them for its own.
const baselineOwner = "akbench-baseline"

// baselineResult is what a baseline measured.
type baselineResult struct {
	n        int
	elapsed  time.Duration
	requests requestCounts
}

func (r baselineResult) requestsPerSandbox() float64 {
	return float64(r.requests.total()) / float64(r.n)
}

// renderJobs renders the sandboxes as the controller would, with the
// baseline's owner.
func renderJobs(sbs []spec.Sandbox, driver string) ([]*api.Job, error) {
	jobs := make([]*api.Job, len(sbs))
	for i := range sbs {
		j, err := nomad.Render(&sbs[i], nomad.RenderOptions{Owner: baselineOwner, AllowRawExec: driver == spec.DriverRawExec})
		if err != nil {
			return nil, err
		}
		jobs[i] = j
	}
	return jobs, nil
}

// forEach runs fn for every job, baselineParallelism at a time.
func forEach(ctx context.Context, jobs []*api.Job, fn func(ctx context.Context, job *api.Job) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(baselineParallelism)
	for _, j := range jobs {
		g.Go(func() error { return fn(gctx, j) })
	}
	return g.Wait()
}

func writeOpts(ctx context.Context, job *api.Job) *api.WriteOptions {
	return (&api.WriteOptions{Namespace: *job.Namespace}).WithContext(ctx)
}

// rawBaseline registers the jobs directly, baselineParallelism at a time,
// and waits until every job's summary counts a running allocation. The
// list is polled no more often than every 50 ms, and no more than half the
// time, so that polling a large list does not slow Nomad down.
func rawBaseline(ctx context.Context, client *api.Client, jobs []*api.Job, prefix, namespace string, counter *requestCounter) (baselineResult, error) {
	counter.take()
	start := time.Now()
	regErr := make(chan error, 1)
	go func() {
		regErr <- forEach(ctx, jobs, func(ctx context.Context, job *api.Job) error {
			if _, _, err := client.Jobs().Register(job, writeOpts(ctx, job)); err != nil {
				return fmt.Errorf("register job %q: %w", *job.ID, err)
			}
			return nil
		})
	}()
	registered := false
	for {
		t := time.Now()
		stubs, _, err := client.Jobs().List((&api.QueryOptions{Namespace: namespace, Prefix: prefix}).WithContext(ctx))
		if err != nil {
			return baselineResult{}, fmt.Errorf("list jobs: %w", err)
		}
		took := time.Since(t)
		runningJobs := 0
		for _, s := range stubs {
			if s.JobSummary != nil && s.JobSummary.Summary[nomad.GroupName].Running >= 1 {
				runningJobs++
			}
		}
		if runningJobs >= len(jobs) {
			break
		}
		if !registered {
			select {
			case err := <-regErr:
				if err != nil {
					return baselineResult{}, err
				}
				registered = true
			default:
			}
		}
		select {
		case <-ctx.Done():
			return baselineResult{}, fmt.Errorf("wait for %d jobs to run (%d running): %w", len(jobs), runningJobs, ctx.Err())
		case <-time.After(max(50*time.Millisecond, 2*took)):
		}
	}
	elapsed := time.Since(start)
	if !registered {
		if err := <-regErr; err != nil {
			return baselineResult{}, err
		}
	}
	return baselineResult{n: len(jobs), elapsed: elapsed, requests: counter.take()}, nil
}

// imperativeBaseline is agentkernel's own way: per sandbox, register the
// job, then poll its allocations with a backoff from 50 ms doubling to
// 500 ms until one runs; baselineParallelism sandboxes at a time.
func imperativeBaseline(ctx context.Context, client *api.Client, jobs []*api.Job, counter *requestCounter) (baselineResult, error) {
	counter.take()
	start := time.Now()
	err := forEach(ctx, jobs, func(ctx context.Context, job *api.Job) error {
		if _, _, err := client.Jobs().Register(job, writeOpts(ctx, job)); err != nil {
			return fmt.Errorf("register job %q: %w", *job.ID, err)
		}
		q := (&api.QueryOptions{Namespace: *job.Namespace}).WithContext(ctx)
		for delay := 50 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for job %q to run: %w", *job.ID, ctx.Err())
			case <-time.After(delay):
			}
			allocs, _, err := client.Jobs().Allocations(*job.ID, false, q)
			if err != nil {
				return fmt.Errorf("read allocations of job %q: %w", *job.ID, err)
			}
			for _, a := range allocs {
				if a.ClientStatus == api.AllocClientStatusRunning {
					return nil
				}
			}
		}
	})
	if err != nil {
		return baselineResult{}, err
	}
	return baselineResult{n: len(jobs), elapsed: time.Since(start), requests: counter.take()}, nil
}

// purgePrefix purges every job whose ID starts with prefix in namespace:
// akbench's cleanup on a real cluster. The jobs are stopped first and
// purged once the client has ended their tasks, so that the next phase
// does not start while the agent is still killing this one's: a purge
// alone answers at once and leaves that work running in the background.
func purgePrefix(ctx context.Context, client *api.Client, prefix, namespace string) (int, error) {
	stubs, _, err := client.Jobs().List((&api.QueryOptions{Namespace: namespace, Prefix: prefix}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("list jobs to purge: %w", err)
	}
	deregister := func(purge bool) (int, error) {
		var (
			mu    sync.Mutex
			first error
			n     int
		)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(baselineParallelism)
		for _, s := range stubs {
			g.Go(func() error {
				_, _, err := client.Jobs().Deregister(s.ID, purge, (&api.WriteOptions{Namespace: s.Namespace}).WithContext(gctx))
				mu.Lock()
				defer mu.Unlock()
				if err != nil && first == nil {
					first = fmt.Errorf("deregister job %q (purge %t): %w", s.ID, purge, err)
				}
				if err == nil {
					n++
				}
				return nil
			})
		}
		_ = g.Wait()
		return n, first
	}
	// Whatever goes wrong with the stop or the wait, the jobs are purged.
	_, stopErr := deregister(false)
	if stopErr == nil {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		stopErr = waitTasksEnded(wctx, client, prefix, namespace)
		cancel()
	}
	n, err := deregister(true)
	return n, errors.Join(err, stopErr)
}

// waitTasksEnded waits until no allocation of a job whose ID starts with
// prefix is still pending or running on its client.
func waitTasksEnded(ctx context.Context, client *api.Client, prefix, namespace string) error {
	var index uint64
	for {
		allocs, meta, err := client.Allocations().List((&api.QueryOptions{Namespace: namespace, WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("list allocations of the stopped jobs: %w", err)
		}
		live := 0
		for _, a := range allocs {
			if strings.HasPrefix(a.JobID, prefix) && (a.ClientStatus == api.AllocClientStatusPending || a.ClientStatus == api.AllocClientStatusRunning) {
				live++
			}
		}
		if live == 0 {
			return nil
		}
		index = meta.LastIndex
	}
}
