package nomadtest

import (
	"net/http"
	"strings"
	"time"
)

const nodeName = "nomadtest"

func (s *Server) handleLeader(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	// The agent's RPC address as a JSON string, no index headers (132).
	writeJSON(w, http.StatusOK, "127.0.0.1:4647")
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	ok := map[string]any{"message": "ok", "ok": true}
	writeJSON(w, http.StatusOK, map[string]any{"client": ok, "server": ok})
}

// nodeDrivers is the driver map of the simulated node: the configured
// drivers healthy, docker and qemu undetected, as on the recorded node (134).
func (s *Server) nodeDrivers(now time.Time) map[string]any {
	out := make(map[string]any)
	for _, d := range []string{"docker", "qemu"} {
		desc := ""
		if d == "docker" {
			desc = "Failed to connect to docker daemon"
		}
		out[d] = map[string]any{"Attributes": map[string]string{}, "Detected": false, "HealthDescription": desc, "Healthy": false, "UpdateTime": now}
	}
	for d := range s.drivers {
		out[d] = map[string]any{"Attributes": map[string]string{"driver." + d: "true"}, "Detected": true, "HealthDescription": "Healthy", "Healthy": true, "UpdateTime": now}
	}
	return out
}

func (s *Server) nodeStub() map[string]any {
	return map[string]any{
		"Address":               "127.0.0.1",
		"CreateIndex":           8,
		"Datacenter":            "dc1",
		"Drain":                 false,
		"Drivers":               s.nodeDrivers(s.started),
		"HostVolumes":           map[string]any{},
		"ID":                    s.nodeID,
		"LastDrain":             nil,
		"ModifyIndex":           10,
		"Name":                  nodeName,
		"NodeClass":             "",
		"NodePool":              "default",
		"SchedulingEligibility": "eligible",
		"Status":                "ready",
		"StatusDescription":     "",
		"Version":               "2.0.5",
	}
}

func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	// Nodes need node read, which a namespace policy does not give (319).
	if !aclOf(r).nodeRead() {
		s.deny(w, r)
		return
	}
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		return queryResult{index: s.tables["nodes"], body: []any{s.nodeStub()}}, s.watch.ch("nodes")
	})
}

func (s *Server) handleNode(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
		return
	}
	if !aclOf(r).nodeRead() {
		s.deny(w, r)
		return
	}
	id := r.PathValue("id")
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		if id != s.nodeID && !(len(id) >= 4 && strings.HasPrefix(s.nodeID, id)) {
			return queryResult{index: s.tables["nodes"], status: http.StatusNotFound, text: "node not found"}, s.watch.ch("nodes")
		}
		return queryResult{index: 10, body: s.nodeFull()}, s.watch.ch("nodes")
	})
}

// nodeFull is the simulated node as GET /v1/node/:id and the Node events
// carry it (135, lifecycle events), with the resources of the recorded
// node.
func (s *Server) nodeFull() map[string]any {
	n := s.nodeStub()
	n["HTTPAddr"] = s.nodeHTTPAddr()
	n["Attributes"] = map[string]string{"nomad.version": "2.0.5", "kernel.name": "linux", "unique.hostname": nodeName,
		"cpu.arch": "amd64", "cpu.numcores": "2", "cpu.totalcompute": "200000", "os.name": "debian", "unique.network.ip-address": "127.0.0.1"}
	n["Meta"] = map[string]string{}
	n["Events"] = []any{map[string]any{"Message": "Node registered", "Subsystem": "Cluster", "Details": nil, "Timestamp": s.started.UTC().Truncate(time.Second), "CreateIndex": 0}}
	n["CSIControllerPlugins"] = map[string]any{}
	n["CSINodePlugins"] = map[string]any{}
	n["CgroupParent"] = "nomad.slice"
	n["ComputedClass"] = "v1:8941320341921988393"
	n["DrainStrategy"] = nil
	n["GCVolumesOnNodeGC"] = false
	n["HostNetworks"] = nil
	n["IdentitySigningKeyID"] = s.signingKeyID
	n["LastAllocUpdateIndex"] = s.lastAllocUpdate
	n["LastMissedHeartbeatIndex"] = 0
	n["Links"] = map[string]any{}
	n["NodeMaxAllocs"] = 0
	n["NodeResources"] = map[string]any{
		"Cpu":      map[string]any{"CpuShares": 200000, "TotalCpuCores": 2, "ReservableCpuCores": []int{0, 1}},
		"Memory":   map[string]any{"MemoryMB": 200000},
		"Disk":     map[string]any{"DiskMB": 258019},
		"Devices":  nil,
		"Networks": []any{map[string]any{"Mode": "host", "Device": "lo", "CIDR": "127.0.0.1/32", "IP": "127.0.0.1", "MBits": 1000}},
		"NodeNetworks": []any{map[string]any{"Mode": "host", "Device": "lo", "MacAddress": "", "Speed": 1000, "Addresses": []any{
			map[string]any{"Family": "ipv4", "Alias": "default", "Address": "127.0.0.1", "ReservedPorts": "", "Gateway": ""},
		}}},
		"Processors": map[string]any{"Topology": map[string]any{
			"Cores": []any{
				map[string]any{"BaseSpeed": 2694, "Disable": false, "Grade": true, "GuessSpeed": 0, "ID": 0, "MaxSpeed": 0, "NodeID": 0, "SocketID": 0},
				map[string]any{"BaseSpeed": 2694, "Disable": false, "Grade": true, "GuessSpeed": 0, "ID": 1, "MaxSpeed": 0, "NodeID": 0, "SocketID": 0},
			},
			"Distances": nil, "Nodes": []int{0}, "OverrideTotalCompute": 200000, "OverrideWitholdCompute": 0,
		}},
		"MinDynamicPort": minDynamicPort,
		"MaxDynamicPort": maxDynamicPort,
	}
	n["ReservedResources"] = map[string]any{
		"Cpu":      map[string]any{"CpuShares": 0, "ReservedCpuCores": nil},
		"Memory":   map[string]any{"MemoryMB": 0},
		"Disk":     map[string]any{"DiskMB": 0},
		"Networks": map[string]any{"ReservedHostPorts": ""},
	}
	n["SecretID"] = ""
	n["StatusUpdatedAt"] = s.started.Unix()
	n["TLSEnabled"] = false
	delete(n, "Address")
	delete(n, "Version")
	return n
}

// nodeHTTPAddr is the address the node advertises for its client
// endpoints. nomad/api's exec and file-system calls try it directly before
// going through the server they were given, with a one-second connect
// timeout and a dialer of their own (api.go cloneWithTimeout): it is the
// listener's address once Start has run, so that the direct connection
// reaches this server. A server served only through a listener it does not
// own, such as a MemNet's, advertises none, which the client takes as "go
// through the server" at once, without a dial.
func (s *Server) nodeHTTPAddr() string {
	if p := s.httpAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// nodeEvent ends every client write: the node with the write as its
// LastAllocUpdateIndex (lifecycle events, Node/AllocationUpdated).
func (s *Server) nodeEvent(idx uint64) event {
	s.lastAllocUpdate = idx
	return event{
		Topic:   "Node",
		Type:    "AllocationUpdated",
		Key:     s.nodeID,
		Index:   idx,
		Payload: mustJSON(map[string]any{"Node": s.nodeFull()}),
	}
}
