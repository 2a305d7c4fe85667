// Package docs_test checks the repository's Markdown: README.md stays
// short enough to read first, every relative link in README.md and
// docs/*.md points at a file, directory and heading that exist, and every
// docs page is reachable from the README.
package docs_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// maxReadmeBytes is the README's budget: what a newcomer reads first.
const maxReadmeBytes = 12288

// repoRoot is the repository, relative to this test's directory.
const repoRoot = "../.."

// A Markdown document as the checks see it.
type doc struct {
	path    string   // relative to the repository root, slash-separated
	lines   []string // the file's lines
	anchors map[string]bool
	links   []link
	split   []int // lines where a link continues from the line before, unchecked
}

// A link found outside code.
type link struct {
	line   int    // 1-based
	raw    string // as written, for messages
	target string // the destination, without a title or angle brackets
}

var (
	// Inline links and images: [text](target) or ![alt](target "title").
	// The text may hold one level of brackets ([`a[0]`](x)).
	inlineLink = regexp.MustCompile(`!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)`)
	// Reference definitions: [label]: target "title".
	refDef = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)`)
	// ATX headings.
	heading = regexp.MustCompile(`^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	// The end of a link whose text began on an earlier line.
	splitLink = regexp.MustCompile(`^[^\[]*\]\(`)
	// HTML anchors: <a id="x"> or <a name="x">.
	htmlAnchor = regexp.MustCompile(`<a\s+(?:[^>]*\s)?(?:id|name)\s*=\s*"([^"]+)"`)
	// Fences: ``` or ~~~, three or more.
	fence = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})")
	// Inline markup removed from heading text before it becomes an anchor.
	mdLinkText = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	htmlTag    = regexp.MustCompile(`<[^>]+>`)
)

func TestReadmeSize(t *testing.T) {
	info, err := os.Stat(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() > maxReadmeBytes {
		t.Errorf("README.md is %d bytes, more than %d: move reference material to docs/", info.Size(), maxReadmeBytes)
	}
}

func TestRelativeLinks(t *testing.T) {
	docs := loadDocs(t)
	cache := map[string]*doc{}
	for _, d := range docs {
		cache[d.path] = d
	}
	for _, d := range docs {
		for _, n := range d.split {
			t.Errorf("%s:%d: %s: a link's text is broken across lines; keep each link on one line so that it is checked", d.path, n, strings.TrimSpace(d.lines[n-1]))
		}
		for _, l := range d.links {
			if msg := checkLink(d, l, cache); msg != "" {
				t.Errorf("%s:%d: %s: %s", d.path, l.line, l.raw, msg)
			}
		}
	}
}

func TestEveryDocsPageIsLinkedFromReadme(t *testing.T) {
	docs := loadDocs(t)
	readme := docs[0]
	linked := map[string]bool{}
	for _, l := range readme.links {
		p, _, ok := splitTarget(l.target)
		if !ok || p == "" {
			continue
		}
		linked[resolve(readme.path, p)] = true
	}
	for _, d := range docs[1:] {
		if !linked[d.path] {
			t.Errorf("%s is not linked from README.md: add it to the README's list of docs pages", d.path)
		}
	}
}

// loadDocs reads README.md and docs/*.md; README.md comes first.
func loadDocs(t *testing.T) []*doc {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("no docs/*.md pages found")
	}
	sort.Strings(pages)
	paths := []string{"README.md"}
	for _, p := range pages {
		rel, err := filepath.Rel(repoRoot, p)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.ToSlash(rel))
	}
	var docs []*doc
	for _, p := range paths {
		d, err := parseDoc(p)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
	return docs
}

// parseDoc reads a Markdown file (path relative to the repository root)
// and collects its anchors and its links outside code.
func parseDoc(path string) (*doc, error) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(path)))
	if err != nil {
		return nil, err
	}
	d := &doc{path: path, lines: strings.Split(string(raw), "\n"), anchors: map[string]bool{}}
	seen := map[string]int{}
	inFence := ""
	for i, line := range d.lines {
		if m := fence.FindStringSubmatch(line); m != nil {
			switch {
			case inFence == "":
				inFence = m[1]
				continue
			case m[1][0] == inFence[0] && len(m[1]) >= len(inFence) && strings.TrimSpace(line[strings.Index(line, m[1])+len(m[1]):]) == "":
				inFence = ""
				continue
			}
		}
		if inFence != "" {
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			d.anchors[m[1]] = true
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			slug := anchor(m[2])
			if n := seen[slug]; n > 0 {
				d.anchors[fmt.Sprintf("%s-%d", slug, n)] = true
			} else {
				d.anchors[slug] = true
			}
			seen[slug]++
		}
		// Code spans are blanked byte for byte, so offsets in text are
		// offsets in line: messages quote the link as written.
		text := stripCodeSpans(line)
		for _, m := range inlineLink.FindAllStringSubmatchIndex(text, -1) {
			d.links = append(d.links, link{line: i + 1, raw: line[m[0]:m[1]], target: unbracket(line[m[4]:m[5]])})
		}
		if splitLink.MatchString(text) {
			d.split = append(d.split, i+1)
		}
		if m := refDef.FindStringSubmatchIndex(text); m != nil {
			d.links = append(d.links, link{line: i + 1, raw: strings.TrimSpace(line[m[0]:m[1]]), target: unbracket(line[m[2]:m[3]])})
		}
	}
	return d, nil
}

