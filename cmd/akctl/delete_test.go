package main

import "testing"

func TestDelete(t *testing.T) {
	two := map[string]string{"decl/box.hcl": boxHCL, "decl/worker.hcl": workerHCL}
	applied := [][]string{ak("apply", "-f", "decl", "--wait")}
	cases := []cliCase{
		{name: "names", args: ak("delete", "box", "worker"), files: two, ctl: live, before: applied},
		{name: "unknown_name_does_not_stop_the_others", args: ak("delete", "missing", "box"), files: two, ctl: live, before: applied},
		{name: "ignore_not_found", args: ak("delete", "missing", "box", "--ignore-not-found"), files: two, ctl: live, before: applied},
		{name: "wait_bounded_by_timeout", args: ak("delete", "worker", "--wait", "--timeout", "1m"), files: two, ctl: live, before: applied},
		{name: "from_declarations", args: ak("delete", "-f", "decl"), files: two, ctl: live, before: applied},
		{name: "wait_until_gone", args: ak("delete", "box", "--wait"), files: two, ctl: live, before: applied},
		{name: "wait_bounded", args: ak("delete", "worker", "--wait", "--timeout-wait", "1m"), files: two, ctl: live, before: applied},
		{name: "namespace", args: ak("delete", "-n", "team-a", "box"), files: two, ctl: live, before: applied},
		{name: "usage_no_names", args: ak("delete")},
		{name: "usage_names_and_files", args: ak("delete", "box", "-f", "decl")},
		{name: "usage_var_without_files", args: ak("delete", "box", "-var", "a=b")},
		{name: "help", args: []string{"delete", "-h"}},
	}
	runCases(t, "delete", cases)
}
