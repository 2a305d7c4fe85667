package examples_test

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// jobFacts is what the policy is checked against.
type jobFacts struct {
	name      string
	namespace string    // the job's, where the controller keeps its variables
	prefix    string    // the ha block's variable_prefix
	prefixAt  hcl.Range // where the prefix was set, or the ha block
}

// hostIP is the node address the test renders NOMAD_ADDR_<port> with.
const hostIP = "10.0.0.5"

// taskEnv is what Nomad sets in a docker task, with plausible values: the
// task's local, secrets and alloc directories are mounted at these paths.
// NOMAD_ADDR_<label> and friends are added per port label.
func taskEnv(job, namespace string, ports map[string]int64) map[string]string {
	env := map[string]string{
		"NOMAD_ALLOC_DIR":   "/alloc",
		"NOMAD_TASK_DIR":    "/local",
		"NOMAD_SECRETS_DIR": "/secrets",
		"NOMAD_ALLOC_ID":    "5c6328f7-48c5-4d03-bada-91ef2e904d0d",
		"NOMAD_JOB_ID":      job,
		"NOMAD_JOB_NAME":    job,
		"NOMAD_NAMESPACE":   namespace,
	}
	hostPort := 25000
	for label := range ports {
		hostPort++
		env["NOMAD_ADDR_"+label] = fmt.Sprintf("%s:%d", hostIP, hostPort)
		env["NOMAD_IP_"+label] = hostIP
		env["NOMAD_HOST_PORT_"+label] = fmt.Sprint(hostPort)
	}
	return env
}

// evalContext resolves var.image and the ${NOMAD_*} names Nomad
// interpolates at run time.
func evalContext(env map[string]string) *hcl.EvalContext {
	vars := map[string]cty.Value{
		"var": cty.ObjectVal(map[string]cty.Value{"image": cty.StringVal("registry.example/agentkernel-controller:test")}),
	}
	for k, v := range env {
		vars[k] = cty.StringVal(v)
	}
	return &hcl.EvalContext{Variables: vars}
}

// containerPath is where a template destination (relative to the task
// directory) appears inside a docker task.
func containerPath(dest string) string {
	return "/" + path.Clean(dest)
}

// minKillTimeout leaves room for the controller's shutdown: up to 10 s for
// in-flight reconciles, then the release of the leader lock.
const minKillTimeout = 15 * time.Second

