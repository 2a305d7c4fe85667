package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
)

// Sandbox is one validated declaration: identity, labels and the canonical
// spec, with every default applied. Two declarations that mean the same
// thing produce equal Sandbox values (source positions aside) and the same
// Hash, however their HCL was written or split across files.
type Sandbox struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Spec      Spec              `json:"spec"`

	// Source is where the declaration was read from. It is kept so that
	// later diagnostics can point back at the file; it is not part of the
	// canonical form and never enters the hash.
	Source Source `json:"-"`
}

// Key is the sandbox's identity in the store: "namespace/name".
func (s *Sandbox) Key() string { return s.Namespace + "/" + s.Name }

// JobID is the Nomad job that runs the sandbox, the same ID agentkernel's
// own Nomad backend uses.
func (s *Sandbox) JobID() string { return JobIDPrefix + s.Name }

// JobIDPrefix starts the ID of every Nomad job that runs a sandbox.
const JobIDPrefix = "agentkernel-"

// Source is the place a sandbox block was declared.
type Source struct {
	File      string `json:"file"`
	StartLine int    `json:"startLine"`
	StartCol  int    `json:"startColumn"`
	EndLine   int    `json:"endLine"`
	EndCol    int    `json:"endColumn"`
}

func (s Source) String() string {
	return fmt.Sprintf("%s:%d,%d", s.File, s.StartLine, s.StartCol)
}

// Spec is what runs: everything that, when changed, must change the Nomad
// job. Labels and the namespace/name identity are outside it on purpose.
// Slices of blocks are sorted by their key and maps encode in key order,
// so the JSON encoding is deterministic.
type Spec struct {
	Driver   string   `json:"driver"`
	Image    string   `json:"image,omitempty"`
	Command  []string `json:"command"`
	Profile  string   `json:"profile"`
	VCPUs    float64  `json:"vcpus"`
	MemoryMB int      `json:"memoryMB"`
	Network  string   `json:"network"`
	Ports    []Port   `json:"ports,omitempty"`
	ReadOnly bool     `json:"readOnly"`

	Env     map[string]string `json:"env,omitempty"`
	Files   []File            `json:"files,omitempty"`
	Secrets []Secret          `json:"secrets,omitempty"`

	// TTL is a Go duration in its canonical spelling ("8h0m0s"); ExpiresAt
	// an RFC 3339 UTC timestamp. At most one is set; OnExpiry is set only
	// when one of them is.
	TTL       string `json:"ttl,omitempty"`
	ExpiresAt string `json:"expiresAt,omitempty"`
	OnExpiry  string `json:"onExpiry,omitempty"`
	State     string `json:"state"`

	Placement Placement `json:"placement"`
}

// MHzPerVCPU is agentkernel's unit: one vCPU is 1000 MHz of Nomad CPU.
const MHzPerVCPU = 1000

// CPUMHz is the Nomad CPU resource for the spec's vCPUs. Validation only
// accepts vCPU counts that are whole MHz, so the rounding is exact.
func (s Spec) CPUMHz() int { return int(math.Round(s.VCPUs * MHzPerVCPU)) }

// Port is a named network port. Static 0 means a dynamic host port.
type Port struct {
	Label  string `json:"label"`
	To     int    `json:"to,omitempty"`
	Static int    `json:"static,omitempty"`
}

// File is content injected into the sandbox at Path before the task starts.
type File struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	Mode    string `json:"mode"`
}

// Secret names a Nomad Variable item that becomes the environment variable
// Env inside the sandbox. The value itself never passes through here.
type Secret struct {
	Env      string `json:"env"`
	Variable string `json:"variable"`
	Key      string `json:"key"`
}

// Placement narrows where Nomad may place the sandbox. Empty datacenters
// means the controller's default.
type Placement struct {
	Datacenters []string     `json:"datacenters,omitempty"`
	NodePool    string       `json:"nodePool,omitempty"`
	Constraints []Constraint `json:"constraints,omitempty"`
}

// Constraint is a Nomad placement constraint.
type Constraint struct {
	Attribute string `json:"attribute,omitempty"`
	Operator  string `json:"operator"`
	Value     string `json:"value,omitempty"`
}

// CanonicalJSON is the deterministic encoding of the spec that Hash digests.
func (s Spec) CanonicalJSON() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		// Spec holds only strings, numbers, bools, slices and string maps.
		panic(fmt.Sprintf("spec: encode canonical spec: %v", err))
	}
	return b
}

// Hash is the content hash of the spec: "sha256:" and 64 hex digits. It is
// what change detection compares, and what the controller stamps on the
// Nomad job.
func (s Spec) Hash() string {
	sum := sha256.Sum256(s.CanonicalJSON())
	return "sha256:" + hex.EncodeToString(sum[:])
}
