package spec

import (
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits. Each is documented in docs/language.md.
const (
	// MaxNameLength keeps "agentkernel-<name>-<port label>", the longest
	// Nomad service name derived from a sandbox, within the 63 characters
	// of a DNS label that Nomad allows for service names.
	MaxNameLength      = 40
	MaxPortLabelLength = 10
	MinVCPUs           = 0.1
	MaxVCPUs           = 64
	MinMemoryMB        = 32
	MaxMemoryMB        = 256 * 1024
	MaxCommandArgs     = 256
	MaxEnvBytes        = 64 << 10
	MaxLabels          = 64
	// MaxFileBytes bounds one injected file and one file() call; the
	// content travels inside the Nomad job, which Nomad keeps in memory.
	MaxFileBytes      = 1 << 20
	MaxTotalFileBytes = 2 << 20
	MinTTL            = time.Minute
	MaxTTL            = 366 * 24 * time.Hour
	maxStringLength   = 4096
)

var (
	nameRE          = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	namespaceRE     = regexp.MustCompile(`^[a-zA-Z0-9-]{1,128}$`)
	portLabelRE     = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	envNameRE       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelNameRE     = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	dnsSubdomainRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	fileSegmentRE   = regexp.MustCompile(`^[A-Za-z0-9._+@~-]+$`)
	variablePathRE  = regexp.MustCompile(`^[a-zA-Z0-9-_~/]{1,128}$`)
	variableKeyRE   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	nodePoolRE      = regexp.MustCompile(`^[a-zA-Z0-9-_]{1,128}$`)
	fileModeRE      = regexp.MustCompile(`^0?[0-7]{3}$`)
	noSpaceOrCtrlRE = regexp.MustCompile(`^[^\s\x00-\x1f\x7f]+$`)
)

// fieldError is one validation problem, located by a path of attribute and
// block names ("port", "http", "to") that the HCL decoder maps back to a
// source range and the API reports as text.
type fieldError struct {
	Path    []string
	Summary string
	Detail  string
	Warning bool
}

// pathString renders a field path for people: block labels and map keys
// in brackets, as in `file["/workspace/a.md"].mode`.
func pathString(p []string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p[i])
		if keyed[p[i]] && i+1 < len(p) {
			fmt.Fprintf(&b, "[%q]", p[i+1])
			i++
		}
	}
	return b.String()
}

// keyed names the blocks and maps whose next path element is a label or key.
var keyed = map[string]bool{"port": true, "file": true, "secret": true, "env": true, "labels": true, "constraint": true}

// key identifies a constraint in field paths; constraints have no label
// and are sorted, so their position in the source is not stable.
func (c Constraint) key() string {
	return strings.TrimSpace(c.Attribute + " " + c.Operator + " " + c.Value)
}

// ValidationError lists everything wrong with a sandbox decoded from JSON
// (the API path; HCL input gets diagnostics with source ranges instead).
type ValidationError struct {
	Key      string
	Problems []string
}

func (e *ValidationError) Unwrap() error { return ErrInvalid }

func (e *ValidationError) Error() string {
	return fmt.Sprintf("sandbox %q is invalid: %s", e.Key, strings.Join(e.Problems, "; "))
}

// Validate checks a sandbox that arrived in canonical form rather than as
// HCL. It runs the same checks as the HCL loader and reports every error.
func (s *Sandbox) Validate() error {
	var problems []string
	for _, fe := range s.validate() {
		if fe.Warning {
			continue
		}
		problems = append(problems, fmt.Sprintf("%s: %s", pathString(fe.Path), fe.Detail))
	}
	if len(problems) == 0 {
		return nil
	}
	return &ValidationError{Key: s.Key(), Problems: problems}
}

