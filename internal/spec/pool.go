package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Pool limits.
const (
	// MaxPoolSize bounds the unclaimed sandboxes a pool keeps waiting.
	MaxPoolSize = 1000
	// MaxPoolMax bounds a pool's ceiling of claimed and unclaimed ones.
	MaxPoolMax = 10000
	// PoolSuffixLength is the length of the random part of a pool
	// sandbox's name, "<pool>-<suffix>".
	PoolSuffixLength = 5
	// MaxPoolNameLength leaves room for the suffix within MaxNameLength.
	MaxPoolNameLength = MaxNameLength - 1 - PoolSuffixLength
)

// Pool is one validated pool declaration: sandboxes made from Template
// kept waiting, Ready and unclaimed, to be handed out by a claim.
type Pool struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Settings  PoolSettings      `json:"settings"`
	Template  Spec              `json:"template"`
	Source    Source            `json:"-"`
}

// PoolSettings are a pool's own attributes, beside its template.
type PoolSettings struct {
	// Size is how many unclaimed, Ready sandboxes the pool keeps.
	Size int `json:"size"`
	// Max, when not zero, bounds claimed plus unclaimed sandboxes.
	Max int `json:"max,omitempty"`
	// ClaimTTL is the default lifetime of a claimed sandbox, from its
	// claim, as a canonical Go duration; empty means none.
	ClaimTTL string `json:"claimTTL,omitempty"`
}

// Key is the pool's identity in the store: "namespace/name".
func (p *Pool) Key() string { return p.Namespace + "/" + p.Name }

// Sandbox is the pool as the store keeps it: its identity and labels, and
// the template as the spec.
func (p *Pool) Sandbox() Sandbox {
	return Sandbox{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Spec: p.Template, Source: p.Source}
}

