package spec

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// Format lays out HCL source canonically (indentation, alignment of
// equals signs, spacing), as `terraform fmt` does. Source that does not
// parse is returned with its diagnostics and never rewritten: formatting
// must not lose a user's text.
func Format(src []byte, filename string) ([]byte, hcl.Diagnostics) {
	_, diags := hclwrite.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	return hclwrite.Format(src), nil
}
