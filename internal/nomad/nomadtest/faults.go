package nomadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// NoLeaderText is the body real Nomad answers, with status 500, while the
// cluster has no leader.
const NoLeaderText = "No cluster leader"

// ErrorFault makes requests fail instead of reaching the API.
type ErrorFault struct {
	// Status and Body of the failed responses. Zero Status means 500.
	Status int
	Body   string
	// Count is how many requests fail; zero means every request until
	// Duration has passed.
	Count int
	// Duration bounds the fault in time, measured with Options.Now; zero
	// means until Count is used up. With both zero the fault lasts until
	// ResetFaults.
	Duration time.Duration
	// PathPrefix limits the fault to matching request paths, e.g. "/v1/jobs".
	PathPrefix string
}

type activeFault struct {
	ErrorFault
	until time.Time
}

type faultState struct {
	latency time.Duration
	errs    []*activeFault
}

// take returns the latency to add to a request and the fault to answer it
// with, if any, consuming one use of a counted fault.
func (f *faultState) take(now time.Time, path string) (time.Duration, *ErrorFault) {
	for i := 0; i < len(f.errs); i++ {
		e := f.errs[i]
		if !e.until.IsZero() && !now.Before(e.until) {
			f.errs = append(f.errs[:i], f.errs[i+1:]...)
			i--
			continue
		}
		if !strings.HasPrefix(path, e.PathPrefix) {
			continue
		}
		out := e.ErrorFault
		if e.Count > 0 {
			e.Count--
			if e.Count == 0 {
				f.errs = append(f.errs[:i], f.errs[i+1:]...)
			}
		}
		return f.latency, &out
	}
	return f.latency, nil
}

// SetLatency delays every API request by d; zero removes the delay.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.latency = d
}

// FailRequests makes matching requests fail as described by f.
func (s *Server) FailRequests(f ErrorFault) {
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	af := &activeFault{ErrorFault: f}
	if f.Duration > 0 {
		af.until = s.now().Add(f.Duration)
	}
	s.faults.errs = append(s.faults.errs, af)
}

// NoLeader makes requests answer 500 "No cluster leader" for count requests
// or for d, as a cluster that lost its leader does.
func (s *Server) NoLeader(count int, d time.Duration) {
	s.FailRequests(ErrorFault{Status: http.StatusInternalServerError, Body: NoLeaderText, Count: count, Duration: d})
}

// ResetFaults removes latency and error faults.
func (s *Server) ResetFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faultState{}
}

// StopListening closes the listener and every open connection, as a crashed
// agent would. Resume serves again on the same address.
func (s *Server) StopListening() {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	s.stopListeningLocked()
}

// Resume listens again on the address used before StopListening.
func (s *Server) Resume() error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.httpSrv != nil {
		return nil
	}
	if s.addr == "" {
		return errors.New("resume: server was never started")
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("resume: server is closed")
	}
	return s.listenLocked(s.addr)
}

// Outage stops listening now and listens again on the same address after d.
func (s *Server) Outage(d time.Duration) {
	s.StopListening()
	time.AfterFunc(d, func() {
		if err := s.Resume(); err != nil {
			s.log.Debug("resume after outage", "err", err)
		}
	})
}

// CutEventStreams ends every open event stream; clients see EOF.
func (s *Server) CutEventStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		close(st.cut)
		delete(s.streams, st)
	}
}

// JumpIndex advances the raft index by n and empties the event buffer, as n
// unrelated writes would: a stream resuming from an index it saw before then
// starts above it with no gap marker (facts 4.10).
func (s *Server) JumpIndex(n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index += n
	s.events.lines = nil
}

// Index is the current raft index.
func (s *Server) Index() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

// liveAlloc finds the running allocation of a job.
func (s *Server) liveAlloc(ns, jobID string) (*alloc, error) {
	je := s.jobs[nsKey{ns, jobID}]
	if je == nil {
		return nil, fmt.Errorf("job %q in namespace %q not found", jobID, ns)
	}
	for i := len(je.allocs) - 1; i >= 0; i-- {
		if a := je.allocs[i]; a.a.DesiredStatus == desiredRun && a.a.ClientStatus == clientRunning {
			return a, nil
		}
	}
	return nil, fmt.Errorf("job %q has no running allocation", jobID)
}

// KillTask kills the tasks of the job's newest running allocation as
// `kill -9` would: exit 137, signal 9, then the restart policy and, once its
// attempts are used up, the reschedule policy (facts 4.11). The client
// reports it Options.ClientDelay later, as FailTask's and ExitTask's.
func (s *Server) KillTask(ns, jobID string) error {
	return s.endTask(ns, jobID, 137, 9, false)
}

// FailTask makes the job's running allocation fail with an unrecoverable
// error: no restart, straight to the reschedule policy (63, 64).
func (s *Server) FailTask(ns, jobID string) error {
	return s.endTask(ns, jobID, 1, 0, true)
}

// ExitTask makes the tasks of the job's running allocation exit with code.
// A batch task exiting 0 completes its alloc and, with nothing else left,
// its job ends dead (140).
func (s *Server) ExitTask(ns, jobID string, code int) error {
	return s.endTask(ns, jobID, code, 0, false)
}