// Canonicalize puts a sandbox's spec in canonical form: block lists sorted
// by their key, spellings normalised. It is idempotent and changes no
// meaning, so it may be applied to any input before hashing.
func (s *Sandbox) Canonicalize() {
	sp := &s.Spec
	slices.SortFunc(sp.Ports, func(a, b Port) int { return strings.Compare(a.Label, b.Label) })
	slices.SortFunc(sp.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(sp.Secrets, func(a, b Secret) int { return strings.Compare(a.Env, b.Env) })
	slices.Sort(sp.Placement.Datacenters)
	sp.Placement.Datacenters = slices.Compact(sp.Placement.Datacenters)
	slices.SortFunc(sp.Placement.Constraints, func(a, b Constraint) int {
		return strings.Compare(a.Attribute+"\x00"+a.Operator+"\x00"+a.Value, b.Attribute+"\x00"+b.Operator+"\x00"+b.Value)
	})
	sp.Placement.Constraints = slices.Compact(sp.Placement.Constraints)
	for i := range sp.Files {
		if m, err := strconv.ParseUint(sp.Files[i].Mode, 8, 32); err == nil && fileModeRE.MatchString(sp.Files[i].Mode) {
			sp.Files[i].Mode = fmt.Sprintf("%04o", m)
		}
	}
	if d, err := time.ParseDuration(sp.TTL); err == nil {
		sp.TTL = d.String()
	}
	if t, err := time.Parse(time.RFC3339, sp.ExpiresAt); err == nil {
		sp.ExpiresAt = t.UTC().Format(time.RFC3339)
	}
	if sp.TTL == "" && sp.ExpiresAt == "" {
		sp.OnExpiry = ""
	}
	if len(s.Labels) == 0 {
		s.Labels = nil
	}
	if len(sp.Env) == 0 {
		sp.Env = nil
	}
}

// validate runs every check on a canonical sandbox.
func (s *Sandbox) validate() []fieldError {
	v := &validator{}
	sp := &s.Spec

	v.check(checkName(s.Name), "name")
	if !namespaceRE.MatchString(s.Namespace) {
		v.add([]string{"namespace"}, "Invalid namespace", fmt.Sprintf("The namespace %q is not a valid Nomad namespace name: use 1 to 128 letters, digits and '-'.", s.Namespace))
	}
	v.labels(s.Labels)

	v.oneOf([]string{"driver"}, "driver", sp.Driver, drivers)
	v.oneOf([]string{"profile"}, "profile", sp.Profile, profileNs)
	v.oneOf([]string{"network"}, "network", sp.Network, networks)
	v.oneOf([]string{"state"}, "state", sp.State, states)

	validDriver := slices.Contains(drivers, sp.Driver)
	switch {
	case !validDriver:
		// The driver's own error says it all; image rules depend on it.
	case sp.Driver == DriverDocker && sp.Image == "":
		v.add([]string{"image"}, "Missing image", "The docker driver runs an image: set image, for example image = \"python:3.12-alpine\".")
	case sp.Driver != DriverDocker && sp.Image != "":
		v.add([]string{"image"}, "Image not supported by driver", fmt.Sprintf("The %s driver runs a command on the host and no image; remove image, or use driver = \"docker\".", sp.Driver))
	case sp.Image != "" && (!noSpaceOrCtrlRE.MatchString(sp.Image) || len(sp.Image) > 255):
		v.add([]string{"image"}, "Invalid image", fmt.Sprintf("The image reference %q must be at most 255 characters with no spaces or control characters.", sp.Image))
	}

	switch {
	case len(sp.Command) == 0 || sp.Command[0] == "":
		v.add([]string{"command"}, "Invalid command", "The command must name a program as its first element; leave command out to keep the sandbox alive with the default `sleep infinity`.")
	case len(sp.Command) > MaxCommandArgs:
		v.add([]string{"command"}, "Command too long", fmt.Sprintf("The command has %d elements; at most %d are allowed.", len(sp.Command), MaxCommandArgs))
	}
	for _, a := range sp.Command {
		if strings.ContainsRune(a, 0) {
			v.add([]string{"command"}, "Invalid command", "Command elements cannot contain a NUL character.")
			break
		}
	}

	if sp.VCPUs < MinVCPUs || sp.VCPUs > MaxVCPUs || math.IsNaN(sp.VCPUs) {
		v.add([]string{"vcpus"}, "vCPUs out of range", fmt.Sprintf("vcpus is %g; it must be between %g and %d (one vCPU is %d MHz of Nomad CPU).", sp.VCPUs, MinVCPUs, MaxVCPUs, MHzPerVCPU))
	} else if math.Abs(sp.VCPUs*MHzPerVCPU-math.Round(sp.VCPUs*MHzPerVCPU)) > 1e-6 {
		v.add([]string{"vcpus"}, "vCPUs too fine", fmt.Sprintf("vcpus is %g, which is not a whole number of MHz; use at most three decimal places (0.125 = 125 MHz).", sp.VCPUs))
	}
	if sp.MemoryMB < MinMemoryMB || sp.MemoryMB > MaxMemoryMB {
		v.add([]string{"memory_mb"}, "Memory out of range", fmt.Sprintf("memory_mb is %d; it must be between %d and %d.", sp.MemoryMB, MinMemoryMB, MaxMemoryMB))
	}

	if validDriver {
		v.isolation(sp)
	}
	v.ports(sp)
	v.env(sp)
	v.files(sp)
	v.secrets(sp)
	v.expiry(sp)
	v.placement(&sp.Placement)
	return v.errs
}

type validator struct{ errs []fieldError }

func (v *validator) add(p []string, summary, detail string) {
	v.errs = append(v.errs, fieldError{Path: p, Summary: summary, Detail: detail})
}

func (v *validator) warn(p []string, summary, detail string) {
	v.errs = append(v.errs, fieldError{Path: p, Summary: summary, Detail: detail, Warning: true})
}

func (v *validator) check(fe *fieldError, p ...string) {
	if fe != nil {
		fe.Path = p
		v.errs = append(v.errs, *fe)
	}
}

func (v *validator) oneOf(p []string, attr, got string, allowed []string) {
	if slices.Contains(allowed, got) {
		return
	}
	v.add(p, "Invalid "+attr, fmt.Sprintf("%s is %q; it must be one of %s.", attr, got, quoteList(allowed)))
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// checkName rejects rather than rewrites: agentkernel sanitises "My_Box"
// and "my-box" to the same job, letting one sandbox overwrite another.
func checkName(name string) *fieldError {
	if len(name) > MaxNameLength {
		return &fieldError{Summary: "Sandbox name too long", Detail: fmt.Sprintf("The name %q has %d characters; at most %d are allowed, so that the Nomad job and service names derived from it (%s<name>-<port>) fit Nomad's 63-character limit.", name, len(name), MaxNameLength, JobIDPrefix)}
	}
	if nameRE.MatchString(name) {
		return nil
	}
	d := fmt.Sprintf("The name %q is not a lowercase DNS label: use a-z, 0-9 and '-', starting and ending with a letter or digit. Names are never rewritten, so that two declarations cannot end up as one Nomad job.", name)
	if odd := NonASCII(name); odd != "" {
		// A look-alike from another script: naming it helps, a
		// suggestion without it would be a different name.
		d += " It has " + odd + "."
	} else if s := suggestName(name); s != "" && s != name {
		d += fmt.Sprintf(" Did you mean %q?", s)
	}
	return &fieldError{Summary: "Invalid sandbox name", Detail: d}
}

// suggestName is only a hint in an error message; names are never rewritten.
func suggestName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '-' || r == '_' || r == '.' || r == ' ':
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > MaxNameLength || !nameRE.MatchString(s) {
		return ""
	}
	return s
}

// labels follows Kubernetes' label syntax, since selectors use its syntax.
func (v *validator) labels(labels map[string]string) {
	if len(labels) > MaxLabels {
		v.add([]string{"labels"}, "Too many labels", fmt.Sprintf("There are %d labels; at most %d are allowed.", len(labels), MaxLabels))
	}
	for _, k := range sortedKeys(labels) {
		p := []string{"labels", k}
		if msg := labelKeyProblem(k); msg != "" {
			v.add(p, "Invalid label key", fmt.Sprintf("The label key %q %s.", k, msg))
		}
		if val := labels[k]; val != "" && (len(val) > 63 || !labelNameRE.MatchString(val)) {
			v.add(p, "Invalid label value", fmt.Sprintf("The value %q of label %q must be empty or at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit.", val, k))
		}
	}
}

func labelKeyProblem(k string) string {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if len(prefix) > 253 || !dnsSubdomainRE.MatchString(prefix) {
			return "has a prefix that is not a lowercase DNS subdomain"
		}
		name = rest
	}
	if len(name) > 63 || !labelNameRE.MatchString(name) {
		return "must be at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS-subdomain prefix and '/'"
	}
	return ""
}

