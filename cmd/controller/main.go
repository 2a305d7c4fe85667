// Command controller keeps declared agentkernel sandboxes running as Nomad
// jobs and serves the API that akctl uses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/buildinfo"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "stopping: finishing in-flight work (signal again to exit at once)")
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "exiting at once")
		os.Exit(1)
	}()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "controller: %v\n", err)
		}
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(1)
	}
}

// run is the whole controller; main only maps its error to an exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	level, _ := parseLevel(cfg.LogLevel)
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)

	var devNomad string // what the banner says of -dev's Nomad
	if cfg.Dev {
		stopDev, what, err := startDev(ctx, &cfg, log)
		if err != nil {
			return err
		}
		defer stopDev()
		devNomad = what
	}

	st, err := store.Open(cfg.DataDir, store.Options{Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("store open", "path", st.Path(), "store_id", st.StoreID())

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := reconcile.NewMetrics(reg)

	var reachable atomic.Bool
	nomadToken := ""
	if cfg.Nomad.TokenFile != "" {
		if nomadToken, err = readSecretFile(cfg.Nomad.TokenFile); err != nil {
			return err
		}
	}
	nc, err := nomad.NewClient(nomad.Config{
		Address: cfg.Nomad.Address, Token: nomadToken, Namespace: cfg.Nomad.Namespace, Region: cfg.Nomad.Region,
		CACert: cfg.Nomad.CACert, ClientCert: cfg.Nomad.ClientCert, ClientKey: cfg.Nomad.ClientKey,
		RequestTimeout: cfg.requestTimeout(),
		OnRequest: func(method, endpoint string, code int, d time.Duration) {
			// Any answer, even an error status, means Nomad is reachable.
			reachable.Store(code != 0)
			metrics.NomadRequest(method, endpoint, code, d)
		},
	})
	if err != nil {
		return err
	}
	defaultNS := cfg.Policy.DefaultNamespace
	if defaultNS == "" {
		defaultNS = nc.Namespace()
	}

	var limiter *reconcile.WriteLimiter
	if cfg.Nomad.WriteRate > 0 {
		limiter = reconcile.NewWriteLimiter(cfg.Nomad.WriteRate, cfg.Nomad.WriteBurst)
	}
	rcfg := reconcile.Config{
		Render: nomad.RenderOptions{
			Owner:              st.StoreID(),
			DefaultDatacenters: cfg.Policy.DefaultDatacenters,
			AllowRawExec:       contains(cfg.Policy.AllowedDrivers, spec.DriverRawExec),
		},
		AllowedDrivers: cfg.Policy.AllowedDrivers,
		MaxVCPUs:       cfg.Policy.MaxVCPUs,
		MaxMemoryMB:    cfg.Policy.MaxMemoryMB,
		AdoptOwners:    cfg.HA.AdoptOwners,
		Metrics:        metrics,
		WriteLimiter:   limiter,
	}
	var watcherNow atomic.Pointer[nomad.Watcher]
	var cacheNow atomic.Pointer[nomad.Cache]
	registerWatchMetrics(reg, &watcherNow, &cacheNow)
	// loop is the reconcile loop the API's controller routes reach: the
	// current term's with -ha.
	var loop loopRef
	// newController builds the reconcile loop for the owner ID the jobs
	// carry: the store's alone, the replicated copy's with -ha.
	newController := func(owner string, allowGC bool) *reconcile.Controller {
		c := rcfg
		c.Render.Owner = owner
		// Reconciles read Nomad's state from the watch-fed cache; each
		// term starts its own from the term's first list.
		cache := nomad.NewCache(owner)
		cacheNow.Store(cache)
		c.Cache = cache
		rec := reconcile.NewReconciler(st, nc, c, log, nil)
		watcher := nomad.NewWatcher(nc, nomad.WatchOptions{Owner: owner, Logger: log, Cache: cache})
		watcherNow.Store(watcher)
		var holds reconcile.GCHoldStore
		if !cfg.HA.Enabled {
			// Alone, the store is the only record of what was declared:
			// a hold on garbage collection is kept in it until an
			// operator confirms. With -ha the replicated copy decides.
			holds = st
		}
		ctrl := reconcile.New(reconcile.Options{
			Reconciler:   rec,
			Queue:        reconcile.NewQueue(reconcile.QueueOptions{Metrics: metrics.Queue()}),
			Store:        st,
			Watcher:      watcher,
			Owner:        owner,
			Workers:      cfg.Workers,
			ResyncPeriod: cfg.resyncPeriod(),
			DisableGC:    !allowGC,
			GCHolds:      holds,
			// A reconcile makes a handful of bounded Nomad calls; one
			// that takes ten times the bound is stuck.
			StallAfter: max(5*time.Minute, 10*cfg.requestTimeout()),
			Logger:     log,
			Metrics:    metrics,
		})
		loop.ctrl.Store(ctrl)
		return ctrl
	}

	token := ""
	if cfg.TokenFile != "" {
		if token, err = readSecretFile(cfg.TokenFile); err != nil {
			return err
		}
	}
	ln, where, err := listen(cfg.Listen, cfg.DataDir, token != "")
	if err != nil {
		return err
	}
	opts := apiserver.Options{
		Store:            st,
		Policy:           rcfg,
		Planner:          nomad.Planner{Client: nc, Render: rcfg.Render, AdoptOwners: rcfg.AdoptOwners},
		Token:            token,
		Logger:           log,
		Registerer:       reg,
		Gatherer:         reg,
		Version:          buildinfo.Version(version),
		DefaultNamespace: defaultNS,
		Inside: sandboxio.New(sandboxio.Options{
			Nomad: nc, Logger: log,
			MaxOutputBytes: cfg.Exec.MaxOutputBytes, MaxFileBytes: cfg.Exec.MaxFileBytes,
			Sessions: cfg.Exec.Sessions, SessionsPerSandbox: cfg.Exec.SessionsPerSandbox,
		}),
	}
	var runLoop func(ctx context.Context) error
	if cfg.HA.Enabled {
		node, err := newNode(cfg, log, nc, nomadToken, st, where, newController)
		if err != nil {
			ln.Close()
			return err
		}
		opts.Store = node.Store(st)
		opts.Cluster = node
		opts.Policy = policies{rcfg, node.replica}
		opts.Planner = ownerPlanner{nc: nc, render: rcfg.Render, adopt: rcfg.AdoptOwners, owner: node.Owner}
		opts.Ready = func() (bool, string) {
			if !reachable.Load() {
				return false, "Nomad is unreachable"
			}
			return node.Ready()
		}
		loop.leading = func() bool { _, ok := node.Leading(); return ok }
		runLoop = node.Run
	} else {
		ctrl := newController(st.StoreID(), true)
		opts.Ready = func() (bool, string) {
			switch {
			case !ctrl.InitialListDone():
				return false, "waiting for the initial list of owned Nomad jobs"
			case !reachable.Load():
				return false, "Nomad is unreachable"
			}
			return true, ""
		}
		runLoop = ctrl.Run
	}
	opts.Controller = &loop
	opts.Fresh = loop.Observed
	apiHandler := apiserver.NewServer(opts)
	srv := &http.Server{Handler: apiHandler, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("API listening", "address", where)
	if cfg.Dev {
		printDevBanner(stdout, cfg, where, devNomad)
	}

	ctrlErr := make(chan error, 1)
	go func() { ctrlErr <- runLoop(ctx) }()

	if cfg.Dev && cfg.DevApply != "" {
		go devApply(ctx, log, stdout, st, cfg.DevApply, defaultNS)
	}

	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve API: %w", err)
	case err = <-ctrlErr:
	case <-ctx.Done():
		err = <-ctrlErr
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	apiHandler.Close() // ends open watch streams, which Shutdown would wait for
	_ = srv.Shutdown(shutdownCtx)
	if ctx.Err() != nil {
		log.Info("stopped")
		return nil
	}
	return err
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// listen opens the API listener. Without an explicit address it is a unix
// socket in the data dir, mode 0600: only its owner can talk to it. A TCP
// listener beyond loopback refuses to start without a token.
func listen(addr, dataDir string, hasToken bool) (net.Listener, string, error) {
	if addr == "" {
		addr = filepath.Join(dataDir, "controller.sock")
	}
	if isUnixPath(addr) {
		path := strings.TrimPrefix(addr, "unix://")
		if err := removeStaleSocket(path); err != nil {
			return nil, "", err
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, "", fmt.Errorf("listen on %s: %w", path, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			return nil, "", fmt.Errorf("restrict socket %s: %w", path, err)
		}
		return ln, "unix://" + path, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen address %q: want host:port or a socket path: %w", addr, err)
	}
	if !hasToken && !isLoopback(host) {
		return nil, "", fmt.Errorf("refusing to serve the API on %s without a token: set -token-file, or listen on 127.0.0.1 or a unix socket", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, "http://" + ln.Addr().String(), nil
}

func isUnixPath(addr string) bool {
	return strings.HasPrefix(addr, "unix://") || strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "./")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// removeStaleSocket removes a socket file left by a controller that died,
// but never another kind of file, and never a socket someone listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; not replacing it", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	return os.Remove(path)
}

// registerWatchMetrics reports the current watcher's counters: a leader
// builds a new one each term.
func registerWatchMetrics(reg prometheus.Registerer, cur *atomic.Pointer[nomad.Watcher], cache *atomic.Pointer[nomad.Cache]) {
	w := watchStats{cur}
	size := func(allocs bool) float64 {
		c := cache.Load()
		if c == nil {
			return 0
		}
		j, a := c.Size()
		if allocs {
			return float64(a)
		}
		return float64(j)
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentkernel_cache_jobs", Help: "Jobs in the watch-fed cache that reconciles read."},
			func() float64 { return size(false) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentkernel_cache_allocations", Help: "Allocations Nomad wants running, in the watch-fed cache."},
			func() float64 { return size(true) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "agentkernel_event_stream_reconnects_total", Help: "Reconnections of the Nomad event stream."},
			func() float64 { return float64(w.Stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "agentkernel_event_stream_gaps_total", Help: "Resumed event streams that started past the index asked for."},
			func() float64 { return float64(w.Stats().Gaps) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "agentkernel_nomad_relists_total", Help: "Full lists of the owned Nomad jobs."},
			func() float64 { return float64(w.Stats().Relists) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentkernel_event_stream_fallback", Help: "1 while the watcher uses blocking queries instead of the event stream."},
			func() float64 {
				if w.Stats().Blocking {
					return 1
				}
				return 0
			}),
	)
}

type watchStats struct {
	cur *atomic.Pointer[nomad.Watcher]
}

func (w watchStats) Stats() nomad.WatchStats {
	if cur := w.cur.Load(); cur != nil {
		return cur.Stats()
	}
	return nomad.WatchStats{}
}

// startDev gives -dev its Nomad and a temporary data dir: a real `nomad
// agent -dev` when -dev-nomad says so, or says auto and a nomad binary is
// found; else the Nomad test server, in-process. It returns how to stop
// them and the banner's line on Nomad.
func startDev(ctx context.Context, cfg *config, log *slog.Logger) (stop func(), what string, err error) {
	bin, err := findNomad(cfg.DevNomadBin)
	if err != nil {
		return nil, "", err
	}
	stop = func() {}
	switch {
	case cfg.DevNomad == "sim", cfg.DevNomad == "auto" && bin == "":
		// A real agent's timing, as the test server has it by default:
		// the register answers before the plan, allocations run about
		// half a second later, deployments complete after
		// min_healthy_time.
		srv := nomadtest.New(nomadtest.Options{
			Addr:    cfg.DevNomadAddr,
			Drivers: []string{"docker", "exec", "raw_exec", "java", "mock_driver"},
			Logger:  log.With("component", "nomad-test-server"),
		})
		if err := srv.Start(); err != nil {
			return nil, "", fmt.Errorf("start the in-process Nomad test server on %s: %w (use -dev-nomad-addr)", cfg.DevNomadAddr, err)
		}
		cfg.Nomad.Address = srv.URL()
		stop = func() { _ = srv.Close() }
		why := "no nomad binary on PATH"
		if cfg.DevNomad == "sim" {
			why = "-dev-nomad=sim"
		}
		what = fmt.Sprintf("  Nomad test server: %s (in-process, %s; every driver allowed; exec runs on this machine)", srv.URL(), why)
	case bin == "":
		return nil, "", errors.New("-dev-nomad=real: no nomad binary on PATH; install Nomad, give -dev-nomad-bin, or use -dev-nomad=sim for the built-in test server")
	default:
		addr := ""
		if cfg.DevNomadAddrSet {
			addr = cfg.DevNomadAddr
		}
		a, err := startDevAgent(ctx, bin, addr, log.With("component", "nomad-agent"))
		if err != nil {
			return nil, "", err
		}
		cfg.Nomad.Address = a.addr
		stop = a.stop
		version := a.version
		if version == "" {
			version = "nomad"
		}
		what = fmt.Sprintf("  Nomad agent:      %s (%s, %s agent -dev; stopped on exit)", a.addr, version, bin)
	}
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "agentkernel-dev-")
		if err != nil {
			stop()
			return nil, "", err
		}
		cfg.DataDir = dir
		stopNomad := stop
		stop = func() { stopNomad(); _ = os.RemoveAll(dir) }
	}
	return stop, what, nil
}

func printDevBanner(w io.Writer, cfg config, api, nomadLine string) {
	fmt.Fprintf(w, `agentkernel controller running in development mode
  API:              %s
%s
  data dir:         %s (removed on exit unless given with -data-dir)

Next, in another terminal:
  export AKCTL_ADDR=%s NOMAD_ADDR=%s
  go run ./cmd/akctl apply -f examples/ --wait    # if not started with -dev-apply
  go run ./cmd/akctl get -o wide
  go run ./cmd/akctl describe hello
`, api, nomadLine, cfg.DataDir, api, cfg.Nomad.Address)
}

// devApply loads and applies declarations at start in -dev mode, then
// prints them once they have all settled, so that one command shows
// sandboxes running.
func devApply(ctx context.Context, log *slog.Logger, stdout io.Writer, st *store.Store, path, defaultNS string) {
	res, diags := spec.Load([]string{path}, spec.Options{DefaultNamespace: defaultNS, Environ: os.Environ()})
	if diags.HasErrors() {
		log.Error("dev-apply: invalid declarations", "path", path, "err", diags.Error())
		return
	}
	objs := make([]store.Object, 0, len(res.Sandboxes))
	for _, s := range res.Sandboxes {
		objs = append(objs, store.Object{Sandbox: s})
	}
	for _, p := range res.Pools {
		st := p.Settings
		objs = append(objs, store.Object{Sandbox: p.Sandbox(), Pool: &st})
	}
	// No apply set, as a plain `akctl apply -f` of the same files: the
	// two agree, and a later apply reports them unchanged.
	if _, err := st.Apply(ctx, objs, store.ApplyOptions{}); err != nil {
		log.Error("dev-apply", "err", err)
		return
	}
	log.Info("dev-apply: applied", "path", path, "sandboxes", len(res.Sandboxes), "pools", len(res.Pools))

	settled := func(recs []store.Record) bool {
		for _, r := range recs {
			if r.Status.ObservedGeneration != r.Generation || r.Status.Phase == "" || r.Status.Phase == store.PhasePending {
				return false
			}
		}
		return true
	}
	for {
		recs, rev, err := st.List(ctx, store.ListOptions{})
		if err != nil {
			return
		}
		if settled(recs) {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\nNAMESPACE\tNAME\tPHASE\tJOB\tALLOCATION\tPOOL")
			for _, r := range recs {
				if r.Pool != nil {
					continue
				}
				pool := "-"
				if r.Member != nil {
					pool = r.Member.Pool
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Sandbox.Namespace, r.Sandbox.Name, r.Status.Phase, r.Status.JobID, shortAlloc(r.Status.AllocID), pool)
			}
			tw.Flush()
			return
		}
		// Wait for the next store change (status writes included).
		w, err := st.Watch(ctx, rev)
		if err != nil {
			return
		}
		select {
		case <-w.Changes():
		case <-ctx.Done():
			return
		}
	}
}

func shortAlloc(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
