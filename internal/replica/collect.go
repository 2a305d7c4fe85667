package replica

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// The leader collects the chunks no manifest names, and never one that a
// write in flight is about to name. A write makes each of its chunks
// freshly written (writeChunks), and commits its manifest within
// touchReuse+maxWriteSpan of that. A pass deletes a chunk only when:
//
//   - it was last written before the previous pass listed the chunks (its
//     ModifyIndex is at most that list's index), and that pass was at
//     least collectMinGap ago: a write that relies on the chunk has
//     committed its manifest by now, so this pass sees it;
//   - no manifest names it, in this pass and in the previous one: a
//     reader that read a manifest just before it was replaced has had
//     collectMinGap to read its chunks;
//   - it is still as listed: the delete is a check-and-set on its
//     ModifyIndex, so a write in between keeps it.
const (
	collectEvery  = 10 * time.Minute
	collectMinGap = 5 * time.Minute
)

// collectPass is what a pass saw.
type collectPass struct {
	// at is when its list of chunks had answered, and index that
	// list's index: every chunk write at or below index came before at.
	at           time.Time
	index        uint64
	unreferenced map[string]bool
}

// refsAt is the chunks a variable named at an index.
type refsAt struct {
	index uint64
	refs  []string
}

// collector is the state collection keeps between passes. It is apart
// from what pushes use (known): a leader must not learn of other writes
// to the copy from its collection, or its check-and-set would no longer
// fence them.
type collector struct {
	mu   sync.Mutex
	last collectPass
	// others is what collection read of variables known does not hold
	// at their listed index.
	others map[string]refsAt
}

// Collect is one pass of the collection of chunks that no declaration
// names; the leader runs it every collectEvery (RunPush). It returns how
// many chunks it deleted. A pass sooner than collectMinGap after the last
// one does nothing, and a first pass, or one after a failed pass,
// deletes nothing.
func (r *Replica) Collect(ctx context.Context) (int, error) {
	c := &r.collector
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.last
	if !prev.at.IsZero() && time.Since(prev.at) < collectMinGap {
		return 0, nil
	}
	// Until this pass succeeds, the next one starts afresh: the pass
	// before it must be the one just before, for the readers' grace.
	c.last = collectPass{}
	referenced, err := r.referenced(ctx)
	if err != nil {
		return 0, fmt.Errorf("collect chunks: %w", err)
	}
	chunks, idx, err := r.listPrefix(ctx, r.chunkPrefix(), r.isChunkPath, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("collect chunks: %w", err)
	}
	cur := collectPass{at: time.Now(), index: idx, unreferenced: map[string]bool{}}
	doomed := map[string]uint64{}
	for path, modIdx := range chunks {
		name := strings.TrimPrefix(path, r.chunkPrefix())
		if referenced[name] {
			continue
		}
		cur.unreferenced[name] = true
		if prev.unreferenced[name] && modIdx <= prev.index {
			doomed[path] = modIdx
		}
	}
	var (
		mu      sync.Mutex
		deleted int
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	for path, modIdx := range doomed {
		g.Go(func() error {
			_, err := r.cfg.Client.Variables().CheckedDelete(path, modIdx, r.wo(gctx))
			var conflict api.ErrCASConflict
			switch {
			case errors.As(err, &conflict):
				return nil // written again since the list: in use
			case err != nil:
				return fmt.Errorf("collect chunk %s: %w", path, err)
			}
			mu.Lock()
			deleted++
			mu.Unlock()
			return nil
		})
	}
	if err = g.Wait(); err == nil {
		c.last = cur
	}
	if deleted > 0 {
		r.log.Info("collected chunks no declaration names", "deleted", deleted)
	}
	return deleted, err
}

func (r *Replica) isChunkPath(path string) bool {
	name, ok := strings.CutPrefix(path, r.chunkPrefix())
	return ok && hashRE.MatchString(name)
}

// referenced returns the names of the chunks the copy's declarations
// name, and those this instance knows of even if the list left them out:
// a list filtered by ACLs shows fewer manifests, never more.
func (r *Replica) referenced(ctx context.Context) (map[string]bool, error) {
	listed, _, err := r.list(ctx, 0, 0)
	if err != nil {
		return nil, err
	}
	c := &r.collector
	out := map[string]bool{}
	var toRead []string
	r.mu.Lock()
	for _, k := range r.known {
		for _, n := range k.refs {
			out[n] = true
		}
	}
	for path, idx := range listed {
		if k, ok := r.known[path]; ok && k.index == idx {
			continue
		}
		if o, ok := c.others[path]; ok && o.index == idx {
			for _, n := range o.refs {
				out[n] = true
			}
			continue
		}
		toRead = append(toRead, path)
	}
	r.mu.Unlock()

	read := map[string]refsAt{}
	var mu sync.Mutex
	err = r.readDecoded(ctx, toRead, func(path string, index uint64, _ store.Declaration, refs []string) {
		mu.Lock()
		read[path] = refsAt{index: index, refs: refs}
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	others := map[string]refsAt{}
	for path, idx := range listed {
		if o, ok := read[path]; ok {
			others[path] = o
		} else if o, ok := c.others[path]; ok && o.index == idx {
			others[path] = o
		}
	}
	for _, o := range others {
		for _, n := range o.refs {
			out[n] = true
		}
	}
	c.others = others
	return out, nil
}

// resetCollection makes the next pass a first one: a new term's passes do
// not build on what an earlier term saw.
func (r *Replica) resetCollection() {
	c := &r.collector
	c.mu.Lock()
	c.last = collectPass{}
	c.mu.Unlock()
}
