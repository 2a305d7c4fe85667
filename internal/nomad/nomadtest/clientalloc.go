package nomadtest

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/nomad/api"
)

// The client's view of an allocation, for the client endpoints: exec, the
// file system and logs. Those are answered by the node that runs the
// allocation, which knows it once it has received it and until it is
// garbage collected; here, until its job is purged.

// ACL capabilities of the client endpoints, as the agent's client checks
// them (client/alloc_endpoint.go, client/fs_endpoint.go).
const (
	capAllocExec     = "alloc-exec"
	capAllocNodeExec = "alloc-node-exec"
	capReadFS        = "read-fs"
	capReadLogs      = "read-logs"
)

// noFSIsolation are the drivers whose tasks see the node's file system:
// exec into them needs alloc-node-exec as well as alloc-exec.
var noFSIsolation = map[string]bool{"raw_exec": true, "mock_driver": true}

// clientAlloc is what the client endpoints need of an allocation, copied
// under s.mu so that the request goes on without it.
type clientAlloc struct {
	id, name, namespace string
	jobID, jobName      string
	parentID, group     string
	region, datacenter  string
	index               int
	taskNames           []string
	tasks               map[string]*clientTask
	ports               []api.PortMapping
	jobMeta, groupMeta  map[string]string
}

type clientTask struct {
	name, driver string
	env, meta    map[string]string
	cpu, memory  int
	// state is "" for a task the client has not reported yet.
	state   string
	started bool
}

// errUnknownAlloc is the client's answer for an allocation it does not
// run: 404 over HTTP, close 1008 over exec's WebSocket (112, lifecycle/fs
// 14).
func errUnknownAlloc(id string) string { return fmt.Sprintf("Unknown allocation %q", id) }

// clientAllocLocked finds the allocation by its full ID and copies what
// the client endpoints need. An allocation the client has not received
// yet is unknown to the client. Callers hold s.mu.
func (s *Server) clientAllocLocked(id string) (*clientAlloc, bool) {
	a := s.allocs[id]
	if a == nil || !a.received {
		return nil, false
	}
	job := a.job
	ca := &clientAlloc{
		id:         a.a.ID,
		name:       a.a.Name,
		namespace:  a.a.Namespace,
		jobID:      deref(job.ID),
		jobName:    deref(job.Name),
		parentID:   deref(job.ParentID),
		group:      a.a.TaskGroup,
		region:     deref(job.Region),
		datacenter: "dc1",
		index:      allocIndex(a.a.Name),
		tasks:      make(map[string]*clientTask),
		jobMeta:    maps.Clone(job.Meta),
	}
	if ca.region == "" {
		ca.region = "global"
	}
	if a.a.AllocatedResources != nil {
		ca.ports = append(ca.ports, a.a.AllocatedResources.Shared.Ports...)
	}
	tg := s.group(a)
	if tg == nil {
		return ca, true
	}
	ca.groupMeta = maps.Clone(tg.Meta)
	for _, t := range tg.Tasks {
		ct := &clientTask{name: t.Name, driver: t.Driver, env: maps.Clone(t.Env), meta: maps.Clone(t.Meta)}
		if t.Resources != nil {
			ct.cpu, ct.memory = deref(t.Resources.CPU), deref(t.Resources.MemoryMB)
		}
		if ts := a.a.TaskStates[t.Name]; ts != nil {
			ct.state = ts.State
			ct.started = !ts.StartedAt.IsZero()
		}
		ca.taskNames = append(ca.taskNames, t.Name)
		ca.tasks[t.Name] = ct
	}
	return ca, true
}

// allocIndex is the N of an allocation named "job.group[N]".
func allocIndex(name string) int {
	i := strings.LastIndexByte(name, '[')
	if i < 0 || !strings.HasSuffix(name, "]") {
		return 0
	}
	n, _ := strconv.Atoi(name[i+1 : len(name)-1])
	return n
}

