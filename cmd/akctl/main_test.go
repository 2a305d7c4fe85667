package main

import (
	"context"
	"os"
	"syscall"
	"testing"
)

func TestMainCommand(t *testing.T) {
	cases := []cliCase{
		{name: "no_command_prints_usage_to_stderr_and_exits_2", args: []string{}},
		{name: "help_prints_usage_to_stdout", args: []string{"help"}},
		{name: "dash_h_prints_usage_to_stdout", args: []string{"-h"}},
		{name: "double_dash_help_prints_usage_to_stdout", args: []string{"--help"}},
		{name: "help_with_a_command_prints_its_usage", args: []string{"help", "validate"}},
		{name: "unknown_command_exits_2", args: []string{"frobnicate", "examples/"}},
		{name: "unknown_command_suggests_the_nearest", args: []string{"gte"}},
		{name: "unknown_command_names_a_look_alike", args: []string{"g\u0435t"}},
		{name: "unknown_flag_before_command_exits_2", args: []string{"-x", "validate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runGolden(t, "akctl/"+c.name, c)
		})
	}
}

func TestInterruptCodeIsTheShells(t *testing.T) {
	tests := []struct {
		name  string
		cause error
		want  int
	}{
		{"Ctrl-C", signalled{os.Interrupt}, 130},
		{"SIGTERM", signalled{syscall.SIGTERM}, 143},
		{"cancelled without a signal", nil, 130},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(t.Context())
			cancel(tt.cause)
			if got := interruptCode(ctx); got != tt.want {
				t.Errorf("exit code %d, want %d", got, tt.want)
			}
		})
	}
}
