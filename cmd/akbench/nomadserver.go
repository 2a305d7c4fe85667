package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
)

// testDrivers are the drivers the test server's node reports healthy:
// every driver -driver accepts, as `controller -dev` offers.
var testDrivers = []string{"docker", "exec", "raw_exec", "java", "mock_driver"}

// serveNomad is the child process mode: run the Nomad test server on addr,
// print its URL on stdout, and serve until stdin closes or ctx ends (the
// parent closes stdin, or sends SIGTERM).
func serveNomad(ctx context.Context, addr string, schedDelay time.Duration, instant bool, stdin io.Reader, stdout io.Writer) error {
	srv := nomadtest.New(nomadtest.Options{Addr: addr, SchedulingDelay: schedDelay, Instant: instant, Drivers: testDrivers})
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start the Nomad test server: %w", err)
	}
	defer srv.Close()
	fmt.Fprintln(stdout, srv.URL())
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	return nil
}

// testServer is a Nomad test server running in a child process.
type testServer struct {
	url   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	hc    *http.Client
}

// startTestServer re-executes akbench in -serve-nomad mode on a free
// loopback port and waits for it to print its URL.
func startTestServer(ctx context.Context, schedDelay time.Duration, instant bool) (*testServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the akbench executable: %w", err)
	}
	cmd := exec.Command(self, "-serve-nomad", "127.0.0.1:0", "-sched-delay", schedDelay.String(), "-instant="+strconv.FormatBool(instant))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the Nomad test server process: %w", err)
	}
	ts := &testServer{cmd: cmd, stdin: stdin, hc: &http.Client{Timeout: 30 * time.Second}}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case u, ok := <-line:
		if !ok || !strings.HasPrefix(u, "http://") {
			ts.close()
			return nil, fmt.Errorf("start the Nomad test server process: it printed %q, not its URL", u)
		}
		ts.url = u
	case <-time.After(30 * time.Second):
		ts.close()
		return nil, fmt.Errorf("start the Nomad test server process: no URL within 30s")
	case <-ctx.Done():
		ts.close()
		return nil, ctx.Err()
	}
	return ts, nil
}

// close ends the child: closing its stdin asks it to stop; it is killed
// if it has not within five seconds.
func (ts *testServer) close() {
	_ = ts.stdin.Close()
	done := make(chan struct{})
	go func() { _ = ts.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = ts.cmd.Process.Kill()
		<-done
	}
}

// requests reads the server's request counters, by "METHOD /route": every
// client's requests, akbench's own included.
func (ts *testServer) requests(ctx context.Context) (map[string]int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url+"/_fault/requests", nil)
	if err != nil {
		return nil, err
	}
	resp, err := ts.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read the test server's request counts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read the test server's request counts: status %s", resp.Status)
	}
	var counts map[string]int
	if err := json.NewDecoder(resp.Body).Decode(&counts); err != nil {
		return nil, fmt.Errorf("read the test server's request counts: %w", err)
	}
	return counts, nil
}

// resetRequests zeroes the server's request counters.
func (ts *testServer) resetRequests(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, ts.url+"/_fault/requests", nil)
	if err != nil {
		return err
	}
	resp, err := ts.hc.Do(req)
	if err != nil {
		return fmt.Errorf("reset the test server's request counts: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("reset the test server's request counts: status %s", resp.Status)
	}
	return nil
}
