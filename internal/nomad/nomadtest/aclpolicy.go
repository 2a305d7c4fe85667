package nomadtest

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// The ACL policy language, the subset this server enforces: namespace rules
// with a policy and capabilities and variables paths, and node, agent and
// operator rules. quota, plugin, node_pool and host_volume rules are parsed
// and stored but guard no endpoint here.
//
// The expansions below follow Nomad's acl/policy.go (expandNamespacePolicy,
// expandVariablesCapabilities) and the ACL policy specification,
// https://developer.hashicorp.com/nomad/docs/other-specifications/acl-policy:
//
//	namespace policy "read":  list-jobs parse-job read-job csi-list-volume csi-read-volume
//	                          read-job-scaling list-scaling-policies read-scaling-policy host-volume-read
//	namespace policy "write": read, plus scale-job submit-job dispatch-job read-logs read-fs alloc-exec
//	                          alloc-lifecycle csi-mount-volume csi-write-volume submit-recommendation
//	                          host-volume-create
//	namespace policy "scale": list-scaling-policies read-scaling-policy read-job-scaling scale-job
//	                          read-job submit-recommendation
//	namespace policy "deny":  deny, which wins over every other grant for the namespace
//	variables path:           read implies list; deny replaces the path's capabilities
//
// A namespace policy grants no variables: only variables blocks do.

const (
	capListJobs  = "list-jobs"
	capReadJob   = "read-job"
	capSubmitJob = "submit-job"
	capDeny      = "deny"

	varCapRead    = "read"
	varCapWrite   = "write"
	varCapList    = "list"
	varCapDestroy = "destroy"
)

var nsPolicyRead = []string{
	capListJobs, "parse-job", capReadJob, "csi-list-volume", "csi-read-volume",
	"read-job-scaling", "list-scaling-policies", "read-scaling-policy", "host-volume-read",
}

var nsPolicyWrite = append(slices.Clone(nsPolicyRead),
	"scale-job", capSubmitJob, "dispatch-job", "read-logs", "read-fs", "alloc-exec",
	"alloc-lifecycle", "csi-mount-volume", "csi-write-volume", "submit-recommendation",
	"host-volume-create",
)

var nsPolicyScale = []string{
	"list-scaling-policies", "read-scaling-policy", "read-job-scaling", "scale-job",
	capReadJob, "submit-recommendation",
}

// nsCapabilities are the capabilities a namespace rule may list.
var nsCapabilities = map[string]bool{}

func init() {
	for _, c := range append(append(slices.Clone(nsPolicyWrite), nsPolicyScale...),
		capDeny, "alloc-node-exec", "csi-register-plugin", "sentinel-override",
		"host-volume-register", "host-volume-write", "host-volume-delete",
		"register-job", "revert-job", "deregister-job", "purge-job", "evaluate-job",
		"plan-job", "tag-job-version", "stable-job",
		"fail-deployment", "pause-deployment", "promote-deployment", "unblock-deployment",
		"cancel-deployment", "set-alloc-health-deployment", "gc-allocation", "pause-allocation",
		"force-periodic-job", "delete-service-registration") {
		nsCapabilities[c] = true
	}
}

var (
	validPolicyName = regexp.MustCompile(`^[a-zA-Z0-9-]{1,128}$`)
	validNSRuleName = regexp.MustCompile(`^[a-zA-Z0-9-*]{1,128}$`)
)

// policyRules is a parsed policy, in the HCL schema of Nomad's acl.Policy.
type policyRules struct {
	Namespaces  []*nsRule    `hcl:"namespace,block"`
	NodePools   []*namedRule `hcl:"node_pool,block"`
	HostVolumes []*namedRule `hcl:"host_volume,block"`
	Agent       *levelRule   `hcl:"agent,block"`
	Node        *levelRule   `hcl:"node,block"`
	Operator    *capsRule    `hcl:"operator,block"`
	Quota       *levelRule   `hcl:"quota,block"`
	Plugin      *levelRule   `hcl:"plugin,block"`
}

type nsRule struct {
	Name              string         `hcl:"name,label"`
	Policy            string         `hcl:"policy,optional"`
	Capabilities      []string       `hcl:"capabilities,optional"`
	Variables         *variablesRule `hcl:"variables,block"`
	NameRange         hcl.Range      `hcl:"name,label_range"`
	PolicyRange       hcl.Range      `hcl:"policy,attr_value_range"`
	CapabilitiesRange hcl.Range      `hcl:"capabilities,attr_value_range"`
}

type variablesRule struct {
	Paths    []*pathRule `hcl:"path,block"`
	DefRange hcl.Range   `hcl:",def_range"`
}

