package main

import "testing"

func TestVersion(t *testing.T) {
	cases := []cliCase{
		{name: "text", args: ak("version"), ctl: live},
		{name: "json", args: ak("version", "-o", "json"), ctl: live},
		{name: "unreachable_controller", args: []string{"--addr", "$DEAD", "version"}},
		{name: "unreachable_controller_json", args: []string{"version", "-o", "json", "--addr", "$DEAD"}},
		{name: "needs_token", args: ak("version"), ctl: &ctlOptions{token: "s3cret"}},
		{name: "usage_argument", args: ak("version", "now")},
		{name: "help", args: []string{"version", "-h"}},
	}
	runCases(t, "version", cases)
}
