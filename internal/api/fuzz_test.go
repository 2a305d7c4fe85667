package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// FuzzRequestDecoding sends arbitrary bodies to the routes that decode
// one. The server must never panic or fail with 500, must answer every
// error in the documented JSON shape, and must accept only what it can
// store (a 200 for apply means the objects were valid).
func FuzzRequestDecoding(f *testing.F) {
	seeds := []string{
		`{"objects":[{"sandbox":{"namespace":"default","name":"web","spec":{"driver":"docker","image":"python:3.12","command":["sh","-c","sleep infinity"],"profile":"moderate","vcpus":1,"memoryMB":512,"network":"none","readOnly":false,"state":"running","placement":{}}},"source":{"file":"a.hcl","startLine":1}}]}`,
		`{"objects":[],"prune":true,"applySet":"x"}`,
		`{"objects":[{"sandbox":{"name":"a\u0000b"}}]}`,
		`{"prune":true,"pruneSelector":"a in (b"}`,
		`{"objects":null,"expectedRevision":18446744073709551615}`,
		`[]`, `{}`, `{"unknown":1}`, `{"objects":[{}]}{}`, ``,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	// One server for every input: a fresh store per input would dominate
	// the cost of each execution.
	st, err := store.Open(f.TempDir(), store.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	srv := api.NewServer(api.Options{Store: st, Policy: fakePolicy{}, Planner: &fakePlanner{known: map[string]bool{}}, Registerer: prometheus.NewRegistry()})
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/apply", "/v1/diff"} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewBufferString(body))
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			switch {
			case rec.Code == http.StatusOK:
			case rec.Code >= 500:
				t.Fatalf("%s answered %d to %q: %s", path, rec.Code, body, rec.Body)
			default:
				var eb api.ErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
					t.Fatalf("%s answered %d with a body that is not the error shape: %q", path, rec.Code, rec.Body)
				}
			}
		}
	})
}
