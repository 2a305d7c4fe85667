package nomad

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/nomad/api"
)

// Cache is the watcher's view of the jobs the controller owns and of the
// allocations Nomad wants running for them, as an informer keeps it: built
// from each relist and kept current from the event stream's payloads, so
// that a reconcile reads Nomad's state without asking Nomad.
//
// It keeps what status and drift decisions need, not whole jobs: a job's
// indexes, version, stop flag, status and the agentkernel Meta, and an
// allocation's version, statuses, node and ports. The full job of the
// last Job event is kept only until the reconciler has looked at it
// (Release), since comparing fields is needed only when a job changed.
//
// Allocation events carry no JobVersion (facts 4.10): an allocation the
// scheduler placed or updated after the job's current version was
// registered (AllocModifyIndex at or above its JobModifyIndex) runs that
// version, and one it has not touched since runs an older one.
type Cache struct {
	owner   string
	mu      sync.RWMutex
	synced  bool
	entries map[string]*cacheEntry
	// listed is the index of the last listing: events at or below it are
	// older than what the listing showed.
	listed uint64
	// gone holds, per key, the index at which its job was purged since
	// the last listing: older events must not bring it back.
	gone map[string]uint64
}

// UnknownVersion is the JobVersion of an allocation that runs an older
// version of its job than the current one, which one not known.
const UnknownVersion = ^uint64(0)

// JobState is what the cache keeps of a job.
type JobState struct {
	Namespace, ID string
	// Version is the job's version; VersionKnown is false when the job
	// is known only from a list, whose stubs carry no version.
	Version      uint64
	VersionKnown bool
	// Stop and Status as Nomad reports them.
	Stop   bool
	Status string
	// CreateIndex, JobModifyIndex (moved by every spec change, a stop
	// included) and ModifyIndex (moved by anything).
	CreateIndex, JobModifyIndex, ModifyIndex uint64
	// Meta holds the agentkernel-* keys of the job's Meta.
	Meta map[string]string
}

// AllocState is what the cache keeps of an allocation Nomad wants
// running.
type AllocState struct {
	ID, NodeID, NodeName string
	JobVersion           uint64
	DesiredStatus        string
	ClientStatus         string
	CreateIndex          uint64
	ModifyIndex          uint64
	// AllocModifyIndex moves only when the scheduler changes the
	// allocation; 0 when known only from a list.
	AllocModifyIndex uint64
	Resources        *api.AllocatedResources
}

// CachedJob is one job as the cache holds it.
type CachedJob struct {
	Job JobState
	// whole is the whole job from its last Job event or read, while the
	// cache holds it: decoded, or the event's bytes, decoded on demand.
	whole  wholeJob
	Allocs []AllocState
}

// Whole returns the whole job the cache holds for the job's current
// JobModifyIndex, or nil when it holds none.
func (j *CachedJob) Whole() *api.Job {
	w := j.whole.decode()
	if w == nil || deref(w.JobModifyIndex) != j.Job.JobModifyIndex {
		return nil
	}
	return w
}

// wholeJob is a whole job, decoded or as its event carried it: decoding
// every event's job would cost more than the few a reconcile compares.
type wholeJob struct {
	job *api.Job
	raw []byte
}

func (w wholeJob) decode() *api.Job {
	if w.job != nil || w.raw == nil {
		return w.job
	}
	var j api.Job
	if json.Unmarshal(w.raw, &j) != nil {
		return nil
	}
	return &j
}

func (w wholeJob) none() bool { return w.job == nil && w.raw == nil }

type cacheEntry struct {
	job    *JobState
	full   wholeJob
	allocs map[string]*AllocState
	// stale marks an entry a write may have outdated in ways the cache
	// cannot tell (a check-and-set conflict): the next look reads Nomad.
	stale bool
}

// NewCache makes an empty cache of the jobs owner owns; it is synced
// after its first listing.
func NewCache(owner string) *Cache {
	return &Cache{owner: owner, entries: map[string]*cacheEntry{}, gone: map[string]uint64{}}
}

