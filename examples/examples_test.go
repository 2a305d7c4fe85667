// Package examples_test checks the Nomad files among the examples: the
// controller's jobspec (controller.nomad.hcl) and its ACL policy
// (controller-policy.hcl). They are parsed as plain HCL, with no Nomad
// code, and held to what running the controller highly available needs;
// each problem names the missing or wrong piece and where it is. The
// sandbox declarations beside them are internal/spec's to check
// (TestExamplesAreValid), and neither loader reads the other's files.
package examples_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

const (
	jobFile    = "controller.nomad.hcl"
	policyFile = "controller-policy.hcl"
)

// TestControllerExamples runs every check on the files as they are, and
// the cross-file one: the policy grants the variables the job's rendered
// config will use.
func TestControllerExamples(t *testing.T) {
	jobSrc, policySrc := readFile(t, jobFile), readFile(t, policyFile)
	job, problems := checkJob(jobFile, jobSrc)
	for _, p := range problems {
		t.Errorf("%s", p)
	}
	pol, problems := checkPolicy(policyFile, policySrc)
	for _, p := range problems {
		t.Errorf("%s", p)
	}
	if job == nil || pol == nil {
		return
	}
	for _, p := range checkPolicyCoversJob(pol, job) {
		t.Errorf("%s", p)
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

// problems collects what a check found, each prefixed with its place.
type problems []string

func (ps *problems) add(r hcl.Range, format string, args ...any) {
	*ps = append(*ps, fmt.Sprintf("%s:%d: %s", r.Filename, r.Start.Line, fmt.Sprintf(format, args...)))
}

// parse reads src as HCL native syntax; every syntax error is a problem.
func parse(name string, src []byte) (*hclsyntax.Body, problems) {
	f, diags := hclparse.NewParser().ParseHCL(src, name)
	if diags.HasErrors() {
		var ps problems
		for _, d := range diags {
			ps = append(ps, d.Error())
		}
		return nil, ps
	}
	return f.Body.(*hclsyntax.Body), nil
}

func blocksOf(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

// value evaluates an attribute in ctx. ok is false when the attribute is
// absent or does not evaluate to a known, non-null value.
func value(body *hclsyntax.Body, name string, ctx *hcl.EvalContext) (v cty.Value, attr *hclsyntax.Attribute, ok bool) {
	attr, found := body.Attributes[name]
	if !found {
		return cty.NilVal, nil, false
	}
	v, diags := attr.Expr.Value(ctx)
	if diags.HasErrors() || !v.IsWhollyKnown() || v.IsNull() {
		return cty.NilVal, attr, false
	}
	return v, attr, true
}

func stringAttr(body *hclsyntax.Body, name string, ctx *hcl.EvalContext) (string, bool) {
	v, _, ok := value(body, name, ctx)
	if !ok || v.Type() != cty.String {
		return "", false
	}
	return v.AsString(), true
}

func numberAttr(body *hclsyntax.Body, name string) (int64, bool) {
	v, _, ok := value(body, name, nil)
	if !ok || v.Type() != cty.Number {
		return 0, false
	}
	n, acc := v.AsBigFloat().Int64()
	return n, acc == 0
}

func boolAttr(body *hclsyntax.Body, name string) (bool, bool) {
	v, _, ok := value(body, name, nil)
	if !ok || v.Type() != cty.Bool {
		return false, false
	}
	return v.True(), true
}

// stringsAttr reads a list or tuple of strings.
func stringsAttr(body *hclsyntax.Body, name string, ctx *hcl.EvalContext) ([]string, bool) {
	v, _, ok := value(body, name, ctx)
	if !ok || !(v.Type().IsListType() || v.Type().IsTupleType()) {
		return nil, false
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() || e.Type() != cty.String {
			return nil, false
		}
		out = append(out, e.AsString())
	}
	return out, true
}

// globMatch matches as Nomad matches ACL globs (ryanuber/go-glob): "*"
// stands for any run of characters, "/" included.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// TestChecksCatchBrokenExamples breaks the files one piece at a time and
// wants the checks to name that piece, so that a check cannot pass by
// finding nothing.
func TestChecksCatchBrokenExamples(t *testing.T) {
	jobSrc, policySrc := string(readFile(t, jobFile)), string(readFile(t, policyFile))
	tests := []struct {
		name     string
		file     string // jobFile or policyFile
		old, new string
		want     string // in one of the problems
	}{
		{"image with a default", jobFile, `description = "Container image`, "default     = \"registry.example/x\"\n  description = \"Container image", `variable "image" has a default`},
		{"batch job", jobFile, `type        = "service"`, `type        = "batch"`, `type = "batch", want "service"`},
		{"one instance", jobFile, "count = 3", "count = 1", "count must be at least 2"},
		{"instances may share a node", jobFile, `operator = "distinct_hosts"`, `operator = "regexp"`, "no distinct_hosts constraint or spread block"},
		{"Consul service", jobFile, `provider = "nomad"`, `provider = "consul"`, `provider = "consul", want "nomad"`},
		{"check on /healthz", jobFile, `path     = "/readyz"`, `path     = "/healthz"`, `no check with type = "http" and path = "/readyz"`},
		{"check without timeout", jobFile, `timeout  = "2s"`, "", "service check: no timeout"},
		{"disk not sticky", jobFile, "sticky  = true", "sticky  = false", "ephemeral_disk: want sticky = true"},
		{"parallel update", jobFile, "max_parallel     = 1", "max_parallel     = 2", "max_parallel = 2, want 1"},
		{"short kill timeout", jobFile, `kill_timeout = "30s"`, `kill_timeout = "5s"`, `kill_timeout = "5s"`},
		{"no memory", jobFile, "memory = 256", "memory_max = 256", "resources: no memory"},
		{"identity not exposed", jobFile, "env = true", "env = false", "no identity block with env = true or file = true"},
		{"image not from the variable", jobFile, "image = var.image", `image = "registry.example/x"`, "config: image must be var.image"},
		{"port not published", jobFile, `ports = ["api"]`, `ports = []`, `config: ports must publish "api"`},
		{"token readable by others", jobFile, "api-token\"\n        perms       = \"600\"", "api-token\"\n        perms       = \"644\"", `perms = "644", want "600"`},
		{"-config names another file", jobFile, `/controller.hcl"]`, `/other.hcl"]`, "no template renders /local/other.hcl"},
		{"ha disabled", jobFile, "enabled         = true", "enabled         = false", "ha enabled must be true"},
		{"advertised loopback", jobFile, `"http://{{ env "NOMAD_ADDR_api" }}"`, `"http://127.0.0.1:7474"`, `advertise_addr = "http://127.0.0.1:7474"`},
		{"env Nomad does not set", jobFile, `env "NOMAD_ADDR_api"`, `env "NOMAD_ADDR_http"`, `env "NOMAD_ADDR_http" is not set`},
		{"listening on loopback", jobFile, `listen     = "0.0.0.0:7474"`, `listen     = "127.0.0.1:7474"`, `listen = "127.0.0.1:7474"`},
		{"token file elsewhere", jobFile, `token_file = "{{ env "NOMAD_SECRETS_DIR" }}/api-token"`, `token_file = "/local/api-token"`, `token_file = "/local/api-token", want "/secrets/api-token"`},
		{"data dir lost on restart", jobFile, `data_dir   = "{{ env "NOMAD_ALLOC_DIR" }}/data"`, `data_dir   = "/tmp/data"`, `data_dir = "/tmp/data"`},
		{"misspelt config key", jobFile, "lock_ttl        =", "lock_tll        =", "Unsupported argument"},
		{"lock TTL Nomad refuses", jobFile, `lock_ttl        = "15s"`, `lock_ttl        = "5s"`, "10s to 24h"},
		{"config namespace not the job's", jobFile, `namespace = "{{ env "NOMAD_NAMESPACE" }}"`, `namespace = "agents"`, `nomad namespace = "agents", want "default"`},

		{"namespace without submit-job", policyFile, `"read-job", "submit-job"]`, `"read-job"]`, `namespace "default" lacks "submit-job"`},
		{"namespace with alloc-exec", policyFile, `"read-job", "submit-job"]`, `"read-job", "submit-job", "alloc-exec"]`, `grants "alloc-exec"`},
		{"coarse policy", policyFile, "namespace \"sandboxes\" {\n", "namespace \"sandboxes\" {\n  policy = \"write\"\n", "policy = ... grants more"},
		{"every namespace", policyFile, `namespace "sandboxes"`, `namespace "*"`, "a glob grants more"},
		{"node rules", policyFile, `namespace "sandboxes"`, "node {\n  policy = \"write\"\n}\n\nnamespace \"sandboxes\"", "node block"},
		{"variables without write", policyFile, `["read", "write", "list", "destroy"]`, `["read", "list", "destroy"]`, `lacks "write"`},
		{"every variable", policyFile, `path "agentkernel/*"`, `path "*"`, "outside the controller's prefix"},
		{"variables below the sandboxes only", policyFile, `path "agentkernel/*"`, `path "agentkernel/sandboxes/*"`, "covers agentkernel/leader"},
		{"prefix the policy does not grant", jobFile, `variable_prefix = "agentkernel"`, `variable_prefix = "ak"`, "covers ak/leader"},
		{"job in a namespace the policy does not grant", jobFile, `namespace   = "default"`, `namespace   = "agents"`, `no variables path in namespace "agents"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, pol := jobSrc, policySrc
			src := &job
			if tt.file == policyFile {
				src = &pol
			}
			if !strings.Contains(*src, tt.old) {
				t.Fatalf("%s no longer holds %q; update this case", tt.file, tt.old)
			}
			*src = strings.Replace(*src, tt.old, tt.new, 1)

			jf, all := checkJob(jobFile, []byte(job))
			pf, ps := checkPolicy(policyFile, []byte(pol))
			all = append(all, ps...)
			if jf != nil && pf != nil {
				all = append(all, checkPolicyCoversJob(pf, jf)...)
			}
			if !slices.ContainsFunc(all, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("no problem mentions %q; got:\n%s", tt.want, strings.Join(all, "\n"))
			}
		})
	}
}
