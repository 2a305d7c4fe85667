// Package replica owns the copy of the desired state that outlives a node:
// every declared sandbox in Nomad Variables, written by the leader with
// check-and-set, read back by the other instances and by the next leader.
//
// Layout under the configured prefix P (default "agentkernel"):
//
//	P/meta                   owner ID of the jobs, format, and state:
//	                         "seeding" while a first leader copies its
//	                         store up, "ready" once the copy is whole
//	P/sandboxes/<ns>/<name>  one sandbox: item "declaration", the
//	                         store.Declaration as JSON, when it fits one
//	                         variable; else item "manifest", naming the
//	                         chunks that hold it (chunks.go)
//	P/sandboxes/_/<sha256>   the same, for a sandbox whose key would make
//	                         the path too long: the hex SHA-256 of the
//	                         key ("_" is no namespace name)
//	P/blobs/<sha256>         item "data": a chunk, named by the hex
//	                         SHA-256 of its data
//	P/leader                 the leader lock (package leader)
//
// The bbolt store stays each instance's working copy. A leader makes its
// store match the copy before it reconciles (CatchUp), then pushes every
// committed change; a follower pulls the copy into its store as it
// changes, so that it can take over quickly and serve stale reads.
package replica

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Limits Nomad puts on a variable (facts more/ 1.3).
const (
	// MaxVariableBytes bounds the sum of key and value lengths over a
	// variable's items.
	MaxVariableBytes = 65536
	// MaxPathLength bounds a variable path.
	MaxPathLength = 128
)

// MaxPrefixLength is the longest variable prefix: it leaves room for the
// fixed-length paths under it, a sandbox's hashed path and a chunk's.
// Longer keys are hashed, so that every valid sandbox has a path.
const MaxPrefixLength = min(
	MaxPathLength-len("/sandboxes/"+hashedDir+"/")-2*sha256.Size,
	MaxPathLength-len("/blobs/")-2*sha256.Size,
)

// hashedDir holds the variables of sandboxes whose direct path is too
// long; no namespace can be named "_".
const hashedDir = "_"

// ItemDeclaration holds a sandbox's declaration, inline.
const ItemDeclaration = "declaration"

// Meta states.
const (
	StateSeeding = "seeding"
	StateReady   = "ready"
)

var pathRE = regexp.MustCompile(`^[a-zA-Z0-9-_~/]{1,128}$`)

// Store is what the replica reads and writes of the local store.
type Store interface {
	List(ctx context.Context, opts store.ListOptions) ([]store.Record, uint64, error)
	Get(ctx context.Context, key string) (store.Record, error)
	Import(ctx context.Context, decls []store.Declaration, opts store.ImportOptions) (store.ImportResult, error)
	Watch(ctx context.Context, since uint64) (*store.Watcher, error)
}

// Config configures a Replica.
type Config struct {
	Client    *api.Client
	Namespace string
	// Prefix is the variables' path prefix, without a trailing slash.
	Prefix string
	Store  Store
	// Parallel bounds concurrent variable requests (default 16).
	Parallel int
	// ManagedJobs, when set, counts the agentkernel jobs Nomad runs, of
	// any owner: an instance with an empty store does not seed a new
	// copy while there are some, since another instance (or a controller
	// that ran alone) has their declarations. SeedEmpty lifts that rule.
	ManagedJobs func(ctx context.Context) (int, error)
	SeedEmpty   bool
	Logger      *slog.Logger
}

// Replica reads and writes the replicated copy.
type Replica struct {
	cfg Config
	log *slog.Logger

	locks [64]sync.Mutex
	seed  maphash.Seed

	mu sync.Mutex
	// known is, by variable path, what the copy held at the given
	// ModifyIndex, as this instance last wrote or read it.
	known map[string]knownVar
	// pending is, by variable path, the last write whose outcome is
	// unknown (its answer was lost): a later conflict showing exactly that
	// write is this leader's own. A nil declaration is a delete.
	pending  map[string]*store.Declaration
	syncedAt time.Time
	index    uint64
	// written is when this instance last wrote each chunk.
	written map[string]time.Time

	collector collector
}