// checkJob checks the controller's jobspec. The facts are nil when the
// file is too broken to say what the policy must grant.
func checkJob(name string, src []byte) (*jobFacts, problems) {
	body, ps := parse(name, src)
	if body == nil {
		return nil, ps
	}
	whole := body.Range()

	// The image comes from the operator: no invented registry default.
	var image *hclsyntax.Block
	for _, v := range blocksOf(body, "variable") {
		if len(v.Labels) == 1 && v.Labels[0] == "image" {
			image = v
		}
	}
	switch {
	case image == nil:
		ps.add(whole, `no variable "image": the image must be given with nomad job run -var image=...`)
	case image.Body.Attributes["default"] != nil:
		ps.add(image.Body.Attributes["default"].SrcRange, `variable "image" has a default; leave it out so that the operator names the image`)
	}

	jobs := blocksOf(body, "job")
	if len(jobs) != 1 {
		ps.add(whole, "%d job blocks, want 1", len(jobs))
		return nil, ps
	}
	job := jobs[0]
	facts := &jobFacts{name: job.Labels[0], namespace: "default"}
	if typ, _ := stringAttr(job.Body, "type", nil); typ != "service" {
		ps.add(job.DefRange(), `job %q: type = %q, want "service"`, facts.name, typ)
	}
	if ns, ok := stringAttr(job.Body, "namespace", nil); ok {
		facts.namespace = ns
	}

	groups := blocksOf(job.Body, "group")
	if len(groups) != 1 {
		ps.add(job.DefRange(), "job %q has %d groups, want 1", facts.name, len(groups))
		return nil, ps
	}
	group := groups[0]
	gname := group.Labels[0]
	if n, ok := numberAttr(group.Body, "count"); !ok || n < 2 {
		ps.add(group.DefRange(), "group %q: count must be at least 2 for a standby to take over (got %d)", gname, n)
	}
	if !spreadsInstances(job.Body) && !spreadsInstances(group.Body) {
		ps.add(group.DefRange(), `group %q has no distinct_hosts constraint or spread block: its instances may share a node and fail together`, gname)
	}

	// Port labels and the port the task listens on inside its network.
	ports := map[string]int64{}
	for _, nw := range blocksOf(group.Body, "network") {
		for _, p := range blocksOf(nw.Body, "port") {
			to, ok := numberAttr(p.Body, "to")
			if !ok {
				to, _ = numberAttr(p.Body, "static")
			}
			ports[p.Labels[0]] = to
		}
	}
	if len(ports) == 0 {
		ps.add(group.DefRange(), "group %q: no network block with a port for the API", gname)
	}

	servicePort := checkService(&ps, group, ports)

	dataRoots := checkDataDir(&ps, group)

	if up := blocksOf(group.Body, "update"); len(up) == 0 {
		ps.add(group.DefRange(), "group %q: no update block (max_parallel = 1 replaces one instance at a time)", gname)
	} else if n, ok := numberAttr(up[0].Body, "max_parallel"); !ok || n != 1 {
		ps.add(up[0].DefRange(), "update: max_parallel = %d, want 1: replace one instance at a time", n)
	}
	if len(blocksOf(group.Body, "restart")) == 0 {
		ps.add(group.DefRange(), "group %q: no restart block", gname)
	}

	tasks := blocksOf(group.Body, "task")
	if len(tasks) != 1 {
		ps.add(group.DefRange(), "group %q has %d tasks, want 1", gname, len(tasks))
		return nil, ps
	}
	task := tasks[0]
	env := taskEnv(facts.name, facts.namespace, ports)
	ctx := evalContext(env)

	configPath := checkTaskConfig(&ps, task, servicePort, ctx)

	if v, ok := stringAttr(task.Body, "kill_timeout", nil); !ok {
		ps.add(task.DefRange(), "task %q: no kill_timeout; the default 5s cuts the controller's shutdown short", task.Labels[0])
	} else if d, err := time.ParseDuration(v); err != nil || d < minKillTimeout {
		ps.add(task.Body.Attributes["kill_timeout"].SrcRange, "kill_timeout = %q, want a duration of at least %s: in-flight reconciles (10s) and the lock's release", v, minKillTimeout)
	}
	if sig, ok := stringAttr(task.Body, "kill_signal", nil); ok && sig != "SIGTERM" && sig != "SIGINT" {
		ps.add(task.Body.Attributes["kill_signal"].SrcRange, "kill_signal = %q: the controller shuts down cleanly on SIGTERM or SIGINT only", sig)
	}

	if res := blocksOf(task.Body, "resources"); len(res) == 0 {
		ps.add(task.DefRange(), "task %q: no resources block", task.Labels[0])
	} else {
		for _, k := range []string{"cpu", "memory"} {
			if n, ok := numberAttr(res[0].Body, k); !ok || n <= 0 {
				ps.add(res[0].DefRange(), "resources: no %s", k)
			}
		}
	}

	if !exposesIdentity(task) {
		ps.add(task.DefRange(), "task %q: no identity block with env = true or file = true: the controller has no Nomad token", task.Labels[0])
	}

	// Templates: the API token, and the config file -config names.
	var tokenPath string
	var config *hclsyntax.Block
	for _, tpl := range blocksOf(task.Body, "template") {
		data, _ := stringAttr(tpl.Body, "data", nil)
		dest, _ := stringAttr(tpl.Body, "destination", nil)
		switch {
		case strings.Contains(data, ".api_token"):
			tokenPath = containerPath(dest)
			checkTokenTemplate(&ps, tpl, facts.name, data, dest)
		case configPath != "" && containerPath(dest) == configPath:
			config = tpl
		}
	}
	if tokenPath == "" {
		ps.add(task.DefRange(), `task %q: no template rendering the API token (item api_token of the variable nomad/jobs/%s)`, task.Labels[0], facts.name)
	}
	if config == nil {
		if configPath != "" {
			ps.add(task.DefRange(), "task %q: no template renders %s, the file -config names", task.Labels[0], configPath)
		}
		return nil, ps
	}
	checkConfigTemplate(&ps, config, facts, renderWant{
		env:         env,
		listenPort:  ports[servicePort],
		advertise:   env["NOMAD_ADDR_"+servicePort],
		servicePort: servicePort,
		tokenFile:   tokenPath,
		dataRoots:   dataRoots,
	})
	return facts, ps
}