// Synced reports whether the cache has had a listing: before that, it
// knows nothing, and a missing job is not proof of absence.
func (c *Cache) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// Get returns what the cache holds of the job of sandbox key. ok is false
// when the cache cannot answer for it: not synced yet, or the entry is
// stale; the caller then reads Nomad (and may Put what it read). A nil
// job with ok true means Nomad has no such job.
func (c *Cache) Get(key string) (job *CachedJob, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return nil, false
	}
	e := c.entries[key]
	if e == nil {
		return nil, true
	}
	if e.stale {
		return nil, false
	}
	if e.job == nil {
		return nil, true
	}
	out := &CachedJob{Job: *e.job, whole: e.full}
	out.Job.Meta = maps.Clone(e.job.Meta)
	for _, a := range e.allocs {
		out.Allocs = append(out.Allocs, *a)
	}
	slices.SortFunc(out.Allocs, func(a, b AllocState) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
	return out, true
}

// Stubs returns the allocations of j as the list endpoint would, with the
// version each runs (UnknownVersion for an older one not known).
func (j *CachedJob) Stubs() []*api.AllocationListStub {
	out := make([]*api.AllocationListStub, 0, len(j.Allocs))
	for _, a := range j.Allocs {
		out = append(out, &api.AllocationListStub{
			ID: a.ID, JobID: j.Job.ID, Namespace: j.Job.Namespace, NodeID: a.NodeID, NodeName: a.NodeName,
			JobVersion: a.JobVersion, DesiredStatus: a.DesiredStatus, ClientStatus: a.ClientStatus,
			CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex, AllocatedResources: a.Resources,
		})
	}
	return out
}

// Put records a job read from Nomad (nil: Nomad has none) with its
// allocations, clearing a stale mark.
func (c *Cache) Put(key string, job *api.Job, allocs []*api.AllocationListStub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if job == nil {
		delete(c.entries, key)
		return
	}
	e := &cacheEntry{job: stateOf(job), full: wholeJob{job: job}, allocs: map[string]*AllocState{}}
	for _, a := range allocs {
		if a.DesiredStatus == api.AllocDesiredStatusRun {
			e.allocs[a.ID] = allocOfStub(a)
		}
	}
	c.entries[key] = e
}

// Refresh records job as just read from Nomad, keeping the allocations
// the cache holds.
func (c *Cache) Refresh(key string, job *api.Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.stale {
		return // a read of the allocations is due as well: Put
	}
	e.job, e.full = stateOf(job), wholeJob{job: job}
	e.versionsKnown()
}

// Wrote records the controller's own register or stop, which Nomad took
// as st (its JobModifyIndex the write's index, its version known): so
// that the next look, which may come before the event, sees it. The
// allocations stay as they are; those the scheduler has not placed or
// updated since run an older version.
func (c *Cache) Wrote(key string, st JobState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil {
		e = &cacheEntry{allocs: map[string]*AllocState{}}
		c.entries[key] = e
	}
	if e.job != nil && !e.stale && e.job.JobModifyIndex >= st.JobModifyIndex && (e.job.VersionKnown || !st.VersionKnown) {
		// The write's own event came first, and told at least as much.
		return
	}
	st.Meta = maps.Clone(st.Meta)
	st.ModifyIndex = max(st.ModifyIndex, st.JobModifyIndex)
	if e.job != nil {
		st.CreateIndex = cmp.Or(st.CreateIndex, e.job.CreateIndex)
		st.Status = cmp.Or(st.Status, e.job.Status)
	} else {
		st.CreateIndex = cmp.Or(st.CreateIndex, st.JobModifyIndex)
	}
	e.job, e.full, e.stale = &st, wholeJob{}, false
	for _, a := range e.allocs {
		if a.AllocModifyIndex < st.JobModifyIndex {
			a.JobVersion = olderThan(a.JobVersion, st.Version)
		}
	}
}

// Gone records that the controller purged the job of key.
func (c *Cache) Gone(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil && e.job != nil {
		// Events up to the job's last known index are older than the
		// purge.
		c.gone[key] = max(c.gone[key], e.job.ModifyIndex)
	}
	delete(c.entries, key)
}

// Invalidate marks key stale: its next Get misses, so that the caller
// reads Nomad, after a check-and-set conflict for instance.
func (c *Cache) Invalidate(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil {
		e.stale = true
	} else if c.synced {
		c.entries[key] = &cacheEntry{stale: true, allocs: map[string]*AllocState{}}
	}
}

