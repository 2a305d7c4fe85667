package spec

// Profile names, after agentkernel's security profiles.
const (
	ProfilePermissive  = "permissive"
	ProfileModerate    = "moderate"
	ProfileRestrictive = "restrictive"
)

// DefaultProfile applies when a sandbox names none: no network, a writable
// root. It matches agentkernel's own default.
const DefaultProfile = ProfileModerate

// profileDefaults are the values a profile gives to attributes the
// declaration leaves out. Secure by default: only permissive has a network.
type profileDefaults struct {
	network  string
	readOnly bool
	memoryMB int
	vcpus    float64
}

var profiles = map[string]profileDefaults{
	ProfileRestrictive: {network: NetworkNone, readOnly: true, memoryMB: 256, vcpus: 1},
	ProfileModerate:    {network: NetworkNone, readOnly: false, memoryMB: 512, vcpus: 1},
	ProfilePermissive:  {network: NetworkBridge, readOnly: false, memoryMB: 1024, vcpus: 1},
}

// Defaults for attributes that do not depend on the profile.
var (
	// DefaultCommand keeps the sandbox alive until it is stopped, so that
	// an agent can exec into it.
	DefaultCommand = []string{"sh", "-c", "sleep infinity"}
)

const (
	DefaultDriver   = DriverDocker
	DefaultState    = StateRunning
	DefaultOnExpiry = OnExpiryDelete
	DefaultFileMode = "0644"
	// DefaultConstraintOperator is Nomad's own default.
	DefaultConstraintOperator = "="
)

// Enumerated attribute values.
const (
	DriverDocker  = "docker"
	DriverExec    = "exec"
	DriverRawExec = "raw_exec"

	NetworkNone   = "none"
	NetworkBridge = "bridge"
	NetworkHost   = "host"

	StateRunning = "running"
	StateStopped = "stopped"

	OnExpiryDelete = "delete"
	OnExpiryStop   = "stop"
)

var (
	drivers   = []string{DriverDocker, DriverExec, DriverRawExec}
	networks  = []string{NetworkNone, NetworkBridge, NetworkHost}
	states    = []string{StateRunning, StateStopped}
	onExpiry  = []string{OnExpiryDelete, OnExpiryStop}
	profileNs = []string{ProfilePermissive, ProfileModerate, ProfileRestrictive}
	// constraintOperators are the operators Nomad's constraint block takes.
	constraintOperators = []string{
		"=", "!=", ">", ">=", "<", "<=",
		"distinct_hosts", "distinct_property", "regexp",
		"set_contains", "set_contains_all", "set_contains_any",
		"version", "semver", "is_set", "is_not_set",
	}
)
