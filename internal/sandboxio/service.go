package sandboxio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
)

// Nomad is what the package calls on Nomad.
type Nomad interface {
	Allocation(ctx context.Context, ns, id string) (*api.Allocation, error)
	Allocations(ctx context.Context, ns, jobID string) ([]*api.AllocationListStub, error)
	Exec(ctx context.Context, alloc *api.Allocation, o nomad.ExecOptions) (int, error)
	Stat(ctx context.Context, alloc *api.Allocation, path string) (*nomad.FileInfo, error)
	List(ctx context.Context, alloc *api.Allocation, path string) ([]*nomad.FileInfo, error)
	Cat(ctx context.Context, alloc *api.Allocation, path string) (io.ReadCloser, error)
	Logs(ctx context.Context, alloc *api.Allocation, o nomad.LogOptions) (io.ReadCloser, error)
}

// Defaults of Options.
const (
	DefaultMaxOutputBytes     = 16 << 20
	DefaultMaxFileBytes       = 256 << 20
	DefaultSessionsPerSandbox = 8
	DefaultSessions           = 64
	DefaultExecTimeout        = time.Minute
	MaxExecTimeout            = time.Hour
)

// Options configure a Service. Nomad is required.
type Options struct {
	Nomad Nomad
	// Task is the task to work in; nomad.TaskName when empty.
	Task string
	// Logger receives the audit lines. Nil discards them.
	Logger *slog.Logger
	// MaxOutputBytes bounds each of stdout and stderr of an exec that
	// answers at once (DefaultMaxOutputBytes when zero).
	MaxOutputBytes int64
	// MaxFileBytes bounds a file or archive written (DefaultMaxFileBytes
	// when zero).
	MaxFileBytes int64
	// SessionsPerSandbox and Sessions bound the exec sessions, file
	// transfers and followed logs open at once, per sandbox and in all.
	SessionsPerSandbox int
	Sessions           int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service runs operations inside sandboxes.
type Service struct {
	nomad Nomad
	task  string
	log   *slog.Logger
	now   func() time.Time

	maxOutput, maxFile int64
	perSandbox, total  int

	mu       sync.Mutex
	sessions map[string]int // sandbox key → sessions open
	inAll    int
	allocs   map[string]cachedAlloc
	// layouts remembers where each allocation's directories appear
	// inside the sandbox; it is learnt once per allocation.
	layouts map[string]layout
}

type cachedAlloc struct {
	alloc *api.Allocation
	at    time.Time
}

// allocTTL is how long an allocation read is reused: long enough that a
// burst of operations reads it once, short enough that a stopped one is
// noticed before Nomad would refuse the session anyway.
const allocTTL = 2 * time.Second

// New builds a Service.
func New(o Options) *Service {
	if o.Nomad == nil {
		panic("sandboxio: Options.Nomad is nil")
	}
	s := &Service{
		nomad: o.Nomad, task: o.Task, log: o.Logger, now: o.Now,
		maxOutput: o.MaxOutputBytes, maxFile: o.MaxFileBytes,
		perSandbox: o.SessionsPerSandbox, total: o.Sessions,
		sessions: map[string]int{}, allocs: map[string]cachedAlloc{}, layouts: map[string]layout{},
	}
	if s.task == "" {
		s.task = nomad.TaskName
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxOutput <= 0 {
		s.maxOutput = DefaultMaxOutputBytes
	}
	if s.maxFile <= 0 {
		s.maxFile = DefaultMaxFileBytes
	}
	if s.perSandbox <= 0 {
		s.perSandbox = DefaultSessionsPerSandbox
	}
	if s.total <= 0 {
		s.total = DefaultSessions
	}
	return s
}

// MaxFileBytes is the largest file or archive a write takes.
func (s *Service) MaxFileBytes() int64 { return s.maxFile }

// Target names the sandbox an operation works in, as the store last saw
// it.
type Target struct {
	Namespace, Name string
	// JobID is the sandbox's Nomad job.
	JobID string
	// Phase is the sandbox's phase; only "Running" is worked in. Empty
	// means not known here (an instance that does not lead has no live
	// status): the running allocation is then looked up in Nomad.
	Phase   string
	AllocID string
}

func (t Target) key() string { return t.Namespace + "/" + t.Name }

// Caller says who asked, for the audit line.
type Caller struct {
	// Remote is the client's address.
	Remote string
	// Token is the credential the request carried ("" when none); only
	// a short digest of it is logged.
	Token string
}

// user is what the audit line says of the caller: a digest that tells
// tokens apart without revealing them.
func (c Caller) user() string {
	if c.Token == "" {
		return "anonymous"
	}
	sum := sha256.Sum256([]byte(c.Token))
	return "token:" + hex.EncodeToString(sum[:4])
}

// Errors. Each answers one way at the API.
var (
	// ErrBusy: too many sessions are open, for the sandbox or in all.
	ErrBusy = errors.New("too many sessions open")
	// ErrTooLarge: a write passed MaxFileBytes.
	ErrTooLarge = errors.New("too large")
	// ErrNotFound: the path does not exist in the sandbox.
	ErrNotFound = errors.New("no such file or directory")
	// ErrNotEmpty: a directory removed without recursion holds entries.
	ErrNotEmpty = errors.New("directory not empty")
	// ErrIsDirectory: a file operation named a directory.
	ErrIsDirectory = errors.New("is a directory")
	// ErrNotDirectory: a directory operation named something else.
	ErrNotDirectory = errors.New("not a directory")
	// ErrInvalid: the request itself is wrong; the message says how.
	ErrInvalid = errors.New("invalid request")
	// ErrFailed: the operation ran and failed inside the sandbox; the
	// message carries what the sandbox said.
	ErrFailed = errors.New("failed in the sandbox")
)

// NotRunningError is an operation on a sandbox that is not running.
type NotRunningError struct {
	Sandbox string
	Phase   string
	// Detail says more, such as the allocation's own status.
	Detail string
}

func (e *NotRunningError) Error() string {
	msg := fmt.Sprintf("sandbox %q is %s, not Running", e.Sandbox, e.Phase)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// acquire takes a session slot for the sandbox; release gives it back.
func (s *Service) acquire(t Target) (release func(), err error) {
	key := t.key()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.inAll >= s.total:
		return nil, fmt.Errorf("%w: %d sessions are open, the most the controller allows at once", ErrBusy, s.inAll)
	case s.sessions[key] >= s.perSandbox:
		return nil, fmt.Errorf("%w: sandbox %q has %d sessions open, the most it may have at once", ErrBusy, key, s.sessions[key])
	}
	s.inAll++
	s.sessions[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.inAll--
			if s.sessions[key]--; s.sessions[key] == 0 {
				delete(s.sessions, key)
			}
		})
	}, nil
}

