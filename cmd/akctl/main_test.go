package main

import "testing"

func TestMainCommand(t *testing.T) {
	cases := []cliCase{
		{name: "no_command_prints_usage_to_stderr_and_exits_2", args: []string{}},
		{name: "help_prints_usage_to_stdout", args: []string{"help"}},
		{name: "dash_h_prints_usage_to_stdout", args: []string{"-h"}},
		{name: "double_dash_help_prints_usage_to_stdout", args: []string{"--help"}},
		{name: "help_with_a_command_prints_its_usage", args: []string{"help", "validate"}},
		{name: "unknown_command_exits_2", args: []string{"frobnicate", "examples/"}},
		{name: "unknown_flag_before_command_exits_2", args: []string{"-x", "validate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runGolden(t, "akctl/"+c.name, c)
		})
	}
}
