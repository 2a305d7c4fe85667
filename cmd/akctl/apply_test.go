package main

import (
	"net/http"
	"testing"
)

// Declarations the controller tests apply.
const (
	boxHCL = `sandbox "box" {
  image = "alpine"
  labels = {
    team = "ml"
  }
}
`
	// sizedHCL takes its memory from a variable, so that a second apply
	// with -var changes the spec.
	sizedHCL = `variable "mem" {
  default = 512
}

sandbox "sized" {
  driver    = "exec"
  command   = ["/bin/sleep", "infinity"]
  memory_mb = var.mem
}
`
	workerHCL = `sandbox "worker" {
  driver  = "exec"
  command = ["/bin/sleep", "infinity"]
  labels = {
    team = "infra"
  }
}
`
	rawHCL = `sandbox "raw" {
  driver  = "raw_exec"
  command = ["/bin/sleep", "infinity"]
  network = "host"
}
`
	// richHCL uses every part of the spec that describe shows.
	richHCL = `sandbox "rich" {
  image     = "python:3.12-alpine"
  command   = ["sleep", "infinity"]
  vcpus     = 0.5
  memory_mb = 256
  network   = "bridge"

  port "http" {
    to = 8080
  }

  labels = {
    team = "ml"
    tier = "dev"
  }

  env = {
    LOG_LEVEL = "info"
  }

  file "/workspace/AGENTS.md" {
    content = "Be careful.\n"
    mode    = "0444"
  }

  secret "OPENAI_API_KEY" {
    variable = "agentkernel/secrets/openai"
    key      = "api_key"
  }

  ttl       = "8h"
  on_expiry = "delete"
}
`
)

// ak prefixes a command line with the test controller's address.
func ak(args ...string) []string { return append([]string{"--addr", "$ADDR"}, args...) }

// live is the default controller of a case.
var live = &ctlOptions{}

