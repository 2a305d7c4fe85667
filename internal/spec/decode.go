package spec

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

var sandboxSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "namespace"}, {Name: "driver"}, {Name: "image"}, {Name: "command"}, {Name: "profile"},
		{Name: "vcpus"}, {Name: "memory_mb"}, {Name: "network"}, {Name: "read_only"},
		{Name: "env"}, {Name: "labels"},
		{Name: "ttl"}, {Name: "expires_at"}, {Name: "on_expiry"}, {Name: "state"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "port", LabelNames: []string{"label"}},
		{Type: "file", LabelNames: []string{"path"}},
		{Type: "secret", LabelNames: []string{"env"}},
		{Type: "placement"},
	},
}

var portSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "to"}, {Name: "static"}}}

var fileSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "content", Required: true}, {Name: "mode"}}}

var secretSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "variable", Required: true}, {Name: "key", Required: true}}}

var placementSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "datacenters"}, {Name: "node_pool"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "constraint"}},
}

var constraintSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "attribute"}, {Name: "operator"}, {Name: "value"}},
}

// decoder evaluates one sandbox block's attributes and remembers where
// each field came from, so that validation of the decoded value can point
// at the exact attribute, label or map key.
type decoder struct {
	ctx    *hcl.EvalContext
	diags  hcl.Diagnostics
	ranges map[string]hcl.Range
	block  *hcl.Block
	// failed holds the fields whose value could not be decoded; their
	// validation errors would only repeat the first diagnostic.
	failed map[string]bool
}

func rangeKey(p []string) string { return strings.Join(p, "\x00") }

func (d *decoder) at(r hcl.Range, p ...string) { d.ranges[rangeKey(p)] = r }

// subject finds the source range for a field path: the field itself, or
// the nearest enclosing block or attribute, or the sandbox block.
func (d *decoder) subject(p []string) *hcl.Range {
	for n := len(p); n > 0; n-- {
		if r, ok := d.ranges[rangeKey(p[:n])]; ok {
			return r.Ptr()
		}
	}
	return d.block.DefRange.Ptr()
}

func (d *decoder) decodeFailed(p []string) bool {
	for n := len(p); n > 0; n-- {
		if d.failed[rangeKey(p[:n])] {
			return true
		}
	}
	return false
}

// attr evaluates an optional attribute into dst, converting it to ty
// first. It returns false when the attribute is absent, null or wrong.
func (d *decoder) attr(attrs hcl.Attributes, name string, ty cty.Type, dst any, p ...string) bool {
	a, ok := attrs[name]
	if !ok {
		return false
	}
	d.at(a.Expr.Range(), p...)
	d.failed[rangeKey(p)] = true // until the value is in dst
	if refs := undeclaredRefs(a.Expr, attrNames(d.ctx.Variables["var"]), attrNames(d.ctx.Variables["local"])); refs.HasErrors() {
		d.diags = append(d.diags, refs...)
		return false
	}
	val, diags := a.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if val.IsNull() && !diags.HasErrors() {
		delete(d.failed, rangeKey(p))
		return false
	}
	if diags.HasErrors() {
		return false
	}
	if !val.IsWhollyKnown() {
		// Only an earlier error (a syntax error, a failed local) makes a
		// value unknown here, and that error is already reported.
		return false
	}
	val, err := convert.Convert(val, ty)
	if err != nil {
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError, Summary: "Incorrect attribute value type",
			Detail:  fmt.Sprintf("Inappropriate value for attribute %q: %s.", name, err),
			Subject: a.Expr.Range().Ptr(), Expression: a.Expr, EvalContext: d.ctx,
		})
		return false
	}
	if ty == cty.Number {
		if f, ok := dst.(*int); ok {
			bf := val.AsBigFloat()
			if !bf.IsInt() {
				d.diags = append(d.diags, errorDiag(a.Expr.Range().Ptr(), "Whole number required", fmt.Sprintf("%s must be a whole number, not %s.", name, bf.Text('g', -1))))
				return false
			}
			i, acc := bf.Int64()
			if acc != big.Exact || i != int64(int(i)) {
				d.diags = append(d.diags, errorDiag(a.Expr.Range().Ptr(), "Number out of range", fmt.Sprintf("%s is too large.", name)))
				return false
			}
			*f = int(i)
			delete(d.failed, rangeKey(p))
			return true
		}
	}
	if err := gocty.FromCtyValue(val, dst); err != nil {
		d.diags = append(d.diags, errorDiag(a.Expr.Range().Ptr(), "Invalid value", fmt.Sprintf("Invalid value for %q: %s.", name, err)))
		return false
	}
	if m, ok := dst.(*map[string]string); ok {
		d.mapKeyRanges(a.Expr, *m, p)
	}
	delete(d.failed, rangeKey(p))
	return true
}

