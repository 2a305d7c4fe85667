package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/sandboxio"
)

// config is the controller's configuration: defaults, then the -config
// file (decoded as fileConfig), then flags, each overriding the one before. Nomad's connection
// also honours the nomad CLI's NOMAD_* environment, which the file and
// flags override.
type config struct {
	DataDir   string
	Listen    string
	TokenFile string
	Workers   int
	Resync    string

	LogLevel  string
	LogFormat string

	Nomad  nomadConfig
	Policy policyConfig
	HA     haConfig
	Exec   execConfig

	Dev          bool
	DevNomadAddr string
	// DevNomad chooses -dev's Nomad: "auto" (a real agent when a nomad
	// binary is found, else the test server), "real" or "sim".
	DevNomad    string
	DevNomadBin string
	// DevNomadAddrSet: -dev-nomad-addr was given, so a real agent's HTTP
	// port is that one rather than a free one.
	DevNomadAddrSet bool
	// DevApply is a path of declarations applied at start in -dev mode.
	DevApply string
}

type nomadConfig struct {
	Address    string
	Namespace  string
	Region     string
	TokenFile  string
	CACert     string
	ClientCert string
	ClientKey  string
	// WriteRate bounds Nomad writes per second (0 = unlimited).
	WriteRate  float64
	WriteBurst int
	// RequestTimeout bounds each Nomad request that is not a blocking
	// query or a stream.
	RequestTimeout string
}

// haPrefixRE is Nomad's variable path rule; the length is bounded apart,
// leaving room under the prefix for the replica's paths.
var haPrefixRE = regexp.MustCompile(`^[a-zA-Z0-9-_~]+(/[a-zA-Z0-9-_~]+)*$`)

// haConfig runs the controller as one of several instances (see
// docs/running-on-nomad.md).
type haConfig struct {
	Enabled bool
	// InstanceID names this instance (default NOMAD_ALLOC_ID, else the
	// hostname).
	InstanceID string
	// AdvertiseAddr is the base URL other instances forward writes to.
	AdvertiseAddr string
	// VariablePrefix is where the lock and the replicated sandboxes live.
	VariablePrefix string
	LockTTL        string
	LockDelay      string
	// AdoptOwners lists owner IDs whose jobs this controller may take over.
	AdoptOwners []string
	// SeedEmpty lets an instance with an empty store start the replicated
	// copy although Nomad runs agentkernel jobs.
	SeedEmpty bool
}

// execConfig bounds the work done inside sandboxes (exec, files, logs).
type execConfig struct {
	// MaxOutputBytes bounds each of stdout and stderr of an exec that
	// answers once the command ended.
	MaxOutputBytes int64 `hcl:"max_output_bytes,optional"`
	// MaxFileBytes bounds one file or archive written into a sandbox.
	MaxFileBytes int64 `hcl:"max_file_bytes,optional"`
	// Sessions and SessionsPerSandbox bound the exec sessions, file
	// transfers and followed logs open at once.
	Sessions           int `hcl:"sessions,optional"`
	SessionsPerSandbox int `hcl:"sessions_per_sandbox,optional"`
}

type policyConfig struct {
	AllowedDrivers     []string `hcl:"allowed_drivers,optional"`
	MaxVCPUs           float64  `hcl:"max_vcpus,optional"`
	MaxMemoryMB        int      `hcl:"max_memory_mb,optional"`
	DefaultDatacenters []string `hcl:"default_datacenters,optional"`
	DefaultNamespace   string   `hcl:"default_namespace,optional"`
}

func defaultConfig() config {
	return config{
		Workers:   8,
		Resync:    "10m",
		LogLevel:  "info",
		LogFormat: "text",
		Nomad:     nomadConfig{WriteRate: 50, WriteBurst: 100, RequestTimeout: "30s"},
		Policy: policyConfig{
			AllowedDrivers: []string{"docker", "exec"},
		},
		DevNomadAddr: "127.0.0.1:4646",
		DevNomad:     "auto",
		HA:           haConfig{VariablePrefix: "agentkernel", LockTTL: "15s", LockDelay: "15s"},
		Exec: execConfig{
			MaxOutputBytes: sandboxio.DefaultMaxOutputBytes, MaxFileBytes: sandboxio.DefaultMaxFileBytes,
			Sessions: sandboxio.DefaultSessions, SessionsPerSandbox: sandboxio.DefaultSessionsPerSandbox,
		},
	}
}

