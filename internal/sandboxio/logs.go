package sandboxio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/nomad"
)

// LogRequest chooses the output Logs writes.
type LogRequest struct {
	// Stream is "stdout" or "stderr".
	Stream string
	// Follow keeps writing new output until ctx ends or the task's log
	// ends.
	Follow bool
	// Tail, when not negative, starts that many lines from the end.
	Tail int
	// Opened, when set, is called when a follow has written what the
	// log held and starts waiting for more, so that a caller can answer
	// before new output arrives.
	Opened func()
}

// maxTailWindow bounds how far back a tail looks for its lines.
const maxTailWindow = 64 << 20

// Logs writes the task's output to w, as the task wrote it, passing data
// on as it comes.
func (s *Service) Logs(ctx context.Context, t Target, who Caller, req LogRequest, w io.Writer) error {
	if req.Stream != "stdout" && req.Stream != "stderr" {
		return invalidf("stream %q is neither stdout nor stderr", req.Stream)
	}
	alloc, err := s.running(ctx, t)
	if err != nil {
		return err
	}
	release, err := s.acquire(t)
	if err != nil {
		return err
	}
	defer release()
	o := nomad.LogOptions{Task: s.task, Stream: req.Stream, Follow: true}
	if req.Tail >= 0 {
		// A tail that is followed reads where the log ends first: its
		// last lines before that point, then everything after it, with
		// no gap between. Without a length (a token that may read logs
		// but not list files), the tail is counted from the end.
		end := int64(-1)
		if req.Follow {
			end = s.logEnd(ctx, alloc, req.Stream)
		}
		tail, seen, whole, err := s.tail(ctx, alloc, req, end)
		if err != nil {
			return err
		}
		if _, err := w.Write(tail); err != nil || !req.Follow {
			return err
		}
		switch {
		case end >= 0:
			o.Offset = end
		case whole:
			// The log held no more than the tail: follow from where it
			// ended, losing nothing written meanwhile.
			o.Offset = seen
		default:
			o.FromEnd = true
		}
	} else {
		// What the log holds now, read to its end. A follow starts only
		// after it: an agent sends no answer to a followed log until
		// there is output, and a quiet sandbox must not hold the
		// client without one.
		body, err := s.nomad.Logs(ctx, alloc, nomad.LogOptions{Task: s.task, Stream: req.Stream})
		if err != nil {
			return fmt.Errorf("read the %s of sandbox %q: %w", req.Stream, t.key(), err)
		}
		n, err := io.Copy(w, body)
		body.Close()
		if err != nil || !req.Follow {
			if err != nil && ctx.Err() != nil {
				return nil // the client left
			}
			return err
		}
		o.Offset = n
	}
	if req.Opened != nil {
		req.Opened()
	}
	body, err := s.nomad.Logs(ctx, alloc, o)
	if err != nil {
		return fmt.Errorf("follow the %s of sandbox %q: %w", req.Stream, t.key(), err)
	}
	defer body.Close()
	_, err = io.Copy(w, body)
	if err != nil && ctx.Err() != nil {
		return nil // the client left
	}
	return err
}

// logEnd is the length of the task's log: its files' sizes added up, as
// Nomad counts offsets from the start of the oldest one it keeps; -1
// when the log's files cannot be listed.
func (s *Service) logEnd(ctx context.Context, alloc *api.Allocation, stream string) int64 {
	list, err := s.nomad.List(ctx, alloc, "/alloc/logs")
	if err != nil {
		return -1
	}
	prefix := s.task + "." + stream + "."
	var end int64
	for _, f := range list {
		idx, ok := strings.CutPrefix(f.Name, prefix)
		if !ok || f.IsDir || idx == "" || strings.Trim(idx, "0123456789") != "" {
			continue
		}
		end += f.Size
	}
	return end
}

// tail reads the last req.Tail lines of the log's first end bytes, or
// with end -1 of the log as it is, widening its window until it holds
// them or the whole log; whole says the window held the whole log, of
// which it read seen bytes.
func (s *Service) tail(ctx context.Context, alloc *api.Allocation, req LogRequest, end int64) (out []byte, seen int64, whole bool, err error) {
	window := max(int64(req.Tail+1)*256, 4096)
	for {
		o := nomad.LogOptions{Task: s.task, Stream: req.Stream}
		limit := window + 1
		if end >= 0 {
			o.Offset = max(end-window, 0)
			limit = end - o.Offset
		} else {
			o.FromEnd, o.Offset = true, window
		}
		body, err := s.nomad.Logs(ctx, alloc, o)
		if err != nil {
			return nil, 0, false, err
		}
		b, err := io.ReadAll(io.LimitReader(body, limit))
		body.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, false, err
		}
		whole := int64(len(b)) < window
		if end >= 0 {
			whole = o.Offset == 0
		}
		if out, ok := lastLines(b, req.Tail); ok || whole || window >= maxTailWindow {
			return out, int64(len(b)), whole, nil
		}
		window *= 4
	}
}

// lastLines returns the last n lines of b (the last one may lack its
// newline); ok says b held more than n, so the result is exact.
func lastLines(b []byte, n int) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(b[:end], '\n')
		if j < 0 {
			return b, false
		}
		end = j
	}
	return b[end+1:], true
}
