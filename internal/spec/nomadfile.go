package spec

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Nomad's own HCL files, by the names Nomad's docs and these examples use.
// They live beside sandbox declarations (examples/ holds the controller's
// jobspec and ACL policy) but are not declarations.
const (
	NomadJobspec = "Nomad jobspec"
	NomadPolicy  = "Nomad ACL policy"
)

// NomadFileKind tells from a file's name whether it is one of Nomad's own
// files: NomadJobspec for *.nomad.hcl, NomadPolicy for *-policy.hcl and
// *.policy.hcl, "" for anything else. A directory load skips such files;
// a file named on its own is loaded like any other.
func NomadFileKind(name string) string {
	base := filepath.Base(name)
	switch {
	case strings.HasSuffix(base, ".nomad.hcl"):
		return NomadJobspec
	case strings.HasSuffix(base, "-policy.hcl"), strings.HasSuffix(base, ".policy.hcl"):
		return NomadPolicy
	}
	return ""
}

// nomadFileHints adds, for each source named like a Nomad file that has an
// error, a warning saying what the file looks like: its own errors
// ("Unsupported block type" for job or namespace) do not say why.
func nomadFileHints(srcs []SourceFile, diags hcl.Diagnostics) hcl.Diagnostics {
	failed := map[string]bool{}
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil {
			failed[d.Subject.Filename] = true
		}
	}
	var hints hcl.Diagnostics
	for _, s := range srcs {
		kind := NomadFileKind(s.Name)
		if kind == "" || !failed[s.Name] {
			continue
		}
		use := "nomad job run"
		if kind == NomadPolicy {
			use = "nomad acl policy apply"
		}
		hints = append(hints, warningDiag(nil, "File looks like a "+kind,
			fmt.Sprintf("%s is named like a %s (for %s), not a file of sandbox declarations. A directory load skips such files; this one was loaded because it was named on its own.",
				s.Name, kind, use)))
	}
	return hints
}
