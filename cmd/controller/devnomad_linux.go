//go:build linux

package main

import "syscall"

// agentProcAttr puts the agent in a process group of its own, and has the
// kernel stop it should the controller die without stopping it.
func agentProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
