package nomad

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// Job Meta keys. The first two are what agentkernel's own Nomad backend
// writes, so its CLI still recognises the jobs; the owner is the store ID
// of the controller that created the job, and the hash is the spec it ran.
// Nothing volatile goes in Meta: on Nomad a Meta change replaces the
// running allocation (fact 81).
const (
	MetaManaged  = "agentkernel-managed"
	MetaSandbox  = "agentkernel-sandbox"
	MetaOwner    = "agentkernel-owner"
	MetaSpecHash = "agentkernel-spec-hash"
)

// Names inside the job: one group running one task.
const (
	GroupName = "sandbox"
	TaskName  = "sandbox"
)

// ErrDriverNotAllowed is returned for a driver the controller's
// configuration does not allow, raw_exec unless explicitly enabled.
var ErrDriverNotAllowed = errors.New("driver not allowed")

// RenderOptions are the controller-wide settings rendering needs.
type RenderOptions struct {
	// Owner is the store ID stamped on every job as ownership.
	Owner string
	// DefaultDatacenters apply when a sandbox names none (["*"] if empty,
	// Nomad's own default, spelled out so that drift checks compare like
	// with like).
	DefaultDatacenters []string
	// AllowRawExec enables the raw_exec driver, which has no isolation.
	AllowRawExec bool
	// PidsLimit bounds the processes in a docker sandbox (default 4096).
	PidsLimit int
}

// DefaultPidsLimit keeps a fork bomb inside a sandbox from exhausting the
// node's process table.
const DefaultPidsLimit = 4096

// Policies: a sandbox is long-lived and comes back when its task dies.
// agentkernel runs `sleep infinity` as a batch job, which on Nomad ends
// `dead` once its restart attempts and its single reschedule are used up
// (facts 140-143). A service job is rescheduled without limit instead;
// the restart policy retries in place a few times first, and the
// exponential reschedule delay keeps a crash-looping image from churning
// the cluster.
var (
	restartPolicy = api.RestartPolicy{
		Attempts: ptr(3),
		Interval: ptr(30 * time.Minute),
		Delay:    ptr(15 * time.Second),
		Mode:     ptr("fail"),
	}
	reschedulePolicy = api.ReschedulePolicy{
		Unlimited:     ptr(true),
		Delay:         ptr(15 * time.Second),
		DelayFunction: ptr("exponential"),
		MaxDelay:      ptr(10 * time.Minute),
	}
)

// Render turns a canonical sandbox into the Nomad job that runs it. The
// result depends only on its inputs, so rendering twice gives equal jobs
// and a live job can be compared with a fresh rendering.
func Render(sb *spec.Sandbox, opts RenderOptions) (*api.Job, error) {
	sp := &sb.Spec
	if sp.Driver == spec.DriverRawExec && !opts.AllowRawExec {
		return nil, fmt.Errorf("render sandbox %q: %w: raw_exec runs tasks without any isolation and is off unless the controller allows it", sb.Key(), ErrDriverNotAllowed)
	}
	if opts.PidsLimit == 0 {
		opts.PidsLimit = DefaultPidsLimit
	}
	dcs := sp.Placement.Datacenters
	if len(dcs) == 0 {
		dcs = opts.DefaultDatacenters
	}
	if len(dcs) == 0 {
		dcs = []string{"*"}
	}

	task := &api.Task{
		Name:   TaskName,
		Driver: sp.Driver,
		Config: driverConfig(sp, opts),
		Env:    cloneMap(sp.Env),
		Resources: &api.Resources{
			CPU:      ptr(sp.CPUMHz()),
			MemoryMB: ptr(sp.MemoryMB),
		},
	}
	for _, f := range sp.Files {
		task.Templates = append(task.Templates, fileTemplate(f, sp.Driver))
	}
	if len(sp.Secrets) > 0 {
		task.Templates = append(task.Templates, secretsTemplate(sp.Secrets))
	}

	group := &api.TaskGroup{
		Name:             ptr(GroupName),
		Count:            ptr(1),
		Update:           noDeployment(),
		Tasks:            []*api.Task{task},
		RestartPolicy:    ptr(restartPolicy),
		ReschedulePolicy: ptr(reschedulePolicy),
		Networks:         []*api.NetworkResource{network(sp)},
	}

	job := &api.Job{
		ID:          ptr(sb.JobID()),
		Name:        ptr(sb.JobID()),
		Namespace:   ptr(sb.Namespace),
		Type:        ptr(api.JobTypeService),
		Datacenters: append([]string(nil), dcs...),
		Meta: map[string]string{
			MetaManaged:  "true",
			MetaSandbox:  sb.Name,
			MetaOwner:    opts.Owner,
			MetaSpecHash: sp.Hash(),
		},
		TaskGroups: []*api.TaskGroup{group},
		Update:     noDeployment(),
	}
	if sp.Placement.NodePool != "" {
		job.NodePool = ptr(sp.Placement.NodePool)
	}
	for _, c := range sp.Placement.Constraints {
		job.Constraints = append(job.Constraints, &api.Constraint{LTarget: c.Attribute, RTarget: c.Value, Operand: c.Operator})
	}
	if sp.State == spec.StateStopped {
		job.Stop = ptr(true)
	}
	return job, nil
}

