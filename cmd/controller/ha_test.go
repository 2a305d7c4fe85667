package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/nomad/nomadtest"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// haController runs one -ha instance in-process on a free loopback port.
func startHAController(t *testing.T, nomadURL, id string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-ha", "-instance-id", id, "-data-dir", t.TempDir(), "-listen", addr,
			"-nomad-addr", nomadURL, "-ha-lock-ttl", "10s", "-ha-lock-delay", "1s", "-log-level", "warn"}, io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller %s exited with %v", id, err)
		}
	})
	return "http://" + addr
}

func readiness(url string) (apiserver.Readiness, bool) {
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		return apiserver.Readiness{}, false
	}
	defer resp.Body.Close()
	var rd apiserver.Readiness
	return rd, json.NewDecoder(resp.Body).Decode(&rd) == nil
}

func TestHAInstancesForwardAndReplicateLargeSandboxes(t *testing.T) {
	srv := nomadtest.New(nomadtest.Options{Addr: "127.0.0.1:0", Drivers: []string{"docker", "exec"}})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	a := startHAController(t, srv.URL(), "a")
	b := startHAController(t, srv.URL(), "b")

	// Both ready, agreeing on one leader.
	var follower string
	deadline := time.Now().Add(30 * time.Second)
	for follower == "" {
		if time.Now().After(deadline) {
			t.Fatal("no ready leader and follower within 30s")
		}
		ra, okA := readiness(a)
		rb, okB := readiness(b)
		if okA && okB && ra.Ready && rb.Ready && ra.Leader != nil && rb.Leader != nil && ra.Leader.ID != "" && ra.Leader.ID == rb.Leader.ID {
			follower = map[string]string{"a": b, "b": a}[ra.Leader.ID]
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}

	post := func(sb spec.Sandbox) (int, string) {
		body, _ := json.Marshal(apiserver.ApplyRequest{Objects: []apiserver.ApplyObject{{Sandbox: sb}}})
		resp, err := http.Post(follower+"/v1/apply", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	load := func(src string) spec.Sandbox {
		res, diags := spec.LoadSources([]spec.SourceFile{{Name: "t.hcl", Dir: ".", Src: []byte(src)}}, spec.Options{})
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		return res.Sandboxes[0]
	}

	// Larger than a Nomad Variable holds: replicated in chunks, and in
	// Nomad Variables when the apply through the follower returns.
	big := load(fmt.Sprintf("sandbox \"big\" {\n  image = \"alpine:3\"\n  command = [\"sh\", \"-c\", %q]\n  env = { BLOB = %q }\n  file \"/data/large.txt\" {\n    content = %q\n  }\n}\n",
		strings.Repeat("y", 20000), strings.Repeat("x", 60000), strings.Repeat("z", 300<<10)))
	code, body := post(big)
	if code != http.StatusOK {
		t.Errorf("apply of a 380 kB sandbox: %d %s; want 200", code, body)
	}
	resp, err := http.Get(srv.URL() + "/v1/var/agentkernel/sandboxes/default/big")
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Items map[string]string }
	err = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if _, ok := v.Items["manifest"]; err != nil || !ok {
		t.Errorf("replicated variable of the large sandbox: status %d, %v, items %d; want its manifest", resp.StatusCode, err, len(v.Items))
	}

	// A normal one goes through the follower to the leader, and is in
	// Nomad Variables when the apply returns.
	code, body = post(load("sandbox \"small\" {\n  image = \"alpine:3\"\n}\n"))
	if code != http.StatusOK {
		t.Fatalf("apply through the follower: %d %s", code, body)
	}
	resp, err = http.Get(srv.URL() + "/v1/var/agentkernel/sandboxes/default/small")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("replicated variable: status %d, want 200 once the apply has returned", resp.StatusCode)
	}
}
