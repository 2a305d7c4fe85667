// Command akbench measures the controller: how fast it converges a fleet
// of sandboxes, what it costs Nomad and the machine, and how that compares
// with registering the same jobs directly.
//
// The controller runs inside akbench, assembled as cmd/controller
// assembles it (store, Nomad client, reconciler, queue, watcher, loop and
// the HTTP API on a loopback listener), so that its CPU time and peak RSS
// can be read from the process. The Nomad test server, when used, runs in
// a child process (akbench itself in a hidden -serve-nomad mode), so its
// work is not counted as the controller's.
//
// Usage:
//
//	go run ./cmd/akbench                                # N=100,1000, every scenario, test server
//	go run ./cmd/akbench -n 100 -idle 10s -json bench.json
//	go run ./cmd/akbench -n 10000 -scenarios converge,apply
//	NOMAD_ADDR=http://127.0.0.1:4646 go run ./cmd/akbench -nomad-addr "$NOMAD_ADDR" -driver raw_exec -n 100
//
// A make target runs it as
//
//	bench-controller:
//		go run ./cmd/akbench -n 100,1000 -json bench-controller.json
//
// Scenarios, each run for every N:
//
//	converge  apply N sandboxes through POST /v1/apply to an empty store; time until all are Running
//	reapply   apply the same N again and restart the controller loop (a full resync); Nomad writes must be 0
//	drift     -drift-trials times, stop, purge or change one job behind the controller's back; time to repair
//	idle      N converged and nothing changing for -idle: Nomad requests and CPU per minute
//	apply     the API and the store alone (no reconciler, no Nomad): sandboxes accepted per second
//	claim     once, not per N: a pool of -pool-size fills from empty; claims at 1, 10 and 100/s, as many
//	          as the pool holds each, timed request to answer, against a cold apply until Ready
//
// Baselines, measured in the same run against the same kind of Nomad:
//
//	raw         the same N rendered jobs registered directly by 8 goroutines, waiting on the job list's summaries
//	imperative  per sandbox, register then poll its allocations (50 ms doubling to 500 ms), 8 in parallel
//
// Without -nomad-addr every phase gets a fresh test server, so each starts
// from an empty cluster. With -nomad-addr (and the usual NOMAD_TOKEN,
// NOMAD_NAMESPACE, NOMAD_CACERT... settings) the jobs are created in the
// current namespace with the smallest resources a sandbox may ask for,
// and every job akbench created is purged at the end of each phase.
//
// The table goes to stdout; -json FILE also writes it as JSON. akbench
// exits 1 if a check fails (a reapply that writes to Nomad, a sandbox that
// never converges, a drift that is not repaired).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "akbench: %v\n", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// Scenario names, in the order they are reported.
const (
	scenConverge = "converge"
	scenReapply  = "reapply"
	scenDrift    = "drift"
	scenIdle     = "idle"
	scenApply    = "apply"
	scenClaim    = "claim"
)

var allScenarios = []string{scenConverge, scenReapply, scenDrift, scenIdle, scenApply, scenClaim}

