package spec

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
)

// DiagnosticJSON is the machine-readable form of one diagnostic, for tools
// and editors (`akctl validate -o json`). Lines and columns start at 1;
// they are 0 when a problem has no place in a file (a bad -var flag).
type DiagnosticJSON struct {
	Severity  string `json:"severity"`
	Summary   string `json:"summary"`
	Detail    string `json:"detail,omitempty"`
	File      string `json:"file,omitempty"`
	Line      int    `json:"line,omitempty"`
	Column    int    `json:"column,omitempty"`
	EndLine   int    `json:"endLine,omitempty"`
	EndColumn int    `json:"endColumn,omitempty"`
}

// DiagnosticsJSON converts diagnostics for JSON output, in their order.
func DiagnosticsJSON(diags hcl.Diagnostics) []DiagnosticJSON {
	out := make([]DiagnosticJSON, 0, len(diags))
	for _, d := range diags {
		j := DiagnosticJSON{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagWarning {
			j.Severity = "warning"
		}
		if r := d.Subject; r != nil {
			j.File, j.Line, j.Column = r.Filename, r.Start.Line, r.Start.Column
			j.EndLine, j.EndColumn = r.End.Line, r.End.Column
		}
		out = append(out, j)
	}
	return out
}

// WriteDiagnostics renders diagnostics for people, with the source snippet
// under each one, as terraform and nomad print them. A snippet is bounded:
// a file content may be a megabyte on one line, or thousands of lines of a
// heredoc, and quoting it whole buries the message (see boundSnippet).
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, width uint, color bool) error {
	dw := hcl.NewDiagnosticTextWriter(w, files, width, color)
	for _, d := range diags {
		var err error
		if f, bd, ok := boundSnippet(files, d); ok {
			err = hcl.NewDiagnosticTextWriter(w, map[string]*hcl.File{d.Subject.Filename: f}, width, color).WriteDiagnostic(bd)
		} else {
			err = dw.WriteDiagnostic(d)
		}
		if err != nil {
			return fmt.Errorf("write diagnostics: %w", err)
		}
	}
	return nil
}

// Bounds of the source a diagnostic quotes.
const (
	// snippetLines is the most lines a snippet shows.
	snippetLines = 6
	// snippetLineBytes is the most bytes of source a snippet line shows.
	snippetLineBytes = 120
	// snippetLead is how much of a long line is shown before the place
	// the diagnostic points at.
	snippetLead = 40
)

// snippetLine is one line of a bounded snippet: the original bytes
// [from, to) shown, and where they start in the stand-in source.
type snippetLine struct {
	from, to, at int
}