type knownVar struct {
	index uint64
	decl  store.Declaration
	// refs names the chunks the variable names.
	refs []string
}

// Meta is the copy's P/meta variable.
type Meta struct {
	Owner string
	State string
	index uint64
}

// New checks cfg and makes a Replica.
func New(cfg Config) (*Replica, error) {
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	switch {
	case cfg.Client == nil:
		return nil, errors.New("replica: no Nomad client")
	case cfg.Store == nil:
		return nil, errors.New("replica: no store")
	case cfg.Prefix == "" || !pathRE.MatchString(cfg.Prefix) || strings.Contains(cfg.Prefix, "//"):
		return nil, fmt.Errorf("replica: variable prefix %q must be letters, digits, '-', '_', '~' and '/' (Nomad's variable path rule)", cfg.Prefix)
	case cfg.Prefix == "nomad" || strings.HasPrefix(cfg.Prefix, "nomad/"):
		return nil, fmt.Errorf("replica: variable prefix %q is under Nomad's reserved \"nomad/\"", cfg.Prefix)
	case len(cfg.Prefix) > MaxPrefixLength:
		return nil, fmt.Errorf("replica: variable prefix %q has %d characters; at most %d leave room for every path below it in Nomad's %d", cfg.Prefix, len(cfg.Prefix), MaxPrefixLength, MaxPathLength)
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 16
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Replica{
		cfg: cfg, log: log, seed: maphash.MakeSeed(),
		known: map[string]knownVar{}, pending: map[string]*store.Declaration{}, written: map[string]time.Time{},
	}, nil
}

// LockPath is where the leader lock lives.
func (r *Replica) LockPath() string { return r.cfg.Prefix + "/leader" }

func (r *Replica) metaPath() string          { return r.cfg.Prefix + "/meta" }
func (r *Replica) sandboxPrefix() string     { return r.cfg.Prefix + "/sandboxes/" }
func (r *Replica) chunkPrefix() string       { return r.cfg.Prefix + "/blobs/" }
func (r *Replica) chunkPath(n string) string { return r.chunkPrefix() + n }

// Path is the variable path of a sandbox key ("namespace/name"): the key
// under the sandboxes' prefix, or, when that is not a path Nomad accepts
// (too long), the key's hash under hashedDir. The variable holds the key.
func (r *Replica) Path(key string) string {
	p := r.sandboxPrefix() + key
	if len(p) <= MaxPathLength && pathRE.MatchString(p) && strings.Count(key, "/") == 1 && !strings.HasPrefix(key, hashedDir+"/") {
		return p
	}
	sum := sha256.Sum256([]byte(key))
	return r.sandboxPrefix() + hashedDir + "/" + hex.EncodeToString(sum[:])
}

// isSandboxPath tells a sandbox's variable from others under the prefix.
func (r *Replica) isSandboxPath(path string) bool {
	rest, ok := strings.CutPrefix(path, r.sandboxPrefix())
	return ok && strings.Count(rest, "/") == 1
}

// Freshness is when this instance's store last matched the copy, and the
// copy's index then.
func (r *Replica) Freshness() (time.Time, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.syncedAt, r.index
}

func (r *Replica) synced(index uint64) {
	r.mu.Lock()
	r.syncedAt = time.Now()
	r.index = max(r.index, index)
	r.mu.Unlock()
}

// CheckPolicy refuses, at apply time, a sandbox the copy cannot hold.
// Large declarations are chunked and long keys hashed, so no sandbox the
// language accepts is refused; the check encodes the declaration as the
// store would keep it at its largest (every field at its widest), so that
// whatever encode refuses is refused before the store commits it.
func (r *Replica) CheckPolicy(sb *spec.Sandbox) error {
	now := time.Now()
	d := store.Declaration{
		Sandbox: *sb, Source: sb.Source, Hash: sb.Spec.Hash(), ApplySet: strings.Repeat("x", maxApplySet),
		Generation: 1 << 62, CreatedAt: now, UpdatedAt: now, DeletionRequestedAt: &now,
	}
	d.Sandbox.Source = spec.Source{}
	_, err := r.encode(d)
	return err
}

// maxApplySet is the longest apply set name the API accepts.
const maxApplySet = 253

// ErrUnreplicable marks a sandbox the copy cannot hold.
var ErrUnreplicable = errors.New("cannot be replicated")

// unreplicable is an ErrUnreplicable with its reason for a person.
type unreplicable struct{ msg string }

func (e unreplicable) Error() string        { return e.msg }
func (e unreplicable) Is(target error) bool { return target == ErrUnreplicable }

func (r *Replica) wo(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{Namespace: r.cfg.Namespace}).WithContext(ctx)
}

