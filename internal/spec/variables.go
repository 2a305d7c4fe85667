package spec

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// EnvVarPrefix starts the environment variables that set input variables:
// AKCTL_VAR_team=ml sets var.team, as TF_VAR_ does for Terraform.
const EnvVarPrefix = "AKCTL_VAR_"

// VarValue is one -var or -var-file flag. Flags apply in the order given,
// after defaults and the environment, so the last one wins: the precedence
// Terraform and Packer use.
type VarValue struct {
	// File is a -var-file path (HCL, or JSON when it ends in .json).
	File string
	// Name and Value are a -var name=value flag.
	Name, Value string
}

// ParseVarFlag splits a -var flag's "name=value".
func ParseVarFlag(s string) (VarValue, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return VarValue{}, fmt.Errorf("invalid -var %q: want name=value", s)
	}
	return VarValue{Name: name, Value: value}, nil
}

var variableBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "type"}, {Name: "default"}, {Name: "description"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "condition", Required: true}, {Name: "error_message", Required: true}},
}

type variable struct {
	name        string
	block       *hcl.Block
	typ         cty.Type
	def         cty.Value // cty.NilVal when there is no default
	validations []*hcl.Block
	dir         string
}

// declareVariable decodes one variable block. Defaults are literals, as in
// Terraform: they may not refer to other variables or call functions.
func declareVariable(block *hcl.Block, dir string) (*variable, hcl.Diagnostics) {
	v := &variable{name: block.Labels[0], block: block, typ: cty.DynamicPseudoType, dir: dir}
	content, diags := decodeBody(block.Body, variableBlockSchema)
	if !hclsyntax.ValidIdentifier(v.name) {
		diags = append(diags, errorDiag(block.LabelRanges[0].Ptr(), "Invalid variable name",
			fmt.Sprintf("The variable name %q must be a valid identifier: letters, digits, '_' and '-', starting with a letter.", v.name)))
	}
	if a, ok := content.Attributes["type"]; ok {
		ty, tdiags := typeexpr.TypeConstraint(a.Expr)
		diags = append(diags, tdiags...)
		if !tdiags.HasErrors() {
			v.typ = ty
		}
	}
	if a, ok := content.Attributes["default"]; ok {
		val, vdiags := a.Expr.Value(nil)
		diags = append(diags, vdiags...)
		if !vdiags.HasErrors() {
			conv, err := convert.Convert(val, v.typ)
			if err != nil {
				diags = append(diags, errorDiag(a.Expr.Range().Ptr(), "Invalid default value for variable",
					fmt.Sprintf("The default value of variable %q does not match its type: %s.", v.name, err)))
			} else {
				v.def = conv
			}
		}
	}
	for _, b := range content.Blocks {
		if _, vd := decodeBody(b.Body, validationBlockSchema); vd.HasErrors() {
			diags = append(diags, vd...)
			continue
		}
		v.validations = append(v.validations, b)
	}
	return v, diags
}

// varSource is one value for a variable and where it came from, so that a
// type error can point at it.
type varSource struct {
	val     cty.Value
	raw     string // set when the value came from the command line or environment
	subject *hcl.Range
	from    string
}

// resolveVariables computes var.* from defaults, the environment and the
// flags, in increasing precedence, then type-checks and validates each.
func resolveVariables(vars map[string]*variable, opts *Options, parser *parserFiles) (cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	chosen := map[string]varSource{}

	for _, kv := range opts.Environ {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvVarPrefix) {
			continue
		}
		name := strings.TrimPrefix(k, EnvVarPrefix)
		// The environment may hold values meant for other folders; only
		// declared variables take them, as Terraform does.
		if _, declared := vars[name]; declared {
			chosen[name] = varSource{raw: val, from: "environment variable " + k}
		}
	}
	for _, vv := range opts.Vars {
		if vv.File != "" {
			diags = append(diags, varFileValues(vv.File, vars, chosen, parser)...)
			continue
		}
		if _, declared := vars[vv.Name]; !declared {
			diags = append(diags, errorDiag(nil, "Value for undeclared variable",
				fmt.Sprintf("A -var flag sets %q, but no variable %q is declared.%s", vv.Name, vv.Name, didYouMean(vv.Name, sortedVarNames(vars)))))
			continue
		}
		chosen[vv.Name] = varSource{raw: vv.Value, from: "-var flag"}
	}

	values := map[string]cty.Value{}
	for _, name := range sortedVarNames(vars) {
		v := vars[name]
		src, ok := chosen[name]
		if !ok {
			if v.def == cty.NilVal {
				diags = append(diags, errorDiag(v.block.DefRange.Ptr(), "No value for required variable",
					fmt.Sprintf("Variable %q has no default, so a value is required: set it with -var %s=..., a -var-file, or the environment variable %s%s.", name, name, EnvVarPrefix, name)))
				values[name] = cty.DynamicVal
				continue
			}
			values[name] = v.def
			continue
		}
		val, d := v.convert(src)
		diags = append(diags, d...)
		values[name] = val
	}
	if diags.HasErrors() {
		return cty.ObjectVal(values), diags
	}
	for _, name := range sortedVarNames(vars) {
		diags = append(diags, vars[name].validate(values[name])...)
	}
	return cty.ObjectVal(values), diags
}