// boundSnippet returns, for a diagnostic whose snippet is too long or too
// wide, a stand-in file that holds only what to show of it and the
// diagnostic pointed at that file. HCL's writer then renders it as
// usual: at most snippetLines lines, each cut to snippetLineBytes around
// where the diagnostic points, with "[…N bytes]" and "[… N more lines]"
// saying what was left out. ok is false when the snippet is fine as it is.
func boundSnippet(files map[string]*hcl.File, d *hcl.Diagnostic) (*hcl.File, *hcl.Diagnostic, bool) {
	if d.Subject == nil {
		return nil, nil, false
	}
	file := files[d.Subject.Filename]
	if file == nil || file.Bytes == nil {
		return nil, nil, false
	}
	src := file.Bytes
	snip := *d.Subject
	if d.Context != nil {
		snip = hcl.RangeOver(snip, *d.Context)
	}
	start := min(max(snip.Start.Byte, 0), len(src))
	end := min(max(snip.End.Byte, start+1), len(src))
	first := bytes.LastIndexByte(src[:start], '\n') + 1
	stop := len(src)
	if i := bytes.IndexByte(src[max(end-1, first):], '\n'); i >= 0 {
		stop = max(end-1, first) + i
	}
	// The lines of the snippet, as [start, end) without their newline.
	var lines [][2]int
	for ls := first; ; {
		le := stop
		if i := bytes.IndexByte(src[ls:stop], '\n'); i >= 0 {
			le = ls + i
		}
		lines = append(lines, [2]int{ls, le})
		if le >= stop {
			break
		}
		ls = le + 1
	}
	wide := false
	for _, l := range lines {
		wide = wide || l[1]-l[0] > snippetLineBytes
	}
	if len(lines) <= snippetLines && !wide {
		return nil, nil, false
	}

	// Keep the line the subject starts on among those shown.
	subj := min(max(d.Subject.Start.Byte, 0), len(src))
	k0 := 0
	for i, l := range lines {
		if subj >= l[0] && subj <= l[1] {
			k0 = max(0, i-(snippetLines-1))
			break
		}
	}
	kept := lines[k0:min(len(lines), k0+snippetLines)]
	lineNo := 1 + bytes.Count(src[:kept[0][0]], []byte{'\n'})

	// Line numbers come from the stand-in's own lines: pad it with empty
	// ones, which a snippet never shows.
	var b bytes.Buffer
	b.Write(bytes.Repeat([]byte{'\n'}, lineNo-1))
	shown := make([]snippetLine, len(kept))
	for i, l := range kept {
		from := l[0]
		if subj > l[0]+snippetLead && subj <= l[1] {
			from = subj - snippetLead
		}
		for from > l[0] && !utf8.RuneStart(src[from]) {
			from--
		}
		to := min(l[1], from+snippetLineBytes)
		for to < l[1] && to > from && !utf8.RuneStart(src[to]) {
			to--
		}
		if i == 0 && k0 > 0 {
			fmt.Fprintf(&b, "[… %d lines before] ", k0)
		}
		if from > l[0] {
			fmt.Fprintf(&b, "[…%d bytes]", from-l[0])
		}
		shown[i] = snippetLine{from: from, to: to, at: b.Len()}
		b.Write(src[from:to])
		if to < l[1] {
			fmt.Fprintf(&b, "[…%d bytes]", l[1]-to)
		}
		if i == len(kept)-1 && k0+len(kept) < len(lines) {
			fmt.Fprintf(&b, " [… %d more lines]", len(lines)-k0-len(kept))
		}
		b.WriteByte('\n')
	}
	stand := b.Bytes()

	// at maps an offset of the original source into the stand-in.
	at := func(off int) int {
		for _, l := range shown {
			if off <= l.from {
				return l.at
			}
			if off <= l.to {
				return l.at + off - l.from
			}
		}
		last := shown[len(shown)-1]
		return last.at + last.to - last.from
	}
	moved := func(r hcl.Range) hcl.Range {
		r.Start.Byte, r.End.Byte = at(r.Start.Byte), at(r.End.Byte)
		return r
	}
	bd := *d
	subject := moved(*d.Subject)
	bd.Subject = &subject
	// The context spans every line kept, so that all of them are shown.
	whole := hcl.Range{Filename: d.Subject.Filename,
		Start: hcl.Pos{Line: lineNo, Column: 1, Byte: lineNo - 1},
		End:   hcl.Pos{Line: lineNo + len(kept) - 1, Column: 1, Byte: len(stand) - 1}}
	bd.Context = &whole
	nav := snippetNav("")
	if cs, ok := file.Nav.(interface{ ContextString(int) string }); ok {
		nav = snippetNav(cs.ContextString(d.Subject.Start.Byte))
	}
	return &hcl.File{Bytes: stand, Nav: nav}, &bd, true
}

// snippetNav answers HCL's writer's "in sandbox ..." for a stand-in file
// with what the original file says at the diagnostic's subject.
type snippetNav string

func (n snippetNav) ContextString(int) string { return string(n) }

// SortDiagnostics orders diagnostics by file and position so that output
// is stable however the loader reached them. Problems with no place come
// first: they are usually about the command line.
func SortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
}

func errorDiag(subject *hcl.Range, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: subject}
}

func warningDiag(subject *hcl.Range, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: detail, Subject: subject}
}

// rangeString is "file:line,column" for naming the other place in a
// "declared twice" diagnostic.
func rangeString(r hcl.Range) string {
	return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
}

// didYouMean suggests the closest of candidates to a mistyped name, as
// HCL does for unknown attributes, or returns "".
func didYouMean(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := levenshtein.Distance(name, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}
