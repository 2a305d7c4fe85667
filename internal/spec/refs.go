package spec

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// undeclaredRefs reports references to variables and locals that no file
// declares, in the words a user thinks in ("no variable "team" is
// declared") rather than HCL's ("this object does not have an attribute").
func undeclaredRefs(expr hcl.Expression, vars, locals []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		if (root != "var" && root != "local") || len(tr) < 2 {
			continue
		}
		step, ok := tr[1].(hcl.TraverseAttr)
		if !ok {
			continue
		}
		names, kind, how := vars, "input variable", "Declare it with a variable block"
		if root == "local" {
			names, kind, how = locals, "local value", "Define it in a locals block"
		}
		if i := sort.SearchStrings(names, step.Name); i < len(names) && names[i] == step.Name {
			continue
		}
		diags = append(diags, errorDiag(tr.SourceRange().Ptr(), "Reference to undeclared "+kind,
			fmt.Sprintf("No %s named %q is declared in the loaded files. %s, or check the spelling.%s", kind, step.Name, how, didYouMean(step.Name, names))))
	}
	return diags
}

// attrNames lists an object value's attribute names, sorted.
func attrNames(obj cty.Value) []string {
	if obj == cty.NilVal || !obj.Type().IsObjectType() {
		return nil
	}
	names := make([]string, 0, len(obj.Type().AttributeTypes()))
	for n := range obj.Type().AttributeTypes() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
