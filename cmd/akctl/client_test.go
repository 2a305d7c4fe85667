package main

import "testing"

// TestConnection covers the global flags and how akctl reports a
// controller that cannot be reached or refuses the caller.
func TestConnection(t *testing.T) {
	protected := &ctlOptions{token: "s3cret"}
	tokenFile := map[string]string{"token": "s3cret\n"}
	cases := []cliCase{
		{name: "flags_before_command", args: []string{"-v", "--addr", "$ADDR", "--request-timeout", "5s", "get"}, ctl: live},
		{name: "addr_from_environment", args: []string{"get"}, environ: []string{"AKCTL_ADDR=$ADDR"}, ctl: live},
		{name: "flag_beats_environment", args: []string{"--addr", "$ADDR", "get"}, environ: []string{"AKCTL_ADDR=$DEAD"}, ctl: live},
		{name: "unix_socket", args: ak("version"), ctl: &ctlOptions{unix: true}},
		{name: "unreachable", args: []string{"--addr", "$DEAD", "get"}},
		{name: "unreachable_unix_socket", args: []string{"--addr", "unix:///nonexistent/controller.sock", "get"}},
		{name: "token_required", args: ak("get"), ctl: protected},
		{name: "token_wrong", args: ak("get", "--token", "guess"), ctl: protected},
		{name: "token_file", args: ak("--token-file", "token", "get"), files: tokenFile, ctl: protected},
		{name: "token_from_environment", args: ak("get"), environ: []string{"AKCTL_TOKEN=s3cret"}, ctl: protected},
		{name: "token_file_missing", args: ak("get", "--token-file", "nope"), files: map[string]string{}},
		{name: "request_timeout_bounds_each_request", args: ak("--request-timeout", "100ms", "get"), ctl: &ctlOptions{canned: &cannedAnswer{hang: true}}},
		{name: "usage_bad_scheme", args: []string{"--addr", "ftp://example.com", "get"}},
		{name: "not_a_controller", args: ak("get"), ctl: &ctlOptions{canned: &cannedAnswer{status: 404, body: "404 page not found\n"}}},
		{name: "not_a_controller_2xx", args: ak("get", "box"), ctl: &ctlOptions{canned: &cannedAnswer{status: 200, body: "<html>hello</html>"}}},
		{name: "usage_bad_timeout", args: []string{"--timeout", "0s", "get"}},
	}
	runCases(t, "connection", cases)
}