func TestApply(t *testing.T) {
	two := map[string]string{"decl/box.hcl": boxHCL, "decl/worker.hcl": workerHCL}
	cases := []cliCase{
		{name: "creates", args: ak("apply", "-f", "box.hcl"), files: map[string]string{"box.hcl": boxHCL}, ctl: live},
		{name: "directory", args: ak("apply", "-f", "decl"), files: two, ctl: live},
		{name: "paths_after_flags_and_addr_after_command", args: []string{"apply", "--addr", "$ADDR", "-f", "decl/box.hcl", "decl/worker.hcl"}, files: two, ctl: live},
		{name: "stdin", args: ak("apply", "-f", "-"), stdin: boxHCL, ctl: live},
		{
			name: "unchanged", args: ak("apply", "-f", "box.hcl"), files: map[string]string{"box.hcl": boxHCL}, ctl: live,
			before: [][]string{ak("apply", "-f", "box.hcl")},
		},
		{
			name: "configured_by_var", args: ak("apply", "-f", "sized.hcl", "-var", "mem=1024"), files: map[string]string{"sized.hcl": sizedHCL}, ctl: live,
			before: [][]string{ak("apply", "-f", "sized.hcl")},
		},
		{
			name: "var_file", args: ak("apply", "-f", "sized.hcl", "-var-file", "big.hcl", "--dry-run"), ctl: live,
			files:  map[string]string{"sized.hcl": sizedHCL, "big.hcl": "mem = 2048\n"},
			before: [][]string{ak("apply", "-f", "sized.hcl")},
		},
		{name: "namespace_flag", args: ak("apply", "-namespace", "team-a", "-f", "box.hcl", "--dry-run"), files: map[string]string{"box.hcl": boxHCL}, ctl: live},
		{name: "dry_run", args: ak("apply", "--dry-run", "-f", "box.hcl"), files: map[string]string{"box.hcl": boxHCL}, ctl: live},
		{name: "json", args: ak("apply", "-o", "json", "-f", "box.hcl"), files: map[string]string{"box.hcl": boxHCL}, ctl: live},
		{
			name: "prune_apply_set", args: ak("apply", "-f", "decl/box.hcl", "--apply-set", "team", "--prune"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl", "--apply-set", "team")},
		},
		{
			name: "prune_selector_dry_run", args: ak("apply", "-f", "decl/box.hcl", "-l", "team=infra", "--prune", "--dry-run"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl")},
		},
		{name: "wait_until_ready", args: ak("apply", "-f", "box.hcl", "--wait"), files: map[string]string{"box.hcl": boxHCL}, ctl: live},
		{
			name: "wait_fails_fast_on_conflict", args: ak("apply", "-f", "box.hcl", "--wait"), files: map[string]string{"box.hcl": boxHCL},
			ctl: &ctlOptions{foreignJob: "agentkernel-box"},
		},
		{
			name: "wait_times_out", args: ak("apply", "-f", "box.hcl", "--wait", "--timeout-wait", "1s"), files: map[string]string{"box.hcl": boxHCL},
			ctl: &ctlOptions{drivers: []string{"exec"}},
		},

		// The controller's refusals, shown as a person needs them.
		{name: "invalid_declarations_are_not_sent", args: []string{"--addr", "$DEAD", "apply", "-f", "bad.hcl"}, files: map[string]string{"bad.hcl": "sandbox \"box\" {\n  image = \"alpine\"\n  memory_mb = 0\n}\n"}},
		{
			name: "invalid_answer_points_at_source", args: ak("apply", "-f", "box.hcl"), files: map[string]string{"box.hcl": boxHCL},
			ctl: &ctlOptions{canned: &cannedAnswer{status: http.StatusBadRequest, body: `{"error":{"code":"invalid","message":"1 of the 1 objects are invalid; no object was applied.","details":[{"namespace":"default","name":"box","index":0,"source":"box.hcl:1","problems":["image \"alpine\" is not allowed here","memory_mb must be at least 64"]}]}}`}},
		},
		{name: "invalid_prune_selector", args: ak("apply", "-f", "box.hcl", "--prune", "-l", "team in (", "--dry-run"), files: map[string]string{"box.hcl": boxHCL}, ctl: live},
		{
			name: "conflict_on_expected_revision", args: ak("apply", "-f", "decl/worker.hcl", "--expect-revision", "1"), files: two, ctl: live,
			before: [][]string{ak("apply", "-f", "decl/box.hcl"), ak("apply", "-f", "decl/box.hcl", "-namespace", "other")},
		},
		{name: "refused_raw_exec", args: ak("apply", "-f", "raw.hcl"), files: map[string]string{"raw.hcl": rawHCL}, ctl: live},
		{name: "raw_exec_allowed", args: ak("apply", "-f", "raw.hcl"), files: map[string]string{"raw.hcl": rawHCL}, ctl: &ctlOptions{allowRawExec: true}},

		{name: "usage_no_paths", args: ak("apply")},
		{name: "usage_prune_without_scope", args: ak("apply", "-f", "box.hcl", "--prune")},
		{name: "usage_selector_without_prune", args: ak("apply", "-f", "box.hcl", "-l", "team=ml")},
		{name: "usage_wait_with_dry_run", args: ak("apply", "-f", "box.hcl", "--wait", "--dry-run")},
		{name: "usage_bad_timeout", args: ak("apply", "-f", "box.hcl", "--timeout", "soon")},
		{name: "help", args: []string{"apply", "--help"}},
	}
	runCases(t, "apply", cases)
}

// runCases runs cases as goldens under testdata/golden/<dir>; a usage
// error must leave standard output empty.
func runCases(t *testing.T, dir string, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runGolden(t, dir+"/"+c.name, c)
			if r.code == exitUsage && r.stdout != "" {
				t.Errorf("usage error wrote to stdout:\n%s", r.stdout)
			}
		})
	}
}
