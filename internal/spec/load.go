package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

// Default limits of a load.
const (
	DefaultMaxSourceBytes = 4 << 20
	DefaultMaxSandboxes   = 25_000
	// StdinName is how diagnostics name declarations read from "-".
	StdinName = "<stdin>"
	// DefaultNamespace is Nomad's own default namespace.
	DefaultNamespace = "default"
)

// Options tune a load. The zero value loads with the defaults and no
// variable values beyond the declared defaults.
type Options struct {
	// DefaultNamespace is given to sandboxes that name none ("default").
	DefaultNamespace string
	// Vars are the -var and -var-file flags, in command-line order.
	Vars []VarValue
	// Environ is searched for AKCTL_VAR_<name> values (os.Environ() form).
	Environ []string
	// Stdin is read for the path "-".
	Stdin io.Reader
	// MaxSourceBytes bounds each file read (DefaultMaxSourceBytes).
	MaxSourceBytes int64
	// MaxSandboxes bounds the sandboxes of one load (DefaultMaxSandboxes).
	MaxSandboxes int
}

func (o *Options) withDefaults() Options {
	out := *o
	if out.DefaultNamespace == "" {
		out.DefaultNamespace = DefaultNamespace
	}
	if out.MaxSourceBytes <= 0 {
		out.MaxSourceBytes = DefaultMaxSourceBytes
	}
	if out.MaxSandboxes <= 0 {
		out.MaxSandboxes = DefaultMaxSandboxes
	}
	return out
}

// Result is what a load found. Files holds every parsed file, for
// rendering diagnostics with source snippets; it is filled even when the
// load has errors.
type Result struct {
	Sandboxes []Sandbox // sorted by Key
	Pools     []Pool    // sorted by Key
	Files     map[string]*hcl.File
}

// SourceFile is one declaration file's bytes. Dir is where file() paths
// are resolved from.
type SourceFile struct {
	Name string
	Dir  string
	Src  []byte
}

// Load reads declarations from files, directories (every *.hcl file in
// them, sorted by name, except Nomad's own files: see NomadFileKind) and
// "-" (Options.Stdin). It reports every problem found, not only the first;
// on any error the sandboxes are not usable.
func Load(paths []string, opts Options) (*Result, hcl.Diagnostics) {
	o := opts.withDefaults()
	srcs, diags := readSources(paths, &o)
	res, ldiags := LoadSources(srcs, o)
	return res, append(diags, ldiags...)
}

// LoadSources is Load over sources already in memory.
func LoadSources(srcs []SourceFile, opts Options) (*Result, hcl.Diagnostics) {
	o := opts.withDefaults()
	pf := &parserFiles{parser: hclparse.NewParser(), limit: o.MaxSourceBytes}
	var diags hcl.Diagnostics
	var files []parsedFile
	for _, s := range srcs {
		f, d := pf.parser.ParseHCL(s.Src, s.Name)
		diags = append(diags, d...)
		if f != nil && f.Body != nil {
			files = append(files, parsedFile{file: f, dir: s.Dir})
		}
	}
	l := &loader{opts: &o, pf: pf}
	sandboxes, ldiags := l.load(files)
	diags = append(diags, ldiags...)
	diags = append(diags, nomadFileHints(srcs, diags)...)
	SortDiagnostics(diags)
	return &Result{Sandboxes: sandboxes, Pools: l.pools, Files: pf.parser.Files()}, diags
}

type parsedFile struct {
	file *hcl.File
	dir  string
}

// parserFiles wraps the parser so var files share it: their diagnostics
// then render with snippets like the declarations'.
type parserFiles struct {
	parser *hclparse.Parser
	limit  int64
}

func (pf *parserFiles) parseFile(path string) (*hcl.File, hcl.Diagnostics) {
	src, err := readLimited(path, pf.limit)
	if err != nil {
		return nil, hcl.Diagnostics{readError(path, err)}
	}
	if strings.HasSuffix(path, ".json") {
		return pf.parser.ParseJSON(src, path)
	}
	return pf.parser.ParseHCL(src, path)
}

func readError(path string, err error) *hcl.Diagnostic {
	// A PathError repeats the path the detail already names.
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return errorDiag(nil, "Cannot read file", fmt.Sprintf("Cannot read %s: %v.", path, err))
}

// readSources expands the paths into file contents, each at most
// MaxSourceBytes, a file named twice read once.
func readSources(paths []string, o *Options) ([]SourceFile, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var out []SourceFile
	seen := map[string]bool{}
	add := func(name string) {
		abs, err := filepath.Abs(name)
		if err == nil && seen[abs] {
			return
		}
		seen[abs] = true
		src, err := readLimited(name, o.MaxSourceBytes)
		if err != nil {
			diags = append(diags, readError(name, err))
			return
		}
		out = append(out, SourceFile{Name: name, Dir: filepath.Dir(name), Src: src})
	}
	for _, p := range paths {
		if p == "-" {
			if o.Stdin == nil {
				diags = append(diags, errorDiag(nil, "No standard input", "The path \"-\" reads declarations from standard input, but none is available."))
				continue
			}
			src, err := readAllLimited(o.Stdin, StdinName, o.MaxSourceBytes)
			if err != nil {
				diags = append(diags, readError(StdinName, err))
				continue
			}
			out = append(out, SourceFile{Name: StdinName, Dir: ".", Src: src})
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			diags = append(diags, readError(p, err))
			continue
		}
		if !fi.IsDir() {
			add(p)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(p, "*.hcl"))
		if err != nil {
			diags = append(diags, readError(p, err))
			continue
		}
		if len(matches) == 0 {
			diags = append(diags, errorDiag(nil, "No declarations in directory", fmt.Sprintf("The directory %s holds no *.hcl files.", p)))
		}
		sort.Strings(matches)
		var skipped []string
		for _, m := range matches {
			if NomadFileKind(m) != "" {
				skipped = append(skipped, filepath.Base(m))
				continue
			}
			add(m)
		}
		if len(matches) > 0 && len(skipped) == len(matches) {
			diags = append(diags, errorDiag(nil, "No declarations in directory", fmt.Sprintf(
				"The directory %s holds only Nomad files (%s), which a directory load skips; name a file on its own to load it anyway.",
				p, strings.Join(skipped, ", "))))
		}
	}
	return out, diags
}

var topSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
		{Type: "sandbox", LabelNames: []string{"name"}},
		{Type: "pool", LabelNames: []string{"name"}},
	},
}

type loader struct {
	opts *Options
	pf   *parserFiles
	ctxs map[string]*hcl.EvalContext // by directory, for file()
	vars cty.Value
	locs cty.Value
	// pools are the pool blocks load decoded, sorted by key.
	pools []Pool
}

type sandboxBlock struct {
	block *hcl.Block
	dir   string
}

func (l *loader) load(files []parsedFile) ([]Sandbox, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	vars := map[string]*variable{}
	var localBlocks, sandboxBlocks, poolBlocks []sandboxBlock
	for _, f := range files {
		content, d := decodeBody(f.file.Body, topSchema)
		diags = append(diags, d...)
		for _, b := range content.Blocks {
			switch b.Type {
			case "variable":
				v, vd := declareVariable(b, f.dir)
				diags = append(diags, vd...)
				if prev, dup := vars[v.name]; dup {
					diags = append(diags, errorDiag(b.LabelRanges[0].Ptr(), "Duplicate variable",
						fmt.Sprintf("A variable named %q was already declared at %s. Each variable is declared once across all loaded files.", v.name, rangeString(prev.block.DefRange))))
					continue
				}
				vars[v.name] = v
			case "locals":
				localBlocks = append(localBlocks, sandboxBlock{b, f.dir})
			case "sandbox":
				sandboxBlocks = append(sandboxBlocks, sandboxBlock{b, f.dir})
			case "pool":
				poolBlocks = append(poolBlocks, sandboxBlock{b, f.dir})
			}
		}
	}

	var vdiags hcl.Diagnostics
	l.vars, vdiags = resolveVariables(vars, l.opts, l.pf)
	diags = append(diags, vdiags...)
	if vdiags.HasErrors() {
		// Without variable values every expression using them would add
		// a confusing second error; report the cause alone.
		return nil, diags
	}
	var ldiags hcl.Diagnostics
	l.locs, ldiags = l.evalLocals(localBlocks)
	diags = append(diags, ldiags...)
	if ldiags.HasErrors() {
		return nil, diags
	}

	if len(sandboxBlocks) > l.opts.MaxSandboxes {
		b := sandboxBlocks[l.opts.MaxSandboxes].block
		diags = append(diags, errorDiag(b.DefRange.Ptr(), "Too many sandboxes",
			fmt.Sprintf("These files declare %d sandboxes; one load takes at most %d. Split the files into several applies.", len(sandboxBlocks), l.opts.MaxSandboxes)))
		return nil, diags
	}
	out := make([]Sandbox, 0, len(sandboxBlocks))
	first := map[string]hcl.Range{}
	for _, sb := range sandboxBlocks {
		s, d := decodeSandbox(sb.block, l.evalContext(sb.dir), l.opts.DefaultNamespace)
		diags = append(diags, d...)
		if s == nil {
			continue
		}
		if prev, dup := first[s.Key()]; dup {
			diags = append(diags, errorDiag(sb.block.LabelRanges[0].Ptr(), "Duplicate sandbox",
				fmt.Sprintf("A sandbox named %q in namespace %q was already declared at %s. Each namespace/name is declared once; rename or remove one of them.", s.Name, s.Namespace, rangeString(prev))))
			continue
		}
		first[s.Key()] = sb.block.LabelRanges[0]
		if !d.HasErrors() {
			out = append(out, *s)
		}
	}
	// Pools share the sandboxes' names: a pool is stored beside them.
	for _, pb := range poolBlocks {
		p, d := decodePool(pb.block, l.evalContext(pb.dir), l.opts.DefaultNamespace)
		diags = append(diags, d...)
		if prev, dup := first[p.Key()]; dup {
			diags = append(diags, errorDiag(pb.block.LabelRanges[0].Ptr(), "Duplicate name",
				fmt.Sprintf("A sandbox or pool named %q in namespace %q was already declared at %s. Pools and sandboxes share one set of names per namespace; rename or remove one of them.", p.Name, p.Namespace, rangeString(prev))))
			continue
		}
		first[p.Key()] = pb.block.LabelRanges[0]
		if !d.HasErrors() {
			l.pools = append(l.pools, *p)
		}
	}
	slices.SortFunc(out, func(a, b Sandbox) int { return strings.Compare(a.Key(), b.Key()) })
	slices.SortFunc(l.pools, func(a, b Pool) int { return strings.Compare(a.Key(), b.Key()) })
	return out, diags
}

// evalContext gives expressions in files under dir their variables and
// functions; file() differs per directory, so contexts are cached by it.
func (l *loader) evalContext(dir string) *hcl.EvalContext {
	if ctx, ok := l.ctxs[dir]; ok {
		return ctx
	}
	if l.ctxs == nil {
		l.ctxs = map[string]*hcl.EvalContext{}
	}
	vars := map[string]cty.Value{"var": l.vars}
	if l.locs != cty.NilVal {
		vars["local"] = l.locs
	}
	ctx := &hcl.EvalContext{Variables: vars, Functions: functionsFor(dir)}
	l.ctxs[dir] = ctx
	return ctx
}