// spreadsInstances reports a distinct_hosts constraint or a spread block.
func spreadsInstances(body *hclsyntax.Body) bool {
	if len(blocksOf(body, "spread")) > 0 {
		return true
	}
	for _, c := range blocksOf(body, "constraint") {
		if on, ok := boolAttr(c.Body, "distinct_hosts"); ok && on {
			return true
		}
		op, _ := stringAttr(c.Body, "operator", nil)
		val, ok := stringAttr(c.Body, "value", nil)
		if op == "distinct_hosts" && (!ok || val == "true") {
			return true
		}
	}
	return false
}

// checkService wants a Nomad-native service whose http check probes
// /readyz, and returns its port label.
func checkService(ps *problems, group *hclsyntax.Block, ports map[string]int64) string {
	services := blocksOf(group.Body, "service")
	if len(services) == 0 {
		ps.add(group.DefRange(), "group %q: no service block", group.Labels[0])
		return ""
	}
	svc := services[0]
	if p, _ := stringAttr(svc.Body, "provider", nil); p != "nomad" {
		ps.add(svc.DefRange(), `service: provider = %q, want "nomad" (Nomad's own catalogue and checks)`, p)
	}
	port, _ := stringAttr(svc.Body, "port", nil)
	if _, ok := ports[port]; !ok {
		ps.add(svc.DefRange(), "service: port = %q is not a port label of the group's network block", port)
	}
	var ready bool
	for _, c := range blocksOf(svc.Body, "check") {
		typ, _ := stringAttr(c.Body, "type", nil)
		p, _ := stringAttr(c.Body, "path", nil)
		if typ != "http" || p != "/readyz" {
			continue
		}
		ready = true
		for _, k := range []string{"interval", "timeout"} {
			if v, ok := stringAttr(c.Body, k, nil); !ok {
				ps.add(c.DefRange(), "service check: no %s", k)
			} else if _, err := time.ParseDuration(v); err != nil {
				ps.add(c.Body.Attributes[k].SrcRange, "service check: %s = %q is not a duration", k, v)
			}
		}
	}
	if !ready {
		ps.add(svc.DefRange(), `service: no check with type = "http" and path = "/readyz"`)
	}
	return port
}

// checkDataDir wants the data dir on storage that outlives a restart: a
// sticky, migrating ephemeral disk or a volume. It returns the directories
// the data dir may be under.
func checkDataDir(ps *problems, group *hclsyntax.Block) []string {
	var roots []string
	if disks := blocksOf(group.Body, "ephemeral_disk"); len(disks) > 0 {
		d := disks[0]
		sticky, _ := boolAttr(d.Body, "sticky")
		migrate, _ := boolAttr(d.Body, "migrate")
		if !sticky || !migrate {
			ps.add(d.DefRange(), "ephemeral_disk: want sticky = true and migrate = true, so a replacement allocation keeps the data dir")
		}
		if n, ok := numberAttr(d.Body, "size"); !ok || n <= 0 {
			ps.add(d.DefRange(), "ephemeral_disk: no size")
		}
		roots = append(roots, "/alloc")
	}
	if len(blocksOf(group.Body, "volume")) > 0 {
		for _, task := range blocksOf(group.Body, "task") {
			for _, vm := range blocksOf(task.Body, "volume_mount") {
				if dest, ok := stringAttr(vm.Body, "destination", nil); ok {
					roots = append(roots, dest)
				}
			}
		}
	}
	if len(roots) == 0 {
		ps.add(group.DefRange(), "group %q: no ephemeral_disk or mounted volume for the data dir", group.Labels[0])
	}
	return roots
}

// checkTaskConfig wants the docker driver running var.image with
// -config <file>, publishing the service's port; it returns the file.
func checkTaskConfig(ps *problems, task *hclsyntax.Block, servicePort string, ctx *hcl.EvalContext) string {
	if d, _ := stringAttr(task.Body, "driver", nil); d != "docker" {
		ps.add(task.DefRange(), `task %q: driver = %q, want "docker"`, task.Labels[0], d)
	}
	configs := blocksOf(task.Body, "config")
	if len(configs) == 0 {
		ps.add(task.DefRange(), "task %q: no config block", task.Labels[0])
		return ""
	}
	cfg := configs[0]
	if img := cfg.Body.Attributes["image"]; img == nil || !referencesVar(img.Expr, "image") {
		ps.add(cfg.DefRange(), "config: image must be var.image")
	}
	if ports, _ := stringsAttr(cfg.Body, "ports", ctx); servicePort != "" && !slices.Contains(ports, servicePort) {
		ps.add(cfg.DefRange(), "config: ports must publish %q, the service's port", servicePort)
	}
	args, ok := stringsAttr(cfg.Body, "args", ctx)
	i := slices.Index(args, "-config")
	if !ok || i < 0 || i+1 >= len(args) {
		ps.add(cfg.DefRange(), `config: args must hold "-config" and the rendered config file`)
		return ""
	}
	return args[i+1]
}

