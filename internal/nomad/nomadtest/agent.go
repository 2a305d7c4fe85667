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
	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		return queryResult{index: s.tables["nodes"], body: []any{s.nodeStub()}}, s.watch.ch("nodes")
	})
}

func (s *Server) handleNode(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		invalidMethod(w)
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

// authorized is the ACL check of Options.ACLToken. Health and leader need
// no token (more/ 301, 302, 342); Authorization: Bearer works like
// X-Nomad-Token (337).
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.ACLToken == "" {
		return true
	}
	switch r.URL.Path {
	case "/v1/agent/health", "/v1/status/leader":
		return true
	}
	tok := r.Header.Get("X-Nomad-Token")
	if tok == "" {
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			tok = b
		}
	}
	return tok == s.opts.ACLToken
}

// deny answers a request without a valid token: 403 "Permission denied" with
// no X-Nomad headers (more/ 300, 334-336), except X-Nomad-Index: 0 on
// variable writes (331). A denied event stream is a 200 with the stream
// headers and not one byte of body (more/ 322, 324); this server closes it
// at once where the agent closes it at an unpredictable time (326).
func (s *Server) deny(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/event/stream" {
		if _, _, _, closeConn, ok := openStream(w); ok {
			closeConn()
		}
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/var/") && r.Method != http.MethodGet {
		w.Header().Set("X-Nomad-Index", "0")
	}
	writeText(w, http.StatusForbidden, "Permission denied")
}