// isolation refuses declarations that ask for isolation the driver cannot
// give: raw_exec runs in the host's namespaces, and only docker has a
// read-only root filesystem. A sandbox is never quietly less isolated than
// it says.
func (v *validator) isolation(sp *Spec) {
	if sp.Driver == DriverRawExec && sp.Network != NetworkHost {
		v.add([]string{"network"}, "Network isolation not possible with raw_exec", fmt.Sprintf("The raw_exec driver runs the task in the host's network namespace, so network %q cannot be enforced; set network = \"host\" to say so, or use the docker or exec driver.", sp.Network))
	}
	if sp.ReadOnly && sp.Driver != DriverDocker {
		v.add([]string{"read_only"}, "Read-only root not possible with "+sp.Driver, fmt.Sprintf("Only the docker driver can make the root filesystem read-only; the %s driver cannot. Set read_only = false (the restrictive profile sets it to true), or use driver = \"docker\".", sp.Driver))
	}
}

func (v *validator) ports(sp *Spec) {
	static := map[int]string{}
	for _, p := range sp.Ports {
		pp := []string{"port", p.Label}
		if len(p.Label) > MaxPortLabelLength || !portLabelRE.MatchString(p.Label) {
			v.add(pp, "Invalid port label", fmt.Sprintf("The port label %q must start with a lowercase letter and hold at most %d lowercase letters, digits and '_'.", p.Label, MaxPortLabelLength))
		}
		if sp.Network == NetworkNone {
			v.add(pp, "Port without network", fmt.Sprintf("Port %q needs network = \"bridge\" or \"host\", but the sandbox's network is \"none\" (the default of the moderate and restrictive profiles).", p.Label))
		}
		if p.To < 0 || p.To > 65535 {
			v.add(append(pp, "to"), "Invalid port number", fmt.Sprintf("to is %d; it must be between 1 and 65535, or 0 for the same number as the host port.", p.To))
		}
		if p.Static < 0 || p.Static > 65535 {
			v.add(append(pp, "static"), "Invalid port number", fmt.Sprintf("static is %d; it must be between 1 and 65535, or 0 for a dynamic host port.", p.Static))
		} else if p.Static != 0 {
			if other, dup := static[p.Static]; dup {
				v.add(append(pp, "static"), "Duplicate static port", fmt.Sprintf("Ports %q and %q both reserve host port %d.", other, p.Label, p.Static))
			}
			static[p.Static] = p.Label
		}
	}
}

