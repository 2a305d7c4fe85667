package store

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a label selector in Kubernetes' syntax. The zero value
// matches everything.
type Selector struct {
	reqs []requirement
}

type operator int

const (
	opEquals operator = iota
	opNotEquals
	opIn
	opNotIn
	opExists
	opDoesNotExist
)

type requirement struct {
	key    string
	op     operator
	values []string // sorted, deduplicated; one for = and !=
}

func (r requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opEquals:
		return ok && v == r.values[0]
	case opNotEquals:
		return !ok || v != r.values[0]
	case opIn:
		return ok && slices.Contains(r.values, v)
	case opNotIn:
		return !ok || !slices.Contains(r.values, v)
	case opExists:
		return ok
	case opDoesNotExist:
		return !ok
	}
	return false
}

func (r requirement) String() string {
	switch r.op {
	case opEquals:
		return r.key + "=" + r.values[0]
	case opNotEquals:
		return r.key + "!=" + r.values[0]
	case opIn:
		return r.key + " in (" + strings.Join(r.values, ",") + ")"
	case opNotIn:
		return r.key + " notin (" + strings.Join(r.values, ",") + ")"
	case opExists:
		return r.key
	case opDoesNotExist:
		return "!" + r.key
	}
	return ""
}

// Matches reports whether labels satisfy every requirement. As in
// Kubernetes, "k!=v" and "k notin (...)" match when k is absent.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

// Empty reports whether the selector has no requirements (matches all).
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// String is the selector's canonical form: requirements sorted by key,
// set values sorted. ParseSelector reads it back to an equal selector.
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// ParseSelector parses a comma-separated list of requirements, all of
// which must hold:
//
//	k=v  k==v  k!=v  k in (a,b)  k notin (a,b)  k  !k
//
// Errors name the 1-based column of the offending token.
func ParseSelector(text string) (Selector, error) {
	p := &selectorParser{text: text}
	sel, err := p.parse()
	if err != nil {
		return Selector{}, fmt.Errorf("parse selector %q: %w", text, err)
	}
	return sel, nil
}

// MustParseSelector is ParseSelector for selectors fixed in code; it
// panics on a syntax error.
func MustParseSelector(text string) Selector {
	s, err := ParseSelector(text)
	if err != nil {
		panic(err)
	}
	return s
}

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokIdent
	tokNot       // !
	tokEquals    // = or ==
	tokNotEquals // !=
	tokOpen      // (
	tokClose     // )
	tokComma     // ,
)

type token struct {
	kind tokenKind
	text string
	col  int // 1-based
}

func (t token) describe() string {
	if t.kind == tokEOF {
		return "end of input"
	}
	return fmt.Sprintf("%q", t.text)
}

type selectorParser struct {
	text string
	pos  int
	tok  token // current token
}

func isSpecial(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '!', '=', '(', ')', ',':
		return true
	}
	return false
}

func (p *selectorParser) next() {
	for p.pos < len(p.text) && strings.IndexByte(" \t\n\r", p.text[p.pos]) >= 0 {
		p.pos++
	}
	start := p.pos
	t := token{col: start + 1}
	if p.pos >= len(p.text) {
		t.kind = tokEOF
		p.tok = t
		return
	}
	two := ""
	if p.pos+1 < len(p.text) {
		two = p.text[p.pos : p.pos+2]
	}
	switch {
	case two == "!=":
		t.kind, p.pos = tokNotEquals, p.pos+2
	case two == "==":
		t.kind, p.pos = tokEquals, p.pos+2
	case p.text[p.pos] == '=':
		t.kind, p.pos = tokEquals, p.pos+1
	case p.text[p.pos] == '!':
		t.kind, p.pos = tokNot, p.pos+1
	case p.text[p.pos] == '(':
		t.kind, p.pos = tokOpen, p.pos+1
	case p.text[p.pos] == ')':
		t.kind, p.pos = tokClose, p.pos+1
	case p.text[p.pos] == ',':
		t.kind, p.pos = tokComma, p.pos+1
	default:
		for p.pos < len(p.text) && !isSpecial(p.text[p.pos]) {
			p.pos++
		}
		t.kind = tokIdent
	}
	t.text = p.text[start:p.pos]
	p.tok = t
}

func (p *selectorParser) errorf(t token, format string, args ...any) error {
	return fmt.Errorf("at column %d: %s", t.col, fmt.Sprintf(format, args...))
}