const usageText = `Usage: controller [flags]

Runs the agentkernel controller: it keeps the sandboxes declared with
"akctl apply" running as Nomad jobs and serves the API akctl talks to.

Nomad is reached as the nomad CLI reaches it: NOMAD_ADDR, NOMAD_TOKEN,
NOMAD_NAMESPACE, NOMAD_REGION, NOMAD_CACERT, NOMAD_CLIENT_CERT and
NOMAD_CLIENT_KEY, overridden by the -config file and by flags.

Examples:
  controller -dev                          # everything in-process, for a try-out
  controller -data-dir /var/lib/agentkernel -listen 127.0.0.1:7474 -token-file /etc/agentkernel/token
  controller -config /etc/agentkernel/controller.hcl
  controller -ha -data-dir /var/lib/agentkernel -listen 0.0.0.0:7474 -token-file /etc/agentkernel/token \
    -advertise-addr http://10.0.0.5:7474        # one of several instances (see "Running on Nomad")

Flags:
`

// parseConfig reads flags and the optional config file.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	configFile := fs.String("config", "", "HCL configuration `file` (flags override it)")
	var f config
	fs.StringVar(&f.DataDir, "data-dir", "", "`dir` for the store (required unless -dev, which uses a temporary one)")
	fs.StringVar(&f.Listen, "listen", "", "API `address`: a unix socket path, or host:port for TCP (default: controller.sock in the data dir; 127.0.0.1:7474 with -dev)")
	fs.StringVar(&f.TokenFile, "token-file", "", "`file` holding the API bearer token; required for a non-loopback TCP listener")
	fs.IntVar(&f.Workers, "workers", 0, "parallel reconciles (default 8)")
	fs.StringVar(&f.Resync, "resync", "", "period of the full resync, a Go `duration` (default 10m)")
	fs.StringVar(&f.LogLevel, "log-level", "", "debug, info, warn or error (default info)")
	fs.StringVar(&f.LogFormat, "log-format", "", "text or json (default text)")
	fs.StringVar(&f.Nomad.Address, "nomad-addr", "", "Nomad HTTP `address` (default NOMAD_ADDR, else http://127.0.0.1:4646)")
	fs.StringVar(&f.Nomad.Namespace, "nomad-namespace", "", "Nomad `namespace` of the controller's own requests (default NOMAD_NAMESPACE, else default); sandboxes name theirs")
	fs.StringVar(&f.Nomad.Region, "nomad-region", "", "Nomad `region` (default NOMAD_REGION)")
	fs.StringVar(&f.Nomad.TokenFile, "nomad-token-file", "", "`file` holding the Nomad ACL token (default NOMAD_TOKEN)")
	fs.StringVar(&f.Nomad.CACert, "nomad-ca-cert", "", "CA certificate `file` for Nomad's TLS (default NOMAD_CACERT)")
	fs.StringVar(&f.Nomad.ClientCert, "nomad-client-cert", "", "client certificate `file` for Nomad's TLS (default NOMAD_CLIENT_CERT)")
	fs.StringVar(&f.Nomad.ClientKey, "nomad-client-key", "", "client key `file` for Nomad's TLS (default NOMAD_CLIENT_KEY)")
	fs.Func("nomad-write-rate", "Nomad writes per `second` across all sandboxes, 0 for no limit (default 50)", func(v string) error {
		r, err := strconv.ParseFloat(v, 64)
		f.Nomad.WriteRate = r
		return err
	})
	fs.StringVar(&f.Nomad.RequestTimeout, "nomad-request-timeout", "", "bound on each Nomad request that is not a blocking query or a stream, a Go `duration` (default 30s)")
	allowed := fs.String("allowed-drivers", "", "comma-separated task `drivers` sandboxes may use (default docker,exec; raw_exec has no isolation)")
	fs.Float64Var(&f.Policy.MaxVCPUs, "max-vcpus", 0, "largest vcpus a sandbox may ask for (default: the language's limit)")
	fs.IntVar(&f.Policy.MaxMemoryMB, "max-memory-mb", 0, "largest memory_mb a sandbox may ask for (default: the language's limit)")
	fs.StringVar(&f.Policy.DefaultNamespace, "default-namespace", "", "`namespace` for sandboxes applied without one (default NOMAD_NAMESPACE, else default); akctl learns it from the controller")
	dcs := fs.String("default-datacenters", "", "comma-separated `datacenters` for sandboxes that name none (default *)")
	fs.BoolVar(&f.HA.Enabled, "ha", false, "run as one of several instances: leader election and replicated desired state in Nomad Variables")
	fs.StringVar(&f.HA.InstanceID, "instance-id", "", "this instance's `ID` with -ha (default NOMAD_ALLOC_ID, else the hostname)")
	fs.StringVar(&f.HA.AdvertiseAddr, "advertise-addr", "", "with -ha, the base `URL` other instances forward writes to, such as http://10.0.0.5:7474 (default: the TCP listen address)")
	fs.StringVar(&f.HA.VariablePrefix, "ha-variable-prefix", "", "with -ha, the Nomad Variable path `prefix` of the lock and the replicated sandboxes (default agentkernel)")
	fs.StringVar(&f.HA.LockTTL, "ha-lock-ttl", "", "with -ha, the leader lock's TTL, a Go `duration` from 10s to 24h (default 15s)")
	fs.StringVar(&f.HA.LockDelay, "ha-lock-delay", "", "with -ha, the leader lock's delay, a Go `duration` (default 15s)")
	fs.BoolVar(&f.HA.SeedEmpty, "ha-seed-empty", false, "with -ha, let an instance with an empty store start the replicated copy although Nomad runs agentkernel jobs (their declarations are then forgotten)")
	fs.Int64Var(&f.Exec.MaxOutputBytes, "exec-max-output-bytes", 0, "bound on each of stdout and stderr of an exec answered at once, in `bytes` (default 16 MiB)")
	fs.Int64Var(&f.Exec.MaxFileBytes, "max-file-bytes", 0, "largest file or archive written into a sandbox, in `bytes` (default 256 MiB)")
	fs.IntVar(&f.Exec.Sessions, "exec-sessions", 0, "exec sessions, file transfers and followed logs open at once, in all (default 64)")
	fs.IntVar(&f.Exec.SessionsPerSandbox, "exec-sessions-per-sandbox", 0, "exec sessions, file transfers and followed logs open at once in one sandbox (default 8)")
	adopt := fs.String("adopt-owners", "", "comma-separated owner `IDs` of other controllers whose jobs this one may take over")
	fs.BoolVar(&cfg.Dev, "dev", false, "development mode: a Nomad of its own (see -dev-nomad), a temporary data dir, every driver allowed")
	fs.StringVar(&cfg.DevNomad, "dev-nomad", cfg.DevNomad, "in -dev mode, which Nomad: `auto` (a real `nomad agent -dev` when a nomad binary is found, else the in-process test server), real or sim")
	fs.StringVar(&cfg.DevNomadBin, "dev-nomad-bin", "", "in -dev mode, the nomad binary's `path` (default: nomad on PATH)")
	fs.StringVar(&cfg.DevNomadAddr, "dev-nomad-addr", cfg.DevNomadAddr, "`address` of -dev's Nomad HTTP API (the test server's; a real agent's port when given, else a free one)")
	fs.StringVar(&cfg.DevApply, "dev-apply", "", "in -dev mode, `path` of declarations (file or directory) to apply at start")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: the controller takes flags only", fs.Arg(0))
	}

	if *configFile != "" {
		if err := loadConfigFile(*configFile, &cfg); err != nil {
			return cfg, err
		}
	}
	// Flags given on the command line win over the file.
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	str := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	str("data-dir", &cfg.DataDir, f.DataDir)
	str("listen", &cfg.Listen, f.Listen)
	str("token-file", &cfg.TokenFile, f.TokenFile)
	str("resync", &cfg.Resync, f.Resync)
	str("log-level", &cfg.LogLevel, f.LogLevel)
	str("log-format", &cfg.LogFormat, f.LogFormat)
	str("nomad-addr", &cfg.Nomad.Address, f.Nomad.Address)
	str("nomad-namespace", &cfg.Nomad.Namespace, f.Nomad.Namespace)
	str("nomad-region", &cfg.Nomad.Region, f.Nomad.Region)
	str("nomad-token-file", &cfg.Nomad.TokenFile, f.Nomad.TokenFile)
	str("nomad-ca-cert", &cfg.Nomad.CACert, f.Nomad.CACert)
	str("nomad-client-cert", &cfg.Nomad.ClientCert, f.Nomad.ClientCert)
	str("nomad-client-key", &cfg.Nomad.ClientKey, f.Nomad.ClientKey)
	str("nomad-request-timeout", &cfg.Nomad.RequestTimeout, f.Nomad.RequestTimeout)
	if set["ha"] {
		cfg.HA.Enabled = f.HA.Enabled
	}
	str("instance-id", &cfg.HA.InstanceID, f.HA.InstanceID)
	str("advertise-addr", &cfg.HA.AdvertiseAddr, f.HA.AdvertiseAddr)
	str("ha-variable-prefix", &cfg.HA.VariablePrefix, f.HA.VariablePrefix)
	str("ha-lock-ttl", &cfg.HA.LockTTL, f.HA.LockTTL)
	str("ha-lock-delay", &cfg.HA.LockDelay, f.HA.LockDelay)
	if set["ha-seed-empty"] {
		cfg.HA.SeedEmpty = f.HA.SeedEmpty
	}
	if set["adopt-owners"] {
		cfg.HA.AdoptOwners = splitList(*adopt)
	}
	if set["workers"] {
		cfg.Workers = f.Workers
	}
	if set["exec-max-output-bytes"] {
		cfg.Exec.MaxOutputBytes = f.Exec.MaxOutputBytes
	}
	if set["max-file-bytes"] {
		cfg.Exec.MaxFileBytes = f.Exec.MaxFileBytes
	}
	if set["exec-sessions"] {
		cfg.Exec.Sessions = f.Exec.Sessions
	}
	if set["exec-sessions-per-sandbox"] {
		cfg.Exec.SessionsPerSandbox = f.Exec.SessionsPerSandbox
	}
	if set["nomad-write-rate"] {
		cfg.Nomad.WriteRate = f.Nomad.WriteRate
	}
	if set["max-vcpus"] {
		cfg.Policy.MaxVCPUs = f.Policy.MaxVCPUs
	}
	if set["max-memory-mb"] {
		cfg.Policy.MaxMemoryMB = f.Policy.MaxMemoryMB
	}
	if set["allowed-drivers"] {
		cfg.Policy.AllowedDrivers = splitList(*allowed)
	}
	if set["default-namespace"] {
		cfg.Policy.DefaultNamespace = f.Policy.DefaultNamespace
	}
	if set["default-datacenters"] {
		cfg.Policy.DefaultDatacenters = splitList(*dcs)
	}
	cfg.DevNomadAddrSet = set["dev-nomad-addr"]
	if cfg.Dev {
		cfg.Policy.AllowedDrivers = []string{"docker", "exec", "raw_exec"}
		if cfg.Listen == "" {
			cfg.Listen = "127.0.0.1:7474"
		}
	}
	return cfg, cfg.validate()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *config) validate() error {
	var errs []error
	if c.DataDir == "" && !c.Dev {
		errs = append(errs, errors.New("-data-dir is required (or use -dev for a temporary one)"))
	}
	switch c.DevNomad {
	case "auto", "real", "sim":
	default:
		errs = append(errs, fmt.Errorf("-dev-nomad %q: want auto, real or sim", c.DevNomad))
	}
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("workers is %d; it must be between 1 and 256", c.Workers))
	}
	if c.Exec.MaxOutputBytes < 1 || c.Exec.MaxFileBytes < 1 {
		errs = append(errs, fmt.Errorf("exec max_output_bytes (%d) and max_file_bytes (%d) must be positive", c.Exec.MaxOutputBytes, c.Exec.MaxFileBytes))
	}
	if c.Exec.Sessions < 1 || c.Exec.SessionsPerSandbox < 1 {
		errs = append(errs, fmt.Errorf("exec sessions (%d) and sessions_per_sandbox (%d) must be at least 1", c.Exec.Sessions, c.Exec.SessionsPerSandbox))
	}
	if d, err := time.ParseDuration(c.Resync); err != nil || d < time.Second {
		errs = append(errs, fmt.Errorf("resync %q must be a Go duration of at least 1s, such as 10m", c.Resync))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q must be text or json", c.LogFormat))
	}
	for _, d := range c.Policy.AllowedDrivers {
		if d != "docker" && d != "exec" && d != "raw_exec" {
			errs = append(errs, fmt.Errorf("allowed driver %q must be docker, exec or raw_exec", d))
		}
	}
	if c.HA.Enabled {
		if ttl, err := time.ParseDuration(c.HA.LockTTL); err != nil || ttl < 10*time.Second || ttl > 24*time.Hour {
			errs = append(errs, fmt.Errorf("ha lock_ttl %q must be a Go duration from 10s to 24h, as Nomad requires", c.HA.LockTTL))
		}
		if d, err := time.ParseDuration(c.HA.LockDelay); err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("ha lock_delay %q must be a positive Go duration, such as 15s", c.HA.LockDelay))
		}
		if len(c.HA.VariablePrefix) > replica.MaxPrefixLength || !haPrefixRE.MatchString(c.HA.VariablePrefix) || strings.Contains(c.HA.VariablePrefix, "//") ||
			c.HA.VariablePrefix == "nomad" || strings.HasPrefix(c.HA.VariablePrefix, "nomad/") {
			errs = append(errs, fmt.Errorf("ha variable_prefix %q must be a Nomad Variable path outside \"nomad/\": letters, digits, '-', '_', '~' and '/', at most %d characters (the paths below it take the rest of Nomad's %d)",
				c.HA.VariablePrefix, replica.MaxPrefixLength, replica.MaxPathLength))
		}
		if c.HA.AdvertiseAddr != "" {
			if u, err := url.Parse(c.HA.AdvertiseAddr); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("ha advertise_addr %q must be a base URL such as http://10.0.0.5:7474", c.HA.AdvertiseAddr))
			}
		}
		if c.Dev {
			errs = append(errs, errors.New("-ha and -dev do not go together: -dev runs a single instance with a private test server"))
		}
	}
	if d, err := time.ParseDuration(c.Nomad.RequestTimeout); err != nil || d < time.Second {
		errs = append(errs, fmt.Errorf("nomad request_timeout %q must be a Go duration of at least 1s, such as 30s", c.Nomad.RequestTimeout))
	}
	if c.Nomad.WriteRate < 0 {
		errs = append(errs, fmt.Errorf("nomad write rate %g must be 0 (no limit) or more", c.Nomad.WriteRate))
	}
	return errors.Join(errs...)
}

