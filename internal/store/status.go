package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Phase summarises where a sandbox is.
type Phase string

const (
	PhasePending  Phase = "Pending"
	PhaseRunning  Phase = "Running"
	PhaseFailed   Phase = "Failed"
	PhaseStopped  Phase = "Stopped"
	PhaseExpired  Phase = "Expired"
	PhaseConflict Phase = "Conflict"
	PhaseDeleting Phase = "Deleting"
)

// ConditionStatus is a condition's truth value, as in Kubernetes.
type ConditionStatus string

const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// Condition is one observed aspect of a sandbox (Kubernetes' shape).
type Condition struct {
	Type    string          `json:"type"`
	Status  ConditionStatus `json:"status"`
	Reason  string          `json:"reason,omitempty"`
	Message string          `json:"message,omitempty"`
	// LastTransitionTime is when Status last changed. UpdateStatus keeps
	// the stored time while Status stays the same, and sets it to now
	// when Status changes and the caller left it zero.
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// AllocatedPort is a port Nomad allocated to the sandbox.
type AllocatedPort struct {
	Label  string `json:"label"`
	HostIP string `json:"hostIP,omitempty"`
	Value  int    `json:"value"`
	To     int    `json:"to,omitempty"`
}

// Status is what the controller last observed of a sandbox. It is stored
// apart from the spec: writing it never changes the generation or the
// record's resource version.
type Status struct {
	Phase      Phase       `json:"phase,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation this status was computed for.
	ObservedGeneration uint64 `json:"observedGeneration"`
	JobID              string `json:"jobID,omitempty"`
	JobModifyIndex     uint64 `json:"jobModifyIndex,omitempty"`
	// JobVersion is the job's version as last seen, and AllocJobVersion
	// the version AllocID runs: Ready needs the two equal.
	JobVersion      *uint64         `json:"jobVersion,omitempty"`
	AllocJobVersion uint64          `json:"allocJobVersion,omitempty"`
	AllocID         string          `json:"allocID,omitempty"`
	Node            string          `json:"node,omitempty"`
	Ports           []AllocatedPort `json:"ports,omitempty"`
	LastError       string          `json:"lastError,omitempty"`
	// NextAttemptAt is when the controller tries again on its own, for a
	// sandbox it gave up on for now (Nomad refused its job).
	NextAttemptAt *time.Time `json:"nextAttemptAt,omitempty"`
	// Pool, on a pool's status, counts its sandboxes.
	Pool *PoolCounts `json:"pool,omitempty"`
	// UpdatedAt is set by UpdateStatus.
	UpdatedAt time.Time `json:"updatedAt"`
}

// PoolCounts are a pool's live sandboxes by state: unclaimed and Ready,
// unclaimed and on their way, claimed.
type PoolCounts struct {
	Ready   int `json:"ready"`
	Pending int `json:"pending"`
	Claimed int `json:"claimed"`
}

// Condition returns the condition of type t, if any.
func (st Status) Condition(t string) (Condition, bool) {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c, true
		}
	}
	return Condition{}, false
}

type statusEntry struct {
	Status Status `json:"status"`
}

// EventType is Normal or Warning, as in Kubernetes.
type EventType string

const (
	EventNormal  EventType = "Normal"
	EventWarning EventType = "Warning"
)

// Reasons the controller records events for.
const (
	ReasonCreated  = "Created"
	ReasonUpdated  = "Updated"
	ReasonRepaired = "Repaired"
	ReasonPurged   = "Purged"
	ReasonConflict = "Conflict"
	ReasonDeleted  = "Deleted"
	ReasonFailed   = "Failed"
)

// Event is one entry of a sandbox's history.
type Event struct {
	// Time is set to now when left zero.
	Time    time.Time `json:"time"`
	Type    EventType `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message,omitempty"`
}

type eventsEntry struct {
	Events []Event `json:"events"`
}

// UpdateStatus records st as the status of the sandbox under key, and
// appends events, in one transaction. A status computed for an older
// generation than the recorded one is refused with ErrStaleStatus, so a
// slow worker cannot overwrite a newer observation. A status equal to the
// recorded one (times aside) with no events writes nothing, so that
// re-observing a steady sandbox does not feed the change feed.
func (s *Store) UpdateStatus(ctx context.Context, key string, st Status, events ...Event) error {
	if len(events) == 0 && s.statusUnchanged(key, st) {
		return nil
	}
	// Workers write statuses concurrently: batched, they share commits. A
	// refusal is kept aside rather than returned from the function, which
	// would roll back the whole batch and run every other call again; the
	// function may run twice, so it starts from its arguments each time.
	var refused error
	err := s.batch(ctx, func(w *writeTx) error {
		refused = nil
		e, found, err := getSandboxImpl(w.tx, key)
		if err != nil {
			return err
		}
		if !found {
			refused = ErrNotFound
			return nil
		}
		if st.ObservedGeneration > e.Generation {
			refused = fmt.Errorf("observed generation %d is newer than the record's generation %d", st.ObservedGeneration, e.Generation)
			return nil
		}
		old, _, err := getStatusImpl(w.tx, key)
		if err != nil {
			return err
		}
		if st.ObservedGeneration < old.ObservedGeneration {
			refused = fmt.Errorf("status for generation %d, status for generation %d already recorded: %w",
				st.ObservedGeneration, old.ObservedGeneration, ErrStaleStatus)
			return nil
		}
		merged := mergeStatus(old, st, w.now)
		if len(events) > 0 {
			if err := appendEventsImpl(w.tx, key, events, w.now, s.maxEvents); err != nil {
				return err
			}
			w.record(ChangeEvents, key, e.Generation)
		}
		if statusEqual(old, merged) {
			return nil
		}
		if err := putStatusImpl(w.tx, key, merged); err != nil {
			return err
		}
		if merged.JobModifyIndex > old.JobModifyIndex {
			if err := raiseNomadIndexImpl(w.tx, merged.JobModifyIndex); err != nil {
				return err
			}
		}
		w.record(ChangeStatus, key, e.Generation)
		return nil
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return fmt.Errorf("update status of sandbox %q: %w", key, err)
	}
	return nil
}

// statusUnchanged reports, from a read, whether st is what is recorded
// for key already (times aside), so that UpdateStatus writes nothing.
func (s *Store) statusUnchanged(key string, st Status) bool {
	unchanged := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		e, found, err := getSandboxImpl(tx, key)
		if err != nil || !found || st.ObservedGeneration > e.Generation {
			return nil
		}
		old, _, err := getStatusImpl(tx, key)
		if err != nil || old.ObservedGeneration != st.ObservedGeneration {
			return nil
		}
		unchanged = statusEqual(old, mergeStatus(old, st, s.now().UTC()))
		return nil
	})
	return unchanged
}

