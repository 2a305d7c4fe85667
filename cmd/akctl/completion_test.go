package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh"} {
		t.Run(shell, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{"completion", shell}, &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr})
			if code != exitOK || stderr.Len() > 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, &stderr)
			}
			script := stdout.String()
			if script == "" {
				t.Fatal("empty script")
			}
			for _, c := range commands() {
				if !strings.Contains(script, c.name) {
					t.Errorf("the %s script does not mention %s", shell, c.name)
				}
			}
			for _, f := range []string{"--addr", "-dry-run", "-prune", "-apply-set", "-for", "-watch", "-timeout-wait"} {
				if !strings.Contains(script, f) {
					t.Errorf("the %s script does not mention %s", shell, f)
				}
			}
		})
	}
	runCases(t, "completion", []cliCase{
		{name: "usage_unknown_shell", args: []string{"completion", "fish"}},
		{name: "usage_no_shell", args: []string{"completion"}},
		{name: "help", args: []string{"completion", "-h"}},
	})
}
