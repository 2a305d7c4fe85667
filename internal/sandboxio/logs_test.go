package sandboxio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
)

// logNomad is a Nomad with one running allocation whose stdout log is
// log, counted from its start as Nomad counts offsets. After the first
// read that does not follow, it appends late: output written between a
// tail and the follow that continues it.
type logNomad struct {
	mu    sync.Mutex
	log   []byte
	late  []byte
	reads int
}

func (f *logNomad) Allocation(ctx context.Context, ns, id string) (*api.Allocation, error) {
	return &api.Allocation{ID: id, Namespace: ns, ClientStatus: api.AllocClientStatusRunning, DesiredStatus: api.AllocDesiredStatusRun}, nil
}

func (f *logNomad) Allocations(context.Context, string, string) ([]*api.AllocationListStub, error) {
	return nil, errors.New("not used")
}

func (f *logNomad) Exec(context.Context, *api.Allocation, nomad.ExecOptions) (int, error) {
	return 0, errors.New("no exec here")
}

func (f *logNomad) Stat(context.Context, *api.Allocation, string) (*nomad.FileInfo, error) {
	return nil, nomad.ErrNoSuchFile
}

func (f *logNomad) List(_ context.Context, _ *api.Allocation, p string) ([]*nomad.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []*nomad.FileInfo{
		{Name: "sandbox.stdout.0", Size: int64(len(f.log))},
		{Name: "sandbox.stderr.0", Size: 7},
		{Name: "other.stdout.0", Size: 9},
	}, nil
}

func (f *logNomad) Cat(context.Context, *api.Allocation, string) (io.ReadCloser, error) {
	return nil, errors.New("not used")
}

func (f *logNomad) Logs(_ context.Context, _ *api.Allocation, o nomad.LogOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := o.Offset
	if o.FromEnd {
		from = int64(len(f.log)) - o.Offset
	}
	from = min(max(from, 0), int64(len(f.log)))
	out := bytes.Clone(f.log[from:])
	if !o.Follow {
		f.reads++
		if f.reads == 1 {
			f.log = append(f.log, f.late...)
		}
	}
	return io.NopCloser(bytes.NewReader(out)), nil
}

// A tail that is followed misses nothing written between the two: the
// follow starts where the log ended when the tail was taken.
func TestLogsTailThenFollowLosesNothing(t *testing.T) {
	// Longer than the tail's first window, so that the tail is not the
	// whole log.
	f := &logNomad{log: append(bytes.Repeat([]byte("older line\n"), 2000), "one\ntwo\nthree\n"...), late: []byte("late\n")}
	s := New(Options{Nomad: f})
	var out bytes.Buffer
	err := s.Logs(t.Context(), Target{Namespace: "default", Name: "box", Phase: "Running", AllocID: "a"}, Caller{},
		LogRequest{Stream: "stdout", Follow: true, Tail: 1}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "three\nlate\n" {
		t.Errorf("tail 1 then follow: %q, want %q", out.String(), "three\nlate\n")
	}
}