// mapKeyRanges points each key of a literal map at its own place, so an
// invalid env name or label key is underlined alone.
func (d *decoder) mapKeyRanges(expr hcl.Expression, m map[string]string, p []string) {
	obj, ok := expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		return
	}
	for _, item := range obj.Items {
		k, diags := item.KeyExpr.Value(d.ctx)
		if diags.HasErrors() || k.Type() != cty.String || k.IsNull() || !k.IsKnown() {
			continue
		}
		if _, present := m[k.AsString()]; present {
			d.at(item.KeyExpr.Range(), append(p[:len(p):len(p)], k.AsString())...)
		}
	}
}

// decodeSandbox evaluates a sandbox block, applies the profile's defaults,
// canonicalises and validates. The returned diagnostics cover all three;
// the sandbox is nil only when its identity could not be determined.
func decodeSandbox(block *hcl.Block, ctx *hcl.EvalContext, defaultNamespace string) (*Sandbox, hcl.Diagnostics) {
	d := &decoder{ctx: ctx, ranges: map[string]hcl.Range{}, block: block, failed: map[string]bool{}}
	content, diags := decodeBody(block.Body, sandboxSchema)
	d.diags = append(d.diags, diags...)
	a := content.Attributes

	s := &Sandbox{Name: block.Labels[0], Namespace: defaultNamespace, Source: sourceOf(block)}
	d.at(block.LabelRanges[0], "name")
	d.attr(a, "namespace", cty.String, &s.Namespace, "namespace")
	d.attr(a, "labels", cty.Map(cty.String), &s.Labels, "labels")

	sp := &s.Spec
	sp.Driver, sp.Profile, sp.State = DefaultDriver, DefaultProfile, DefaultState
	d.attr(a, "driver", cty.String, &sp.Driver, "driver")
	d.attr(a, "image", cty.String, &sp.Image, "image")
	if !d.attr(a, "command", cty.List(cty.String), &sp.Command, "command") {
		sp.Command = append([]string(nil), DefaultCommand...)
	}
	d.attr(a, "profile", cty.String, &sp.Profile, "profile")
	prof, known := profiles[sp.Profile]
	if !known {
		prof = profiles[DefaultProfile]
	}
	sp.VCPUs, sp.MemoryMB, sp.Network, sp.ReadOnly = prof.vcpus, prof.memoryMB, prof.network, prof.readOnly
	d.attr(a, "vcpus", cty.Number, &sp.VCPUs, "vcpus")
	d.attr(a, "memory_mb", cty.Number, &sp.MemoryMB, "memory_mb")
	d.attr(a, "network", cty.String, &sp.Network, "network")
	d.attr(a, "read_only", cty.Bool, &sp.ReadOnly, "read_only")
	d.attr(a, "env", cty.Map(cty.String), &sp.Env, "env")
	d.attr(a, "ttl", cty.String, &sp.TTL, "ttl")
	d.attr(a, "expires_at", cty.String, &sp.ExpiresAt, "expires_at")
	explicitOnExpiry := d.attr(a, "on_expiry", cty.String, &sp.OnExpiry, "on_expiry")
	d.attr(a, "state", cty.String, &sp.State, "state")
	if sp.OnExpiry == "" && (sp.TTL != "" || sp.ExpiresAt != "") {
		sp.OnExpiry = DefaultOnExpiry
	}
	if explicitOnExpiry && sp.TTL == "" && sp.ExpiresAt == "" {
		d.diags = append(d.diags, warningDiag(d.subject([]string{"on_expiry"}), "on_expiry has no effect",
			"on_expiry says what happens when a sandbox expires, but this sandbox sets neither ttl nor expires_at, so it never expires."))
	}

	d.blocks(content.Blocks, sp)
	s.Canonicalize()
	for _, fe := range s.validate() {
		if d.decodeFailed(fe.Path) {
			continue
		}
		diag := errorDiag(d.subject(fe.Path), fe.Summary, fe.Detail)
		if fe.Warning {
			diag.Severity = hcl.DiagWarning
		}
		d.diags = append(d.diags, diag)
	}
	return s, d.diags
}