type pathRule struct {
	Spec              string    `hcl:"spec,label"`
	Capabilities      []string  `hcl:"capabilities"`
	SpecRange         hcl.Range `hcl:"spec,label_range"`
	CapabilitiesRange hcl.Range `hcl:"capabilities,attr_value_range"`
}

type namedRule struct {
	Name         string   `hcl:"name,label"`
	Policy       string   `hcl:"policy,optional"`
	Capabilities []string `hcl:"capabilities,optional"`
}

type levelRule struct {
	Policy      string    `hcl:"policy"`
	PolicyRange hcl.Range `hcl:"policy,attr_value_range"`
}

type capsRule struct {
	Policy       string    `hcl:"policy,optional"`
	Capabilities []string  `hcl:"capabilities,optional"`
	PolicyRange  hcl.Range `hcl:"policy,attr_value_range"`
}

// parsePolicy parses and validates rules, HCL or (starting with "{") JSON,
// and expands the shorthand policies into capabilities. The returned
// diagnostics collect every problem, each pointing at its attribute.
func parsePolicy(name, rules string) (*policyRules, hcl.Diagnostics) {
	// An empty policy is allowed and grants nothing, as in Nomad's
	// acl.Parse; rules with nothing but comments are not.
	if rules == "" {
		return &policyRules{}, nil
	}
	p := hclparse.NewParser()
	filename := name + ".policy.hcl"
	var f *hcl.File
	var diags hcl.Diagnostics
	if strings.HasPrefix(strings.TrimSpace(rules), "{") {
		f, diags = p.ParseJSON([]byte(rules), name+".policy.json")
	} else {
		f, diags = p.ParseHCL([]byte(rules), filename)
	}
	if diags.HasErrors() {
		return nil, diags
	}
	var pr policyRules
	diags = append(diags, gohcl.DecodeBody(f.Body, nil, &pr)...)
	if diags.HasErrors() {
		return nil, diags
	}
	diags = append(diags, pr.validate(f.Body.MissingItemRange())...)
	if diags.HasErrors() {
		return nil, diags
	}
	pr.expand()
	return &pr, diags
}

func policyDiag(summary, detail string, subject hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: subject.Ptr()}
}

func validLevel(p string) bool {
	switch p {
	case "deny", "read", "write", "scale":
		return true
	}
	return false
}

func (pr *policyRules) validate(whole hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if len(pr.Namespaces)+len(pr.NodePools)+len(pr.HostVolumes) == 0 &&
		pr.Agent == nil && pr.Node == nil && pr.Operator == nil && pr.Quota == nil && pr.Plugin == nil {
		diags = append(diags, policyDiag("Empty policy",
			"A policy needs at least one rule: namespace, node, agent, operator, quota, plugin, node_pool or host_volume.", whole))
	}
	for _, ns := range pr.Namespaces {
		if !validNSRuleName.MatchString(ns.Name) {
			diags = append(diags, policyDiag("Invalid namespace name",
				fmt.Sprintf("The namespace name %q may hold letters, digits, \"-\" and the glob \"*\", up to 128 characters.", ns.Name), ns.NameRange))
		}
		if ns.Policy != "" && !validLevel(ns.Policy) {
			diags = append(diags, policyDiag("Invalid namespace policy",
				fmt.Sprintf("The policy %q is not one of deny, read, write or scale.", ns.Policy), ns.PolicyRange))
		}
		for _, c := range ns.Capabilities {
			if !nsCapabilities[c] {
				diags = append(diags, policyDiag("Invalid namespace capability",
					fmt.Sprintf("The capability %q is not a namespace capability, such as read-job or submit-job.", c), ns.CapabilitiesRange))
			}
		}
		if ns.Variables != nil && len(ns.Variables.Paths) == 0 {
			diags = append(diags, policyDiag("Invalid variables rule",
				fmt.Sprintf("The variables block of namespace %q has no path block.", ns.Name), ns.Variables.DefRange))
		}
		if ns.Variables == nil {
			continue
		}
		for _, pp := range ns.Variables.Paths {
			if pp.Spec == "" || strings.HasPrefix(pp.Spec, "/") {
				diags = append(diags, policyDiag("Invalid variable path",
					fmt.Sprintf("The variable path %q must be non-empty and may not start with \"/\".", pp.Spec), pp.SpecRange))
			}
			for _, c := range pp.Capabilities {
				switch c {
				case varCapRead, varCapWrite, varCapList, varCapDestroy, capDeny:
				default:
					diags = append(diags, policyDiag("Invalid variable capability",
						fmt.Sprintf("The capability %q is not one of read, write, list, destroy or deny.", c), pp.CapabilitiesRange))
				}
			}
		}
	}
	for _, r := range []*levelRule{pr.Agent, pr.Node, pr.Quota} {
		if r != nil && !validLevel(r.Policy) {
			diags = append(diags, policyDiag("Invalid policy",
				fmt.Sprintf("The policy %q is not one of deny, read or write.", r.Policy), r.PolicyRange))
		}
	}
	if pr.Operator != nil && pr.Operator.Policy != "" && !validLevel(pr.Operator.Policy) {
		diags = append(diags, policyDiag("Invalid operator policy",
			fmt.Sprintf("The policy %q is not one of deny, read or write.", pr.Operator.Policy), pr.Operator.PolicyRange))
	}
	return diags
}

