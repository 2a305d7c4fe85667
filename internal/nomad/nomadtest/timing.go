package nomadtest

import "time"

// The recorded timings of a raw_exec service job on a real Nomad 2.0.5 dev
// agent (lifecycle README, read from the server's own timestamps in
// default.events and maxparallel0.events: the job's SubmitTime, the
// allocations' and evaluations' ModifyTime, the deployments' ModifyTime).
const (
	// The plan became visible 1-10ms after the register answered.
	defaultEvalDelay = 5 * time.Millisecond
	// The client's first report after a plan came 60-320ms later: the
	// stopped allocation complete, the placed one received.
	defaultClientDelay = 150 * time.Millisecond
	// The placed allocation ran 360-930ms after the plan.
	defaultSchedulingDelay = 450 * time.Millisecond
	// The client reported an allocation healthy 10.09s after it ran, with
	// min_healthy_time 10s.
	healthReportDelay = 90 * time.Millisecond
	// The deployment watcher created its evaluation 1.054s after that
	// report, and marked the deployment successful and the version stable
	// 0.252s later, every time.
	watcherEvalDelay = 1054 * time.Millisecond
	watcherPlanDelay = 252 * time.Millisecond
)

// timing resolves a delay option: at once in instant mode, the recorded
// default for zero, any negative value as at once.
func timing(instant bool, d, def time.Duration) time.Duration {
	switch {
	case instant:
		return -1
	case d == 0:
		return def
	}
	return d
}

// delay is a fixed recorded delay, or at once in instant mode.
func (s *Server) delay(d time.Duration) time.Duration {
	if s.opts.Instant {
		return -1
	}
	return d
}

// after runs f with s.mu held once d has passed, or at once when d is
// negative. It returns the timer, nil when f ran at once or the server is
// closed. Callers hold s.mu.
func (s *Server) after(d time.Duration, f func()) *time.Timer {
	if d < 0 {
		f()
		return nil
	}
	return s.afterFunc(d, f)
}
