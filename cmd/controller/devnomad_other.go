//go:build unix && !linux

package main

import (
	"log/slog"
	"syscall"
)

// agentProcAttr puts the agent in a process group of its own.
func agentProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// unmountUnder is Linux's; elsewhere the agent's mounts are its own.
func unmountUnder(string, *slog.Logger) {}
