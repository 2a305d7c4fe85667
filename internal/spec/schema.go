package spec

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// decodeBody decodes a body against a schema like hcl.Body.Content, but an
// unknown argument or block also gets the nearest expected name ("Did you
// mean"), which HCL itself only offers for variables and functions.
func decodeBody(body hcl.Body, schema *hcl.BodySchema) (*hcl.BodyContent, hcl.Diagnostics) {
	syn, ok := body.(*hclsyntax.Body)
	if !ok {
		return body.Content(schema)
	}
	c, _, diags := body.PartialContent(schema)
	attrNames := make([]string, 0, len(schema.Attributes))
	for _, a := range schema.Attributes {
		attrNames = append(attrNames, a.Name)
	}
	blockNames := make([]string, 0, len(schema.Blocks))
	isBlock := map[string]bool{}
	for _, b := range schema.Blocks {
		blockNames = append(blockNames, b.Type)
		isBlock[b.Type] = true
	}
	known := map[string]bool{}
	for _, n := range attrNames {
		known[n] = true
	}
	var extra hcl.Diagnostics
	for name, a := range syn.Attributes {
		if known[name] {
			continue
		}
		detail := fmt.Sprintf("An argument named %q is not expected here.", name)
		if isBlock[name] {
			detail += fmt.Sprintf(" %q is a block: write %s { ... } without the equals sign.", name, name)
		} else {
			detail += didYouMean(name, attrNames)
		}
		extra = append(extra, errorDiag(a.NameRange.Ptr(), "Unsupported argument", detail))
	}
	for _, b := range syn.Blocks {
		if isBlock[b.Type] {
			continue
		}
		detail := fmt.Sprintf("Blocks of type %q are not expected here.", b.Type)
		if known[b.Type] {
			detail += fmt.Sprintf(" %q is an argument: write %s = ... instead.", b.Type, b.Type)
		} else {
			detail += didYouMean(b.Type, blockNames)
		}
		extra = append(extra, errorDiag(b.TypeRange.Ptr(), "Unsupported block type", detail))
	}
	sort.Slice(extra, func(i, j int) bool { return extra[i].Subject.Start.Byte < extra[j].Subject.Start.Byte })
	return c, append(diags, extra...)
}
