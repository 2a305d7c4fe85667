package replica

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// A declaration larger than one variable is written as chunks and a
// manifest. The chunks are immutable and named by the SHA-256 of their
// data, so writing one twice is harmless and a reader can verify it; they
// are all written before the manifest, which names them and is the commit
// point: a reader that sees the manifest finds every chunk, and one that
// does not sees the sandbox's previous declaration, or none.
//
// File contents of outlineBytes or more get chunks of their own, so that
// sandboxes sharing a large file share its chunks; the rest of the
// declaration (the body) is inline in the manifest when it fits, else
// chunked too.

const (
	// ItemManifest holds a declaration too large for one variable: the
	// manifest naming its chunks.
	ItemManifest = "manifest"
	// itemData holds a chunk's data.
	itemData = "data"
	// maxChunkBytes is the most data a chunk variable holds.
	maxChunkBytes = MaxVariableBytes - len(itemData)
	// outlineBytes is the size from which a file's content is chunked on
	// its own rather than with the body.
	outlineBytes = 16 << 10
	// maxRefChunks bounds the chunks a reference names, which keeps every
	// manifest within one variable; a longer blob gets a level of index
	// chunks, which hold the names of the chunks below.
	maxRefChunks = 256
	// maxDepth bounds the index levels a reader follows (256 chunks of
	// 64 KiB at depth 0 already hold 16 MiB).
	maxDepth = 3
	// chunkParallel bounds one declaration's concurrent chunk writes.
	chunkParallel = 4
)

// Timing of chunk writes that collection relies on (see Collect): a
// manifest is committed within touchReuse+maxWriteSpan of the last write
// of each chunk it names, and that is well under collectMinGap.
const (
	// touchReuse is how long a chunk this instance wrote counts as
	// fresh, so that declarations sharing it do not each rewrite it.
	touchReuse = 30 * time.Second
	// maxWriteSpan bounds a declaration's write, from its first chunk
	// to its manifest.
	maxWriteSpan = 2 * time.Minute
)

var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func hashOf(data string) string {
	sum := sha256.Sum256([]byte(data))
	return hex.EncodeToString(sum[:])
}

// blobRef names the chunks that hold a string, in order.
type blobRef struct {
	Size int `json:"size"`
	// Depth above zero means the chunks hold, joined by newlines, the
	// names of the chunks one level down.
	Depth  int      `json:"depth,omitempty"`
	Chunks []string `json:"chunks"`
}

// fileRef is a file content chunked on its own: the index of the file in
// the body's declaration, whose content is left empty.
type fileRef struct {
	Index int `json:"index"`
	blobRef
}

// body is a large declaration without the file contents chunked on
// their own.
type body struct {
	Declaration store.Declaration `json:"declaration"`
	Files       []fileRef         `json:"files,omitempty"`
}

// manifest holds the body inline, or names the chunks that hold it.
type manifest struct {
	Inline json.RawMessage `json:"inline,omitempty"`
	Body   *blobRef        `json:"body,omitempty"`
}

// encoded is a declaration ready to write: its variable's items, and the
// chunks, by name, that must exist first.
type encoded struct {
	items  api.VariableItems
	chunks map[string]string
}

// refs are the names of the chunks, sorted.
func (e encoded) refs() []string { return slices.Sorted(maps.Keys(e.chunks)) }

