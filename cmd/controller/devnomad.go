package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// devAgentConfig is the agent configuration -dev gives `nomad agent
// -dev`: loopback only, its own ports and data dir, raw_exec on beside
// exec, no update check, and the cloud fingerprinters off, which would
// otherwise wait for metadata services that a laptop does not have.
const devAgentConfig = `data_dir             = %q
bind_addr            = "127.0.0.1"
disable_update_check = true
log_level            = "INFO"

advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}

ports {
  http = %d
  rpc  = %d
  serf = %d
}

client {
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
`

// devAgentReadyTimeout bounds the wait for the agent's node to be ready.
const devAgentReadyTimeout = 2 * time.Minute

// devAgent is a `nomad agent -dev` that -dev started, and stops.
type devAgent struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	dir     string
	addr    string
	version string
	log     *slog.Logger
}

// findNomad resolves -dev-nomad-bin, or nomad on PATH; "" when there is none.
func findNomad(bin string) (string, error) {
	if bin != "" {
		p, err := exec.LookPath(bin)
		if err != nil {
			return "", fmt.Errorf("-dev-nomad-bin %s: %w", bin, err)
		}
		return p, nil
	}
	p, err := exec.LookPath("nomad")
	if err != nil {
		return "", nil
	}
	return p, nil
}

// startDevAgent runs bin as `nomad agent -dev` on free loopback ports (or
// the HTTP port of addr, when given) with a temporary data dir, and waits
// until its node is ready.
func startDevAgent(ctx context.Context, bin, addr string, log *slog.Logger) (*devAgent, error) {
	version := nomadVersion(ctx, bin)
	dir, err := os.MkdirTemp("", "agentkernel-dev-nomad-")
	if err != nil {
		return nil, err
	}
	a := &devAgent{dir: dir, version: version, log: log, exited: make(chan struct{})}
	ports, err := freePorts(3)
	if err != nil {
		a.removeDir()
		return nil, err
	}
	if addr != "" {
		_, port, err := net.SplitHostPort(addr)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p <= 0 {
			a.removeDir()
			return nil, fmt.Errorf("-dev-nomad-addr %q: want host:port with a port for the agent's HTTP API", addr)
		} else {
			ports[0] = p
		}
	}
	conf := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(conf, fmt.Appendf(nil, devAgentConfig, filepath.Join(dir, "data"), ports[0], ports[1], ports[2]), 0o600); err != nil {
		a.removeDir()
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		a.removeDir()
		return nil, err
	}
	defer logFile.Close()
	a.addr = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	a.cmd = exec.Command(bin, "agent", "-dev", "-config", conf)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.Env = append(os.Environ(), "NOMAD_ADDR="+a.addr)
	a.cmd.SysProcAttr = agentProcAttr()
	if err := a.cmd.Start(); err != nil {
		a.removeDir()
		return nil, fmt.Errorf("start %s agent -dev: %w", bin, err)
	}
	go func() {
		_ = a.cmd.Wait()
		close(a.exited)
	}()
	log.Info("started nomad agent -dev", "bin", bin, "version", version, "addr", a.addr, "pid", a.cmd.Process.Pid, "log", logFile.Name())
	if err := a.waitReady(ctx); err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

// nomadVersion is the first line of `nomad version`, or "".
func nomadVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// waitReady polls the agent until a node of its is ready, failing early
// with its log's last lines when it exits.
func (a *devAgent) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, devAgentReadyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var nodes []struct{ Status string }
		if resp, err := hc.Get(a.addr + "/v1/nodes"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&nodes)
			resp.Body.Close()
			for _, n := range nodes {
				if n.Status == "ready" {
					return nil
				}
			}
		}
		select {
		case <-a.exited:
			return fmt.Errorf("nomad agent -dev exited before its node was ready:\n%s", a.logTail(20))
		case <-ctx.Done():
			return fmt.Errorf("nomad agent -dev: no ready node after %s (%w):\n%s", devAgentReadyTimeout, ctx.Err(), a.logTail(20))
		case <-tick.C:
		}
	}
}

// stop purges the jobs the agent runs (so that their tasks end with it,
// not outlive it), stops the agent and its process group, and removes its
// directory.
func (a *devAgent) stop() {
	select {
	case <-a.exited:
	default:
		a.purgeJobs()
		signalAgent(a.cmd, false)
		select {
		case <-a.exited:
		case <-time.After(15 * time.Second):
			a.log.Warn("nomad agent -dev did not stop within 15s of SIGTERM; killing it")
			signalAgent(a.cmd, true)
			<-a.exited
		}
		a.log.Info("stopped nomad agent -dev")
	}
	a.removeDir()
}

// purgeJobs deregisters and purges every job, then waits a little for
// their allocations to stop.
func (a *devAgent) purgeJobs() {
	hc := &http.Client{Timeout: 5 * time.Second}
	var jobs []struct{ ID, Namespace string }
	resp, err := hc.Get(a.addr + "/v1/jobs?namespace=*")
	if err != nil {
		return
	}
	_ = json.NewDecoder(resp.Body).Decode(&jobs)
	resp.Body.Close()
	for _, j := range jobs {
		req, _ := http.NewRequest(http.MethodDelete, a.addr+"/v1/job/"+j.ID+"?purge=true&namespace="+j.Namespace, nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(jobs) > 0 && time.Now().Before(deadline) {
		var allocs []struct{ ClientStatus string }
		resp, err := hc.Get(a.addr + "/v1/allocations?namespace=*")
		if err != nil {
			return
		}
		_ = json.NewDecoder(resp.Body).Decode(&allocs)
		resp.Body.Close()
		running := 0
		for _, al := range allocs {
			if al.ClientStatus == "running" || al.ClientStatus == "pending" {
				running++
			}
		}
		if running == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Garbage-collect the stopped allocations now: the client then
	// removes their directories and unmounts what it mounted there
	// (secrets, for instance), which it would otherwise keep.
	req, _ := http.NewRequest(http.MethodPut, a.addr+"/v1/client/gc", nil)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
	}
}

func (a *devAgent) removeDir() {
	unmountUnder(a.dir, a.log)
	if err := os.RemoveAll(a.dir); err != nil {
		a.log.Warn("remove the dev agent's directory", "dir", a.dir, "err", err)
	}
}

// logTail is the last n lines of the agent's log.
func (a *devAgent) logTail(n int) string {
	b, err := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// freePorts finds n free loopback TCP ports. They are free when looked at;
// the agent binds them a moment later.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port for the dev agent: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
