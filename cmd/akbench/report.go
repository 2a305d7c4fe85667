package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Baseline names, reported after the scenarios.
const (
	baseRaw        = "raw"
	baseImperative = "imperative"
)

var reportOrder = append(slices.Clone(allScenarios), baseRaw, baseImperative)

// row is one measured figure. Baseline and Ratio (Value / Baseline) are
// set where a baseline was measured for the figure.
type row struct {
	Scenario string   `json:"scenario"`
	N        int      `json:"n"`
	Metric   string   `json:"metric"`
	Value    float64  `json:"value"`
	Baseline *float64 `json:"baseline,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
}

// runContext says where and how the figures were measured.
type runContext struct {
	Start      time.Time `json:"start"`
	GoVersion  string    `json:"goVersion"`
	OS         string    `json:"os"`
	Arch       string    `json:"arch"`
	CPUs       int       `json:"cpus"`
	CPUModel   string    `json:"cpuModel,omitempty"`
	Nomad      string    `json:"nomad"`
	SchedDelay string    `json:"schedDelay,omitempty"`
	Driver     string    `json:"driver"`
	Workers    int       `json:"workers"`
	Resync     string    `json:"resync"`
	WriteRate  float64   `json:"writeRate"`
	WriteBurst int       `json:"writeBurst"`
	Seed       uint64    `json:"seed"`
	Notes      []string  `json:"notes"`
}

type report struct {
	Context  runContext `json:"context"`
	Rows     []row      `json:"rows"`
	Failures []string   `json:"failures"`
}

func (r *report) add(scenario string, n int, metric string, value float64) {
	r.Rows = append(r.Rows, row{Scenario: scenario, N: n, Metric: metric, Value: value})
}

// addVs adds a figure with its baseline and their ratio.
func (r *report) addVs(scenario string, n int, metric string, value, baseline float64) {
	rw := row{Scenario: scenario, N: n, Metric: metric, Value: value, Baseline: &baseline}
	if baseline != 0 {
		ratio := value / baseline
		rw.Ratio = &ratio
	}
	r.Rows = append(r.Rows, rw)
}

func (r *report) fail(scenario string, n int, format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf("%s N=%d: %s", scenario, n, fmt.Sprintf(format, args...)))
}

// addUsage adds the CPU and memory rows of a scenario.
func (r *report) addUsage(scenario string, n int, u usage) {
	r.add(scenario, n, "controller CPU (s)", u.cpu.Seconds())
	rss := "peak RSS, process high-water mark since start (MB)"
	if u.perScenario {
		rss = "peak RSS, high-water mark during scenario (MB)"
	}
	r.add(scenario, n, rss, float64(u.peakRSS)/(1<<20))
}

// addRequests adds one row per Nomad endpoint, scaled by scale (1 for
// counts, per minute for rates).
func (r *report) addRequests(scenario string, n int, prefix string, rc requestCounts, scale float64) {
	for _, k := range rc.keys() {
		r.add(scenario, n, prefix+" "+k, float64(rc[k])*scale)
	}
}

// sorted returns the rows by scenario (in report order), then N, keeping
// each scenario's rows in the order they were added.
func (r *report) sorted() []row {
	rows := slices.Clone(r.Rows)
	slices.SortStableFunc(rows, func(a, b row) int {
		if d := slices.Index(reportOrder, a.Scenario) - slices.Index(reportOrder, b.Scenario); d != 0 {
			return d
		}
		return a.N - b.N
	})
	return rows
}

func (r *report) writeTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SCENARIO\tN\tMETRIC\tVALUE\tBASELINE\tRATIO\t")
	for _, rw := range r.sorted() {
		base, ratio := "-", "-"
		if rw.Baseline != nil {
			base = formatValue(*rw.Baseline)
		}
		if rw.Ratio != nil {
			ratio = formatValue(*rw.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t\n", rw.Scenario, rw.N, rw.Metric, formatValue(rw.Value), base, ratio)
	}
	tw.Flush()
	c := r.Context
	fmt.Fprintf(w, "\n%s/%s, %d CPUs (%s), %s; Nomad: %s", c.OS, c.Arch, c.CPUs, cmpOr(c.CPUModel, "unknown model"), c.GoVersion, c.Nomad)
	if c.SchedDelay != "" {
		fmt.Fprintf(w, ", scheduling delay %s", c.SchedDelay)
	}
	limit := "no Nomad write limit"
	if c.WriteRate > 0 {
		limit = fmt.Sprintf("Nomad writes limited to %g/s, burst %d", c.WriteRate, c.WriteBurst)
	}
	fmt.Fprintf(w, "; driver %s, %d workers, full resync every %s, %s\n", c.Driver, c.Workers, cmpOr(c.Resync, "10m0s"), limit)
	for _, n := range c.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func formatValue(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e9 && v > -1e9:
		return strconv.FormatInt(int64(v), 10)
	case v >= 100 || v <= -100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func (r *report) writeJSONFile(path string) error {
	out := *r
	out.Rows = r.sorted()
	if out.Failures == nil {
		out.Failures = []string{}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// machineContext describes this machine for the report.
func machineContext() runContext {
	c := runContext{Start: time.Now().UTC(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				c.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return c
}