// encode turns d into its variable's items, and the chunks they name.
// A declaration that fits one variable is inline, as the copy has always
// held it.
func (r *Replica) encode(d store.Declaration) (encoded, error) {
	if path := r.Path(d.Key()); len(path) > MaxPathLength || !pathRE.MatchString(path) {
		// Path hashes keys that do not fit; this is a bug, not input.
		return encoded{}, fmt.Errorf("sandbox %s: variable path %q is not one Nomad accepts", d.Key(), path)
	}
	for _, f := range d.Sandbox.Spec.Files {
		// JSON, inline or in a chunk, carries only UTF-8 text; other
		// bytes would arrive changed.
		if !utf8.ValidString(f.Content) {
			return encoded{}, unreplicable{fmt.Sprintf("sandbox %s cannot be replicated: the content of file %s is not UTF-8 text", d.Key(), f.Path)}
		}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return encoded{}, fmt.Errorf("encode %s: %w", d.Key(), err)
	}
	if len(ItemDeclaration)+len(b) <= MaxVariableBytes {
		return encoded{items: api.VariableItems{ItemDeclaration: string(b)}}, nil
	}
	out := encoded{chunks: map[string]string{}}
	bd := body{Declaration: d}
	files := slices.Clone(d.Sandbox.Spec.Files)
	for i, f := range files {
		if len(f.Content) < outlineBytes {
			continue
		}
		ref, err := split(f.Content, out.chunks)
		if err != nil {
			return encoded{}, fmt.Errorf("encode %s: file %s: %w", d.Key(), f.Path, err)
		}
		bd.Files = append(bd.Files, fileRef{Index: i, blobRef: ref})
		files[i].Content = ""
	}
	bd.Declaration.Sandbox.Spec.Files = files
	bb, err := json.Marshal(bd)
	if err != nil {
		return encoded{}, fmt.Errorf("encode %s: %w", d.Key(), err)
	}
	mb, err := json.Marshal(manifest{Inline: bb})
	if err == nil && len(ItemManifest)+len(mb) > MaxVariableBytes {
		var ref blobRef
		if ref, err = split(string(bb), out.chunks); err == nil {
			mb, err = json.Marshal(manifest{Body: &ref})
		}
	}
	if err != nil {
		return encoded{}, fmt.Errorf("encode %s: %w", d.Key(), err)
	}
	if n := len(ItemManifest) + len(mb); n > MaxVariableBytes {
		return encoded{}, unreplicable{fmt.Sprintf("sandbox %s cannot be replicated: its manifest takes %d bytes, and a Nomad Variable holds at most %d", d.Key(), n, MaxVariableBytes)}
	}
	out.items = api.VariableItems{ItemManifest: string(mb)}
	return out, nil
}

// split cuts data into chunks, adds them to chunks, and returns their
// reference. Chunks end on character boundaries: items travel as JSON
// strings, which carry only whole UTF-8 characters.
func split(data string, chunks map[string]string) (blobRef, error) {
	if !utf8.ValidString(data) {
		return blobRef{}, errors.New("not UTF-8 text")
	}
	names := cut(data, chunks)
	depth := 0
	for len(names) > maxRefChunks {
		names = cut(strings.Join(names, "\n"), chunks)
		depth++
	}
	return blobRef{Size: len(data), Depth: depth, Chunks: names}, nil
}

func cut(data string, chunks map[string]string) []string {
	var names []string
	for len(data) > 0 {
		n := min(len(data), maxChunkBytes)
		for n < len(data) && !utf8.RuneStart(data[n]) {
			n--
		}
		h := hashOf(data[:n])
		chunks[h] = data[:n]
		names = append(names, h)
		data = data[n:]
	}
	return names
}

// ErrIncomplete marks a manifest whose chunks are missing or do not
// match their names: the declaration is not imported, and nothing is
// removed for it.
var ErrIncomplete = errors.New("a chunk of the declaration is missing or corrupt")

// chunkReader reads and verifies chunks, each once per pass, since
// sandboxes may share them.
type chunkReader struct {
	r   *Replica
	mu  sync.Mutex
	got map[string]string
}

func (r *Replica) newChunkReader() *chunkReader {
	return &chunkReader{r: r, got: map[string]string{}}
}