// PoolHash digests a pool's template and settings: what tells a changed
// pool declaration from an unchanged one.
func PoolHash(template Spec, settings PoolSettings) string {
	b, err := json.Marshal(struct {
		Template Spec         `json:"template"`
		Settings PoolSettings `json:"settings"`
	}{template, settings})
	if err != nil {
		panic(fmt.Sprintf("spec: encode pool: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ClaimTTLDuration is the settings' claim TTL, zero for none.
func (s PoolSettings) ClaimTTLDuration() time.Duration {
	d, _ := time.ParseDuration(s.ClaimTTL)
	return d
}

// Canonicalize spells the claim TTL canonically.
func (s *PoolSettings) Canonicalize() {
	if d, err := time.ParseDuration(s.ClaimTTL); err == nil {
		s.ClaimTTL = d.String()
	}
}

// ValidatePool checks a pool that arrived in canonical form (the API's
// apply): its name and settings, and the template as a sandbox's spec.
func ValidatePool(sb *Sandbox, settings PoolSettings) error {
	var problems []string
	for _, fe := range poolProblems(sb, settings) {
		if !fe.Warning {
			problems = append(problems, fmt.Sprintf("%s: %s", pathString(fe.Path), fe.Detail))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return &ValidationError{Key: sb.Key(), Problems: problems}
}

// poolProblems runs every check of a pool: the template as a sandbox
// (under the pool's name), then the pool's own (poolSettingsProblems).
func poolProblems(sb *Sandbox, st PoolSettings) []fieldError {
	v := &validator{}
	for _, fe := range sb.validate() {
		if len(fe.Path) > 0 && (fe.Path[0] == "name" || fe.Path[0] == "namespace" || fe.Path[0] == "labels") {
			continue // the pool's own, below
		}
		v.errs = append(v.errs, fe)
	}
	v.errs = append(v.errs, poolSettingsProblems(sb.Namespace, sb.Name, sb.Labels, st)...)
	sp := &sb.Spec
	if sp.TTL != "" || sp.ExpiresAt != "" {
		p := "ttl"
		if sp.ExpiresAt != "" {
			p = "expires_at"
		}
		v.add([]string{p}, "Expiry in a pool template", "A pool's sandboxes wait unclaimed for as long as it takes; their lifetime starts at the claim. Set claim_ttl on the pool instead.")
	}
	if sp.State != StateRunning {
		v.add([]string{"state"}, "Stopped pool template", fmt.Sprintf("A pool keeps running sandboxes; state %q is not allowed in its template. Set size = 0 to keep none.", sp.State))
	}
	return v.errs
}

// poolSettingsProblems checks what a pool says of itself, each attribute
// on its own: the name its sandboxes' names extend, the namespace, the
// labels, size, max and claim_ttl.
func poolSettingsProblems(ns, name string, labels map[string]string, st PoolSettings) []fieldError {
	v := &validator{}
	if fe := checkName(name); fe != nil {
		v.check(fe, "name")
	} else if len(name) > MaxPoolNameLength {
		v.add([]string{"name"}, "Pool name too long", fmt.Sprintf(
			"The pool name %q has %d characters; at most %d are allowed, so that its sandboxes' names (%q and a %d-character suffix) fit in %d.",
			name, len(name), MaxPoolNameLength, name+"-", PoolSuffixLength, MaxNameLength))
	}
	if !namespaceRE.MatchString(ns) {
		v.add([]string{"namespace"}, "Invalid namespace", fmt.Sprintf("The namespace %q is not a valid Nomad namespace name: use 1 to 128 letters, digits and '-'.", ns))
	}
	v.labels(labels)
	if st.Size < 0 || st.Size > MaxPoolSize {
		v.add([]string{"size"}, "Pool size out of range", fmt.Sprintf("size is %d; it must be between 0 and %d.", st.Size, MaxPoolSize))
	}
	switch {
	case st.Max < 0 || st.Max > MaxPoolMax:
		v.add([]string{"max"}, "Pool max out of range", fmt.Sprintf("max is %d; it must be between 1 and %d, or left out for no ceiling.", st.Max, MaxPoolMax))
	case st.Max != 0 && st.Max < st.Size:
		v.add([]string{"max"}, "Pool max below size", fmt.Sprintf("max (%d) is below size (%d): the pool could never keep size sandboxes waiting.", st.Max, st.Size))
	}
	if st.ClaimTTL != "" {
		d, err := time.ParseDuration(st.ClaimTTL)
		switch {
		case err != nil:
			v.add([]string{"claim_ttl"}, "Invalid duration", fmt.Sprintf("claim_ttl %q is not a duration; write it as a number and unit, such as \"30m\" or \"1h\".", st.ClaimTTL))
		case d < MinTTL || d > MaxTTL:
			v.add([]string{"claim_ttl"}, "TTL out of range", fmt.Sprintf("claim_ttl is %s; it must be between %s and %s.", d, MinTTL, MaxTTL))
		}
	}
	return v.errs
}

var poolSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "namespace"}, {Name: "size", Required: true}, {Name: "max"}, {Name: "claim_ttl"}, {Name: "labels"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "sandbox"}},
}

// decodePool evaluates a pool block: its own attributes and its one
// sandbox block, the template, decoded as a sandbox block is.
func decodePool(block *hcl.Block, ctx *hcl.EvalContext, defaultNamespace string) (*Pool, hcl.Diagnostics) {
	d := &decoder{ctx: ctx, ranges: map[string]hcl.Range{}, block: block, failed: map[string]bool{}}
	content, diags := decodeBody(block.Body, poolSchema)
	d.diags = append(d.diags, diags...)
	a := content.Attributes
	p := &Pool{Name: block.Labels[0], Namespace: defaultNamespace, Source: sourceOf(block)}
	d.at(block.LabelRanges[0], "name")
	d.attr(a, "namespace", cty.String, &p.Namespace, "namespace")
	d.attr(a, "labels", cty.Map(cty.String), &p.Labels, "labels")
	d.attr(a, "size", cty.Number, &p.Settings.Size, "size")
	d.attr(a, "max", cty.Number, &p.Settings.Max, "max")
	d.attr(a, "claim_ttl", cty.String, &p.Settings.ClaimTTL, "claim_ttl")

	p.Settings.Canonicalize()
	if len(p.Labels) == 0 {
		p.Labels = nil
	}
	// The pool's own attributes are checked whatever its template says.
	d.report(poolSettingsProblems(p.Namespace, p.Name, p.Labels, p.Settings), nil)

	var tmpl *hcl.Block
	for _, b := range content.Blocks {
		if tmpl != nil {
			d.diags = append(d.diags, errorDiag(b.DefRange.Ptr(), "Duplicate sandbox block",
				fmt.Sprintf("A pool has one sandbox block, its template; the first is at %s.", rangeString(tmpl.DefRange))))
			continue
		}
		tmpl = b
	}
	if tmpl == nil {
		if !diags.HasErrors() { // a labelled sandbox block was refused already
			d.diags = append(d.diags, errorDiag(block.DefRange.Ptr(), "Missing sandbox block",
				"A pool needs a sandbox block: the template its sandboxes are made from (every sandbox attribute except the name)."))
		}
		return p, d.diags
	}
	if body, ok := tmpl.Body.(*hclsyntax.Body); ok {
		for _, name := range []string{"namespace", "labels"} {
			if at, set := body.Attributes[name]; set {
				d.diags = append(d.diags, errorDiag(at.NameRange.Ptr(), "Unexpected attribute in a pool template",
					fmt.Sprintf("Set %s on the pool, not in its sandbox block: the pool's sandboxes take the pool's %s.", name, name)))
			}
		}
	}
	// The template decodes as a sandbox block named after the pool, so
	// that its diagnostics point into the sandbox block. Name, namespace
	// and labels are the pool's, checked above.
	as := *tmpl
	as.Labels = []string{p.Name}
	as.LabelRanges = []hcl.Range{block.LabelRanges[0]}
	sb, tdiags := decodeSandbox(&as, ctx, DefaultNamespace)
	for _, diag := range tdiags {
		switch diag.Summary {
		case "Invalid sandbox name", "Sandbox name too long":
			continue
		}
		d.diags = append(d.diags, diag)
	}
	if sb == nil {
		return p, d.diags
	}
	p.Template = sb.Spec
	sp := &p.Template
	var own []fieldError
	if sp.TTL != "" || sp.ExpiresAt != "" {
		at := "ttl"
		if sp.ExpiresAt != "" {
			at = "expires_at"
		}
		own = append(own, fieldError{Path: []string{at}, Summary: "Expiry in a pool template",
			Detail: "A pool's sandboxes wait unclaimed for as long as it takes; their lifetime starts at the claim. Set claim_ttl on the pool instead."})
	}
	if sp.State != StateRunning && slices.Contains(states, sp.State) {
		own = append(own, fieldError{Path: []string{"state"}, Summary: "Stopped pool template",
			Detail: fmt.Sprintf("A pool keeps running sandboxes; state %q is not allowed in its template. Set size = 0 to keep none.", sp.State)})
	}
	d.report(own, tmpl)
	return p, d.diags
}

// report adds problems as diagnostics: at the pool's attribute, or with
// tmpl, at the template's attribute (or its block).
func (d *decoder) report(problems []fieldError, tmpl *hcl.Block) {
	for _, fe := range problems {
		if d.decodeFailed(fe.Path) {
			continue
		}
		subject := d.subject(fe.Path)
		if tmpl != nil {
			subject = tmpl.DefRange.Ptr()
			if body, ok := tmpl.Body.(*hclsyntax.Body); ok {
				if at, set := body.Attributes[fe.Path[0]]; set {
					subject = at.SrcRange.Ptr()
				}
			}
		}
		diag := errorDiag(subject, fe.Summary, fe.Detail)
		if fe.Warning {
			diag.Severity = hcl.DiagWarning
		}
		d.diags = append(d.diags, diag)
	}
}

// LabelProblems checks labels given outside a declaration (a claim's),
// with the rules of a sandbox's labels.
func LabelProblems(labels map[string]string) []string {
	v := &validator{}
	v.labels(labels)
	var out []string
	for _, fe := range v.errs {
		out = append(out, fe.Detail)
	}
	return out
}