// noDeployment is the update strategy of a sandbox: max_parallel 0, so
// that Nomad makes no deployment. One allocation gains nothing from one
// (no canary, no rolling, no auto-revert), while each version's
// deployment more than doubles the events Nomad emits for the sandbox
// and adds a deployment-watcher evaluation (recorded on a real agent).
// Job and group level both, as Nomad reads the group's and a job-level
// block fills in groups that have none.
func noDeployment() *api.UpdateStrategy { return &api.UpdateStrategy{MaxParallel: ptr(0)} }

// network is the group network: "none" gives the sandbox its own empty
// network namespace, for every driver that can have one.
func network(sp *spec.Spec) *api.NetworkResource {
	n := &api.NetworkResource{Mode: sp.Network}
	for _, p := range sp.Ports {
		port := api.Port{Label: p.Label, Value: p.Static, To: p.To}
		if p.Static != 0 {
			n.ReservedPorts = append(n.ReservedPorts, port)
		} else {
			n.DynamicPorts = append(n.DynamicPorts, port)
		}
	}
	return n
}

// driverConfig hardens docker by default: no capabilities, no privilege
// escalation, a process limit, no network unless declared. exec's
// isolation (chroot, PID and mount namespaces, user nobody) is Nomad's.
func driverConfig(sp *spec.Spec, opts RenderOptions) map[string]any {
	cfg := map[string]any{"command": sp.Command[0]}
	if len(sp.Command) > 1 {
		cfg["args"] = append([]string(nil), sp.Command[1:]...)
	}
	if sp.Driver != spec.DriverDocker {
		return cfg
	}
	cfg["image"] = sp.Image
	cfg["cap_drop"] = []string{"ALL"}
	cfg["privileged"] = false
	cfg["security_opt"] = []string{"no-new-privileges"}
	cfg["pids_limit"] = opts.PidsLimit
	cfg["readonly_rootfs"] = sp.ReadOnly
	switch sp.Network {
	case spec.NetworkNone:
		cfg["network_mode"] = "none"
	case spec.NetworkHost:
		cfg["network_mode"] = "host"
	}
	var mounts []map[string]any
	for _, f := range sp.Files {
		// Templates render inside the task directory; a bind mount puts
		// each file at its declared path in the container.
		mounts = append(mounts, map[string]any{
			"type":     "bind",
			"source":   fileDest(f.Path, spec.DriverDocker),
			"target":   f.Path,
			"readonly": !writable(f.Mode),
		})
	}
	if len(mounts) > 0 {
		cfg["mount"] = mounts
	}
	return cfg
}

// writable reports whether an octal mode grants any write permission; a
// file nobody may write is also mounted read-only.
func writable(mode string) bool {
	m, err := strconv.ParseUint(mode, 8, 32)
	return err == nil && m&0o222 != 0
}

// fileDest is where Nomad renders an injected file, relative to the task
// directory. exec's chroot is the task directory, so the declared path
// appears as is; raw_exec has no chroot, so the file stays inside the task
// directory rather than being written onto the host; docker mounts it.
func fileDest(p, driver string) string {
	rel := strings.TrimPrefix(p, "/")
	if driver == spec.DriverExec {
		return rel
	}
	return path.Join("local", "agentkernel-files", rel)
}

// fileTemplate carries the content in the job. Nomad templates evaluate
// {{ }} by default; the delimiters chosen never occur in the content, so it
// is rendered byte for byte whatever it holds.
func fileTemplate(f spec.File, driver string) *api.Template {
	left, right := delimitersFor(f.Content)
	return &api.Template{
		EmbeddedTmpl: ptr(f.Content),
		DestPath:     ptr(fileDest(f.Path, driver)),
		Perms:        ptr(f.Mode),
		ChangeMode:   ptr("noop"),
		LeftDelim:    ptr(left),
		RightDelim:   ptr(right),
	}
}

// delimitersFor picks template delimiters absent from content. The choice
// depends on the content alone, keeping rendering deterministic.
func delimitersFor(content string) (string, string) {
	for i := 0; ; i++ {
		left, right := fmt.Sprintf("[[ak%d:", i), fmt.Sprintf(":ak%d]]", i)
		if !strings.Contains(content, left) && !strings.Contains(content, right) {
			return left, right
		}
	}
}

// SecretsDest is the env file the secrets template writes; Nomad reads it
// into the task's environment and keeps it in the task's secrets dir,
// which only the task can read.
const SecretsDest = "secrets/agentkernel-secrets.env"

// secretsTemplate reads each named Nomad Variable item when the task
// starts; the values never pass through the controller. A changed value
// restarts the task, since environment variables are read only at start.
// Paths, keys and names are validated by spec to characters that need no
// quoting inside the template.
func secretsTemplate(secrets []spec.Secret) *api.Template {
	var b strings.Builder
	for _, s := range secrets {
		fmt.Fprintf(&b, "{{ with nomadVar %q }}%s={{ index . %q | toJSON }}{{ end }}\n", s.Variable, s.Env, s.Key)
	}
	return &api.Template{
		EmbeddedTmpl:  ptr(b.String()),
		DestPath:      ptr(SecretsDest),
		Envvars:       ptr(true),
		ChangeMode:    ptr("restart"),
		Perms:         ptr("0400"),
		ErrMissingKey: ptr(true),
	}
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func ptr[T any](v T) *T { return &v }