func (c *config) requestTimeout() time.Duration {
	d, _ := time.ParseDuration(c.Nomad.RequestTimeout)
	return d
}

func (c *config) resyncPeriod() time.Duration {
	d, _ := time.ParseDuration(c.Resync)
	return d
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q must be debug, info, warn or error", s)
	}
	return l, nil
}

// fileConfig is the config file's shape: like config, but with optional
// blocks and a pointer where zero is a meaningful value, so that what the
// file leaves out keeps its default.
type fileConfig struct {
	DataDir   string        `hcl:"data_dir,optional"`
	Listen    string        `hcl:"listen,optional"`
	TokenFile string        `hcl:"token_file,optional"`
	Workers   int           `hcl:"workers,optional"`
	Resync    string        `hcl:"resync,optional"`
	LogLevel  string        `hcl:"log_level,optional"`
	LogFormat string        `hcl:"log_format,optional"`
	Nomad     *nomadFile    `hcl:"nomad,block"`
	Policy    *policyConfig `hcl:"policy,block"`
	HA        *haFile       `hcl:"ha,block"`
	Exec      *execConfig   `hcl:"exec,block"`
}

type haFile struct {
	Enabled        *bool    `hcl:"enabled,optional"`
	InstanceID     string   `hcl:"instance_id,optional"`
	AdvertiseAddr  string   `hcl:"advertise_addr,optional"`
	VariablePrefix string   `hcl:"variable_prefix,optional"`
	LockTTL        string   `hcl:"lock_ttl,optional"`
	LockDelay      string   `hcl:"lock_delay,optional"`
	AdoptOwners    []string `hcl:"adopt_owners,optional"`
	SeedEmpty      *bool    `hcl:"seed_empty,optional"`
}

