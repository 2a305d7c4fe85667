//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// signalAgent signals the agent's whole process group: the agent, and
// what it started that did not leave the group.
func signalAgent(cmd *exec.Cmd, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
}