// config is the parsed command line.
type config struct {
	sizes       []int
	scenarios   map[string]bool
	baselines   map[string]bool
	idle        time.Duration
	driftTrials int
	schedDelay  time.Duration
	instant     bool
	workers     int
	resync      time.Duration
	writeRate   float64
	writeBurst  int
	nomadAddr   string
	driver      string
	seed        uint64
	jsonPath    string
	timeout     time.Duration
	verbose     bool
	cpuProfile  string
	poolSize    int
	// serveNomad, when set, turns akbench into the Nomad test server.
	serveNomad string
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("akbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("n", "100,1000", "comma-separated fleet sizes (each at most 10000)")
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run")
	bases := fs.String("baselines", baseRaw+","+baseImperative, "comma-separated baselines measured before converge, or none")
	fs.DurationVar(&c.idle, "idle", 60*time.Second, "how long the idle scenario watches a converged fleet")
	fs.IntVar(&c.driftTrials, "drift-trials", 100, "out-of-band changes made by the drift scenario")
	fs.DurationVar(&c.schedDelay, "sched-delay", 0, "test server: how long after its plan an allocation runs; 0 is a real agent's timing (planned 5ms after the register, running 450ms after that)")
	fs.BoolVar(&c.instant, "instant", false, "test server: place and run every allocation within its register, as no real agent does")
	fs.IntVar(&c.workers, "workers", 8, "parallel reconciles (the default is cmd/controller's)")
	fs.DurationVar(&c.resync, "resync", 10*time.Minute, "period of the controller's full resync (the default is cmd/controller's); an idle longer than it includes one")
	fs.Float64Var(&c.writeRate, "write-rate", 50, "controller Nomad writes per second, 0 for no limit (the default is cmd/controller's)")
	fs.IntVar(&c.writeBurst, "write-burst", 100, "controller Nomad write burst (the default is cmd/controller's)")
	fs.StringVar(&c.nomadAddr, "nomad-addr", "", "a real Nomad to benchmark against; empty starts the test server in a child process")
	fs.StringVar(&c.driver, "driver", spec.DriverExec, "sandbox task driver: raw_exec, exec or docker")
	fs.Uint64Var(&c.seed, "seed", 1, "seed for the drift scenario's choices")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "give up on any single wait after this long")
	fs.BoolVar(&c.verbose, "v", false, "log the controller's info lines to stderr")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (the test server excluded) to this file")
	fs.IntVar(&c.poolSize, "pool-size", 50, "the claim scenario's pool size (it runs once, not for each -n)")
	fs.StringVar(&c.serveNomad, "serve-nomad", "", "")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: akbench [flags]\n\nBenchmarks the controller against the Nomad test server or a real Nomad.\n\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name == "serve-nomad" {
				return // internal: the child process mode
			}
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(fs.Output(), "  -%s\n    \t%s", strings.TrimSpace(f.Name+" "+name), usage)
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				fmt.Fprintf(fs.Output(), " (default %s)", f.DefValue)
			}
			fmt.Fprintln(fs.Output())
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, errUsage
	}
	if fs.NArg() > 0 {
		return c, usagef(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if c.serveNomad != "" {
		return c, nil
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 10000 {
			return c, usagef(stderr, "-n: %q is not a size between 1 and 10000", s)
		}
		c.sizes = append(c.sizes, n)
	}
	c.scenarios = make(map[string]bool)
	for _, s := range strings.Split(*scen, ",") {
		s = strings.TrimSpace(s)
		if !contains(allScenarios, s) {
			return c, usagef(stderr, "-scenarios: unknown scenario %q; want some of %s", s, strings.Join(allScenarios, ","))
		}
		c.scenarios[s] = true
	}
	c.baselines = make(map[string]bool)
	if *bases != "none" {
		for _, s := range strings.Split(*bases, ",") {
			s = strings.TrimSpace(s)
			if s != baseRaw && s != baseImperative {
				return c, usagef(stderr, "-baselines: unknown baseline %q; want some of %s,%s, or none", s, baseRaw, baseImperative)
			}
			c.baselines[s] = true
		}
	}
	switch {
	case !contains([]string{spec.DriverRawExec, spec.DriverExec, spec.DriverDocker}, c.driver):
		return c, usagef(stderr, "-driver: %q must be raw_exec, exec or docker", c.driver)
	case c.workers < 1 || c.workers > 256:
		return c, usagef(stderr, "-workers: %d must be between 1 and 256", c.workers)
	case c.driftTrials < 1:
		return c, usagef(stderr, "-drift-trials: %d must be at least 1", c.driftTrials)
	case c.resync < time.Second:
		return c, usagef(stderr, "-resync: %s must be at least 1s", c.resync)
	case c.idle <= 0:
		return c, usagef(stderr, "-idle: %s must be positive", c.idle)
	case c.poolSize < 1 || c.poolSize > spec.MaxPoolSize:
		return c, usagef(stderr, "-pool-size: %d must be between 1 and %d", c.poolSize, spec.MaxPoolSize)
	case c.writeRate < 0:
		return c, usagef(stderr, "-write-rate: %g must be 0 (no limit) or more", c.writeRate)
	}
	return c, nil
}

func usagef(stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, "akbench: "+format+"\n", args...)
	return errUsage
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// run is the whole program; main only maps its error to an exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	if cfg.serveNomad != "" {
		return serveNomad(ctx, cfg.serveNomad, cfg.schedDelay, cfg.instant, stdin, stdout)
	}
	b, err := newBench(cfg, stderr)
	if err != nil {
		return err
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep := b.run(ctx)
	rep.writeTable(stdout)
	if cfg.jsonPath != "" {
		if err := rep.writeJSONFile(cfg.jsonPath); err != nil {
			return err
		}
	}
	if len(rep.Failures) > 0 {
		for _, f := range rep.Failures {
			fmt.Fprintf(stderr, "akbench: FAILED: %s\n", f)
		}
		return fmt.Errorf("%d check(s) failed", len(rep.Failures))
	}
	return nil
}