func (r *Replica) qo(ctx context.Context) *api.QueryOptions {
	return (&api.QueryOptions{Namespace: r.cfg.Namespace}).WithContext(ctx)
}

func (r *Replica) keyLock(key string) *sync.Mutex {
	return &r.locks[maphash.String(r.seed, key)%uint64(len(r.locks))]
}

// ReadMeta reads P/meta; found is false when there is none.
func (r *Replica) ReadMeta(ctx context.Context) (m Meta, found bool, err error) {
	v, _, err := r.cfg.Client.Variables().Read(r.metaPath(), r.qo(ctx))
	if errors.Is(err, api.ErrVariablePathNotFound) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("read %s: %w", r.metaPath(), err)
	}
	return Meta{Owner: v.Items["owner"], State: v.Items["state"], index: v.ModifyIndex}, true, nil
}

// writeMeta writes P/meta with check-and-set on the index m was read at
// (zero: create only).
func (r *Replica) writeMeta(ctx context.Context, m Meta) (Meta, error) {
	v := &api.Variable{
		Namespace: r.cfg.Namespace, Path: r.metaPath(),
		Items:       api.VariableItems{"owner": m.Owner, "state": m.State, "format": "1"},
		ModifyIndex: m.index,
	}
	out, _, err := r.cfg.Client.Variables().CheckedUpdate(v, r.wo(ctx))
	if err != nil {
		return Meta{}, fmt.Errorf("write %s: %w", r.metaPath(), err)
	}
	m.index = out.ModifyIndex
	return m, nil
}

// list returns the ModifyIndex of every sandbox variable, by path, and
// the index of the list. With waitIndex it is a blocking query.
func (r *Replica) list(ctx context.Context, waitIndex uint64, wait time.Duration) (map[string]uint64, uint64, error) {
	return r.listPrefix(ctx, r.sandboxPrefix(), r.isSandboxPath, waitIndex, wait)
}