func (p *selectorParser) parse() (Selector, error) {
	var sel Selector
	p.next()
	if p.tok.kind == tokEOF {
		return sel, nil
	}
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		sel.reqs = append(sel.reqs, r)
		switch p.tok.kind {
		case tokEOF:
			slices.SortStableFunc(sel.reqs, func(a, b requirement) int { return strings.Compare(a.key, b.key) })
			return sel, nil
		case tokComma:
			p.next()
		default:
			return Selector{}, p.errorf(p.tok, "expected \",\" or end of input, found %s", p.tok.describe())
		}
	}
}

func (p *selectorParser) requirement() (requirement, error) {
	if p.tok.kind == tokNot {
		p.next()
		key, err := p.key()
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: key, op: opDoesNotExist}, nil
	}
	key, err := p.key()
	if err != nil {
		return requirement{}, err
	}
	switch p.tok.kind {
	case tokEOF, tokComma:
		return requirement{key: key, op: opExists}, nil
	case tokEquals, tokNotEquals:
		op := opEquals
		if p.tok.kind == tokNotEquals {
			op = opNotEquals
		}
		p.next()
		v := ""
		if p.tok.kind == tokIdent {
			v = p.tok.text
			if err := checkLabelValue(v); err != nil {
				return requirement{}, p.errorf(p.tok, "%v", err)
			}
			p.next()
		} else if p.tok.kind != tokEOF && p.tok.kind != tokComma {
			return requirement{}, p.errorf(p.tok, "expected a value, found %s", p.tok.describe())
		}
		return requirement{key: key, op: op, values: []string{v}}, nil
	case tokIdent:
		var op operator
		switch p.tok.text {
		case "in":
			op = opIn
		case "notin":
			op = opNotIn
		default:
			return requirement{}, p.errorf(p.tok, "expected an operator (=, ==, !=, in, notin), found %s", p.tok.describe())
		}
		p.next()
		vals, err := p.set()
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: key, op: op, values: vals}, nil
	}
	return requirement{}, p.errorf(p.tok, "expected an operator (=, ==, !=, in, notin), \",\" or end of input, found %s", p.tok.describe())
}

func (p *selectorParser) key() (string, error) {
	if p.tok.kind != tokIdent {
		return "", p.errorf(p.tok, "expected a label key, found %s", p.tok.describe())
	}
	k := p.tok.text
	if err := checkLabelKey(k); err != nil {
		return "", p.errorf(p.tok, "%v", err)
	}
	p.next()
	return k, nil
}

func (p *selectorParser) set() ([]string, error) {
	if p.tok.kind != tokOpen {
		return nil, p.errorf(p.tok, "expected \"(\", found %s", p.tok.describe())
	}
	open := p.tok
	p.next()
	var vals []string
	for {
		if p.tok.kind != tokIdent {
			if p.tok.kind == tokClose && len(vals) == 0 {
				return nil, p.errorf(p.tok, "the set opened at column %d is empty", open.col)
			}
			return nil, p.errorf(p.tok, "expected a value, found %s", p.tok.describe())
		}
		if err := checkLabelValue(p.tok.text); err != nil {
			return nil, p.errorf(p.tok, "%v", err)
		}
		vals = append(vals, p.tok.text)
		p.next()
		switch p.tok.kind {
		case tokComma:
			p.next()
		case tokClose:
			p.next()
			slices.Sort(vals)
			return slices.Compact(vals), nil
		default:
			return nil, p.errorf(p.tok, "expected \",\" or \")\" to close the set opened at column %d, found %s",
				open.col, p.tok.describe())
		}
	}
}

// checkLabelKey accepts Kubernetes label keys: an optional DNS-subdomain
// prefix and "/", then a name of at most 63 characters.
func checkLabelKey(k string) error {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if prefix == "" || len(prefix) > 253 || strings.Trim(prefix, "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" {
			return fmt.Errorf("invalid label key %q: the prefix must be a lowercase DNS subdomain", k)
		}
	}
	if !validLabelName(name) {
		return fmt.Errorf("invalid label key %q: a name is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k)
	}
	return nil
}

func checkLabelValue(v string) error {
	if v != "" && !validLabelName(v) {
		return fmt.Errorf("invalid label value %q: a value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v)
	}
	return nil
}

func validLabelName(s string) bool {
	if s == "" || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
