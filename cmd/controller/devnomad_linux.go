//go:build linux

package main

import (
	"log/slog"
	"os"
	"sort"
	"strings"
	"syscall"
)

// agentProcAttr puts the agent in a process group of its own, and has the
// kernel stop it should the controller die without stopping it.
func agentProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// unmountUnder detaches what is still mounted under dir (a task's secrets
// directory the agent did not unmount), deepest first, so that the
// directory can be removed.
func unmountUnder(dir string, log *slog.Logger) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			log.Warn("unmount under the dev agent's directory", "path", p, "err", err)
		}
	}
}