// listPrefix lists the variables under prefix that keep says are of it.
func (r *Replica) listPrefix(ctx context.Context, prefix string, keep func(path string) bool, waitIndex uint64, wait time.Duration) (map[string]uint64, uint64, error) {
	out := map[string]uint64{}
	q := r.qo(ctx)
	q.WaitIndex, q.WaitTime = waitIndex, wait
	var last uint64
	for {
		metas, qm, err := r.cfg.Client.Variables().PrefixList(prefix, q)
		if err != nil {
			return nil, 0, fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, m := range metas {
			if keep(m.Path) {
				out[m.Path] = m.ModifyIndex
			} else {
				r.log.Warn("ignoring a variable this controller did not write", "path", m.Path)
			}
		}
		last = max(last, qm.LastIndex)
		if qm.NextToken == "" {
			return out, last, nil
		}
		q = r.qo(ctx)
		q.NextToken = qm.NextToken
	}
}

// fetch brings the known declarations up to date with listed: it reads
// the variables whose index changed, with their chunks, and forgets the
// ones gone. It returns the paths read and the keys gone. A declaration
// whose chunks are missing or corrupt fails the fetch.
func (r *Replica) fetch(ctx context.Context, listed map[string]uint64) (stale, gone []string, err error) {
	r.mu.Lock()
	for path, idx := range listed {
		if k, ok := r.known[path]; !ok || k.index != idx {
			stale = append(stale, path)
		}
	}
	for path, k := range r.known {
		if _, ok := listed[path]; !ok {
			delete(r.known, path)
			gone = append(gone, k.decl.Key())
		}
	}
	r.mu.Unlock()
	slices.Sort(stale)
	err = r.readDecoded(ctx, stale, func(path string, index uint64, d store.Declaration, refs []string) {
		r.mu.Lock()
		r.known[path] = knownVar{index: index, decl: d, refs: refs}
		r.mu.Unlock()
	})
	return stale, gone, err
}

// readDecoded reads the declaration variables at paths in parallel, with
// their chunks, and hands each to got (from several goroutines at once).
// A variable deleted since it was listed is skipped: the next list says
// so. A declaration whose chunks are missing or corrupt fails the read.
func (r *Replica) readDecoded(ctx context.Context, paths []string, got func(path string, index uint64, d store.Declaration, refs []string)) error {
	cr := r.newChunkReader()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	for _, path := range paths {
		g.Go(func() error {
			v, _, err := r.cfg.Client.Variables().Read(path, r.qo(gctx))
			if errors.Is(err, api.ErrVariablePathNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			d, refs, err := r.decode(gctx, v, cr)
			if err != nil {
				return err
			}
			got(path, v.ModifyIndex, d, refs)
			return nil
		})
	}
	return g.Wait()
}

// knownDecls returns the known declarations at paths, or of every path
// when paths is nil.
func (r *Replica) knownDecls(paths []string) []store.Declaration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if paths == nil {
		paths = slices.Sorted(maps.Keys(r.known))
	}
	out := make([]store.Declaration, 0, len(paths))
	for _, path := range paths {
		if k, ok := r.known[path]; ok {
			out = append(out, k.decl)
		}
	}
	return out
}

// knownKeys returns the key of every known declaration.
func (r *Replica) knownKeys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.known))
	for _, k := range r.known {
		keys = append(keys, k.decl.Key())
	}
	return keys
}

// Pull makes the local store hold what the copy holds. With removeMissing
// it also removes what the copy does not hold; without, it only adds and
// updates. It returns the copy's index.
func (r *Replica) Pull(ctx context.Context, removeMissing bool) (uint64, error) {
	listed, idx, err := r.list(ctx, 0, 0)
	if err != nil {
		return 0, err
	}
	return idx, r.pullListed(ctx, listed, idx, true, removeMissing)
}

// pullListed brings the store up to date with listed. A full pull
// imports every declaration the copy holds, since the store may hold
// changes the copy never had (a catch-up, a follower's first pull); a
// follower's later pulls import only what changed since the one before,
// as only pulls write its store. With removeMissing, what the copy does
// not hold is removed once confirmed gone. Nothing is imported or
// removed when any changed declaration cannot be read whole.
func (r *Replica) pullListed(ctx context.Context, listed map[string]uint64, idx uint64, full, removeMissing bool) error {
	stale, gone, err := r.fetch(ctx, listed)
	if err != nil {
		return err
	}
	var decls []store.Declaration
	opts := store.ImportOptions{}
	if full {
		decls = r.knownDecls(nil)
		if removeMissing {
			recs, _, err := r.cfg.Store.List(ctx, store.ListOptions{})
			if err != nil {
				return err
			}
			var missing []string
			for _, rec := range recs {
				if _, ok := listed[r.Path(rec.Key())]; !ok {
					missing = append(missing, rec.Key())
				}
			}
			if err := r.confirmGone(ctx, missing); err != nil {
				return err
			}
			opts.RemoveMissing = true
		}
	} else {
		decls = r.knownDecls(stale)
		if removeMissing {
			if err := r.confirmGone(ctx, gone); err != nil {
				return err
			}
			opts.Remove = gone
		}
	}
	res, err := r.cfg.Store.Import(ctx, decls, opts)
	if err != nil {
		return err
	}
	if res.Changed() {
		r.log.Info("store brought up to date from the replicated copy", "created", res.Created, "updated", res.Updated, "removed", res.Removed, "index", idx)
	}
	r.synced(idx)
	return nil
}