func (v *validator) env(sp *Spec) {
	size := 0
	for _, k := range sortedKeys(sp.Env) {
		p := []string{"env", k}
		size += len(k) + len(sp.Env[k])
		if !envNameRE.MatchString(k) {
			v.add(p, "Invalid environment variable name", fmt.Sprintf("%q is not a valid environment variable name: use letters, digits and '_', not starting with a digit.", k))
		} else if strings.HasPrefix(k, "NOMAD_") {
			v.add(p, "Reserved environment variable", fmt.Sprintf("%q starts with NOMAD_, which Nomad sets for every task; choose another name.", k))
		}
		if strings.ContainsRune(sp.Env[k], 0) {
			v.add(p, "Invalid environment value", fmt.Sprintf("The value of %q contains a NUL character.", k))
		}
	}
	if size > MaxEnvBytes {
		v.add([]string{"env"}, "Environment too large", fmt.Sprintf("The environment holds %d bytes; at most %d are allowed.", size, MaxEnvBytes))
	}
}

func (v *validator) files(sp *Spec) {
	total := 0
	for _, f := range sp.Files {
		p := []string{"file", f.Path}
		if msg := filePathProblem(f.Path); msg != "" {
			v.add(p, "Invalid file path", fmt.Sprintf("The file path %q %s.", f.Path, msg))
		}
		if len(f.Content) > MaxFileBytes {
			v.add(append(p, "content"), "File too large", fmt.Sprintf("The content of %q is %d bytes; at most %d are allowed.", f.Path, len(f.Content), MaxFileBytes))
		}
		if !utf8.ValidString(f.Content) {
			v.add(append(p, "content"), "Invalid file content", fmt.Sprintf("The content of %q is not valid UTF-8 text.", f.Path))
		}
		total += len(f.Content)
		if !fileModeRE.MatchString(f.Mode) {
			v.add(append(p, "mode"), "Invalid file mode", fmt.Sprintf("The mode %q must be an octal permission such as \"0644\" or \"0600\".", f.Mode))
		}
	}
	if total > MaxTotalFileBytes {
		v.add([]string{"file"}, "Files too large", fmt.Sprintf("The files of this sandbox hold %d bytes together; at most %d are allowed.", total, MaxTotalFileBytes))
	}
}

