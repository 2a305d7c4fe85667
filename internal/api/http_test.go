package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestTokenGuardsEveryV1RouteButNotProbes(t *testing.T) {
	env := newEnv(t, withToken(testToken))
	tests := []struct {
		name       string
		method     string
		path       string
		token      string
		want       int
		wantBearer bool
	}{
		{"version without token", "GET", "/v1/version", "", 401, true},
		{"version with wrong token", "GET", "/v1/version", "not-the-token", 401, true},
		{"version with a prefix of the token", "GET", "/v1/version", testToken[:5], 401, true},
		{"version with token", "GET", "/v1/version", testToken, 200, false},
		{"list without token", "GET", "/v1/sandboxes", "", 401, true},
		{"apply without token", "POST", "/v1/apply", "", 401, true},
		{"diff with wrong token", "POST", "/v1/diff", "nope", 401, true},
		{"delete without token", "DELETE", "/v1/sandboxes/default/web", "", 401, true},
		{"watch without token", "GET", "/v1/watch", "", 401, true},
		{"unknown v1 route without token", "GET", "/v1/nothing", "", 401, true},
		{"unknown v1 route with token", "GET", "/v1/nothing", testToken, 404, false},
		{"healthz open", "GET", "/healthz", "", 200, false},
		{"readyz open", "GET", "/readyz", "", 200, false},
		{"metrics open", "GET", "/metrics", "", 200, false},
		{"healthz ignores a wrong token", "GET", "/healthz", "wrong", 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := env.doAuth(t, tt.method, tt.path, nil, tt.token)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); strings.HasPrefix(got, "Bearer") != tt.wantBearer {
				t.Errorf("WWW-Authenticate %q, want a Bearer challenge: %v", got, tt.wantBearer)
			}
			if tt.want == 401 {
				if e := decodeError(t, body); e.Code != api.CodeUnauthorized {
					t.Errorf("code %q, want %q", e.Code, api.CodeUnauthorized)
				}
			}
		})
	}
}

func TestNoTokenMeansNoAuth(t *testing.T) {
	env := newEnv(t)
	env.mustDo(t, "GET", "/v1/version", nil, http.StatusOK, nil)
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	env := newEnv(t)
	tests := []struct {
		name      string
		method    string
		path      string
		want      int
		wantCode  string
		wantAllow string
	}{
		{"unknown route", "GET", "/v2/sandboxes", 404, api.CodeNotFound, ""},
		{"unknown root", "GET", "/", 404, api.CodeNotFound, ""},
		{"apply with GET", "GET", "/v1/apply", 405, api.CodeMethodNotAllowed, "POST"},
		{"sandboxes with POST", "POST", "/v1/sandboxes", 405, api.CodeMethodNotAllowed, "GET, HEAD"},
		{"sandbox with PUT", "PUT", "/v1/sandboxes/default/web", 405, api.CodeMethodNotAllowed, "DELETE, GET, HEAD"},
		{"healthz with POST", "POST", "/healthz", 405, api.CodeMethodNotAllowed, "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := env.do(t, tt.method, tt.path, nil)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if e := decodeError(t, body); e.Code != tt.wantCode {
				t.Errorf("code %q, want %q", e.Code, tt.wantCode)
			}
			if got := resp.Header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

func TestHealthzReadyz(t *testing.T) {
	tests := []struct {
		name  string
		ready func() (bool, string)
		want  int
		body  api.Readiness
	}{
		{"no readiness check", nil, 200, api.Readiness{Ready: true, Role: api.RoleSingle}},
		{"ready", func() (bool, string) { return true, "" }, 200, api.Readiness{Ready: true, Role: api.RoleSingle}},
		{"nomad down", func() (bool, string) { return false, "nomad unreachable" }, 503,
			api.Readiness{Ready: false, Reason: "nomad unreachable", Role: api.RoleSingle}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, withReady(tt.ready), withToken(testToken))
			var rd api.Readiness
			resp, body := env.doAuth(t, "GET", "/readyz", nil, "")
			if resp.StatusCode != tt.want {
				t.Fatalf("readyz status %d, want %d", resp.StatusCode, tt.want)
			}
			if err := json.Unmarshal(body, &rd); err != nil || rd != tt.body {
				t.Errorf("readyz body %s, want %+v", body, tt.body)
			}
			if resp, _ := env.doAuth(t, "GET", "/healthz", nil, ""); resp.StatusCode != 200 {
				t.Errorf("healthz status %d, want 200 whatever the readiness", resp.StatusCode)
			}
		})
	}
}

func TestWritesAcceptedWhileNotReady(t *testing.T) {
	env := newEnv(t, withReady(func() (bool, string) { return false, "nomad unreachable" }))
	out := env.mustApply(t, applyReq(sandbox("web")))
	if out.Results[0].Action != "created" {
		t.Errorf("action %q, want created", out.Results[0].Action)
	}
}

func TestVersion(t *testing.T) {
	env := newEnv(t)
	env.mustApply(t, applyReq(sandbox("web")))
	var v api.VersionInfo
	env.mustDo(t, "GET", "/v1/version", nil, 200, &v)
	want := api.VersionInfo{Version: "v1.2.3-test", StoreID: env.store.StoreID(), Revision: 1, DefaultNamespace: "default", Role: api.RoleSingle}
	if d := cmp.Diff(want, v); d != "" {
		t.Errorf("version (-want +got):\n%s", d)
	}
}

