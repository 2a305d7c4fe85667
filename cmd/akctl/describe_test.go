package main

import "testing"

func TestDescribe(t *testing.T) {
	cases := []cliCase{
		{
			name: "running", args: ak("describe", "rich"), files: map[string]string{"rich.hcl": richHCL}, ctl: live,
			before: [][]string{ak("apply", "-f", "rich.hcl", "--apply-set", "team", "--wait")},
		},
		{
			// The node has no docker driver: the sandbox stays Pending.
			name: "pending", args: ak("describe", "box"), files: map[string]string{"box.hcl": boxHCL},
			ctl:    &ctlOptions{drivers: []string{"exec"}},
			before: [][]string{ak("apply", "-f", "box.hcl"), append([]string{"!"}, ak("wait", "--for=ready", "box", "--timeout", "500ms")...)},
		},
		{name: "not_found", args: ak("describe", "-n", "team-a", "missing"), ctl: live},
		{name: "usage_no_name", args: ak("describe")},
		{name: "help", args: []string{"describe", "-h"}},
	}
	runCases(t, "describe", cases)
}