func (c *chunkReader) read(ctx context.Context, name string) (string, error) {
	if !hashRE.MatchString(name) {
		return "", fmt.Errorf("chunk name %q is not a hex SHA-256: %w", name, ErrIncomplete)
	}
	c.mu.Lock()
	data, ok := c.got[name]
	c.mu.Unlock()
	if ok {
		return data, nil
	}
	path := c.r.chunkPath(name)
	v, _, err := c.r.cfg.Client.Variables().Read(path, c.r.qo(ctx))
	if errors.Is(err, api.ErrVariablePathNotFound) {
		return "", fmt.Errorf("chunk %s is missing: %w", path, ErrIncomplete)
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	data, ok = v.Items[itemData]
	if !ok || hashOf(data) != name {
		return "", fmt.Errorf("chunk %s is corrupt: its data does not hash to its name: %w", path, ErrIncomplete)
	}
	c.mu.Lock()
	c.got[name] = data
	c.mu.Unlock()
	return data, nil
}

// blob reads the string ref names, adding the names of the chunks it
// read to refs.
func (c *chunkReader) blob(ctx context.Context, ref blobRef, refs map[string]bool) (string, error) {
	if ref.Depth < 0 || ref.Depth > maxDepth {
		return "", fmt.Errorf("a chunk reference of depth %d: %w", ref.Depth, ErrIncomplete)
	}
	names := ref.Chunks
	for level := ref.Depth; ; level-- {
		var b strings.Builder
		for _, name := range names {
			data, err := c.read(ctx, name)
			if err != nil {
				return "", err
			}
			refs[name] = true
			b.WriteString(data)
		}
		if level == 0 {
			if b.Len() != ref.Size {
				return "", fmt.Errorf("chunks %s… hold %d bytes, not %d: %w", names[0], b.Len(), ref.Size, ErrIncomplete)
			}
			return b.String(), nil
		}
		names = strings.Split(b.String(), "\n")
	}
}

// decode reads the declaration v holds, with the chunks it names, and
// returns it with those names, sorted.
func (r *Replica) decode(ctx context.Context, v *api.Variable, cr *chunkReader) (store.Declaration, []string, error) {
	var (
		d    store.Declaration
		refs []string
	)
	if raw, ok := v.Items[ItemDeclaration]; ok {
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			return d, nil, fmt.Errorf("variable %s: decode declaration: %w", v.Path, err)
		}
	} else if raw, ok := v.Items[ItemManifest]; ok {
		var err error
		if d, refs, err = r.decodeManifest(ctx, raw, cr); err != nil {
			return d, nil, fmt.Errorf("variable %s: %w", v.Path, err)
		}
	} else {
		return d, nil, fmt.Errorf("variable %s has neither a %q nor a %q item", v.Path, ItemDeclaration, ItemManifest)
	}
	if want := r.Path(d.Key()); want != v.Path {
		return d, nil, fmt.Errorf("variable %s holds sandbox %q, whose variable is %s", v.Path, d.Key(), want)
	}
	return d, refs, nil
}

func (r *Replica) decodeManifest(ctx context.Context, raw string, cr *chunkReader) (store.Declaration, []string, error) {
	var m manifest
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return store.Declaration{}, nil, fmt.Errorf("decode manifest: %w", err)
	}
	refs := map[string]bool{}
	var bb []byte
	switch {
	case m.Inline != nil && m.Body == nil:
		bb = m.Inline
	case m.Body != nil && m.Inline == nil:
		s, err := cr.blob(ctx, *m.Body, refs)
		if err != nil {
			return store.Declaration{}, nil, fmt.Errorf("read the body: %w", err)
		}
		bb = []byte(s)
	default:
		return store.Declaration{}, nil, errors.New("the manifest holds neither exactly an inline body nor a body reference")
	}
	var bd body
	if err := json.Unmarshal(bb, &bd); err != nil {
		return store.Declaration{}, nil, fmt.Errorf("decode the body: %w", err)
	}
	files := bd.Declaration.Sandbox.Spec.Files
	for _, f := range bd.Files {
		if f.Index < 0 || f.Index >= len(files) || files[f.Index].Content != "" {
			return store.Declaration{}, nil, fmt.Errorf("the manifest names the content of file %d, which the body does not leave empty", f.Index)
		}
		content, err := cr.blob(ctx, f.blobRef, refs)
		if err != nil {
			return store.Declaration{}, nil, fmt.Errorf("read file %s: %w", files[f.Index].Path, err)
		}
		files[f.Index].Content = content
	}
	return bd.Declaration, slices.Sorted(maps.Keys(refs)), nil
}

// writeChunks makes every chunk exist, freshly written: collection only
// deletes chunks left unwritten for a while (see Collect). A chunk this
// instance wrote within touchReuse is not written again.
func (r *Replica) writeChunks(ctx context.Context, chunks map[string]string) error {
	r.pruneWritten()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(chunkParallel)
	for _, name := range slices.Sorted(maps.Keys(chunks)) {
		if r.freshChunk(name) {
			continue
		}
		g.Go(func() error {
			path := r.chunkPath(name)
			v := &api.Variable{Namespace: r.cfg.Namespace, Path: path, Items: api.VariableItems{itemData: chunks[name]}}
			// Unconditional: the data at a chunk's path is always the
			// same, and the write is what marks the chunk as in use.
			if _, _, err := r.cfg.Client.Variables().Update(v, r.wo(gctx)); err != nil {
				return fmt.Errorf("write chunk %s: %w", path, err)
			}
			r.mu.Lock()
			r.written[name] = time.Now()
			r.mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

func (r *Replica) freshChunk(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.written[name]
	if ok && time.Since(at) >= touchReuse {
		delete(r.written, name)
		return false
	}
	return ok
}

// pruneWritten forgets the chunk writes that no longer count as fresh.
func (r *Replica) pruneWritten() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, at := range r.written {
		if time.Since(at) >= touchReuse {
			delete(r.written, name)
		}
	}
}