func TestMetricsCountRequestsByRoutePattern(t *testing.T) {
	env := newEnv(t)
	env.mustDo(t, "GET", "/v1/sandboxes/default/a", nil, 404, nil)
	env.mustDo(t, "GET", "/v1/sandboxes/default/b", nil, 404, nil)
	env.mustDo(t, "GET", "/v1/version", nil, 200, nil)
	env.mustDo(t, "GET", "/nowhere", nil, 404, nil)
	body := string(env.mustDo(t, "GET", "/metrics", nil, 200, nil))
	for _, want := range []string{
		`agentkernel_api_requests_total{code="404",route="GET /v1/sandboxes/{namespace}/{name}"} 2`,
		`agentkernel_api_requests_total{code="200",route="GET /v1/version"} 1`,
		`agentkernel_api_requests_total{code="404",route="unmatched"} 1`,
		`agentkernel_api_request_duration_seconds_count{route="GET /v1/sandboxes/{namespace}/{name}"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestTwoServersShareARegistry(t *testing.T) {
	env := newEnv(t)
	second := api.NewServer(api.Options{Store: env.store, Registerer: env.reg, Gatherer: env.reg})
	if second == nil {
		t.Fatal("NewServer returned nil")
	}
}

func TestBodyLimits(t *testing.T) {
	env := newEnv(t, withMaxBody(512))
	big := applyReq(sandbox("web", func(sb *spec.Sandbox) { sb.Spec.Env = map[string]string{"PAD": strings.Repeat("x", 1024)} }))
	tests := []struct {
		name      string
		body      any
		want      int
		wantCode  string
		wantField string
	}{
		{"too large", big, 413, api.CodeTooLarge, ""},
		{"unknown top-level field", `{"objects":[],"prune":true,"applySet":"x","force":true}`, 400, api.CodeInvalid, "force"},
		{"unknown field in a spec", `{"objects":[{"sandbox":{"namespace":"default","name":"a","spec":{"memory":1}}}]}`, 400, api.CodeInvalid, "memory"},
		{"not JSON", `{"objects":`, 400, api.CodeInvalid, ""},
		{"empty body", ``, 400, api.CodeInvalid, ""},
		{"two values", `{"objects":[],"prune":true,"applySet":"x"} {}`, 400, api.CodeInvalid, ""},
		{"wrong type", `{"objects":[],"prune":"yes"}`, 400, api.CodeInvalid, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/v1/apply", "/v1/diff"} {
				resp, body := env.do(t, "POST", path, tt.body)
				if resp.StatusCode != tt.want {
					t.Fatalf("%s: status %d, want %d; body %s", path, resp.StatusCode, tt.want, body)
				}
				e := decodeError(t, body)
				if e.Code != tt.wantCode {
					t.Errorf("%s: code %q, want %q", path, e.Code, tt.wantCode)
				}
				if tt.wantField != "" && !strings.Contains(e.Message, `"`+tt.wantField+`"`) {
					t.Errorf("%s: message %q does not name the field %q", path, e.Message, tt.wantField)
				}
			}
		})
	}
	if rev := env.revision(t); rev != 0 {
		t.Errorf("store revision %d after refused requests, want 0", rev)
	}
}

// failingStore fails List as a broken disk would.
type failingStore struct {
	*store.Store
}

func (failingStore) List(context.Context, store.ListOptions) ([]store.Record, uint64, error) {
	return nil, 0, errors.New("read sandboxes: input/output error")
}

func TestInternalErrorsHideTheCauseAndLogIt(t *testing.T) {
	env := newEnv(t, withStore(func(st *store.Store) api.Store { return failingStore{st} }))
	resp, body := env.do(t, "GET", "/v1/sandboxes", nil)
	if resp.StatusCode != 500 {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	e := decodeError(t, body)
	if e.Code != api.CodeInternal || strings.Contains(e.Message, "input/output") {
		t.Errorf("error %+v: want code internal without the cause", e)
	}
	if !strings.Contains(env.logs.String(), "input/output error") {
		t.Errorf("the cause was not logged; logs:\n%s", env.logs)
	}
}

func TestTokenAndBodiesNeverLogged(t *testing.T) {
	env := newEnv(t, withToken(testToken))
	const secretValue = "env-value-that-must-stay-out-of-logs"
	sb := sandbox("web", func(sb *spec.Sandbox) { sb.Spec.Env = map[string]string{"API_KEY": secretValue} })
	env.mustApply(t, applyReq(sb))
	env.mustDo(t, "POST", "/v1/diff", applyReq(sb), 200, nil)
	env.doAuth(t, "GET", "/v1/version", nil, testToken+"x")
	env.doAuth(t, "GET", "/v1/version", nil, "")
	env.mustDo(t, "GET", "/v1/sandboxes/default/web", nil, 200, nil)
	env.mustDo(t, "POST", "/v1/apply", applyReq(sandbox("bad", memory(1))), 400, nil)
	logs := env.logs.String()
	if !strings.Contains(logs, `"route":"POST /v1/apply"`) {
		t.Fatalf("requests were not logged at debug level; logs:\n%s", logs)
	}
	for _, secret := range []string{testToken, "Bearer", secretValue} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs hold %q:\n%s", secret, logs)
		}
	}
}