// confirmGone checks, before an import removes the local records of keys
// because the list did not show them, that their variables are really
// gone: a list filtered by ACLs (a token without read on the variables
// gets 200 and []) must not empty the store.
func (r *Replica) confirmGone(ctx context.Context, keys []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	for _, key := range keys {
		g.Go(func() error {
			path := r.Path(key)
			_, _, err := r.cfg.Client.Variables().Read(path, r.qo(gctx))
			switch {
			case errors.Is(err, api.ErrVariablePathNotFound):
				return nil
			case err != nil:
				return fmt.Errorf("confirm %s is gone before removing sandbox %s: %w", path, key, err)
			}
			return fmt.Errorf("the list of %s left out %s, which exists; not removing anything (does the token lack list on these variables?)", r.sandboxPrefix(), path)
		})
	}
	return g.Wait()
}

// ErrStepAside: this instance should not lead now; another may.
var ErrStepAside = errors.New("leaving the lead to another instance")

// Term is what CatchUp found: the owner ID the jobs carry, and whether
// the copy is whole. An incomplete copy (a seeding its seeder has not
// finished) must not drive garbage collection.
type Term struct {
	Owner    string
	Complete bool
}

// CatchUp is what a new leader runs before it reconciles. It makes the
// local store match the copy and returns the owner ID the jobs carry.
//
// With no copy yet (no P/meta), it seeds one from the local store, with
// localOwner as the owner: it marks the copy "seeding", writes every
// record, then marks it "ready". Ready means whole: a record that cannot
// be written fails the catch-up and leaves the copy "seeding", to be
// retried. A copy left "seeding" by a leader that died is merged with the
// local store (nothing is removed from either) and finished. Only a
// "ready" copy is authoritative: the local records it does not hold are
// removed.
func (r *Replica) CatchUp(ctx context.Context, localOwner string) (Term, error) {
	for {
		m, found, err := r.ReadMeta(ctx)
		if err != nil {
			return Term{}, err
		}
		if !found {
			if err := r.maySeed(ctx); err != nil {
				return Term{}, err
			}
			m, err = r.writeMeta(ctx, Meta{Owner: localOwner, State: StateSeeding})
			if isCASConflict(err) {
				continue // someone else started seeding; read again
			}
			if err != nil {
				return Term{}, err
			}
			r.log.Info("no replicated copy yet; seeding it from the local store", "owner", m.Owner)
		}
		if m.Owner == "" {
			return Term{}, fmt.Errorf("%s names no owner; it was not written by this controller", r.metaPath())
		}
		switch m.State {
		case StateReady:
			if _, err := r.Pull(ctx, true); err != nil {
				return Term{}, fmt.Errorf("catch up from the replicated copy: %w", err)
			}
			return Term{Owner: m.Owner, Complete: true}, nil
		case StateSeeding:
			if _, err := r.Pull(ctx, false); err != nil {
				return Term{}, fmt.Errorf("merge the replicated copy: %w", err)
			}
			if err := r.PushAll(ctx); err != nil {
				return Term{}, fmt.Errorf("seed the replicated copy: %w", err)
			}
			if m.Owner != localOwner {
				// Only the seeder's store is known to hold everything;
				// anyone else's merge may still lack some of it.
				r.log.Warn("the replicated copy is incomplete: the seeding by another store was interrupted. This store is merged into it, but garbage collection stays off until that store's instance leads and finishes, or an operator marks the copy ready",
					"seeding_owner", m.Owner, "meta", r.metaPath())
				return Term{Owner: m.Owner, Complete: false}, nil
			}
			m.State = StateReady
			if _, err := r.writeMeta(ctx, m); err != nil {
				if isCASConflict(err) {
					continue
				}
				return Term{}, err
			}
			r.log.Info("replicated copy seeded", "owner", m.Owner)
			return Term{Owner: m.Owner, Complete: true}, nil
		default:
			return Term{}, fmt.Errorf("%s has state %q; this controller knows %q and %q", r.metaPath(), m.State, StateSeeding, StateReady)
		}
	}
}

