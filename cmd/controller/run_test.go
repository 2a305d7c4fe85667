package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// devController runs the whole controller in-process, as `controller -dev`
// on free ports, and returns its API and Nomad addresses.
type devController struct {
	api, nomad string
	cancel     context.CancelFunc
	done       chan error
	out        *bufio.Scanner
}

func startDevController(t *testing.T, extra ...string) *devController {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	d := &devController{cancel: cancel, done: make(chan error, 1), out: bufio.NewScanner(pr)}
	args := append([]string{"-dev", "-dev-nomad", "sim", "-dev-nomad-addr", "127.0.0.1:0", "-listen", "127.0.0.1:0", "-log-level", "warn"}, extra...)
	go func() {
		d.done <- run(ctx, args, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		go func() { _, _ = io.Copy(io.Discard, pr) }()
		if err := <-d.done; err != nil {
			t.Errorf("controller exited with %v", err)
		}
	})
	apiRE := regexp.MustCompile(`API:\s+(\S+)`)
	nomadRE := regexp.MustCompile(`Nomad test server:\s+(\S+)`)
	for d.api == "" || d.nomad == "" {
		if !d.out.Scan() {
			t.Fatalf("controller stopped before printing its addresses: %v", <-d.done)
		}
		if m := apiRE.FindStringSubmatch(d.out.Text()); m != nil {
			d.api = m[1]
		}
		if m := nomadRE.FindStringSubmatch(d.out.Text()); m != nil {
			d.nomad = m[1]
		}
	}
	go func() {
		for d.out.Scan() {
		}
	}()
	return d
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// eventually polls cond; the deadline only keeps a broken controller from
// hanging the test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDevModeConvergesExamplesAndServesMetrics(t *testing.T) {
	d := startDevController(t, "-dev-apply", filepath.Join("..", "..", "examples"))
	eventually(t, "every example Running", func() bool {
		var list apiserver.ItemList
		if getJSON(t, d.api+"/v1/sandboxes", &list) != 200 || len(list.Items) < 4 {
			return false
		}
		for _, it := range list.Items {
			if it.Status.Phase != "Running" {
				return false
			}
		}
		return true
	})
	// A plain apply of the same files (akctl apply -f examples/, no apply
	// set) agrees with -dev-apply: nothing to change.
	res, diags := spec.Load([]string{filepath.Join("..", "..", "examples")}, spec.Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	req := apiserver.ApplyRequest{}
	for _, sb := range res.Sandboxes {
		req.Objects = append(req.Objects, apiserver.ApplyObject{Sandbox: sb, Source: sb.Source})
	}
	for _, p := range res.Pools {
		st := p.Settings
		req.Objects = append(req.Objects, apiserver.ApplyObject{Sandbox: p.Sandbox(), Source: p.Source, Pool: &st})
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post(d.api+"/v1/apply", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var applied apiserver.ApplyResponse
	_ = json.NewDecoder(resp.Body).Decode(&applied)
	resp.Body.Close()
	if resp.StatusCode != 200 || applied.Changed {
		t.Errorf("a plain apply of examples/ after -dev-apply: %d, changed %v: %+v", resp.StatusCode, applied.Changed, applied.Results)
	}

	var ready apiserver.Readiness
	if code := getJSON(t, d.api+"/readyz", &ready); code != 200 || !ready.Ready {
		t.Errorf("/readyz = %d %+v, want ready", code, ready)
	}
	resp, err = http.Get(d.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		"controller_runtime_reconcile_total", "controller_runtime_reconcile_errors_total", "controller_runtime_reconcile_time_seconds",
		"workqueue_depth", "workqueue_adds_total", "workqueue_retries_total", "workqueue_queue_duration_seconds",
		"agentkernel_sandboxes{phase=\"Running\"}", "agentkernel_nomad_requests_total", "agentkernel_drift_repairs_total",
		"agentkernel_event_stream_reconnects_total", "agentkernel_api_requests_total",
	} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestNomadOutage takes the Nomad test server down through its fault
// endpoint: the controller stays up, says it is not ready, and converges
// once Nomad is back.
func TestNomadOutage(t *testing.T) {
	d := startDevController(t)
	eventually(t, "ready", func() bool { return getJSON(t, d.api+"/readyz", nil) == 200 })
	resp, err := http.Post(d.nomad+"/_fault/outage", "application/json", strings.NewReader(`{"Duration":"3s"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, "not ready during the outage", func() bool { return getJSON(t, d.api+"/readyz", nil) == 503 })
	// Declarations are accepted while Nomad is down: the store is the
	// source of truth.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.hcl"), []byte(`sandbox "during-outage" {
  image = "alpine:3"
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	applyFile(t, d.api, filepath.Join(dir, "a.hcl"))
	eventually(t, "ready after the outage", func() bool { return getJSON(t, d.api+"/readyz", nil) == 200 })
	eventually(t, "the sandbox declared during the outage Running", func() bool {
		var it apiserver.Item
		return getJSON(t, d.api+"/v1/sandboxes/default/during-outage", &it) == 200 && it.Status.Phase == "Running"
	})
}

func applyFile(t *testing.T, api, path string) {
	t.Helper()
	body := fmt.Sprintf(`{"objects":[{"sandbox":{"namespace":"default","name":"during-outage","spec":{"driver":"docker","image":"alpine:3","command":["sh","-c","sleep infinity"],"profile":"moderate","vcpus":1,"memoryMB":512,"network":"none","readOnly":false,"state":"running","placement":{}}},"source":{"file":%q,"startLine":1,"startColumn":1,"endLine":3,"endColumn":2}}]}`, path)
	resp, err := http.Post(api+"/v1/apply", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("apply: %d %s", resp.StatusCode, b)
	}
}
