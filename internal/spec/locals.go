package spec

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

type localValue struct {
	attr *hcl.Attribute
	dir  string
}

// evalLocals evaluates every locals attribute of the load as one
// namespace, in dependency order: a local may use variables and other
// locals from any file, and a cycle is an error naming its members.
func (l *loader) evalLocals(blocks []sandboxBlock) (cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	all := map[string]localValue{}
	for _, b := range blocks {
		attrs, d := b.block.Body.JustAttributes()
		diags = append(diags, d...)
		for name, a := range attrs {
			if prev, dup := all[name]; dup {
				diags = append(diags, errorDiag(a.NameRange.Ptr(), "Duplicate local value",
					fmt.Sprintf("A local value named %q was already defined at %s. Local values are shared by all loaded files, so each name is defined once.", name, rangeString(prev.attr.NameRange))))
				continue
			}
			all[name] = localValue{attr: a, dir: b.dir}
		}
	}

	pending := make([]string, 0, len(all))
	for name := range all {
		pending = append(pending, name)
	}
	sort.Strings(pending)
	declared := slices.Clone(pending)
	values := map[string]cty.Value{}
	for len(pending) > 0 {
		var waiting []string
		for _, name := range pending {
			lv := all[name]
			if !l.localDepsReady(lv.attr, all, values) {
				waiting = append(waiting, name)
				continue
			}
			if refs := undeclaredRefs(lv.attr.Expr, attrNames(l.vars), declared); refs.HasErrors() {
				diags = append(diags, refs...)
				values[name] = cty.DynamicVal
				continue
			}
			ctx := &hcl.EvalContext{
				Variables: map[string]cty.Value{"var": l.vars, "local": cty.ObjectVal(values)},
				Functions: functionsFor(lv.dir),
			}
			v, d := lv.attr.Expr.Value(ctx)
			diags = append(diags, d...)
			if d.HasErrors() {
				v = cty.DynamicVal
			}
			values[name] = v
		}
		if len(waiting) == len(pending) {
			for _, name := range waiting {
				diags = append(diags, errorDiag(all[name].attr.Expr.Range().Ptr(), "Cycle in local values",
					fmt.Sprintf("local.%s depends on itself through local.%s.", name, strings.Join(waiting, ", local."))))
			}
			break
		}
		pending = waiting
	}
	return cty.ObjectVal(values), diags
}

// localDepsReady reports whether every declared local the expression
// refers to has a value. References to undeclared locals do not wait:
// evaluating them reports the unknown name.
func (l *loader) localDepsReady(a *hcl.Attribute, all map[string]localValue, values map[string]cty.Value) bool {
	for _, tr := range a.Expr.Variables() {
		if tr.RootName() != "local" || len(tr) < 2 {
			continue
		}
		step, ok := tr[1].(hcl.TraverseAttr)
		if !ok {
			continue
		}
		if _, declared := all[step.Name]; !declared {
			continue
		}
		if _, done := values[step.Name]; !done {
			return false
		}
	}
	return true
}