type nomadFile struct {
	Address        string   `hcl:"address,optional"`
	Namespace      string   `hcl:"namespace,optional"`
	Region         string   `hcl:"region,optional"`
	TokenFile      string   `hcl:"token_file,optional"`
	CACert         string   `hcl:"ca_cert,optional"`
	ClientCert     string   `hcl:"client_cert,optional"`
	ClientKey      string   `hcl:"client_key,optional"`
	WriteRate      *float64 `hcl:"write_rate,optional"`
	WriteBurst     int      `hcl:"write_burst,optional"`
	RequestTimeout string   `hcl:"request_timeout,optional"`
}

// loadConfigFile decodes the HCL config file over cfg, reporting every
// problem with its file:line.
func loadConfigFile(path string, cfg *config) error {
	p := hclparse.NewParser()
	file, diags := p.ParseHCLFile(path)
	var fc fileConfig
	if !diags.HasErrors() {
		diags = append(diags, gohcl.DecodeBody(file.Body, nil, &fc)...)
	}
	if diags.HasErrors() {
		var b strings.Builder
		wr := hcl.NewDiagnosticTextWriter(&b, p.Files(), 100, false)
		_ = wr.WriteDiagnostics(diags)
		return fmt.Errorf("config file %s:\n%s", path, b.String())
	}
	over := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	over(&cfg.DataDir, fc.DataDir)
	over(&cfg.Listen, fc.Listen)
	over(&cfg.TokenFile, fc.TokenFile)
	over(&cfg.Resync, fc.Resync)
	over(&cfg.LogLevel, fc.LogLevel)
	over(&cfg.LogFormat, fc.LogFormat)
	if fc.Workers != 0 {
		cfg.Workers = fc.Workers
	}
	if n := fc.Nomad; n != nil {
		over(&cfg.Nomad.Address, n.Address)
		over(&cfg.Nomad.Namespace, n.Namespace)
		over(&cfg.Nomad.Region, n.Region)
		over(&cfg.Nomad.TokenFile, n.TokenFile)
		over(&cfg.Nomad.CACert, n.CACert)
		over(&cfg.Nomad.ClientCert, n.ClientCert)
		over(&cfg.Nomad.ClientKey, n.ClientKey)
		if n.WriteRate != nil {
			cfg.Nomad.WriteRate = *n.WriteRate
		}
		if n.WriteBurst != 0 {
			cfg.Nomad.WriteBurst = n.WriteBurst
		}
		over(&cfg.Nomad.RequestTimeout, n.RequestTimeout)
	}
	if h := fc.HA; h != nil {
		if h.Enabled != nil {
			cfg.HA.Enabled = *h.Enabled
		}
		over(&cfg.HA.InstanceID, h.InstanceID)
		over(&cfg.HA.AdvertiseAddr, h.AdvertiseAddr)
		over(&cfg.HA.VariablePrefix, h.VariablePrefix)
		over(&cfg.HA.LockTTL, h.LockTTL)
		over(&cfg.HA.LockDelay, h.LockDelay)
		if h.AdoptOwners != nil {
			cfg.HA.AdoptOwners = h.AdoptOwners
		}
		if h.SeedEmpty != nil {
			cfg.HA.SeedEmpty = *h.SeedEmpty
		}
	}
	if e := fc.Exec; e != nil {
		if e.MaxOutputBytes != 0 {
			cfg.Exec.MaxOutputBytes = e.MaxOutputBytes
		}
		if e.MaxFileBytes != 0 {
			cfg.Exec.MaxFileBytes = e.MaxFileBytes
		}
		if e.Sessions != 0 {
			cfg.Exec.Sessions = e.Sessions
		}
		if e.SessionsPerSandbox != 0 {
			cfg.Exec.SessionsPerSandbox = e.SessionsPerSandbox
		}
	}
	if pc := fc.Policy; pc != nil {
		if pc.AllowedDrivers != nil {
			cfg.Policy.AllowedDrivers = pc.AllowedDrivers
		}
		if pc.MaxVCPUs != 0 {
			cfg.Policy.MaxVCPUs = pc.MaxVCPUs
		}
		if pc.MaxMemoryMB != 0 {
			cfg.Policy.MaxMemoryMB = pc.MaxMemoryMB
		}
		if pc.DefaultDatacenters != nil {
			cfg.Policy.DefaultDatacenters = pc.DefaultDatacenters
		}
		over(&cfg.Policy.DefaultNamespace, pc.DefaultNamespace)
	}
	return nil
}

// readSecretFile reads a token file, refusing one that others can read:
// the token guards the API or Nomad.
func readSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("token file %s has mode %04o; make it readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}
