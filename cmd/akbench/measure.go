package main

import (
	"bufio"
	"net/http"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cpuTime is the user+system CPU time this process has used. The test
// server runs in a child process, so it is not included.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the kernel's resident-set high-water mark (VmHWM)
// of this process, so that the next peakRSS covers one scenario. It
// reports false where that is not possible; the mark then covers the
// process's whole life so far.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSS is the resident-set high-water mark in bytes: VmHWM since the
// last resetPeakRSS, or getrusage's ru_maxrss (the process's lifetime
// peak) where /proc is not available.
func peakRSS() int64 {
	if f, err := os.Open("/proc/self/status"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss << 10 // kilobytes on Linux
}

// usage is what a scenario cost the process.
type usage struct {
	wall time.Duration
	cpu  time.Duration
	// peakRSS is a high-water mark (see peakRSS); perScenario says whether
	// it was reset when the scenario began.
	peakRSS     int64
	perScenario bool
}

// meter measures one scenario: wall time, CPU time and peak RSS.
type meter struct {
	start       time.Time
	cpu0        time.Duration
	perScenario bool
}

func startMeter() meter {
	// Hand memory freed by earlier scenarios back to the OS first, so the
	// high-water mark starts near what this scenario inherits in use.
	debug.FreeOSMemory()
	reset := resetPeakRSS()
	return meter{start: time.Now(), cpu0: cpuTime(), perScenario: reset}
}

func (m meter) stop() usage {
	return usage{wall: time.Since(m.start), cpu: cpuTime() - m.cpu0, peakRSS: peakRSS(), perScenario: m.perScenario}
}

// requestCounter counts Nomad requests by "METHOD /endpoint", fed by
// nomad.Config.OnRequest on the client side, so it sees exactly one
// client's requests, against the test server and a real cluster alike.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func newRequestCounter() *requestCounter { return &requestCounter{counts: make(map[string]int)} }

func (c *requestCounter) observe(method, endpoint string, _ int, _ time.Duration) {
	c.mu.Lock()
	c.counts[method+" "+endpoint]++
	c.mu.Unlock()
}

// take returns the counts so far and zeroes them.
func (c *requestCounter) take() requestCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := requestCounts(c.counts)
	c.counts = make(map[string]int)
	return out
}

// requestCounts are requests by "METHOD /endpoint".
type requestCounts map[string]int

func (rc requestCounts) total() int {
	n := 0
	for _, v := range rc {
		n += v
	}
	return n
}

// writes counts the requests that change Nomad's state. A plan is a PUT
// that writes nothing; the controller does not plan while reconciling.
func (rc requestCounts) writes() int {
	n := 0
	for k, v := range rc {
		method, path, _ := strings.Cut(k, " ")
		if method == http.MethodGet || method == http.MethodHead || strings.HasSuffix(path, "/plan") {
			continue
		}
		n += v
	}
	return n
}

func (rc requestCounts) reads() int { return rc.total() - rc.writes() }

func (rc requestCounts) keys() []string {
	ks := make([]string, 0, len(rc))
	for k := range rc {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