// filePathProblem accepts only plain absolute paths: the path reaches the
// Nomad job and the sandbox, so quotes, "..", spaces and look-alike
// characters are refused rather than escaped.
func filePathProblem(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return "must be absolute (start with '/')"
	case p == "/" || strings.HasSuffix(p, "/"):
		return "must name a file, not a directory"
	case len(p) > 1024:
		return "is longer than 1024 bytes"
	case path.Clean(p) != p:
		return "must be clean: no '//', '.' or '..' elements"
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "." || seg == ".." {
			return "must not contain '.' or '..' elements"
		}
		if !fileSegmentRE.MatchString(seg) {
			return "may only contain ASCII letters, digits and the characters . _ - + @ ~ between slashes"
		}
	}
	return ""
}

func (v *validator) secrets(sp *Spec) {
	for _, s := range sp.Secrets {
		p := []string{"secret", s.Env}
		switch {
		case !envNameRE.MatchString(s.Env):
			v.add(p, "Invalid secret name", fmt.Sprintf("The secret's label %q is the environment variable it becomes and is not a valid name: use letters, digits and '_', not starting with a digit.", s.Env))
		case strings.HasPrefix(s.Env, "NOMAD_"):
			v.add(p, "Reserved environment variable", fmt.Sprintf("%q starts with NOMAD_, which Nomad sets for every task; choose another name.", s.Env))
		}
		if _, dup := sp.Env[s.Env]; dup {
			v.add(p, "Secret shadows env", fmt.Sprintf("%q is set both in env and as a secret; keep one.", s.Env))
		}
		if msg := variablePathProblem(s.Variable); msg != "" {
			v.add(append(p, "variable"), "Invalid variable path", fmt.Sprintf("The Nomad Variable path %q %s.", s.Variable, msg))
		}
		if !variableKeyRE.MatchString(s.Key) {
			v.add(append(p, "key"), "Invalid variable key", fmt.Sprintf("The key %q must be 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'.", s.Key))
		}
	}
}

