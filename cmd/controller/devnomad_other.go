//go:build unix && !linux

package main

import "syscall"

// agentProcAttr puts the agent in a process group of its own.
func agentProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