// expand adds the capabilities the shorthand policies stand for, as Nomad
// stores them (the RulesJSON of more/ 306 lists them).
func (pr *policyRules) expand() {
	for _, ns := range pr.Namespaces {
		switch ns.Policy {
		case "deny":
			ns.Capabilities = append(ns.Capabilities, capDeny)
		case "read":
			ns.Capabilities = append(ns.Capabilities, nsPolicyRead...)
		case "write":
			ns.Capabilities = append(ns.Capabilities, nsPolicyWrite...)
		case "scale":
			ns.Capabilities = append(ns.Capabilities, nsPolicyScale...)
		}
		if ns.Variables == nil {
			continue
		}
		for _, pp := range ns.Variables.Paths {
			if slices.Contains(pp.Capabilities, capDeny) {
				pp.Capabilities = []string{capDeny}
				continue
			}
			if slices.Contains(pp.Capabilities, varCapRead) && !slices.Contains(pp.Capabilities, varCapList) {
				pp.Capabilities = append(pp.Capabilities, varCapList)
			}
		}
	}
	if pr.Operator != nil {
		switch pr.Operator.Policy {
		case "deny":
			pr.Operator.Capabilities = append(pr.Operator.Capabilities, "deny")
		case "read":
			pr.Operator.Capabilities = append(pr.Operator.Capabilities, "license-read")
		case "write":
			pr.Operator.Capabilities = append(pr.Operator.Capabilities, "snapshot-save", "license-read")
		}
	}
}

// rulesJSON is the RulesJSON of a policy read back (more/ 306): the parsed
// policy with its keys in alphabetical order.
func (pr *policyRules) rulesJSON(raw string) any {
	type level struct{ Policy string }
	type caps struct {
		Capabilities []string
		Policy       string
	}
	type path struct {
		Capabilities []string
		PathSpec     string
	}
	type variables struct{ Paths []path }
	type ns struct {
		Capabilities []string
		Name         string
		Policy       string
		Variables    *variables
	}
	type named struct {
		Capabilities []string
		Name         string
		Policy       string
	}
	out := struct {
		Agent        *level
		ExtraKeysHCL []string
		HostVolumes  []named
		Namespaces   []ns
		Node         *level
		NodePools    []named
		Operator     *caps
		Plugin       *level
		Quota        *level
		Raw          string
		Sentinel     any
	}{Raw: raw}
	lv := func(r *levelRule) *level {
		if r == nil {
			return nil
		}
		return &level{r.Policy}
	}
	out.Agent, out.Node, out.Plugin, out.Quota = lv(pr.Agent), lv(pr.Node), lv(pr.Plugin), lv(pr.Quota)
	if pr.Operator != nil {
		out.Operator = &caps{pr.Operator.Capabilities, pr.Operator.Policy}
	}
	for _, r := range pr.Namespaces {
		n := ns{Capabilities: r.Capabilities, Name: r.Name, Policy: r.Policy}
		if r.Variables != nil {
			n.Variables = &variables{}
			for _, p := range r.Variables.Paths {
				n.Variables.Paths = append(n.Variables.Paths, path{p.Capabilities, p.Spec})
			}
		}
		out.Namespaces = append(out.Namespaces, n)
	}
	for _, r := range pr.NodePools {
		out.NodePools = append(out.NodePools, named{r.Capabilities, r.Name, r.Policy})
	}
	for _, r := range pr.HostVolumes {
		out.HostVolumes = append(out.HostVolumes, named{r.Capabilities, r.Name, r.Policy})
	}
	return out
}

// capSet is the capabilities granted for one namespace or variables path.
type capSet map[string]bool

// aclObj is a token's policies compiled, as Nomad's acl.ACL. A nil *aclObj
// means ACLs are off, and allows everything.
type aclObj struct {
	management bool
	// Exact and glob namespace rules; variables rules are keyed
	// "<namespace>\x00<path>", glob when either part has a "*".
	ns, nsGlob     map[string]capSet
	vars, varsGlob map[string]capSet
	agent, node    string
	operator       string
}

