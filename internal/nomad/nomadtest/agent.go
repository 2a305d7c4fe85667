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
		"Drivers":               s.nodeDrivers(s.now()),
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
		n := s.nodeStub()
		n["HTTPAddr"] = "127.0.0.1:4646"
		n["Attributes"] = map[string]string{"nomad.version": "2.0.5", "kernel.name": "linux", "unique.hostname": nodeName}
		n["Meta"] = map[string]string{}
		n["Events"] = []any{}
		return queryResult{index: 10, body: n}, s.watch.ch("nodes")
	})
}
