package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

const validateUsage = `Usage: akctl validate [flags] PATH...

Loads sandbox declarations from files, directories (every *.hcl file in
them, not in subdirectories, except Nomad jobspecs *.nomad.hcl and ACL
policies *-policy.hcl or *.policy.hcl) and "-" (standard input), and
reports every problem with its file, line and column. file("...") paths
are relative to the declaring file. Nothing is sent to the controller.

Variables are set, from lowest to highest precedence, by their defaults,
AKCTL_VAR_<name> environment variables, and -var / -var-file flags in the
order given. A -var for an undeclared variable is an error; an undeclared
name in a var file is a warning; AKCTL_VAR_ values for undeclared names
are ignored.

With -o json the report always goes to standard output, and the exit code
is still 1 when the declarations are invalid.

Examples:
  akctl validate examples/
  akctl validate -var team=ml -var-file prod.hcl sandboxes/
  cat box.hcl | akctl validate -
  akctl validate -o json sandboxes/ | jq .diagnostics

Exit codes: 0 valid, 1 invalid, 2 usage error.
`

// validateOutput is the -o json document. Tools and editors read it, so
// its fields only ever grow.
type validateOutput struct {
	Valid       bool                  `json:"valid"`
	Sandboxes   []validatedSandbox    `json:"sandboxes"`
	Pools       []validatedSandbox    `json:"pools"`
	Diagnostics []spec.DiagnosticJSON `json:"diagnostics"`
}

type validatedSandbox struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Hash      string `json:"hash"`
	File      string `json:"file"`
	Line      int    `json:"line"`
}

func runValidate(_ context.Context, e *env, args []string) error {
	fs := newFlagSet("validate")
	var vars varFlags
	vars.register(fs)
	output := fs.String("o", "text", "output `format`: text or json")
	namespace := namespaceFlag(fs, "`namespace` for sandboxes that do not set one")
	paths, err := parseArgs(fs, args, validateUsage, e)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usagef("no paths given: name files, directories or - for standard input")
	}
	if *output != "text" && *output != "json" {
		return usagef("unknown output format %q: use text or json", *output)
	}

	res, diags := spec.Load(paths, spec.Options{
		DefaultNamespace: *namespace,
		Vars:             vars.vals,
		Environ:          e.environ,
		Stdin:            e.stdin,
	})
	valid := !diags.HasErrors()

	if *output == "json" {
		out := validateOutput{Valid: valid, Sandboxes: []validatedSandbox{}, Pools: []validatedSandbox{}, Diagnostics: spec.DiagnosticsJSON(diags)}
		if valid {
			for _, s := range res.Sandboxes {
				out.Sandboxes = append(out.Sandboxes, validatedSandbox{
					Namespace: s.Namespace, Name: s.Name, Hash: s.Spec.Hash(),
					File: s.Source.File, Line: s.Source.StartLine,
				})
			}
			for _, p := range res.Pools {
				out.Pools = append(out.Pools, validatedSandbox{
					Namespace: p.Namespace, Name: p.Name, Hash: spec.PoolHash(p.Template, p.Settings),
					File: p.Source.File, Line: p.Source.StartLine,
				})
			}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // keep "<stdin>" readable
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	} else {
		if len(diags) > 0 {
			if err := spec.WriteDiagnostics(e.stderr, res.Files, diags, 100, false); err != nil {
				return err
			}
		}
		if valid {
			what := countSandboxes(len(res.Sandboxes))
			switch n := len(res.Pools); n {
			case 0:
			case 1:
				what += " and 1 pool"
			default:
				what += fmt.Sprintf(" and %d pools", n)
			}
			fmt.Fprintln(e.stdout, what+" valid")
		} else {
			fmt.Fprintln(e.stderr, summarize(diags))
		}
	}
	if !valid {
		return &exitError{code: exitFailure}
	}
	return nil
}

func countSandboxes(n int) string {
	if n == 1 {
		return "1 sandbox"
	}
	return fmt.Sprintf("%d sandboxes", n)
}

func summarize(diags hcl.Diagnostics) string {
	errs := len(diags.Errs())
	word := "errors"
	if errs == 1 {
		word = "error"
	}
	return fmt.Sprintf("invalid: %d %s", errs, word)
}
