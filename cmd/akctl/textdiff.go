package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	udiff "github.com/aymanbagabas/go-udiff"
)

// Bounds of a text diff in akctl diff's output. A file content may be a
// megabyte on one line; the terminal gets a summary and a window.
const (
	// longText is the length from which a string is shown as text.
	longText = 64
	// textDiffLines bounds the lines of a text diff, hunk headers
	// included; a note says how many more there were.
	textDiffLines = 24
	// textLineBytes bounds the bytes shown of one line.
	textLineBytes = 96
	// textLead is how much of a changed line is shown before its first
	// difference.
	textLead = 32
	// textContext is the unchanged lines shown around a change.
	textContext = 3
)

// isText tells the values shown as text rather than quoted on one line:
// strings that hold a newline or are long.
func isText(v any) bool {
	s, ok := v.(string)
	return ok && (len(s) >= longText || strings.Contains(s, "\n"))
}

// writeTextChange shows a change of a string as a summary line (sizes and
// hashes) and a bounded unified diff of its lines. old or new is nil when
// the field is added or removed.
func writeTextChange(w io.Writer, indent, path string, old, new *string) {
	fmt.Fprintf(w, "%s%s: %s -> %s\n", indent, path, textSummary(old), textSummary(new))
	before, after := deref(old), deref(new)
	edits := udiff.Lines(before, after)
	u, err := udiff.ToUnifiedDiff("", "", before, edits, textContext)
	if err != nil {
		// The edits come from the same strings; they are consistent.
		fmt.Fprintf(w, "%s  (no line diff: %v)\n", indent, err)
		return
	}
	var out []string
	for _, h := range u.Hunks {
		out = append(out, hunkHeader(h))
		out = append(out, hunkLines(h)...)
	}
	shown := out[:min(len(out), textDiffLines)]
	for _, l := range shown {
		fmt.Fprintf(w, "%s  %s\n", indent, l)
	}
	if more := len(out) - len(shown); more > 0 {
		fmt.Fprintf(w, "%s  … %d more lines\n", indent, more)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func textSummary(s *string) string {
	if s == nil {
		return "(none)"
	}
	sum := sha256.Sum256([]byte(*s))
	return fmt.Sprintf("%d bytes, sha256:%s", len(*s), hex.EncodeToString(sum[:])[:12])
}

// hunkHeader is "@@ -l,n +l,n @@" as the library's own unified text
// writes it (and patch reads it): a count of one is left out.
func hunkHeader(h *udiff.Hunk) string {
	from, to := 0, 0
	for _, l := range h.Lines {
		switch l.Kind {
		case udiff.Delete:
			from++
		case udiff.Insert:
			to++
		default:
			from++
			to++
		}
	}
	return "@@ -" + lineRange(h.FromLine, from) + " +" + lineRange(h.ToLine, to) + " @@"
}

func lineRange(start, n int) string {
	switch {
	case n > 1:
		return fmt.Sprintf("%d,%d", start, n)
	case n == 0 && start == 1:
		return "0,0"
	}
	return fmt.Sprint(start)
}

// hunkLines renders a hunk's lines, each bounded. A run of deleted lines
// followed by inserted ones pairs them up, so that a long changed line is
// shown from a little before where the two differ.
func hunkLines(h *udiff.Hunk) []string {
	var out []string
	lines := h.Lines
	for i := 0; i < len(lines); {
		if lines[i].Kind == udiff.Equal {
			out = append(out, " "+boundLine(lines[i].Content, 0))
			i++
			continue
		}
		j := i
		for j < len(lines) && lines[j].Kind == udiff.Delete {
			j++
		}
		k := j
		for k < len(lines) && lines[k].Kind == udiff.Insert {
			k++
		}
		dels, inss := lines[i:j], lines[j:k]
		for n, l := range dels {
			from := 0
			if n < len(inss) {
				from = diffStart(l.Content, inss[n].Content)
			}
			out = append(out, "-"+boundLine(l.Content, from))
		}
		for n, l := range inss {
			from := 0
			if n < len(dels) {
				from = diffStart(dels[n].Content, l.Content)
			}
			out = append(out, "+"+boundLine(l.Content, from))
		}
		if k == i {
			k++ // a kind this loop does not know: skip it rather than spin
		}
		i = k
	}
	return out
}

// diffStart is where a window on two differing lines starts: a little
// before their first difference, on a rune boundary.
func diffStart(a, b string) int {
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	start := max(0, p-textLead)
	for start > 0 && !utf8.RuneStart(a[start]) {
		start--
	}
	return start
}

// boundLine shows at most textLineBytes of a line from byte from, saying
// how many bytes were left out on each side, with control characters
// escaped so that a file cannot drive the terminal.
func boundLine(line string, from int) string {
	body, nl := strings.CutSuffix(line, "\n")
	from = min(from, len(body))
	end := from + textLineBytes
	if end >= len(body) {
		end = len(body)
	} else {
		for end > from && !utf8.RuneStart(body[end]) {
			end--
		}
	}
	var b strings.Builder
	if from > 0 {
		fmt.Fprintf(&b, "[…%d bytes]", from)
	}
	b.WriteString(escapeControl(body[from:end]))
	if end < len(body) {
		fmt.Fprintf(&b, "[…%d bytes]", len(body)-end)
	}
	if !nl {
		b.WriteString(" (no newline at end)")
	}
	return b.String()
}

func escapeControl(s string) string {
	clean := true
	for _, r := range s {
		if r != '\t' && (unicode.IsControl(r) || r == utf8.RuneError) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\t' || !unicode.IsControl(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}