func referencesVar(expr hclsyntax.Expression, name string) bool {
	for _, tr := range expr.Variables() {
		if tr.RootName() != "var" || len(tr) < 2 {
			continue
		}
		if a, ok := tr[1].(hcl.TraverseAttr); ok && a.Name == name {
			return true
		}
	}
	return false
}

// exposesIdentity reports a default identity given to the task as
// NOMAD_TOKEN or as a file.
func exposesIdentity(task *hclsyntax.Block) bool {
	for _, id := range blocksOf(task.Body, "identity") {
		if n, ok := stringAttr(id.Body, "name", nil); ok && n != "default" {
			continue
		}
		env, _ := boolAttr(id.Body, "env")
		file, _ := boolAttr(id.Body, "file")
		if env || file {
			return true
		}
	}
	return false
}

func checkTokenTemplate(ps *problems, tpl *hclsyntax.Block, job, data, dest string) {
	if want := fmt.Sprintf(`nomadVar "nomad/jobs/%s"`, job); !strings.Contains(data, want) {
		ps.add(tpl.DefRange(), "API token template: want the token from %s, which the job's identity may read", want)
	}
	if perms, _ := stringAttr(tpl.Body, "perms", nil); perms != "600" {
		ps.add(tpl.DefRange(), `API token template: perms = %q, want "600" (the controller refuses a token file others can read)`, perms)
	}
	if !strings.HasPrefix(path.Clean(dest), "secrets/") {
		ps.add(tpl.DefRange(), "API token template: destination = %q, want a file under secrets/", dest)
	}
}

// renderWant is what the rendered config must agree with.
type renderWant struct {
	env         map[string]string
	listenPort  int64  // the port the service's label maps to in the task
	advertise   string // host:port other instances reach this one at
	servicePort string
	tokenFile   string
	dataRoots   []string
}

var envCall = regexp.MustCompile(`\{\{-?\s*env\s+"([^"]*)"\s*-?\}\}`)

// render replaces each {{ env "NAME" }} with a plausible value; any other
// template action is left for the caller to report.
func render(data string, env map[string]string) (string, []string) {
	var unknown []string
	out := envCall.ReplaceAllStringFunc(data, func(call string) string {
		name := envCall.FindStringSubmatch(call)[1]
		v, ok := env[name]
		if !ok {
			unknown = append(unknown, name)
		}
		return v
	})
	return out, unknown
}

// configSchema is the controller's config file: cmd/controller's
// fileConfig plus the ha block. An attribute outside it is a typo.
var configSchema = &hcl.BodySchema{
	Attributes: attrs("data_dir", "listen", "token_file", "workers", "resync", "log_level", "log_format"),
	Blocks:     []hcl.BlockHeaderSchema{{Type: "nomad"}, {Type: "policy"}, {Type: "ha"}},
}

var configBlockSchemas = map[string]*hcl.BodySchema{
	"nomad":  {Attributes: attrs("address", "namespace", "region", "token_file", "ca_cert", "client_cert", "client_key", "write_rate", "write_burst")},
	"policy": {Attributes: attrs("allowed_drivers", "max_vcpus", "max_memory_mb", "default_datacenters", "default_namespace")},
	"ha":     {Attributes: attrs("enabled", "instance_id", "advertise_addr", "variable_prefix", "lock_ttl", "lock_delay", "adopt_owners")},
}

func attrs(names ...string) []hcl.AttributeSchema {
	out := make([]hcl.AttributeSchema, len(names))
	for i, n := range names {
		out[i] = hcl.AttributeSchema{Name: n}
	}
	return out
}

