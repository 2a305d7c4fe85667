package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

// TestDeclarationsTakeTheControllerDefaultNamespace checks that a
// sandbox declared without a namespace goes where the controller puts
// such sandboxes, unless -namespace says otherwise.
func TestDeclarationsTakeTheControllerDefaultNamespace(t *testing.T) {
	var mu sync.Mutex
	var applied []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/version":
			_ = json.NewEncoder(w).Encode(api.VersionInfo{Version: "test", DefaultNamespace: "agents"})
		case "/v1/apply":
			var req api.ApplyRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			mu.Lock()
			for _, o := range req.Objects {
				applied = append(applied, o.Sandbox.Namespace+"/"+o.Sandbox.Name)
			}
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(api.ApplyResponse{Results: []api.ObjectResult{}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "a.hcl")
	if err := os.WriteFile(file, []byte("sandbox \"a\" {\n  image = \"alpine:3\"\n}\nsandbox \"b\" {\n  namespace = \"own\"\n  image     = \"alpine:3\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--addr", srv.URL, "apply", "-f", file}, []string{"agents/a", "own/b"}},
		{[]string{"--addr", srv.URL, "apply", "-namespace", "mine", "-f", file}, []string{"mine/a", "own/b"}},
	}
	for _, tt := range tests {
		applied = nil
		var stderr bytes.Buffer
		if code := run(t.Context(), tt.args, &env{stdout: &bytes.Buffer{}, stderr: &stderr}); code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, code, stderr.String())
		}
		mu.Lock()
		got := append([]string(nil), applied...)
		mu.Unlock()
		if len(got) != len(tt.want) || got[0] != tt.want[0] || got[1] != tt.want[1] {
			t.Errorf("%v: applied %v, want %v", tt.args, got, tt.want)
		}
	}
}