// maySeed refuses to start a copy from an empty store while Nomad runs
// agentkernel jobs: their declarations are elsewhere, and a copy seeded
// empty would make every instance forget them.
func (r *Replica) maySeed(ctx context.Context) error {
	if r.cfg.SeedEmpty || r.cfg.ManagedJobs == nil {
		return nil
	}
	recs, _, err := r.cfg.Store.List(ctx, store.ListOptions{})
	if err != nil || len(recs) > 0 {
		return err
	}
	n, err := r.cfg.ManagedJobs(ctx)
	if err != nil {
		return fmt.Errorf("count agentkernel jobs before seeding: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("there is no replicated copy yet, this instance's store is empty, and Nomad runs %d agentkernel jobs: an instance holding their declarations must seed the copy (set ha seed_empty to seed from nothing anyway): %w", n, ErrStepAside)
	}
	return nil
}

func isCASConflict(err error) bool {
	var c api.ErrCASConflict
	return errors.As(err, &c)
}

// PushAll writes every local record the copy does not hold as it is.
func (r *Replica) PushAll(ctx context.Context) error {
	recs, _, err := r.cfg.Store.List(ctx, store.ListOptions{})
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(recs))
	for _, rec := range recs {
		keys = append(keys, rec.Key())
	}
	for _, key := range r.knownKeys() {
		if !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}
	return r.Push(ctx, keys)
}

// Push writes the current local state of keys to the copy: the
// declaration of each record, or a delete for records that are gone. It
// writes with check-and-set against the index it last saw, and never
// overwrites a change it has not seen: that fences off a leader that has
// lost its lock without knowing yet.
func (r *Replica) Push(ctx context.Context, keys []string) error {
	if err := errors.Join(r.push(ctx, keys)...); err != nil {
		return fmt.Errorf("replicate to Nomad Variables: %w", err)
	}
	return nil
}

