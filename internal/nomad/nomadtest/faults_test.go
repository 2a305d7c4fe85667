package nomadtest

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/nomad/api"
)

func TestFaultErrors(t *testing.T) {
	cases := []struct {
		name   string
		inject func(s *Server)
		// statuses of four consecutive GET /v1/jobs, then the body of the
		// first failure.
		want     []int
		wantBody string
	}{
		{"count", func(s *Server) { s.FailRequests(ErrorFault{Count: 2, Body: "boom"}) }, []int{500, 500, 200, 200}, "boom"},
		{"no leader", func(s *Server) { s.NoLeader(1, 0) }, []int{500, 200, 200, 200}, NoLeaderText},
		{"other path", func(s *Server) { s.FailRequests(ErrorFault{Count: 1, PathPrefix: "/v1/job/"}) }, []int{200, 200, 200, 200}, ""},
		{"status", func(s *Server) { s.FailRequests(ErrorFault{Status: 503, Body: "busy"}) }, []int{503, 503, 503, 503}, "busy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newLoopbackFixture(t, Options{})
			tc.inject(f.srv)
			var got []int
			body := ""
			for range 4 {
				resp, b := f.do(t, http.MethodGet, "/v1/jobs", nil, nil)
				got = append(got, resp.StatusCode)
				if resp.StatusCode != 200 && body == "" {
					body = string(b)
				}
			}
			if !slicesEqual(got, tc.want) || body != tc.wantBody {
				t.Errorf("statuses %v body %q, want %v %q", got, body, tc.want, tc.wantBody)
			}
		})
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFaultDurationAndLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPipeFixture(t, Options{})
		f.srv.FailRequests(ErrorFault{Duration: 10 * time.Second})
		if resp, _ := f.do(t, http.MethodGet, "/v1/jobs", nil, nil); resp.StatusCode != 500 {
			t.Errorf("during the fault: %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Second)
		if resp, _ := f.do(t, http.MethodGet, "/v1/jobs", nil, nil); resp.StatusCode != 200 {
			t.Errorf("after the fault: %d", resp.StatusCode)
		}
		f.srv.SetLatency(750 * time.Millisecond)
		start := time.Now()
		f.do(t, http.MethodGet, "/v1/jobs", nil, nil)
		if d := time.Since(start); d != 750*time.Millisecond {
			t.Errorf("request took %v, want the added 750ms", d)
		}
		f.srv.ResetFaults()
		start = time.Now()
		f.do(t, http.MethodGet, "/v1/jobs", nil, nil)
		if d := time.Since(start); d != 0 {
			t.Errorf("request took %v after reset", d)
		}
	})
}

// TestFaultOutage closes the listener and reopens it on the same address.
func TestFaultOutage(t *testing.T) {
	f := newLoopbackFixture(t, Options{})
	url := f.srv.URL()
	f.srv.StopListening()
	if _, _, err := f.api.Jobs().List(nil); err == nil {
		t.Fatal("list succeeded during the outage")
	}
	if err := f.srv.Resume(); err != nil {
		t.Fatal(err)
	}
	if f.srv.URL() != url {
		t.Errorf("URL changed %s -> %s", url, f.srv.URL())
	}
	if _, _, err := f.api.Jobs().List(nil); err != nil {
		t.Errorf("list after resume: %v", err)
	}
}

// TestFaultEndpoints drives faults over HTTP and reads the request counts.
func TestFaultEndpoints(t *testing.T) {
	// instant mode: the endpoints are driven over a real socket, with a
	// kill right after the register; their effect, not its timing, is
	// what is checked.
	f := newLoopbackFixture(t, Options{Instant: true})
	post := func(path, body string) {
		t.Helper()
		resp, b := f.do(t, http.MethodPost, "/_fault/"+path, []byte(body), nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST /_fault/%s: %d %s", path, resp.StatusCode, b)
		}
	}
	f.register(t, loadJob(t, "agentkernel-svc-raw"))
	post("kill-task", `{"JobID":"agentkernel-svc-raw"}`)
	if al := jobAllocs(t, f, "agentkernel-svc-raw"); al[0].TaskStates["sleep"].Restarts != 1 {
		t.Errorf("kill-task did not restart the task: %+v", al[0].TaskStates["sleep"])
	}
	post("errors", `{"Count":1,"Body":"injected"}`)
	_, _, err := f.api.Jobs().List(nil)
	var ure api.UnexpectedResponseError
	if !errors.As(err, &ure) || ure.StatusCode() != 500 || ure.Body() != "injected" {
		t.Errorf("list after an injected error: %v", err)
	}
	post("stop-job", `{"JobID":"agentkernel-svc-raw","Purge":true}`)
	if _, _, err := f.api.Jobs().Info("agentkernel-svc-raw", nil); err == nil || !strings.Contains(err.Error(), "job not found") {
		t.Errorf("stop-job with purge: %v", err)
	}
	if resp, b := f.do(t, http.MethodPost, "/_fault/kill-task", []byte(`{"JobID":"nope"}`), nil); resp.StatusCode != 400 {
		t.Errorf("kill-task of an unknown job: %d %s", resp.StatusCode, b)
	}

	counts := f.srv.Requests()
	if counts["PUT /v1/jobs"] != 1 || counts["GET /v1/jobs"] != 1 || counts["GET /v1/job/{id}/allocations"] != 1 {
		t.Errorf("counts %v", counts)
	}
	for k := range counts {
		if strings.Contains(k, "_fault") {
			t.Errorf("fault endpoint counted: %s", k)
		}
	}
	f.srv.ResetRequests()
	if n := f.srv.RequestCount("PUT /v1/jobs"); n != 0 {
		t.Errorf("count after reset %d", n)
	}
}
