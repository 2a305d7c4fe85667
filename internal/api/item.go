package api

import (
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Item is a sandbox as the API shows it. GitOps tools and dashboards read
// it, so its fields are only ever added to: every field is always present
// except deletionRequestedAt, which appears once deletion was requested.
type Item struct {
	Namespace       string            `json:"namespace"`
	Name            string            `json:"name"`
	Generation      uint64            `json:"generation"`
	ResourceVersion uint64            `json:"resourceVersion"`
	Labels          map[string]string `json:"labels"`
	ApplySet        string            `json:"applySet"`
	Hash            string            `json:"hash"`
	CreatedAt       time.Time         `json:"createdAt"`
	UpdatedAt       time.Time         `json:"updatedAt"`
	// DeletionRequestedAt is set while the sandbox waits for its Nomad
	// job to be removed; the record disappears afterwards.
	DeletionRequestedAt *time.Time  `json:"deletionRequestedAt,omitempty"`
	Source              spec.Source `json:"source"`
	Spec                spec.Spec   `json:"spec"`
	// Pool is set on a sandbox of a pool: the pool, and the claim.
	Pool   *ItemPool  `json:"pool,omitempty"`
	Status ItemStatus `json:"status"`
}

// ItemStatus is what the controller last observed. A sandbox the
// reconciler has not looked at yet has phase "Pending", observedGeneration
// 0 and updatedAt null.
type ItemStatus struct {
	Phase              string `json:"phase"`
	ObservedGeneration uint64 `json:"observedGeneration"`
	JobID              string `json:"jobID"`
	JobModifyIndex     uint64 `json:"jobModifyIndex"`
	// JobVersion is the job's version, AllocJobVersion the version the
	// allocation runs; Ready needs them equal.
	JobVersion      uint64 `json:"jobVersion"`
	AllocJobVersion uint64 `json:"allocJobVersion"`
	AllocID         string `json:"allocID"`
	Node            string `json:"node"`
	Ports           []Port `json:"ports"`
	LastError       string `json:"lastError"`
	// NextAttemptAt is when the controller tries again by itself, for a
	// sandbox whose job Nomad refused.
	NextAttemptAt *time.Time  `json:"nextAttemptAt,omitempty"`
	Conditions    []Condition `json:"conditions"`
	UpdatedAt     *time.Time  `json:"updatedAt"`
}

// Port is a port Nomad allocated to the sandbox.
type Port struct {
	Label  string `json:"label"`
	HostIP string `json:"hostIP"`
	Value  int    `json:"value"`
	To     int    `json:"to"`
}

// Condition is one observed aspect of a sandbox, in Kubernetes' shape.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Event is one entry of a sandbox's history.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
}

func itemOf(rec store.Record) Item {
	labels := rec.Sandbox.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	st := rec.Status
	it := Item{
		Namespace:           rec.Sandbox.Namespace,
		Name:                rec.Sandbox.Name,
		Generation:          rec.Generation,
		ResourceVersion:     rec.ResourceVersion,
		Labels:              labels,
		ApplySet:            rec.ApplySet,
		Hash:                rec.Hash,
		CreatedAt:           rec.CreatedAt,
		UpdatedAt:           rec.UpdatedAt,
		DeletionRequestedAt: rec.DeletionRequestedAt,
		Source:              rec.Sandbox.Source,
		Spec:                rec.Sandbox.Spec,
		Pool:                itemPoolOf(rec.Member),
		Status: ItemStatus{
			Phase:              string(st.Phase),
			ObservedGeneration: st.ObservedGeneration,
			JobID:              st.JobID,
			JobModifyIndex:     st.JobModifyIndex,
			JobVersion:         valueOr0(st.JobVersion),
			AllocJobVersion:    st.AllocJobVersion,
			AllocID:            st.AllocID,
			Node:               st.Node,
			Ports:              make([]Port, 0, len(st.Ports)),
			LastError:          st.LastError,
			NextAttemptAt:      st.NextAttemptAt,
			Conditions:         conditionsOf(st.Conditions),
			UpdatedAt:          updatedAtOf(st),
		},
	}
	if it.Status.Phase == "" {
		it.Status.Phase = string(store.PhasePending)
	}
	for _, p := range st.Ports {
		it.Status.Ports = append(it.Status.Ports, Port{Label: p.Label, HostIP: p.HostIP, Value: p.Value, To: p.To})
	}
	return it
}

func eventsOf(evs []store.Event) []Event {
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, Event{Time: e.Time, Type: string(e.Type), Reason: e.Reason, Message: e.Message})
	}
	return out
}

// splitKey splits a store key into namespace and name; names never hold "/".
func splitKey(key string) (namespace, name string) {
	namespace, name, _ = strings.Cut(key, "/")
	return namespace, name
}

func valueOr0(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// conditionsOf is a status's conditions as the API shows them: never null.
func conditionsOf(cs []store.Condition) []Condition {
	out := make([]Condition, 0, len(cs))
	for _, c := range cs {
		out = append(out, Condition{
			Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message, LastTransitionTime: c.LastTransitionTime,
		})
	}
	return out
}

// updatedAtOf is when the status was written, nil before the first write.
func updatedAtOf(st store.Status) *time.Time {
	if st.UpdatedAt.IsZero() {
		return nil
	}
	t := st.UpdatedAt
	return &t
}