func (s *Server) endTask(ns, jobID string, code, signal int, unrecoverable bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.liveAlloc(ns, jobID)
	if err != nil {
		return fmt.Errorf("end task: %w", err)
	}
	// The client notices the task's end and reports it with its next sync,
	// ClientDelay later (lifecycle timeline: the allocation still running
	// 10ms after a kill -9, pending 220ms after).
	s.after(s.opts.ClientDelay, func() {
		if s.allocs[a.a.ID] == a && a.a.DesiredStatus == desiredRun && a.a.ClientStatus == clientRunning {
			_ = s.taskExited(a, code, signal, unrecoverable)
		}
	})
	return nil
}

// RunJob registers a job as `nomad job run` does, e.g. to change a job
// behind the controller's back. It returns the evaluation ID and the index.
func (s *Server) RunJob(job *api.Job) (string, uint64, error) {
	job = cloneJob(job)
	canonicalize(job, cmpOr(deref(job.Namespace), "default"))
	if errs := validateJob(job); len(errs) > 0 {
		return "", 0, fmt.Errorf("run job %q: %w", deref(job.ID), errs)
	}
	resp, status, text := s.register(job, false, 0)
	if status != http.StatusOK {
		return "", 0, fmt.Errorf("run job %q: %d %s", deref(job.ID), status, text)
	}
	return resp.EvalID, resp.Index, nil
}

// StopJob stops a job as `nomad job stop` does, or purges it with
// `-purge`. It returns the index of the write, 0 for an unknown job.
func (s *Server) StopJob(ns, jobID string, purge bool) uint64 {
	return s.deregister(nsKey{ns, jobID}, purge).Index
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Requests returns how many API requests the server received, keyed by
// method and route, e.g. "PUT /v1/jobs" or "GET /v1/job/{id}". Fault
// endpoints are not counted.
func (s *Server) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counts)
}

// RequestCount returns the count of one key of Requests.
func (s *Server) RequestCount(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

// ResetRequests zeroes the request counters.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.counts)
}

const faultPrefix = "/_fault/"

func isFaultPath(p string) bool { return strings.HasPrefix(p, faultPrefix) }

// faultRequest is the JSON body every fault endpoint accepts; each reads
// the fields it needs.
type faultRequest struct {
	Latency    string
	Status     int
	Body       string
	Count      int
	Duration   string
	PathPrefix string
	By         uint64
	Namespace  string
	JobID      string
	ExitCode   int
	Purge      bool
}

func (s *Server) faultRoutes() *http.ServeMux {
	m := http.NewServeMux()
	handle := func(path string, f func(faultRequest) error) {
		m.HandleFunc("POST "+faultPrefix+path, func(w http.ResponseWriter, r *http.Request) {
			var req faultRequest
			if r.ContentLength != 0 {
				if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
					writeText(w, http.StatusBadRequest, "decode fault request: "+err.Error())
					return
				}
			}
			if req.Namespace == "" {
				req.Namespace = "default"
			}
			if err := f(req); err != nil {
				writeText(w, http.StatusBadRequest, err.Error())
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
	dur := func(v string) (time.Duration, error) {
		if v == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("parse duration: %w", err)
		}
		return d, nil
	}
	handle("latency", func(req faultRequest) error {
		d, err := dur(req.Latency)
		if err == nil {
			s.SetLatency(d)
		}
		return err
	})
	handle("errors", func(req faultRequest) error {
		d, err := dur(req.Duration)
		if err == nil {
			s.FailRequests(ErrorFault{Status: req.Status, Body: req.Body, Count: req.Count, Duration: d, PathPrefix: req.PathPrefix})
		}
		return err
	})
	handle("no-leader", func(req faultRequest) error {
		d, err := dur(req.Duration)
		if err == nil {
			s.NoLeader(req.Count, d)
		}
		return err
	})
	handle("outage", func(req faultRequest) error {
		d, err := dur(req.Duration)
		if err != nil {
			return err
		}
		// Answer first: the outage closes this connection too.
		go func() {
			time.Sleep(10 * time.Millisecond)
			s.Outage(d)
		}()
		return nil
	})
	handle("cut-streams", func(faultRequest) error { s.CutEventStreams(); return nil })
	handle("jump-index", func(req faultRequest) error { s.JumpIndex(req.By); return nil })
	handle("kill-task", func(req faultRequest) error { return s.KillTask(req.Namespace, req.JobID) })
	handle("fail-task", func(req faultRequest) error { return s.FailTask(req.Namespace, req.JobID) })
	handle("exit-task", func(req faultRequest) error { return s.ExitTask(req.Namespace, req.JobID, req.ExitCode) })
	handle("stop-job", func(req faultRequest) error { s.StopJob(req.Namespace, req.JobID, req.Purge); return nil })
	handle("reset", func(faultRequest) error { s.ResetFaults(); return nil })
	m.HandleFunc("GET "+faultPrefix+"requests", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Requests())
	})
	m.HandleFunc("DELETE "+faultPrefix+"requests", func(w http.ResponseWriter, r *http.Request) {
		s.ResetRequests()
		w.WriteHeader(http.StatusNoContent)
	})
	return m
}
