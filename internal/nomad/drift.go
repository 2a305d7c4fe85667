package nomad

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/hashicorp/nomad/api"
)

// Drift reasons, also used as metric labels and event messages.
const (
	DriftMissing  = "missing"   // no job with the ID (never created, or purged)
	DriftStopped  = "stopped"   // the job is stopped but should run
	DriftRunning  = "running"   // the job runs but should be stopped
	DriftDead     = "dead"      // the job ran out of restarts and reschedules
	DriftSpecHash = "spec_hash" // the job carries another spec's hash
	DriftFields   = "fields"    // fields the controller sets differ
	// DriftModified: the job was written since the controller last wrote
	// or saw it (its JobModifyIndex moved), with no field the comparison
	// knows of changed: some change this controller did not make.
	DriftModified = "modified"
)

// DriftReasons lists every reason Drift and the reconciler report.
var DriftReasons = []string{DriftMissing, DriftStopped, DriftRunning, DriftDead, DriftSpecHash, DriftFields, DriftModified}

// Ownership says whose a live job is.
type Ownership int

const (
	Owned Ownership = iota
	// Foreign: no agentkernel-owner in Meta, e.g. started by agentkernel
	// itself or by hand. Reported, never changed.
	Foreign
	// OtherOwner: stamped by another controller's store.
	OtherOwner
)

// OwnerOf classifies a live job against this controller's store ID.
func OwnerOf(live *api.Job, owner string) Ownership {
	switch got, ok := live.Meta[MetaOwner]; {
	case !ok || got == "":
		return Foreign
	case got != owner:
		return OtherOwner
	}
	return Owned
}

// Drift lists why the live job does not match the desired one, or nothing
// when it matches and no write is needed. live may be nil (missing).
// Fields are compared on what the controller sets: Nomad fills in
// defaults for the rest (fact 30), and those must not count as drift.
func Drift(desired, live *api.Job) []string {
	if live == nil {
		return []string{DriftMissing}
	}
	var reasons []string
	wantStop := desired.Stop != nil && *desired.Stop
	isStop := live.Stop != nil && *live.Stop
	switch {
	case wantStop && !isStop:
		reasons = append(reasons, DriftRunning)
	case !wantStop && isStop:
		reasons = append(reasons, DriftStopped)
	case !wantStop && Dead(deref(live.Status), deref(live.JobModifyIndex), deref(live.ModifyIndex)):
		reasons = append(reasons, DriftDead)
	}
	if desired.Meta[MetaSpecHash] != live.Meta[MetaSpecHash] {
		reasons = append(reasons, DriftSpecHash)
	}
	if diffs := FieldDiffs(desired, live); len(diffs) > 0 {
		reasons = append(reasons, DriftFields)
	}
	return reasons
}

// Dead reports whether a job's status says its current version has died:
// "dead", computed after that version was written. A register writes the
// new version with the status it had (a stopped job's "dead", in the
// first event of the register) and Nomad recomputes it at the same index
// with the evaluation, so a dead status at ModifyIndex == JobModifyIndex
// belongs to the version before.
func Dead(status string, jobModifyIndex, modifyIndex uint64) bool {
	return status == "dead" && modifyIndex > jobModifyIndex
}

// FieldDiffs names the paths where the live job differs from what the
// controller set, e.g. "TaskGroups[0].Tasks[0].Env". Stop is left to
// Drift, which says which way it differs.
func FieldDiffs(desired, live *api.Job) []string {
	d, l := *desired, *live
	d.Stop, l.Stop = nil, nil
	var diffs []string
	compareSubset("", toGeneric(&d), toGeneric(&l), &diffs)
	return diffs
}

// ignoredPaths are rendered but never compared. The update strategy was
// added to the rendering after jobs existed without it (Nomad filled in
// its default there): a job picks it up at its next real change rather
// than through a register of every job at once. A change to it made out
// of band still moves the job's modify index, which the reconciler
// compares.
var ignoredPaths = []string{"Update", "TaskGroups[].Update"}

// exactPaths are maps compared whole: a key added out of band (an extra
// env var, a Meta entry, a driver option) is drift, not a server default.
var exactPaths = []string{"Meta", "TaskGroups[].Tasks[].Env", "TaskGroups[].Tasks[].Config"}

// absentUnlessSet are fields Nomad leaves empty when the job does not set
// them, and that widen what a sandbox can do: when the controller sets
// none, a live value (a user, a host volume and its mount, an artifact
// fetched into the task, a reserved host port) is drift, not a default.
// They are caught by value here even when the job's modify index gives
// no hint, after a restart with a fresh store for instance.
var absentUnlessSet = []string{
	"TaskGroups[].Tasks[].User",
	"TaskGroups[].Tasks[].Artifacts",
	"TaskGroups[].Tasks[].VolumeMounts",
	"TaskGroups[].Tasks[].Templates",
	"TaskGroups[].Volumes",
	"TaskGroups[].Networks[].ReservedPorts",
}

// digits strips list indexes from a path, giving its shape.
var digits = strings.NewReplacer("0", "", "1", "", "2", "", "3", "", "4", "", "5", "", "6", "", "7", "", "8", "", "9", "")

func toGeneric(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("nomad: encode job: %v", err))
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("nomad: decode job: %v", err))
	}
	return out
}

// compareSubset walks the desired value: every non-null leaf it sets must
// be equal in live; live may hold more, except under exactPaths.
// Values are compared after a JSON round trip, so a driver config decoded
// from Nomad (numbers as float64, lists as []any) equals the rendering.
func compareSubset(path string, want, got any, diffs *[]string) {
	shape := digits.Replace(path)
	if slices.Contains(ignoredPaths, shape) {
		return
	}
	if slices.Contains(exactPaths, shape) {
		if !reflect.DeepEqual(emptyAsNil(want), emptyAsNil(got)) {
			*diffs = append(*diffs, path)
		}
		return
	}
	if isEmpty(want) && slices.Contains(absentUnlessSet, shape) {
		if !isEmpty(got) {
			*diffs = append(*diffs, path)
		}
		return
	}
	if want == nil || want == "" {
		// Left unset: Nomad fills in its default (HostNetwork "default",
		// NodePool "default", ...), which is not drift.
		return
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			*diffs = append(*diffs, path)
			return
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			compareSubset(p, w[k], g[k], diffs)
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			*diffs = append(*diffs, path)
			return
		}
		for i := range w {
			compareSubset(fmt.Sprintf("%s[%d]", path, i), w[i], g[i], diffs)
		}
	default:
		if !reflect.DeepEqual(want, got) {
			*diffs = append(*diffs, path)
		}
	}
}

// isEmpty is true of JSON null, "" and empty lists and objects.
func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func emptyAsNil(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 0 {
		return nil
	}
	return v
}