// taskEnv is the environment of a process started in the task, as a
// raw_exec task gets it (client/taskenv): the NOMAD_* variables, the
// task's env block on top, with ${...} references to those variables
// interpolated, and PATH and HOME of the server's own process underneath,
// so that sh, cat or env are found. The agent passes a raw_exec task the
// rest of its own environment too; this server keeps it out, since the
// environment of a test run may hold secrets.
func taskEnv(ca *clientAlloc, t *clientTask, allocDir string, hostEnv func(string) (string, bool)) []string {
	taskDir := filepath.Join(allocDir, t.name)
	env := map[string]string{
		"NOMAD_ALLOC_DIR":      filepath.Join(allocDir, "alloc"),
		"NOMAD_TASK_DIR":       filepath.Join(taskDir, "local"),
		"NOMAD_SECRETS_DIR":    filepath.Join(taskDir, "secrets"),
		"NOMAD_ALLOC_ID":       ca.id,
		"NOMAD_SHORT_ALLOC_ID": ca.id[:min(8, len(ca.id))],
		"NOMAD_ALLOC_NAME":     ca.name,
		"NOMAD_ALLOC_INDEX":    strconv.Itoa(ca.index),
		"NOMAD_TASK_NAME":      t.name,
		"NOMAD_GROUP_NAME":     ca.group,
		"NOMAD_JOB_NAME":       ca.jobName,
		"NOMAD_JOB_ID":         ca.jobID,
		"NOMAD_NAMESPACE":      ca.namespace,
		"NOMAD_DC":             ca.datacenter,
		"NOMAD_REGION":         ca.region,
		"NOMAD_CPU_LIMIT":      strconv.Itoa(t.cpu),
		"NOMAD_MEMORY_LIMIT":   strconv.Itoa(t.memory),
	}
	if ca.parentID != "" {
		env["NOMAD_JOB_PARENT_ID"] = ca.parentID
	}
	for _, p := range ca.ports {
		label := cleanEnvVar(p.Label)
		to := p.To
		if to <= 0 {
			to = p.Value
		}
		host := strconv.Itoa(p.Value)
		env["NOMAD_IP_"+label] = p.HostIP
		env["NOMAD_PORT_"+label] = strconv.Itoa(to)
		env["NOMAD_ADDR_"+label] = net.JoinHostPort(p.HostIP, strconv.Itoa(to))
		env["NOMAD_HOST_IP_"+label] = p.HostIP
		env["NOMAD_HOST_PORT_"+label] = host
		env["NOMAD_HOST_ADDR_"+label] = net.JoinHostPort(p.HostIP, host)
		env["NOMAD_ALLOC_IP_"+label] = p.HostIP
		env["NOMAD_ALLOC_PORT_"+label] = strconv.Itoa(to)
		env["NOMAD_ALLOC_ADDR_"+label] = net.JoinHostPort(p.HostIP, strconv.Itoa(to))
	}
	// Task meta wins over group meta, which wins over job meta; each key
	// is given as written and upper-cased, cleaned for the environment.
	for _, m := range []map[string]string{ca.jobMeta, ca.groupMeta, t.meta} {
		for k, v := range m {
			env[cleanEnvVar("NOMAD_META_"+k)] = v
			env[cleanEnvVar("NOMAD_META_"+strings.ToUpper(k))] = v
		}
	}
	out := make(map[string]string, len(env)+len(t.env)+2)
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := hostEnv(k); ok {
			out[k] = v
		}
	}
	maps.Copy(out, env)
	for k, v := range t.env {
		out[k] = interpolate(v, env)
	}
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	list := make([]string, 0, len(keys))
	for _, k := range keys {
		list = append(list, k+"="+out[k])
	}
	return list
}

// cleanEnvVar replaces what may not stand in a variable name with "_", as
// the agent's helper.CleanEnvVar does.
func cleanEnvVar(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c == '_', c == '.', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && c >= '0' && c <= '9':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

var envRef = regexp.MustCompile(`\$\{([^}]+)\}`)

// interpolate replaces ${NAME} with the task's NOMAD_* variable NAME and
// leaves any other reference as it is.
func interpolate(v string, env map[string]string) string {
	if !strings.Contains(v, "${") {
		return v
	}
	return envRef.ReplaceAllStringFunc(v, func(ref string) string {
		if val, ok := env[ref[2:len(ref)-1]]; ok {
			return val
		}
		return ref
	})
}
