package examples_test

import (
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// What the controller needs in each namespace sandboxes run in, and why.
var namespaceCaps = map[string]string{
	"list-jobs":  "job lists",
	"read-job":   "reading jobs and allocations, and the event stream's Job and Allocation topics",
	"submit-job": "register, plan, stop and purge",
}

// What it needs on its own variables, and why.
var variableCaps = map[string]string{
	"read":    "reading the lock, the replicated sandboxes and their chunks",
	"write":   "taking, renewing and releasing the lock, and replicating sandboxes",
	"list":    "listing the replicated sandboxes and their chunks",
	"destroy": "deleting a replicated sandbox, and collecting chunks no sandbox names",
}

// The namespaces the example shows: Nomad's default, where the controller
// itself runs, and one for sandboxes only.
var policyNamespaces = []string{"default", "sandboxes"}

var namespaceName = regexp.MustCompile(`^[a-zA-Z0-9-]{1,128}$`)

type variableGrant struct {
	namespace, path string
	at              hcl.Range
}

// policyFacts is what the policy grants on variables, checked against
// the job's config by checkPolicyCoversJob.
type policyFacts struct {
	grants []variableGrant
}

// checkPolicy checks the ACL policy holds exactly what the controller
// needs: job capabilities per namespace and its own variables, nothing on
// nodes, agents or operators, no coarse policy = "...".
func checkPolicy(name string, src []byte) (*policyFacts, problems) {
	body, ps := parse(name, src)
	if body == nil {
		return nil, ps
	}
	for _, a := range body.Attributes {
		ps.add(a.SrcRange, "top-level attribute %q: a policy holds rule blocks only", a.Name)
	}
	facts := &policyFacts{}
	seen := map[string]bool{}
	for _, b := range body.Blocks {
		if b.Type != "namespace" {
			ps.add(b.DefRange(), "%s block: the controller needs no %s rules", b.Type, b.Type)
			continue
		}
		ns := b.Labels[0]
		seen[ns] = true
		if !namespaceName.MatchString(ns) {
			ps.add(b.DefRange(), `namespace %q: name the namespaces sandboxes use; a glob grants more than the controller needs`, ns)
		}
		for _, a := range b.Body.Attributes {
			switch a.Name {
			case "capabilities":
			case "policy":
				ps.add(a.SrcRange, `namespace %q: policy = ... grants more than the controller needs; list capabilities instead`, ns)
			default:
				ps.add(a.SrcRange, "namespace %q: unexpected attribute %q", ns, a.Name)
			}
		}
		caps, ok := stringsAttr(b.Body, "capabilities", nil)
		if !ok {
			ps.add(b.DefRange(), "namespace %q: no capabilities list", ns)
		}
		checkCaps(&ps, b.DefRange(), "namespace "+quote(ns), caps, namespaceCaps)

		for _, vb := range b.Body.Blocks {
			if vb.Type != "variables" {
				ps.add(vb.DefRange(), "namespace %q: unexpected %s block", ns, vb.Type)
				continue
			}
			for _, pb := range vb.Body.Blocks {
				if pb.Type != "path" || len(pb.Labels) != 1 {
					ps.add(pb.DefRange(), "namespace %q, variables: unexpected %s block", ns, pb.Type)
					continue
				}
				p := pb.Labels[0]
				caps, ok := stringsAttr(pb.Body, "capabilities", nil)
				if !ok {
					ps.add(pb.DefRange(), "variables path %q: no capabilities list", p)
				}
				checkCaps(&ps, pb.DefRange(), "variables path "+quote(p), caps, variableCaps)
				facts.grants = append(facts.grants, variableGrant{namespace: ns, path: p, at: pb.DefRange()})
			}
		}
	}
	for _, ns := range policyNamespaces {
		if !seen[ns] {
			ps.add(body.Range(), `no namespace %q block`, ns)
		}
	}
	return facts, ps
}

// checkCaps wants exactly the capabilities in want.
func checkCaps(ps *problems, at hcl.Range, what string, got []string, want map[string]string) {
	names := make([]string, 0, len(want))
	for c := range want {
		names = append(names, c)
	}
	slices.Sort(names)
	for _, c := range names {
		if !slices.Contains(got, c) {
			ps.add(at, "%s lacks %q, needed for %s", what, c, want[c])
		}
	}
	for _, c := range got {
		if _, ok := want[c]; !ok {
			ps.add(at, "%s grants %q, which the controller does not need", what, c)
		}
	}
}

func quote(s string) string { return `"` + s + `"` }

// checkPolicyCoversJob wants the variables the job's controller uses, in
// its namespace, granted, and no variables beyond them.
func checkPolicyCoversJob(pol *policyFacts, job *jobFacts) problems {
	var ps problems
	prefix := strings.TrimSuffix(job.prefix, "/")
	hash := strings.Repeat("0123456789abcdef", 4)
	inside := []string{
		prefix + "/leader", prefix + "/meta", prefix + "/sandboxes/default/hello",
		prefix + "/sandboxes/_/" + hash, // a sandbox whose key is too long for a path
		prefix + "/blobs/" + hash,       // a chunk of a large declaration
	}
	outside := []string{
		"nomad/jobs/" + job.name,
		"nomad/jobs/agentkernel-hello/sandbox/sandbox",
		prefix + "-other/leader",
		"other/" + prefix + "/leader",
	}
	for _, p := range inside {
		covered := slices.ContainsFunc(pol.grants, func(g variableGrant) bool {
			return g.namespace == job.namespace && globMatch(g.path, p)
		})
		if !covered {
			ps.add(job.prefixAt, "no variables path in namespace %q of the policy covers %s (the ha block's variable_prefix is %q)", job.namespace, p, job.prefix)
		}
	}
	for _, g := range pol.grants {
		if g.namespace != job.namespace {
			ps.add(g.at, "variables in namespace %q: the controller keeps its variables in the job's namespace %q only", g.namespace, job.namespace)
			continue
		}
		for _, p := range outside {
			if globMatch(g.path, p) {
				ps.add(g.at, "variables path %q also grants %s, outside the controller's prefix %q", g.path, p, job.prefix+"/")
				break
			}
		}
	}
	return ps
}