// anchor is the anchor GitHub gives a heading: its text as rendered
// (code spans kept literally; links, HTML tags and * emphasis outside
// code removed), lowercased, every character that is not a letter, mark,
// digit, space, hyphen or underscore dropped, and spaces turned into
// hyphens. Duplicates get -1, -2, ... (done by the caller).
func anchor(h string) string {
	var text strings.Builder
	for i, part := range strings.Split(h, "`") {
		if i%2 == 1 { // inside a code span (a backtick without a partner ends up here too, harmlessly)
			text.WriteString(part)
			continue
		}
		part = mdLinkText.ReplaceAllString(part, "$1")
		part = htmlTag.ReplaceAllString(part, "")
		text.WriteString(strings.ReplaceAll(part, "*", ""))
	}
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(text.String())) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// stripCodeSpans blanks out inline code spans (one or more backticks, up
// to a run of as many) so that bracketed text inside code is not taken for
// a link.
func stripCodeSpans(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); {
		if line[i] != '`' {
			b.WriteByte(line[i])
			i++
			continue
		}
		n := 0
		for i+n < len(line) && line[i+n] == '`' {
			n++
		}
		ticks := line[i : i+n]
		end := -1
		for j := i + n; j < len(line); {
			k := strings.Index(line[j:], ticks)
			if k < 0 {
				break
			}
			k += j
			if k+n < len(line) && line[k+n] == '`' { // a longer run: not the closer
				for k < len(line) && line[k] == '`' {
					k++
				}
				j = k
				continue
			}
			end = k
			break
		}
		if end < 0 { // no closer: the backticks are literal
			b.WriteString(ticks)
			i += n
			continue
		}
		b.WriteString(strings.Repeat(" ", end+n-i))
		i = end + n
	}
	return b.String()
}

func unbracket(s string) string {
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		return s[1 : len(s)-1]
	}
	return s
}

// splitTarget splits a relative link into its path and anchor; ok is false
// for links this test does not follow (absolute URLs, other schemes).
func splitTarget(target string) (path, frag string, ok bool) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "" || u.Host != "" || strings.HasPrefix(target, "//") {
		return "", "", false
	}
	return u.Path, u.Fragment, true
}

// resolve turns a link path, relative to the file at from, into a path
// relative to the repository root.
func resolve(from, p string) string {
	if strings.HasPrefix(p, "/") { // GitHub resolves a leading slash from the repository root
		return strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p)), "/")
	}
	return filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(from), p)))
}

// checkLink returns what is wrong with a link, or "".
func checkLink(from *doc, l link, cache map[string]*doc) string {
	if l.target == "" {
		return "empty link target"
	}
	lower := strings.ToLower(l.target)
	for _, scheme := range []string{"http:", "https:", "mailto:"} {
		if strings.HasPrefix(lower, scheme) {
			return ""
		}
	}
	p, frag, ok := splitTarget(l.target)
	if !ok {
		if strings.Contains(l.target, ":") {
			return "" // another scheme: not a file in this repository
		}
		return "cannot parse link target"
	}
	target := from
	if p != "" {
		rel := resolve(from.path, p)
		if rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Sprintf("points outside the repository (%s)", rel)
		}
		if _, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(rel))); err != nil {
			return fmt.Sprintf("%s does not exist", rel)
		}
		if !strings.EqualFold(filepath.Ext(rel), ".md") {
			return "" // anchors of other files (#L10 of a .go file) are not checked
		}
		if target = cache[rel]; target == nil {
			d, err := parseDoc(rel)
			if err != nil {
				return err.Error()
			}
			cache[rel], target = d, d
		}
	}
	if frag == "" {
		if p == "" {
			return "empty anchor"
		}
		return ""
	}
	if !target.anchors[frag] && !target.anchors[strings.ToLower(frag)] {
		return fmt.Sprintf("%s has no heading with anchor #%s", target.path, frag)
	}
	return ""
}

func TestAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"Quick start":                     "quick-start",
		"Variables, locals and functions": "variables-locals-and-functions",
		"`sandbox \"<name>\"`":            "sandbox-name",
		"`pool \"<name>\"`: warm sandboxes, handed out by a claim": "pool-name-warm-sandboxes-handed-out-by-a-claim",
		"`GET /v1/watch?since=N&store=ID&namespace=&selector=`":    "get-v1watchsincenstoreidnamespaceselector",
		"The controller (`cmd/akbench`)":                           "the-controller-cmdakbench",
		"`controller -dev`":                                        "controller--dev",
		"Working inside a sandbox: exec, files, logs":              "working-inside-a-sandbox-exec-files-logs",
		"**Bold** and [a link](x.md) with `snake_case`":            "bold-and-a-link-with-snake_case",
	} {
		if got := anchor(heading); got != want {
			t.Errorf("anchor(%q) = %q, want %q", heading, got, want)
		}
	}
}