// checkConfigTemplate renders the config template with plausible values,
// parses it as HCL and checks what running highly available on Nomad
// needs. Problems in the rendered text are reported at the template.
func checkConfigTemplate(ps *problems, tpl *hclsyntax.Block, facts *jobFacts, want renderWant) {
	at := tpl.DefRange()
	data, ok := stringAttr(tpl.Body, "data", nil)
	if !ok {
		ps.add(at, "config template: no data")
		return
	}
	text, unknown := render(data, want.env)
	for _, name := range unknown {
		ps.add(at, "config template: env %q is not set in a Nomad task", name)
	}
	if strings.Contains(text, "{{") {
		ps.add(at, "config template: holds a template action other than env; this check cannot render it")
		return
	}
	body, parseProblems := parse("rendered config", []byte(text))
	for _, p := range parseProblems {
		ps.add(at, "config template does not render to valid HCL: %s", p)
	}
	if body == nil {
		return
	}
	content, diags := body.Content(configSchema)
	for _, d := range diags {
		ps.add(at, "rendered config: %s", d.Error())
	}
	blocks := map[string]*hclsyntax.Body{}
	for _, b := range content.Blocks {
		sb := b.Body.(*hclsyntax.Body)
		if _, d := sb.Content(configBlockSchemas[b.Type]); d.HasErrors() {
			for _, e := range d {
				ps.add(at, "rendered config, %s block: %s", b.Type, e.Error())
			}
		}
		blocks[b.Type] = sb
	}

	if listen, ok := stringAttr(body, "listen", nil); !ok {
		ps.add(at, "rendered config: no listen")
	} else if host, port, err := net.SplitHostPort(listen); err != nil || (host != "" && host != "0.0.0.0" && host != "::") || port != fmt.Sprint(want.listenPort) {
		ps.add(at, "rendered config: listen = %q, want all interfaces on port %d, where the service's port %q leads", listen, want.listenPort, want.servicePort)
	}
	if tf, _ := stringAttr(body, "token_file", nil); tf != want.tokenFile {
		ps.add(at, "rendered config: token_file = %q, want %q, the API token template's file (a non-loopback listener needs a token)", tf, want.tokenFile)
	}
	if dd, ok := stringAttr(body, "data_dir", nil); !ok || !slices.ContainsFunc(want.dataRoots, func(root string) bool {
		return strings.HasPrefix(path.Clean(dd)+"/", path.Clean(root)+"/")
	}) {
		ps.add(at, "rendered config: data_dir = %q, want a directory under %s", dd, strings.Join(want.dataRoots, " or "))
	}

	nomad := blocks["nomad"]
	if nomad == nil {
		ps.add(at, "rendered config: no nomad block")
	} else if ns, _ := stringAttr(nomad, "namespace", nil); ns != facts.namespace {
		ps.add(at, "rendered config: nomad namespace = %q, want %q, the job's namespace, where the policy grants the variables", ns, facts.namespace)
	}

	ha := blocks["ha"]
	if ha == nil {
		ps.add(at, "rendered config: no ha block")
		return
	}
	if on, ok := boolAttr(ha, "enabled"); !ok || !on {
		ps.add(at, "rendered config: ha enabled must be true")
	}
	adv, _ := stringAttr(ha, "advertise_addr", nil)
	if u, err := url.Parse(adv); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host != want.advertise {
		ps.add(at, `rendered config: ha advertise_addr = %q, want "http://" and {{ env "NOMAD_ADDR_%s" }}, the address other instances reach this one at`, adv, want.servicePort)
	}
	facts.prefix, facts.prefixAt = "agentkernel", at
	if p, ok := stringAttr(ha, "variable_prefix", nil); ok {
		facts.prefix = p
	}
	if v, ok := stringAttr(ha, "lock_ttl", nil); ok {
		if d, err := time.ParseDuration(v); err != nil || d < 10*time.Second || d > 24*time.Hour {
			ps.add(at, "rendered config: ha lock_ttl = %q, want a duration Nomad accepts: 10s to 24h", v)
		}
	}
	if v, ok := stringAttr(ha, "lock_delay", nil); ok {
		if _, err := time.ParseDuration(v); err != nil {
			ps.add(at, "rendered config: ha lock_delay = %q is not a duration", v)
		}
	}
	if ha.Attributes["adopt_owners"] != nil {
		if _, ok := stringsAttr(ha, "adopt_owners", nil); !ok {
			ps.add(at, "rendered config: ha adopt_owners must be a list of owner IDs")
		}
	}
}
