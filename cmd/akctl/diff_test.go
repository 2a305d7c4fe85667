package main

import "testing"

func TestDiff(t *testing.T) {
	two := map[string]string{"decl/box.hcl": boxHCL, "decl/worker.hcl": workerHCL}
	sized := map[string]string{"sized.hcl": sizedHCL}
	cases := []cliCase{
		{name: "create_exits_1", args: ak("diff", "-f", "decl/worker.hcl"), files: two, ctl: live},
		{name: "no_changes_exits_0", args: ak("diff", "-f", "decl"), files: two, ctl: live, before: [][]string{ak("apply", "-f", "decl", "--wait")}},
		{
			name: "update_with_nomad_plan", args: ak("diff", "-f", "sized.hcl", "-var", "mem=1024"), files: sized, ctl: live,
			before: [][]string{ak("apply", "-f", "sized.hcl", "--wait")},
		},
		{
			name: "prune_apply_set", args: ak("diff", "-f", "decl/box.hcl", "--apply-set", "team", "--prune"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl", "--apply-set", "team", "--wait")},
		},
		{
			name: "prune_selector", args: ak("diff", "-f", "decl/box.hcl", "-l", "team=infra", "--prune"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl", "--wait")},
		},
		{
			name: "json", args: ak("diff", "-o", "json", "-f", "sized.hcl", "-var", "mem=1024"), files: sized, ctl: live,
			before: [][]string{ak("apply", "-f", "sized.hcl", "--wait")},
		},
		{name: "invalid_declarations_exit_3", args: ak("diff", "-f", "bad.hcl"), files: map[string]string{"bad.hcl": "sandbox \"box\" {\n  image = 1\n  memory_mb = 0\n}\n"}},
		{name: "refused_exits_3", args: ak("diff", "-f", "raw.hcl"), files: map[string]string{"raw.hcl": rawHCL}, ctl: live},
		{name: "unreachable_exits_3", args: []string{"--addr", "$DEAD", "diff", "-f", "box.hcl"}, files: map[string]string{"box.hcl": boxHCL}},
		{name: "usage_prune_without_scope_exits_2", args: ak("diff", "-f", "box.hcl", "--prune")},
		{name: "usage_no_paths", args: ak("diff")},
		{name: "help", args: []string{"diff", "-h"}},
	}
	runCases(t, "diff", cases)
}