// Sessions reports the sessions open: in all and for the sandbox key.
func (s *Service) Sessions(key string) (total, sandbox int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inAll, s.sessions[key]
}

// running returns the sandbox's allocation if it runs.
func (s *Service) running(ctx context.Context, t Target) (*api.Allocation, error) {
	if t.Phase == "" {
		id, err := s.locate(ctx, t)
		if err != nil {
			return nil, err
		}
		t.Phase, t.AllocID = "Running", id
	}
	if t.Phase != "Running" || t.AllocID == "" {
		return nil, &NotRunningError{Sandbox: t.key(), Phase: t.Phase}
	}
	s.mu.Lock()
	c, ok := s.allocs[t.AllocID]
	s.mu.Unlock()
	alloc := c.alloc
	if !ok || s.now().Sub(c.at) > allocTTL {
		a, err := s.nomad.Allocation(ctx, t.Namespace, t.AllocID)
		if err != nil {
			if errors.Is(err, nomad.ErrNotFound) {
				return nil, &NotRunningError{Sandbox: t.key(), Phase: t.Phase, Detail: fmt.Sprintf("Nomad no longer has its allocation %s", short(t.AllocID))}
			}
			return nil, fmt.Errorf("read the allocation of sandbox %q: %w", t.key(), err)
		}
		alloc = a
		s.mu.Lock()
		if len(s.allocs) > 4096 {
			clear(s.allocs)
		}
		s.allocs[t.AllocID] = cachedAlloc{alloc: a, at: s.now()}
		s.mu.Unlock()
	}
	if alloc.ClientStatus != api.AllocClientStatusRunning || alloc.DesiredStatus != api.AllocDesiredStatusRun {
		return nil, &NotRunningError{Sandbox: t.key(), Phase: t.Phase,
			Detail: fmt.Sprintf("its allocation %s is %s (desired %s)", short(t.AllocID), alloc.ClientStatus, alloc.DesiredStatus)}
	}
	return alloc, nil
}

// locate finds the allocation of the sandbox's job that runs, for an
// instance without live status.
func (s *Service) locate(ctx context.Context, t Target) (string, error) {
	stubs, err := s.nomad.Allocations(ctx, t.Namespace, t.JobID)
	if err != nil {
		return "", fmt.Errorf("find the allocation of sandbox %q: %w", t.key(), err)
	}
	var best *api.AllocationListStub
	for _, a := range stubs {
		if a.ClientStatus == api.AllocClientStatusRunning && a.DesiredStatus == api.AllocDesiredStatusRun &&
			(best == nil || a.CreateIndex > best.CreateIndex) {
			best = a
		}
	}
	if best == nil {
		return "", &NotRunningError{Sandbox: t.key(), Phase: "Pending", Detail: "Nomad reports no running allocation for it"}
	}
	return best.ID, nil
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