// SetVersion records the version of key's job at jobModifyIndex, learnt
// elsewhere (the controller's own record of it), when the cache knows the
// job only from a list.
func (c *Cache) SetVersion(key string, jobModifyIndex, version uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil && e.job != nil && !e.job.VersionKnown && e.job.JobModifyIndex == jobModifyIndex {
		e.job.Version, e.job.VersionKnown = version, true
		e.versionsKnown()
	}
}

// versionsKnown gives the allocations the scheduler placed or updated
// at or after the job's current version that version, once it is known.
func (e *cacheEntry) versionsKnown() {
	if e.job == nil || !e.job.VersionKnown {
		return
	}
	for _, a := range e.allocs {
		if a.AllocModifyIndex != 0 && a.AllocModifyIndex >= e.job.JobModifyIndex {
			a.JobVersion = e.job.Version
		}
	}
}

// Release drops the full job of key once the reconciler has looked at
// the version whose JobModifyIndex is jobModifyIndex, or a later one.
func (c *Cache) Release(key string, jobModifyIndex uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil && e.job != nil && e.job.JobModifyIndex <= jobModifyIndex {
		e.full = wholeJob{}
	}
}

// Size is the number of jobs and allocations held.
func (c *Cache) Size() (jobs, allocs int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.entries {
		if e.job != nil {
			jobs++
		}
		allocs += len(e.allocs)
	}
	return jobs, allocs
}

// replace makes the cache hold listing l, and returns the keys whose
// state changed in a way that matters (see matters).
func (c *Cache) replace(l Listing) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[string]*cacheEntry{}
	for _, s := range l.Jobs {
		key, ok := sandboxKey(s.Namespace, s.ID)
		if !ok {
			continue
		}
		st := stateOfStub(s)
		e := &cacheEntry{job: st, allocs: map[string]*AllocState{}}
		if old := c.entries[key]; old != nil && old.job != nil && !old.stale && old.job.JobModifyIndex == st.JobModifyIndex {
			// The same version: what the cache knew of it still holds.
			st.Version, st.VersionKnown = old.job.Version, old.job.VersionKnown
			e.full = old.full
		}
		next[key] = e
	}
	for _, a := range l.Allocs {
		key, ok := sandboxKey(a.Namespace, a.JobID)
		if !ok || next[key] == nil {
			continue
		}
		as := allocOfStub(a)
		if old := c.entries[key]; old != nil {
			if prev := old.allocs[a.ID]; prev != nil {
				if prev.ModifyIndex == as.ModifyIndex {
					as.AllocModifyIndex = prev.AllocModifyIndex
				}
				if as.Resources == nil {
					// List stubs carry no resources (fact 31); the ports
					// an event brought still hold.
					as.Resources = prev.Resources
				}
			}
		}
		next[key].allocs[a.ID] = as
	}
	for key, old := range c.entries {
		// Jobs of other owners are not listed; the ones a reconcile read
		// stay known as taken (events keep them current).
		if next[key] == nil && old.job != nil && old.job.Meta[MetaOwner] != c.owner {
			next[key] = old
		}
	}
	var changed []string
	for key, e := range next {
		if old := c.entries[key]; old == nil || old.stale || matters(old, e) {
			changed = append(changed, key)
		}
	}
	for key, old := range c.entries {
		if next[key] == nil && old.job != nil {
			changed = append(changed, key)
		}
	}
	c.entries, c.synced = next, true
	clear(c.gone)
	c.listed = max(c.listed, l.Index)
	slices.Sort(changed)
	return changed
}

// applyJob takes a Job event at index; it reports the sandbox key and
// whether what changed matters.
func (c *Cache) applyJob(typ string, index uint64, j *api.Job) (string, bool) {
	return c.applyJobState(typ, index, stateOf(j), wholeJob{job: j})
}