// convert turns a source value into the variable's type. Raw strings from
// the command line are taken literally for primitive types and parsed as
// HCL expressions for collections, as Terraform does.
func (v *variable) convert(src varSource) (cty.Value, hcl.Diagnostics) {
	val := src.val
	if src.raw != "" || val == cty.NilVal {
		if v.typ.IsPrimitiveType() || v.typ == cty.DynamicPseudoType {
			val = cty.StringVal(src.raw)
		} else {
			expr, diags := hclsyntax.ParseExpression([]byte(src.raw), fmt.Sprintf("<value for var.%s>", v.name), hcl.InitialPos)
			if diags.HasErrors() {
				return cty.DynamicVal, hcl.Diagnostics{errorDiag(src.subject, "Invalid value for variable",
					fmt.Sprintf("The value of variable %q from the %s is not a valid HCL expression for type %s: %s.", v.name, src.from, typeName(v.typ), diags[0].Detail))}
			}
			var vdiags hcl.Diagnostics
			val, vdiags = expr.Value(nil)
			if vdiags.HasErrors() {
				return cty.DynamicVal, hcl.Diagnostics{errorDiag(src.subject, "Invalid value for variable",
					fmt.Sprintf("The value of variable %q from the %s must be a literal: %s.", v.name, src.from, vdiags[0].Detail))}
			}
		}
	}
	conv, err := convert.Convert(val, v.typ)
	if err != nil {
		return cty.DynamicVal, hcl.Diagnostics{errorDiag(src.subject, "Invalid value for variable",
			fmt.Sprintf("The value of variable %q from the %s does not match its type %s: %s.", v.name, src.from, typeName(v.typ), err))}
	}
	return conv, nil
}

func (v *variable) validate(val cty.Value) hcl.Diagnostics {
	var diags hcl.Diagnostics
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{v.name: val})},
		Functions: functionsFor(v.dir),
	}
	for _, b := range v.validations {
		content, _ := decodeBody(b.Body, validationBlockSchema)
		cond, cdiags := content.Attributes["condition"].Expr.Value(ctx)
		diags = append(diags, cdiags...)
		if cdiags.HasErrors() {
			continue
		}
		if !cond.IsWhollyKnown() {
			// Unknown only when something it uses already failed.
			continue
		}
		if cond, err := convert.Convert(cond, cty.Bool); err != nil || cond.IsNull() {
			diags = append(diags, errorDiag(content.Attributes["condition"].Expr.Range().Ptr(), "Invalid validation condition",
				"The condition of a validation block must be true or false."))
			continue
		} else if cond.True() {
			continue
		}
		msg, mdiags := content.Attributes["error_message"].Expr.Value(ctx)
		text := "The value is not valid."
		if !mdiags.HasErrors() && msg.Type() == cty.String && msg.IsWhollyKnown() && !msg.IsNull() {
			text = msg.AsString()
		}
		diags = append(diags, errorDiag(content.Attributes["condition"].Expr.Range().Ptr(), "Invalid value for variable",
			fmt.Sprintf("%s (variable %q, validation at %s)", text, v.name, rangeString(b.DefRange))))
	}
	return diags
}

// varFileValues reads a -var-file: attributes only, literal values.
func varFileValues(path string, vars map[string]*variable, chosen map[string]varSource, pf *parserFiles) hcl.Diagnostics {
	file, diags := pf.parseFile(path)
	if diags.HasErrors() {
		return diags
	}
	attrs, adiags := file.Body.JustAttributes()
	diags = append(diags, adiags...)
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		a := attrs[name]
		if _, declared := vars[name]; !declared {
			diags = append(diags, warningDiag(a.NameRange.Ptr(), "Value for undeclared variable",
				fmt.Sprintf("The var file sets %q, but no variable %q is declared; the value is ignored.%s", name, name, didYouMean(name, sortedVarNames(vars)))))
			continue
		}
		val, vdiags := a.Expr.Value(nil)
		diags = append(diags, vdiags...)
		if vdiags.HasErrors() {
			continue
		}
		chosen[name] = varSource{val: val, subject: a.Expr.Range().Ptr(), from: "var file " + path}
	}
	return diags
}

func sortedVarNames(vars map[string]*variable) []string {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func typeName(t cty.Type) string {
	if t == cty.DynamicPseudoType {
		return "any"
	}
	return t.FriendlyName()
}