func (d *decoder) blocks(blocks hcl.Blocks, sp *Spec) {
	labelSeen := map[string]hcl.Range{}
	dupLabel := func(b *hcl.Block) bool {
		k := b.Type + "\x00" + b.Labels[0]
		if prev, dup := labelSeen[k]; dup {
			d.diags = append(d.diags, errorDiag(b.LabelRanges[0].Ptr(), "Duplicate "+b.Type+" block",
				fmt.Sprintf("A %s block labelled %q was already declared at %s.", b.Type, b.Labels[0], rangeString(prev))))
			return true
		}
		labelSeen[k] = b.LabelRanges[0]
		return false
	}
	var placementSeen *hcl.Range
	for _, b := range blocks {
		switch b.Type {
		case "port":
			if dupLabel(b) {
				continue
			}
			p := Port{Label: b.Labels[0]}
			d.at(b.LabelRanges[0], "port", p.Label)
			c, diags := decodeBody(b.Body, portSchema)
			d.diags = append(d.diags, diags...)
			d.attr(c.Attributes, "to", cty.Number, &p.To, "port", p.Label, "to")
			d.attr(c.Attributes, "static", cty.Number, &p.Static, "port", p.Label, "static")
			sp.Ports = append(sp.Ports, p)
		case "file":
			if dupLabel(b) {
				continue
			}
			f := File{Path: b.Labels[0], Mode: DefaultFileMode}
			d.at(b.LabelRanges[0], "file", f.Path)
			c, diags := decodeBody(b.Body, fileSchema)
			d.diags = append(d.diags, diags...)
			d.attr(c.Attributes, "content", cty.String, &f.Content, "file", f.Path, "content")
			d.attr(c.Attributes, "mode", cty.String, &f.Mode, "file", f.Path, "mode")
			sp.Files = append(sp.Files, f)
		case "secret":
			if dupLabel(b) {
				continue
			}
			s := Secret{Env: b.Labels[0]}
			d.at(b.LabelRanges[0], "secret", s.Env)
			c, diags := decodeBody(b.Body, secretSchema)
			d.diags = append(d.diags, diags...)
			d.attr(c.Attributes, "variable", cty.String, &s.Variable, "secret", s.Env, "variable")
			d.attr(c.Attributes, "key", cty.String, &s.Key, "secret", s.Env, "key")
			sp.Secrets = append(sp.Secrets, s)
		case "placement":
			if placementSeen != nil {
				d.diags = append(d.diags, errorDiag(b.DefRange.Ptr(), "Duplicate placement block",
					fmt.Sprintf("A sandbox has at most one placement block; the first is at %s.", rangeString(*placementSeen))))
				continue
			}
			placementSeen = b.DefRange.Ptr()
			d.placement(b, &sp.Placement)
		}
	}
}

func (d *decoder) placement(b *hcl.Block, pl *Placement) {
	d.at(b.DefRange, "placement")
	c, diags := decodeBody(b.Body, placementSchema)
	d.diags = append(d.diags, diags...)
	d.attr(c.Attributes, "datacenters", cty.List(cty.String), &pl.Datacenters, "placement", "datacenters")
	d.attr(c.Attributes, "node_pool", cty.String, &pl.NodePool, "placement", "node_pool")
	for _, cb := range c.Blocks {
		cc, diags := decodeBody(cb.Body, constraintSchema)
		d.diags = append(d.diags, diags...)
		con := Constraint{Operator: DefaultConstraintOperator}
		// Constraints are sorted when canonicalised, so their ranges are
		// recorded under their content once it is known.
		tmp := &decoder{ctx: d.ctx, ranges: map[string]hcl.Range{}, block: d.block, failed: map[string]bool{}}
		tmp.attr(cc.Attributes, "attribute", cty.String, &con.Attribute, "attribute")
		tmp.attr(cc.Attributes, "operator", cty.String, &con.Operator, "operator")
		tmp.attr(cc.Attributes, "value", cty.String, &con.Value, "value")
		d.diags = append(d.diags, tmp.diags...)
		d.at(cb.DefRange, "placement", "constraint", con.key())
		prefix := rangeKey([]string{"placement", "constraint", con.key()}) + "\x00"
		for k, r := range tmp.ranges {
			d.ranges[prefix+k] = r
		}
		for k := range tmp.failed {
			d.failed[prefix+k] = true
		}
		pl.Constraints = append(pl.Constraints, con)
	}
}

// sourceOf is the whole block, header to closing brace, where the syntax
// tells it; otherwise the header.
func sourceOf(b *hcl.Block) Source {
	start, end := b.DefRange.Start, b.DefRange.End
	if body, ok := b.Body.(*hclsyntax.Body); ok {
		end = body.SrcRange.End
	}
	return Source{File: b.DefRange.Filename, StartLine: start.Line, StartCol: start.Column, EndLine: end.Line, EndCol: end.Column}
}