// compileACL merges policies: capabilities add up, deny wins, and the
// node, agent and operator levels take the most privilege (deny first).
func compileACL(policies []*policyRules) *aclObj {
	a := &aclObj{ns: map[string]capSet{}, nsGlob: map[string]capSet{}, vars: map[string]capSet{}, varsGlob: map[string]capSet{}}
	set := func(m map[string]capSet, k string) capSet {
		if m[k] == nil {
			m[k] = capSet{}
		}
		return m[k]
	}
	for _, p := range policies {
		for _, r := range p.Namespaces {
			glob := strings.Contains(r.Name, "*")
			if r.Variables != nil {
				for _, pp := range r.Variables.Paths {
					m := a.vars
					if glob || strings.Contains(pp.Spec, "*") {
						m = a.varsGlob
					}
					cs := set(m, r.Name+"\x00"+pp.Spec)
					for _, c := range pp.Capabilities {
						cs[c] = true
					}
				}
			}
			m := a.ns
			if glob {
				m = a.nsGlob
			}
			cs := set(m, r.Name)
			if cs[capDeny] {
				continue
			}
			for _, c := range r.Capabilities {
				if c == capDeny {
					clear(cs)
					cs[capDeny] = true
					break
				}
				cs[c] = true
			}
		}
		if p.Agent != nil {
			a.agent = maxLevel(a.agent, p.Agent.Policy)
		}
		if p.Node != nil {
			a.node = maxLevel(a.node, p.Node.Policy)
		}
		if p.Operator != nil {
			a.operator = maxLevel(a.operator, p.Operator.Policy)
		}
	}
	return a
}

func maxLevel(a, b string) string {
	for _, l := range []string{"deny", "write", "read", "list"} {
		if a == l || b == l {
			return l
		}
	}
	return ""
}

// globMatch is go-glob's match, which Nomad uses: "*" stands for any run of
// characters, "/" included.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return s == pattern
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := len(parts) - 1
	for _, part := range parts[1:last] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return strings.HasSuffix(s, parts[last])
}

// match finds the rule for name: an exact one, else the closest glob, the
// one with the fewest characters left to the wildcards. Of equally close
// globs Nomad's sort leaves the last in key order first, and so does this.
func match(exact, globs map[string]capSet, name string) (capSet, bool) {
	if cs, ok := exact[name]; ok {
		return cs, true
	}
	var best string
	var bestDiff int
	found := false
	for k := range globs {
		if !globMatch(k, name) {
			continue
		}
		d := len(name) - len(k) + strings.Count(k, "*")
		if !found || d < bestDiff || d == bestDiff && k > best {
			best, bestDiff, found = k, d, true
		}
	}
	return globs[best], found
}

func (a *aclObj) isManagement() bool { return a == nil || a.management }

// allowNs reports whether op is granted in namespace ns. For "*" it is
// enough that one namespace grants it; lists then filter per namespace.
func (a *aclObj) allowNs(ns, op string) bool {
	if a.isManagement() {
		return true
	}
	if ns == "*" {
		for _, m := range []map[string]capSet{a.ns, a.nsGlob} {
			for _, cs := range m {
				if cs[op] {
					return true
				}
			}
		}
		return false
	}
	cs, ok := match(a.ns, a.nsGlob, ns)
	return ok && cs[op]
}

// allowNamespace reports whether any operation is granted in ns, which is
// what reading the namespace itself needs.
func (a *aclObj) allowNamespace(ns string) bool {
	if a.isManagement() {
		return true
	}
	cs, ok := match(a.ns, a.nsGlob, ns)
	return ok && len(cs) > 0 && !cs[capDeny]
}

// allowVar reports whether op is granted on the variable path in ns. Deny
// wins over grants merged from other policies, as the specification says.
func (a *aclObj) allowVar(ns, path, op string) bool {
	if a.isManagement() {
		return true
	}
	cs, ok := match(a.vars, a.varsGlob, ns+"\x00"+path)
	return ok && !cs[capDeny] && cs[op]
}

func (a *aclObj) nodeRead() bool {
	return a.isManagement() || a.node == "read" || a.node == "write"
}

// allowStream checks an event-stream subscription as the agent's
// aclCheckForEvents does: job-related topics need read-job in the stream's
// namespace (more/ 321, 323), Node needs node read, and all topics ("*",
// also the default) need a management token (324). Other topics, Variable
// among them, are refused to all but management here.
func (a *aclObj) allowStream(f streamFilter) bool {
	if a.isManagement() {
		return true
	}
	for topic := range f.topics {
		switch topic {
		case "Job", "Allocation", "Evaluation", "Deployment", "Service":
			if !a.allowNs(f.namespace, capReadJob) {
				return false
			}
		case "Node", "NodePool":
			if !a.nodeRead() {
				return false
			}
		default:
			return false
		}
	}
	return true
}
