package nomadtest

import (
	"time"

	"github.com/hashicorp/nomad/api"
)

// The resources the scheduler gives an allocation, in the shapes the
// recorded agent sends (lifecycle events, Allocation PlanResult): the
// group's networks on the node's address with their ports, its ephemeral
// disk, and each task's CPU and memory, in the deprecated Resources forms
// as well as in AllocatedResources.

// Dynamic ports come from the agent's default range.
const (
	minDynamicPort = 20000
	maxDynamicPort = 32000
)

// nextPort hands out a dynamic port. Callers hold s.mu.
func (s *Server) nextPort() int {
	if s.port < minDynamicPort || s.port >= maxDynamicPort {
		s.port = minDynamicPort
	}
	p := s.port
	s.port++
	return p
}

// placeResources fills the resource fields of a newly placed alloc.
func (s *Server) placeResources(a *alloc, tg *api.TaskGroup) {
	disk := 300
	if tg.EphemeralDisk != nil && tg.EphemeralDisk.SizeMB != nil {
		disk = *tg.EphemeralDisk.SizeMB
	}
	var nets []*api.NetworkResource
	var ports []api.PortMapping
	for _, n := range tg.Networks {
		mode := n.Mode
		if mode == "" {
			mode = "host"
		}
		out := &api.NetworkResource{Mode: mode, IP: "127.0.0.1"}
		for _, p := range n.ReservedPorts {
			p.HostNetwork = "default"
			out.ReservedPorts = append(out.ReservedPorts, p)
			ports = append(ports, api.PortMapping{Label: p.Label, Value: p.Value, To: p.To, HostIP: "127.0.0.1"})
		}
		for _, p := range n.DynamicPorts {
			p.Value = s.nextPort()
			if p.To == -1 {
				p.To = p.Value
			}
			p.HostNetwork = "default"
			out.DynamicPorts = append(out.DynamicPorts, p)
			ports = append(ports, api.PortMapping{Label: p.Label, Value: p.Value, To: p.To, HostIP: "127.0.0.1"})
		}
		nets = append(nets, out)
	}
	allocated := &api.AllocatedResources{
		Tasks:  make(map[string]*api.AllocatedTaskResources),
		Shared: api.AllocatedSharedResources{DiskMB: int64(disk), Networks: nets, Ports: ports},
	}
	total := &api.Resources{CPU: ptr(0), Cores: ptr(0), MemoryMB: ptr(0), MemoryMaxMB: ptr(0), DiskMB: ptr(disk), Networks: nets}
	taskRes := make(map[string]*api.Resources)
	for _, t := range tg.Tasks {
		r := t.Resources
		if r == nil {
			r = &api.Resources{}
		}
		cpu, mem, memMax := deref(r.CPU), deref(r.MemoryMB), deref(r.MemoryMaxMB)
		allocated.Tasks[t.Name] = &api.AllocatedTaskResources{
			Cpu:    api.AllocatedCpuResources{CpuShares: int64(cpu)},
			Memory: api.AllocatedMemoryResources{MemoryMB: int64(mem), MemoryMaxMB: int64(memMax)},
		}
		taskRes[t.Name] = &api.Resources{CPU: ptr(cpu), Cores: ptr(deref(r.Cores)), MemoryMB: ptr(mem), MemoryMaxMB: ptr(memMax), DiskMB: ptr(0)}
		*total.CPU += cpu
		*total.MemoryMB += mem
		*total.MemoryMaxMB += max(mem, memMax)
	}
	a.a.Resources = total
	a.a.TaskResources = taskRes
	a.a.AllocatedResources = allocated
	a.shared = &api.Resources{CPU: ptr(0), Cores: ptr(0), MemoryMB: ptr(0), MemoryMaxMB: ptr(0), DiskMB: ptr(disk), Networks: nets}
	a.a.Metrics = &api.AllocationMetric{
		NodesEvaluated: 1,
		NodesInPool:    1,
		NodePool:       "default",
		NodesAvailable: map[string]int{"dc1": 1},
		ScoreMetaData: []*api.NodeScoreMeta{{
			NodeID:    s.nodeID,
			Scores:    map[string]float64{"binpack": 0.0059, "job-anti-affinity": 0, "node-reschedule-penalty": 0, "node-affinity": 0},
			NormScore: 0.0059,
		}},
		AllocationTime: 200 * time.Microsecond,
	}
}