// applyJobState is applyJob on what the watcher decoded of the event: the
// job's state, and its whole as the event carried it.
func (c *Cache) applyJobState(typ string, index uint64, st *JobState, whole wholeJob) (string, bool) {
	key, ok := sandboxKey(st.Namespace, st.ID)
	if !ok {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced {
		return key, true
	}
	e := c.entries[key]
	known := e != nil && e.job != nil
	switch {
	case known && st.ModifyIndex < e.job.ModifyIndex:
		return key, false // older than what the cache holds
	case typ == "JobDeregistered" && st.JobModifyIndex < index:
		// A purge: a stop is a new version, written at the event's
		// index, while a purge leaves the job's indexes as they were.
		if !known {
			return key, false
		}
		delete(c.entries, key)
		c.gone[key] = index
		return key, true
	case !known && index <= max(c.listed, c.gone[key]):
		return key, false // older than the listing, or than the purge
	case st.Meta[MetaOwner] != c.owner && !known:
		// Not ours: the cache holds the jobs it lists, and others only
		// once a reconcile has read them (Put), to know they are taken.
		return key, false
	}
	var old cacheEntry
	if e != nil {
		old = *e
		old.allocs = make(map[string]*AllocState, len(e.allocs))
		for id, a := range e.allocs {
			c := *a
			old.allocs[id] = &c
		}
	} else {
		e = &cacheEntry{allocs: map[string]*AllocState{}}
		c.entries[key] = e
	}
	e.job, e.full, e.stale = st, whole, false
	for _, a := range e.allocs {
		switch {
		case a.AllocModifyIndex != 0 && a.AllocModifyIndex >= e.job.JobModifyIndex:
			a.JobVersion = e.job.Version
		case old.job == nil || old.job.JobModifyIndex != e.job.JobModifyIndex:
			// Not touched by the scheduler since this version.
			a.JobVersion = olderThan(a.JobVersion, e.job.Version)
		}
	}
	return key, old.job == nil || old.stale || matters(&old, e)
}

// applyAlloc takes an Allocation event; it reports the sandbox key and
// whether what changed matters.
func (c *Cache) applyAlloc(a *api.Allocation) (string, bool) {
	var res *api.AllocatedResources
	if a.AllocatedResources != nil {
		res = &api.AllocatedResources{Shared: api.AllocatedSharedResources{Networks: a.AllocatedResources.Shared.Networks}}
	}
	return c.applyAllocState(allocEvent{
		ID: a.ID, Namespace: a.Namespace, JobID: a.JobID, NodeID: a.NodeID, NodeName: a.NodeName,
		DesiredStatus: a.DesiredStatus, ClientStatus: a.ClientStatus,
		CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex, AllocModifyIndex: a.AllocModifyIndex, resources: res,
	})
}

// allocEvent is what an Allocation event's payload says that the cache
// keeps, decoded without the rest (task states, metrics, resources of
// every task), which the watcher would otherwise decode for every event.
type allocEvent struct {
	ID, Namespace, JobID, NodeID, NodeName string
	DesiredStatus, ClientStatus            string
	CreateIndex, ModifyIndex               uint64
	AllocModifyIndex                       uint64
	AllocatedResources                     *struct {
		Shared struct {
			Networks []*api.NetworkResource
		}
	}
	resources *api.AllocatedResources
}

// applyAllocState is applyAlloc on what the watcher decoded.
func (c *Cache) applyAllocState(a allocEvent) (string, bool) {
	if a.resources == nil && a.AllocatedResources != nil {
		a.resources = &api.AllocatedResources{Shared: api.AllocatedSharedResources{Networks: a.AllocatedResources.Shared.Networks}}
	}
	key, ok := sandboxKey(a.Namespace, a.JobID)
	if !ok {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced {
		return key, true
	}
	e := c.entries[key]
	if e == nil || e.job == nil {
		return key, false // not an owned job, or one already gone
	}
	prev := e.allocs[a.ID]
	if prev != nil && a.ModifyIndex < prev.ModifyIndex {
		return key, false
	}
	if a.DesiredStatus != api.AllocDesiredStatusRun {
		if prev == nil {
			return key, false
		}
		delete(e.allocs, a.ID)
		return key, true
	}
	if prev == nil && a.ModifyIndex <= c.listed {
		return key, false // older than the listing, which did not show it
	}
	as := &AllocState{
		ID: a.ID, NodeID: a.NodeID, NodeName: a.NodeName, DesiredStatus: a.DesiredStatus, ClientStatus: a.ClientStatus,
		CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex, AllocModifyIndex: a.AllocModifyIndex,
		Resources: a.resources,
	}
	switch {
	case a.AllocModifyIndex >= e.job.JobModifyIndex && e.job.VersionKnown:
		as.JobVersion = e.job.Version
	case a.AllocModifyIndex >= e.job.JobModifyIndex:
		as.JobVersion = UnknownVersion
	case prev != nil:
		as.JobVersion = olderThan(prev.JobVersion, e.job.Version)
	default:
		as.JobVersion = UnknownVersion
	}
	e.allocs[a.ID] = as
	return key, prev == nil || allocMatters(prev, as)
}

// matters reports a change the reconciler acts on: the job's version,
// stop flag, a status of dead, its owner or spec hash; an allocation
// placed or gone, or its statuses, version, node or ports. Deployment
// health, evaluations and summaries do not matter.
func matters(old, now *cacheEntry) bool {
	switch {
	case (old.job == nil) != (now.job == nil):
		return true
	case old.job != nil:
		o, n := old.job, now.job
		if o.JobModifyIndex != n.JobModifyIndex || o.Stop != n.Stop || Dead(o.Status, o.JobModifyIndex, o.ModifyIndex) != Dead(n.Status, n.JobModifyIndex, n.ModifyIndex) ||
			o.Meta[MetaOwner] != n.Meta[MetaOwner] || o.Meta[MetaSpecHash] != n.Meta[MetaSpecHash] ||
			o.VersionKnown && n.VersionKnown && o.Version != n.Version {
			return true
		}
	}
	if len(old.allocs) != len(now.allocs) {
		return true
	}
	for id, a := range now.allocs {
		if o := old.allocs[id]; o == nil || allocMatters(o, a) {
			return true
		}
	}
	return false
}

func allocMatters(o, n *AllocState) bool {
	return o.DesiredStatus != n.DesiredStatus || o.ClientStatus != n.ClientStatus || o.JobVersion != n.JobVersion ||
		o.NodeID != n.NodeID || !samePorts(o.Resources, n.Resources)
}

func samePorts(a, b *api.AllocatedResources) bool {
	ports := func(r *api.AllocatedResources) []string {
		if r == nil {
			return nil
		}
		var out []string
		for _, n := range r.Shared.Networks {
			for _, p := range append(append([]api.Port(nil), n.ReservedPorts...), n.DynamicPorts...) {
				out = append(out, strings.Join([]string{p.Label, n.IP, strconv.Itoa(p.Value), strconv.Itoa(p.To)}, "/"))
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(ports(a), ports(b))
}

// olderThan is the version of an allocation known to run an older
// version than current: v itself when it is one, else unknown.
func olderThan(v, current uint64) uint64 {
	if v < current {
		return v
	}
	return UnknownVersion
}

// StateOf is what the cache keeps of j.
func StateOf(j *api.Job) JobState { return *stateOf(j) }

func stateOf(j *api.Job) *JobState {
	return &JobState{
		Namespace: cmp.Or(deref(j.Namespace), "default"), ID: deref(j.ID),
		Version: deref(j.Version), VersionKnown: j.Version != nil,
		Stop: deref(j.Stop), Status: deref(j.Status),
		CreateIndex: deref(j.CreateIndex), JobModifyIndex: deref(j.JobModifyIndex), ModifyIndex: deref(j.ModifyIndex),
		Meta: ownMeta(j.Meta),
	}
}

func stateOfStub(s *api.JobListStub) *JobState {
	return &JobState{
		Namespace: cmp.Or(s.Namespace, "default"), ID: s.ID,
		Stop: s.Stop, Status: s.Status,
		CreateIndex: s.CreateIndex, JobModifyIndex: s.JobModifyIndex, ModifyIndex: s.ModifyIndex,
		Meta: ownMeta(s.Meta),
	}
}

func allocOfStub(a *api.AllocationListStub) *AllocState {
	return &AllocState{
		ID: a.ID, NodeID: a.NodeID, NodeName: a.NodeName, JobVersion: a.JobVersion,
		DesiredStatus: a.DesiredStatus, ClientStatus: a.ClientStatus,
		CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex, Resources: a.AllocatedResources,
	}
}

// ownMeta keeps the agentkernel-* keys, which ownership and drift read.
func ownMeta(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if strings.HasPrefix(k, "agentkernel-") {
			out[k] = v
		}
	}
	return out
}