// push writes keys in parallel and returns their failures.
func (r *Replica) push(ctx context.Context, keys []string) []error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	var (
		mu   sync.Mutex
		errs []error
	)
	for _, key := range keys {
		g.Go(func() error {
			if err := r.pushOne(gctx, key); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	return errs
}

func (r *Replica) pushOne(ctx context.Context, key string) error {
	l := r.keyLock(key)
	l.Lock()
	defer l.Unlock()
	rec, err := r.cfg.Store.Get(ctx, key)
	missing := errors.Is(err, store.ErrNotFound)
	if err != nil && !missing {
		return err
	}
	path := r.Path(key)
	r.mu.Lock()
	k, isKnown := r.known[path]
	pending, hasPending := r.pending[path]
	r.mu.Unlock()
	vars := r.cfg.Client.Variables()
	if missing {
		if !isKnown {
			return nil
		}
		for attempt := 0; ; attempt++ {
			r.setPending(path, nil)
			_, err := vars.CheckedDelete(path, k.index, r.wo(ctx))
			var conflict api.ErrCASConflict
			if errors.As(err, &conflict) {
				cur := conflict.Conflict
				switch {
				case cur == nil || cur.CreateIndex == 0:
					// Gone already: a delete of ours whose answer was lost.
					err = nil
				case attempt == 0 && hasPending && pending != nil && r.decodesTo(ctx, cur, *pending):
					// Our own earlier write, whose answer was lost.
					k.index = cur.ModifyIndex
					continue
				default:
					return r.changedUnderUs(path, k.index, cur)
				}
			}
			if err != nil {
				return fmt.Errorf("delete %s: %w", path, err)
			}
			// The chunks it named are collected later (Collect).
			r.mu.Lock()
			delete(r.known, path)
			delete(r.pending, path)
			r.mu.Unlock()
			return nil
		}
	}
	d := rec.Declaration()
	if isKnown && k.decl.Same(d) && !hasPending {
		return nil
	}
	enc, err := r.encode(d)
	if err != nil {
		return err
	}
	// The manifest must follow its chunks closely, or collection could
	// take a chunk it is about to name (see Collect).
	ctx, cancel := context.WithTimeout(ctx, maxWriteSpan)
	defer cancel()
	if err := r.writeChunks(ctx, enc.chunks); err != nil {
		return fmt.Errorf("sandbox %s: %w", key, err)
	}
	for attempt := 0; ; attempt++ {
		r.setPending(path, &d)
		v := &api.Variable{Namespace: r.cfg.Namespace, Path: path, Items: enc.items, ModifyIndex: k.index}
		out, _, err := vars.CheckedUpdate(v, r.wo(ctx))
		var conflict api.ErrCASConflict
		if errors.As(err, &conflict) {
			cur := conflict.Conflict
			switch {
			case cur != nil && r.decodesTo(ctx, cur, d):
				// Already holds what we mean to write.
				out, err = cur, nil
			case attempt == 0 && (cur == nil || cur.CreateIndex == 0) && hasPending && pending == nil:
				// Our own delete went through though its answer was
				// lost: create afresh.
				k.index = 0
				continue
			case attempt == 0 && cur != nil && hasPending && pending != nil && r.decodesTo(ctx, cur, *pending):
				// Our own earlier write, whose answer was lost.
				k.index = cur.ModifyIndex
				continue
			default:
				return r.changedUnderUs(path, k.index, cur)
			}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		r.mu.Lock()
		r.known[path] = knownVar{index: out.ModifyIndex, decl: d, refs: enc.refs()}
		delete(r.pending, path)
		r.mu.Unlock()
		return nil
	}
}

// setPending records a write about to be sent; it stays pending until
// its answer is known.
func (r *Replica) setPending(path string, d *store.Declaration) {
	r.mu.Lock()
	r.pending[path] = d
	r.mu.Unlock()
}

// decodesTo reports whether v holds d, whole.
func (r *Replica) decodesTo(ctx context.Context, v *api.Variable, d store.Declaration) bool {
	cd, _, err := r.decode(ctx, v, r.newChunkReader())
	return err == nil && cd.Same(d)
}

// ErrChangedUnderUs is a check-and-set conflict: the copy changed since
// this leader last read it, which only another leader does. The leader's
// write is not forced through.
var ErrChangedUnderUs = errors.New("the replicated copy was changed by another instance; not overwriting it")

func (r *Replica) changedUnderUs(path string, had uint64, cur *api.Variable) error {
	var now uint64
	if cur != nil {
		now = cur.ModifyIndex
	}
	return fmt.Errorf("%s: expected index %d, found %d: %w", path, had, now, ErrChangedUnderUs)
}

// follow watches the store from rev. When the feed no longer holds rev
// (it may be compacted even between a list and the watch that follows
// it), it lists instead, and returns every key to push with a watch from
// the list's revision.
func (r *Replica) follow(ctx context.Context, rev uint64) (*store.Watcher, map[string]bool, error) {
	w, err := r.cfg.Store.Watch(ctx, rev)
	if errors.Is(err, store.ErrCompacted) {
		return r.relist(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("watch the store: %w", err)
	}
	return w, nil, nil
}

// relist lists the store and watches from the list's revision, listing
// again for as long as the feed is compacted past it. Every listed key,
// and every key the copy holds, is to be pushed.
func (r *Replica) relist(ctx context.Context) (*store.Watcher, map[string]bool, error) {
	for {
		recs, cur, err := r.cfg.Store.List(ctx, store.ListOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("list the store after falling behind its feed: %w", err)
		}
		w, err := r.cfg.Store.Watch(ctx, cur)
		if errors.Is(err, store.ErrCompacted) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("watch the store: %w", err)
		}
		all := map[string]bool{}
		for _, rec := range recs {
			all[rec.Key()] = true
		}
		for _, key := range r.knownKeys() {
			all[key] = true
		}
		return w, all, nil
	}
}

// RunPush is the leader's loop: it pushes every declared change the local
// store commits, from its revision rev on, retrying failures, and
// collects the chunks no declaration names any more, until ctx ends.
func (r *Replica) RunPush(ctx context.Context, rev uint64) error {
	w, carry, err := r.follow(ctx, rev)
	if err != nil {
		return err
	}
	retry := time.NewTicker(5 * time.Second)
	defer retry.Stop()
	r.resetCollection()
	collect := time.NewTicker(collectEvery)
	defer collect.Stop()
	failed := map[string]bool{}
	for {
		pending := carry
		carry = nil
		if pending == nil {
			// Wait for something to push.
			pending = map[string]bool{}
			select {
			case <-ctx.Done():
				return nil
			case ch, ok := <-w.Changes():
				if !ok {
					if ctx.Err() != nil {
						return nil
					}
					if !errors.Is(w.Err(), store.ErrCompacted) {
						return fmt.Errorf("store change feed ended: %w", w.Err())
					}
					// Fell behind the retained feed: push everything, then
					// follow from now.
					if w, pending, err = r.relist(ctx); err != nil {
						return err
					}
					break
				}
				if ch.Kind == store.ChangeStatus || ch.Kind == store.ChangeEvents {
					continue
				}
				pending[ch.Key] = true
				// Take what else is already queued, to push in parallel.
			drain:
				for {
					select {
					case ch, ok := <-w.Changes():
						if !ok {
							break drain
						}
						if ch.Kind != store.ChangeStatus && ch.Kind != store.ChangeEvents {
							pending[ch.Key] = true
						}
					default:
						break drain
					}
				}
			case <-retry.C:
				if len(failed) == 0 {
					continue
				}
				pending, failed = failed, map[string]bool{}
			case <-collect.C:
				if _, err := r.Collect(ctx); err != nil && ctx.Err() == nil {
					r.log.Warn("cannot collect unused chunks; trying again later", "err", err)
				}
				continue
			}
		}
		keys := slices.Sorted(maps.Keys(pending))
		for _, key := range keys {
			if err := r.pushOne(ctx, key); err != nil && ctx.Err() == nil {
				r.log.Warn("cannot replicate a sandbox yet; retrying", "sandbox", key, "err", err)
				failed[key] = true
			}
		}
		if len(failed) == 0 {
			r.synced(0)
		}
	}
}

// RunPull is a follower's loop: it keeps the local store matching the
// copy, waking on every change of it, until ctx ends.
//
// The first pull is full, and so is the one after a failure or after the
// copy became ready; the others import only what changed, so that a
// change of one sandbox costs one variable read and one small write.
func (r *Replica) RunPull(ctx context.Context) error {
	var index uint64
	backoff := time.Second
	full, wasReady := true, false
	for ctx.Err() == nil {
		m, found, err := r.ReadMeta(ctx)
		if err == nil {
			ready := found && m.State == StateReady
			full = full || ready != wasReady
			var listed map[string]uint64
			var idx uint64
			listed, idx, err = r.list(ctx, index, 5*time.Minute)
			if err == nil {
				err = r.pullListed(ctx, listed, idx, full, ready)
			}
			if err == nil {
				index, full, wasReady = idx, false, ready
				backoff = time.Second
				continue
			}
		}
		full = true
		if ctx.Err() != nil {
			break
		}
		r.log.Warn("cannot follow the replicated copy; retrying", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil
}