// mergeStatus carries over what the caller need not know: transition times
// of conditions whose status did not change.
func mergeStatus(old, st Status, now time.Time) Status {
	conds := make([]Condition, len(st.Conditions))
	for i, c := range st.Conditions {
		if prev, ok := old.Condition(c.Type); ok && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
		} else if c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = now
		}
		c.LastTransitionTime = c.LastTransitionTime.UTC()
		conds[i] = c
	}
	st.Conditions = conds
	if len(conds) == 0 {
		st.Conditions = nil
	}
	st.UpdatedAt = now
	return st
}

func statusEqual(a, b Status) bool {
	a.UpdatedAt, b.UpdatedAt = time.Time{}, time.Time{}
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// AppendEvent adds one event to the sandbox's history.
func (s *Store) AppendEvent(ctx context.Context, key string, ev Event) error {
	_, err := s.update(ctx, func(w *writeTx) error {
		e, found, err := getSandboxImpl(w.tx, key)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		if err := appendEventsImpl(w.tx, key, []Event{ev}, w.now, s.maxEvents); err != nil {
			return err
		}
		w.record(ChangeEvents, key, e.Generation)
		return nil
	})
	if err != nil {
		return fmt.Errorf("append event to sandbox %q: %w", key, err)
	}
	return nil
}

// Events returns the sandbox's events, oldest first.
func (s *Store) Events(ctx context.Context, key string) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read events of sandbox %q: %w", key, err)
	}
	var evs []Event
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketSandboxes).Get([]byte(key)) == nil {
			return ErrNotFound
		}
		ent, err := getEventsImpl(tx, key)
		evs = ent.Events
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read events of sandbox %q: %w", key, err)
	}
	return evs, nil
}

func getStatusImpl(tx *bolt.Tx, key string) (Status, bool, error) {
	v := tx.Bucket(bucketStatus).Get([]byte(key))
	if v == nil {
		return Status{}, false, nil
	}
	var e statusEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return Status{}, false, fmt.Errorf("decode status %q: %w", key, err)
	}
	return e.Status, true, nil
}

func putStatusImpl(tx *bolt.Tx, key string, st Status) error {
	v, err := json.Marshal(statusEntry{Status: st})
	if err != nil {
		return fmt.Errorf("encode status %q: %w", key, err)
	}
	if err := tx.Bucket(bucketStatus).Put([]byte(key), v); err != nil {
		return fmt.Errorf("write status %q: %w", key, err)
	}
	return nil
}

func getEventsImpl(tx *bolt.Tx, key string) (eventsEntry, error) {
	var e eventsEntry
	v := tx.Bucket(bucketEvents).Get([]byte(key))
	if v == nil {
		return e, nil
	}
	if err := json.Unmarshal(v, &e); err != nil {
		return eventsEntry{}, fmt.Errorf("decode events %q: %w", key, err)
	}
	return e, nil
}

func appendEventsImpl(tx *bolt.Tx, key string, evs []Event, now time.Time, max int) error {
	e, err := getEventsImpl(tx, key)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if ev.Time.IsZero() {
			ev.Time = now
		}
		ev.Time = ev.Time.UTC()
		e.Events = append(e.Events, ev)
	}
	if n := len(e.Events); n > max {
		e.Events = append([]Event(nil), e.Events[n-max:]...)
	}
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode events %q: %w", key, err)
	}
	if err := tx.Bucket(bucketEvents).Put([]byte(key), v); err != nil {
		return fmt.Errorf("write events %q: %w", key, err)
	}
	return nil
}