// variablePathProblem follows the rules real Nomad enforces on variable
// paths, so that a bad path fails at validation, not when the task starts.
func variablePathProblem(p string) string {
	switch {
	case !variablePathRE.MatchString(p):
		return "must be 1 to 128 letters, digits and the characters - _ ~ /"
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//"):
		return "must not start or end with '/' or contain '//'"
	case p == "nomad":
		return "is Nomad's reserved top-level path"
	case strings.HasPrefix(p, "nomad/") && !strings.HasPrefix(p, "nomad/jobs") && !strings.HasPrefix(p, "nomad/job-templates"):
		return "is under nomad/, where only nomad/jobs and nomad/job-templates may hold variables"
	}
	return ""
}

func (v *validator) expiry(sp *Spec) {
	if sp.TTL != "" && sp.ExpiresAt != "" {
		v.add([]string{"expires_at"}, "Conflicting expiry", "Set either ttl or expires_at, not both.")
	}
	if sp.TTL != "" {
		d, err := time.ParseDuration(sp.TTL)
		switch {
		case err != nil:
			v.add([]string{"ttl"}, "Invalid duration", fmt.Sprintf("ttl %q is not a duration; write it as a number and unit, such as \"30m\", \"8h\" or \"72h\".", sp.TTL))
		case d < MinTTL || d > MaxTTL:
			v.add([]string{"ttl"}, "TTL out of range", fmt.Sprintf("ttl is %s; it must be between %s and %s.", d, MinTTL, MaxTTL))
		}
	}
	if sp.ExpiresAt != "" {
		if _, err := time.Parse(time.RFC3339, sp.ExpiresAt); err != nil {
			v.add([]string{"expires_at"}, "Invalid timestamp", fmt.Sprintf("expires_at %q is not an RFC 3339 timestamp such as \"2026-12-01T00:00:00Z\".", sp.ExpiresAt))
		}
	}
	if sp.OnExpiry != "" {
		v.oneOf([]string{"on_expiry"}, "on_expiry", sp.OnExpiry, onExpiry)
	}
}

func (v *validator) placement(pl *Placement) {
	for _, dc := range pl.Datacenters {
		if !noSpaceOrCtrlRE.MatchString(dc) || len(dc) > 128 {
			v.add([]string{"placement", "datacenters"}, "Invalid datacenter", fmt.Sprintf("The datacenter %q must be 1 to 128 characters with no spaces or control characters.", dc))
		}
	}
	if pl.NodePool != "" && !nodePoolRE.MatchString(pl.NodePool) {
		v.add([]string{"placement", "node_pool"}, "Invalid node pool", fmt.Sprintf("The node pool %q must be 1 to 128 letters, digits, '-' and '_'.", pl.NodePool))
	}
	for _, c := range pl.Constraints {
		p := []string{"placement", "constraint", c.key()}
		if !slices.Contains(constraintOperators, c.Operator) {
			v.add(append(p, "operator"), "Invalid constraint operator", fmt.Sprintf("operator is %q; Nomad takes %s.", c.Operator, quoteList(constraintOperators)))
			continue
		}
		needsAttr := c.Operator != "distinct_hosts"
		needsValue := !slices.Contains([]string{"distinct_hosts", "distinct_property", "is_set", "is_not_set"}, c.Operator)
		if needsAttr && c.Attribute == "" {
			v.add(p, "Missing constraint attribute", fmt.Sprintf("A constraint with operator %q needs an attribute, such as \"${node.class}\".", c.Operator))
		}
		if needsValue && c.Value == "" {
			v.add(p, "Missing constraint value", fmt.Sprintf("A constraint with operator %q needs a value.", c.Operator))
		}
		if c.Operator == "regexp" {
			if _, err := regexp.Compile(c.Value); err != nil {
				v.add(append(p, "value"), "Invalid regular expression", fmt.Sprintf("The constraint's value is not a valid regular expression: %v.", err))
			}
		}
	}
}

// ErrInvalid marks errors that describe bad input rather than a failure.
var ErrInvalid = errors.New("invalid sandbox declaration")

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
